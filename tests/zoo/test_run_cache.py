"""The run cache knows the data: a run is keyed by its config AND a fingerprint of its
data (refs and instances files, the vocabulary); a run of other data is reported stale,
and resuming it on the new data is refused."""
from __future__ import annotations

import json
import os

import pytest

from restr.config import get_preset
from restr.data.synth import generate
from restr.zoo.cache import RunMissing, get_run


def tiny_cfg(root):
    return get_preset("smoke", train={"iterations": 2, "val_every": 0, "ckpt_every": 0, "log_every": 1},
                      data={"root": str(root), "num_workers": 0})


def test_regenerated_data_gives_a_new_run_and_the_old_one_is_called_stale(tmp_path, capsys):
    root, runs = tmp_path / "data", tmp_path / "runs"
    generate(root, seed=1, num_images=8, progress=False)
    cfg = tiny_cfg(root)
    first = get_run(cfg, runs, progress=False)
    assert get_run(cfg, runs, progress=False) == first  # cached
    stored = json.loads((first / "config.json").read_text())["data_fingerprint"]
    assert set(stored) >= {"refs", "instances", "vocabulary"}
    capsys.readouterr()

    generate(root, seed=5, num_images=8, progress=False)  # the same path, other contents
    with pytest.raises(RunMissing) as err:
        get_run(cfg, runs, train_if_missing=False)
    assert "stale" in str(err.value) and first.name in str(err.value)
    second = get_run(cfg, runs, progress=False)
    assert second != first and second.parent == first.parent
    notice = capsys.readouterr().err
    assert f"{first} is stale" in notice and "refs(unc).p" in notice and "instances.json" in notice
    assert json.loads((second / "config.json").read_text())["data_fingerprint"] != stored

    # resuming the old run on the new data is refused, naming what changed
    from restr.engine.trainer import TrainingError, train

    with pytest.raises(TrainingError, match=r"data changed since the run started.*refs\(unc\)\.p"):
        train(cfg, first, resume=True, progress=False)


def test_fingerprint_follows_the_files_not_their_times(tmp_path):
    from restr.data.fingerprint import data_fingerprint

    root = tmp_path / "data"
    generate(root, seed=1, num_images=8, progress=False)
    cfg = tiny_cfg(root)
    a = data_fingerprint(cfg.data)
    refs = root / "synthref" / "refs(unc).p"
    os.utime(refs, (1, 1))  # touched, same bytes
    assert data_fingerprint(cfg.data) == a
    inst = root / "synthref" / "instances.json"
    d = json.loads(inst.read_text())
    d["annotations"][0]["area"] = d["annotations"][0].get("area", 0) + 1
    inst.write_text(json.dumps(d))
    b = data_fingerprint(cfg.data)
    assert b["refs"] == a["refs"] and b["vocabulary"] == a["vocabulary"] and b["instances"] != a["instances"]

