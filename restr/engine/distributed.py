"""Several processes, one model: torchrun's environment, the process group, gathers.

``python -m restr train`` runs as one process, or under torchrun as N (one per GPU, or
N CPU processes with gloo). :func:`setup_distributed` reads torchrun's variables and
returns a :class:`Dist` that the trainer passes around; everything else asks it.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


class DistributedError(RuntimeError):
    """The asked-for device or process group cannot be used."""


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    launched: bool = False  # started by torchrun (even with one process)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """The distributed path (process group, DDP, all-reduces) is on."""
        return self.world > 1 or self.launched

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (``[obj]`` in a single process). Every rank
        must call it."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def setup_distributed(device: str = "auto") -> Dist:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK and init the process group.

    Under torchrun the distributed path is taken even with one process (``torchrun
    --nproc_per_node 1``), so that a single GPU can check it: the process group, the
    DDP wrapper and every all-reduce run as with N processes. Backend nccl on CUDA,
    gloo on CPU. ``device``: auto | cpu | cuda.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    launched = world > 1 or "TORCHELASTIC_RUN_ID" in os.environ
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DistributedError("--device cuda was asked for but CUDA is not available")
        dev = torch.device("cuda", local if launched else (torch.device(device).index or 0))
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if launched and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        if rank == 0:
            print(f"distributed: {backend}, world size {world}, DistributedDataParallel on {dev}", file=sys.stderr)
    return Dist(rank, world, local, dev, launched)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
