"""One process at a time in a folder: a lock file naming its holder.

``<folder>/.lock`` holds JSON (``pid``, ``host``, ``command``, ``since``) and is locked
with ``fcntl.lockf``, a POSIX record lock, which the kernel drops when its process ends,
however it ends (a SIGKILL included), and which forked children (DataLoader workers) do
not inherit. So:

- a second process finds the lock taken and either refuses (:class:`RunLocked`, naming
  the holder) or waits, saying for whom;
- a lock file that exists but is not locked was left by a process that was killed: it is
  stale, reported (with the pid it names) and taken over;
- the holder deletes the file when it lets go (and the folder, if it created it only for
  the lock and it is still empty).

Within one process the lock is re-entrant: :func:`restr.zoo.cache.get_run` holds it
around :func:`restr.engine.trainer.train`, which takes it too.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK_NAME = ".lock"
_HELD: dict[str, list] = {}  # lock path -> [fd, depth, created folder]


class RunLocked(RuntimeError):
    """The folder is held by another process (the message names it)."""


def _holder(path: Path) -> dict:
    """The holder recorded in a lock file ({} if unreadable: just created, or being written)."""
    try:
        info = json.loads(path.read_text())
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def describe(info: dict) -> str:
    """``process 123 (python -m restr train ..., since 2024-05-01 10:00:00)``."""
    parts = [p for p in (info.get("command"), f"since {info['since']}" if info.get("since") else None) if p]
    host = info.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return f"process {info.get('pid', '?')}{where}" + (f" ({', '.join(parts)})" if parts else "")


class RunLock:
    """The lock of ``folder`` (see the module docstring); ``what`` names it in messages;
    ``wait``: what ``with RunLock(...)`` does when another process holds it."""

    def __init__(self, folder: str | os.PathLike, what: str = "run", wait: bool = False):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what, self.wait = what, wait

    @property
    def key(self) -> str:
        return os.path.abspath(self.path)

    @property
    def held(self) -> bool:
        return self.key in _HELD

    def acquire(self, wait: bool | None = None) -> "RunLock":
        """Take the lock; if another process holds it, wait (``wait=True``, saying so on
        stderr) or raise :class:`RunLocked` (default: the ``wait`` given to the constructor)."""
        wait = self.wait if wait is None else wait
        if self.held:
            _HELD[self.key][1] += 1
            return self
        created = not self.folder.exists()
        announced = False
        while True:
            self.folder.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            except FileNotFoundError:  # the last holder removed the (empty) folder just now
                continue
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                info = _holder(self.path)
                if not wait:
                    os.close(fd)
                    raise RunLocked(f"{self.folder} is in use by {describe(info)}; wait for it to finish "
                                    f"(or pass --wait)") from None
                if not announced:
                    print(f"notice: waiting for {describe(info)}, which holds the {self.what} {self.folder}",
                          file=sys.stderr, flush=True)
                    announced = True
                fcntl.lockf(fd, fcntl.LOCK_EX)  # blocks until the holder lets go (or dies)
            if self._same_file(fd):
                break
            os.close(fd)  # the holder deleted the file while we waited: lock the new one
        self._take_over(fd)
        _HELD[self.key] = [fd, 1, created]
        return self

    def _same_file(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def _take_over(self, fd: int) -> None:
        """Report a stale lock (a file left by a killed holder), then write ourselves in."""
        old = os.pread(fd, 1 << 16, 0)
        if old.strip():
            try:
                info = json.loads(old)
            except ValueError:
                info = {}
            print(f"notice: {self.folder}: taking over the stale lock of {describe(info)}, which is no longer "
                  f"running", file=sys.stderr, flush=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:300],
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)

    def release(self) -> None:
        entry = _HELD.get(self.key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        fd, _, created = _HELD.pop(self.key)
        try:
            os.unlink(self.path)  # while still locked: a waiter that opened it sees another file
        except FileNotFoundError:
            pass
        os.close(fd)
        if created:
            try:
                self.folder.rmdir()  # only if nothing else was put in it
            except OSError:
                pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
