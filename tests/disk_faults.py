"""A full disk, simulated: the tests of the run folder and of the safety issue share it."""
from __future__ import annotations

import errno
import os
from pathlib import Path


def fail_fsync_of(monkeypatch, name: str, after: int = 0) -> dict:
    """Make os.fsync raise ENOSPC for temporary files of ``name`` after ``after`` good writes."""
    real, seen = os.fsync, {"n": 0}

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if Path(target).name.startswith(f".{name}.") and target.endswith(".tmp"):
            seen["n"] += 1
            if seen["n"] > after:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return seen
