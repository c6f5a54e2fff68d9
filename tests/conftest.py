"""Fixtures shared by several test modules."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """A smoke-preset run trained for 4 steps on a freshly generated 8-image synthref set."""
    from restr.config import get_preset
    from restr.data.synth import generate
    from restr.train import train

    root = tmp_path_factory.mktemp("synthref")
    generate(root, seed=2, num_images=8, progress=False)
    cfg = get_preset("smoke", train={"iterations": 4, "ckpt_every": 0, "val_every": 0, "batch_size": 4},
                     data={"root": str(root), "num_workers": 0})
    return train(cfg, tmp_path_factory.mktemp("runs") / "smoke", progress=False)
