"""Small helpers shared by the trainer, the evaluator, the data writers and the CLI.

- atomic writes: a file is either its old or its new content, never half of either,
  whatever kills the process (temporary file in the same folder, fsync, rename); a full
  disk raises :class:`DiskFullError` (the path, the bytes needed, the bytes free) and
  leaves no temporary file behind;
- JSON lines: the metrics log of a run (one object per line);
- mask overlays on RGB images (prediction files and the command line);
- the autocast dtype for a device and a ``train.amp`` setting; the ``--device`` option;
- sizes for people (``human_size``) and JSON without NaN (``finite_json``).
"""
from __future__ import annotations

import errno
import json
import math
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

AMP_CHOICES = ("auto", "bf16", "fp16", "off")


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


# ----------------------------------------------------------------------------------------
# overlays

def mask_outline(mask: np.ndarray) -> np.ndarray:
    """The pixels of a boolean mask that touch a pixel outside it (4-neighbourhood)."""
    m = np.asarray(mask, dtype=bool)
    inner = np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1)
    return m & ~inner


def overlay_mask(rgb: np.ndarray, mask: np.ndarray, colour=(255, 0, 0), alpha: float = 0.5,
                 outline: np.ndarray | None = None, outline_colour=(0, 255, 0)) -> np.ndarray:
    """``rgb`` (H, W, 3) with ``mask`` blended in ``colour`` and, optionally, the boundary of
    a second mask (``outline``, e.g. the ground truth) drawn in ``outline_colour``."""
    out = np.asarray(rgb).astype(np.float32)  # a copy
    m = np.asarray(mask, dtype=bool)
    out[m] = (1 - alpha) * out[m] + alpha * np.array(colour, np.float32)
    if outline is not None:
        out[mask_outline(outline)] = outline_colour
    return out.clip(0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------
# mixed precision

def cpu_has_fast_bf16(cpuinfo: str | None = None) -> bool:
    """True when this CPU has native bf16 dot-product instructions (x86 AVX512-BF16 or AMX,
    Arm BF16), read from ``cpuinfo`` (default: /proc/cpuinfo). Without them PyTorch
    emulates bf16 on a CPU, slower than fp32."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux: assume no
            return False
    text = cpuinfo
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


_NOTICES: set[str] = set()


def notice_once(message: str) -> None:
    """Print a one-line notice to stderr, once per process."""
    if message not in _NOTICES:
        _NOTICES.add(message)
        print(f"notice: {message}", file=sys.stderr)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.amp`` on ``device`` (None: no autocast).

    ``auto`` is bf16 on a CUDA device that supports it, else fp16 there, and off on a CPU.
    ``bf16`` on a CPU without native bf16 instructions falls back to fp32 with a notice.
    The weights stay fp32 in every case (autocast computes in the lower precision).
    """
    from .config import ConfigError

    amp = amp.lower()
    if amp not in AMP_CHOICES:
        raise ConfigError(f"train.amp = {amp!r}: choose {', '.join(AMP_CHOICES)}")
    if amp == "off":
        return None
    if amp == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return None
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp = fp16 needs a CUDA device (use bf16 or off on CPU)")
    if amp == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        notice_once("this CPU has no native bf16 instructions: computing in fp32 instead (train.amp = bf16)")
        return None
    return torch.bfloat16 if amp == "bf16" else torch.float16


def device_from_arg(name: str) -> torch.device:
    """The ``--device`` option (auto | cpu | cuda | cuda:N) as a usable device; a
    :class:`restr.config.ConfigError` saying why not otherwise."""
    from .config import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {name}: not a device (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__}); "
                              f"use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s)")
    elif dev.type != "cpu":
        raise ConfigError(f"--device {name}: not supported here (use auto, cpu, cuda or cuda:N)")
    return dev


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


def cpu_threads(loader_workers: int, processes: int = 1) -> int:
    """Intra-op threads for one training process on a CPU: the cores left to it after its
    DataLoader workers, and at most half of its share of the cores, at least one.

    Half, because a laptop or a shared machine always runs something else: a thread that
    loses its core makes every other thread wait for it at each operation's end. On the
    2-core machine that built the book, one thread keeps a tiny step near 0.2 s under
    load where two threads take 2.5-5 s (two threads save about 30 % on an idle
    machine)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    share = cores // max(processes, 1)
    return max(1, min(share - loader_workers, share // 2))
