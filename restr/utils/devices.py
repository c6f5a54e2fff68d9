"""Devices and threads: the autocast dtype for a device and a ``train.amp`` setting, the
``--device`` option, native bf16 on a CPU, and intra-op threads for a shared machine."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from ..config import AMP_MODES, ConfigError


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
    amp = amp.lower()
    if amp not in AMP_MODES:
        raise ConfigError(f"train.amp = {amp!r}: choose {', '.join(AMP_MODES)}")
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
