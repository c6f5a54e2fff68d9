"""Files that are whole or absent, JSON lines, sizes for people, JSON without NaN.

- atomic writes: a file is either its old or its new content, never half of either,
  whatever kills the process (temporary file in the same folder, fsync, rename); a full
  disk raises :class:`DiskFullError` (the path, the bytes needed, the bytes free) and
  leaves no temporary file behind;
- JSON lines: the metrics log of a run (one object per line);
- sizes for people (``human_size``) and JSON without NaN (``finite_json``).
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable

REPO = Path(__file__).resolve().parents[2]  # the repository: the folder holding restr/


# ----------------------------------------------------------------------------------------
# atomic writes

def human_size(n: float) -> str:
    """``1536`` -> ``"1.5 kB"`` (powers of 1024)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


class DiskFullError(OSError):
    """A write that found no space left: ``path``, ``needed`` and ``free`` bytes."""

    def __init__(self, path: str | os.PathLike, needed: int, free: int | None):
        self.path, self.needed, self.free = Path(path), int(needed), free
        room = f", {human_size(free)} free" if free is not None else ""
        super().__init__(errno.ENOSPC, f"no space left on the device to write {self.path} "
                                       f"({human_size(needed)} needed{room})")

    def __reduce__(self):
        """Pickled with its own arguments: a worker process's error reaches the parent whole
        (OSError's default pickling would call ``__init__(errno, message)``)."""
        return type(self), (self.path, self.needed, self.free)


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def remove_dead_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write_bytes` left in ``folder`` when its
    process was killed mid-write (``.<name>.<pid>.<hex>.tmp`` whose pid no longer runs);
    a live process's are kept, so a concurrent writer's rename still finds its file.
    Returns the files deleted."""
    gone = []
    for tmp in Path(folder).glob(".*.tmp") if Path(folder).is_dir() else []:
        parts = tmp.name.split(".")  # "", name..., pid, hex, "tmp"
        if len(parts) < 5 or not parts[-3].isdigit() or _process_runs(int(parts[-3])):
            continue
        tmp.unlink(missing_ok=True)
        gone.append(tmp)
    return gone


def _process_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically: temporary file, flush, fsync, rename.

    ``durable=False`` skips the fsync (a few milliseconds a file): still never half a
    file if the process dies, but a power cut may lose the write. For many small files
    that can be regenerated (synthref's images).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a unique name in the same folder; "x" mode keeps the usual permissions (umask)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if _is_disk_full(exc) and not isinstance(exc, DiskFullError):
            raise DiskFullError(path, len(data), _free_bytes(path.parent)) from None
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# ----------------------------------------------------------------------------------------
# hashes

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike, cached: bool = False) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks. ``cached``: remember it for this
    process while the file's size and modification time stay the same (the data
    fingerprint's files, read by every ``get_run`` of a notebook); a check of a file
    against a recorded hash reads the bytes every time."""
    path = Path(path)
    key = None
    if cached:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key in _HASH_CACHE:
            return _HASH_CACHE[key]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    if key is not None:
        _HASH_CACHE[key] = h.hexdigest()
    return h.hexdigest()


# ----------------------------------------------------------------------------------------
# JSON lines

def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one JSON object as a line and flush it (:class:`DiskFullError` if there is no room)."""
    line = json.dumps(row) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
    except OSError as exc:
        if _is_disk_full(exc):
            raise DiskFullError(path, len(line.encode()), _free_bytes(Path(path).parent)) from None
        raise


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The objects of a JSON-lines file; a missing file is empty and a line cut short by a
    kill (not valid JSON) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Replace ``path`` atomically with ``rows``, one JSON object per line."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def finite_json(obj):
    """``obj`` with every NaN or infinite float replaced by None: standard JSON (RFC 8259
    has no NaN), e.g. for the metrics of an empty evaluation."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


@contextmanager
def exclusive_lock(path: str | os.PathLike, waiting: Callable[[], None] | None = None, poll_s: float = 2.0):
    """Hold an exclusive ``flock`` on ``path`` (created if missing, never removed: removing
    it would let two processes lock different files) for the ``with`` block. ``waiting``,
    given, is called every ``poll_s`` seconds while another process holds it (to report the
    wait, or to raise and give up); without it the call blocks."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        if waiting is None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        else:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    waiting()
                    time.sleep(poll_s)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
