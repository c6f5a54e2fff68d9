"""Small helpers shared by the layers, by theme: :mod:`~restr.utils.files` (atomic writes,
JSON lines, sizes), :mod:`~restr.utils.devices` (autocast, ``--device``, CPU threads) and
:mod:`~restr.utils.overlay` (masks drawn on images). The package's own modules import
from those; the names below are for notebooks and scripts."""
from .devices import cpu_has_fast_bf16, cpu_threads, device_from_arg, resolve_amp
from .files import (DiskFullError, append_jsonl, atomic_write_bytes, atomic_write_text, finite_json, human_size,
                    read_jsonl, write_jsonl)
from .overlay import mask_outline, overlay_mask

__all__ = ["cpu_has_fast_bf16", "cpu_threads", "device_from_arg", "resolve_amp", "DiskFullError", "append_jsonl",
           "atomic_write_bytes", "atomic_write_text", "finite_json", "human_size", "read_jsonl", "write_jsonl",
           "mask_outline", "overlay_mask"]
