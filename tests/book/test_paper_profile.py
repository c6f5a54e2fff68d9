"""The paper preset end to end on CPU: the real model with its weights files, tiny data.

Everything the paper profile needs is written by the test itself: a random ViT-B/16
checkpoint in timm's format (384 px, so its 24 x 24 position embeddings are resized),
a small ``glove.*.300d.txt`` covering the data's words, a refer-format data set of 8
images. Only the image size (64 x 64) and the iteration count (2) are reduced: the
model is the paper's (ViT-B/16, 300-d words, 6 language layers, D = 768, CME 2 + 2,
decoder), trained through ``restr.engine.trainer.train`` and scored by ``evaluate_run``.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from restr import get_preset
from restr.engine.assets import check_assets


@pytest.fixture(scope="module")
def paper_files(tmp_path_factory):
    from safetensors.torch import save_file
    from timm.models.vision_transformer import VisionTransformer

    from restr.data.refer import ReferDataset
    from restr.data.synth import generate

    root = tmp_path_factory.mktemp("paper")
    data = root / "data"
    generate(data, seed=1, num_images=8, progress=False)
    # ViT-B/16 at 384 px with an ImageNet head, as timm's hub file holds it
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=384, patch_size=16, embed_dim=768, depth=12, num_heads=12, num_classes=1000)
    state = {k: v.contiguous() for k, v in vit.state_dict().items()}
    del vit
    weights = root / "vit_base_patch16_384.safetensors"
    save_file(state, str(weights))
    # 300-d vectors for every word of the training split, and one extra word
    words = [w for w in ReferDataset(data, "synthref", "unc", "train").vocab.words if not w.startswith("<")]
    rng = np.random.default_rng(0)
    vectors = {w: rng.standard_normal(300).astype(np.float32) for w in [*words, "unused"]}
    glove = root / "glove.test.300d.txt"
    glove.write_text("".join(f"{w} {' '.join(f'{x:.6f}' for x in v)}\n" for w, v in vectors.items()))
    return {"data": data, "weights": weights, "state": state, "glove": glove,
            "vectors": {w: np.array([float(f"{x:.6f}") for x in v], dtype=np.float32) for w, v in vectors.items()}}


@pytest.mark.slow
def test_paper_profile_trains_and_evaluates_on_cpu(paper_files, tmp_path):
    from restr.data.vocab import Vocabulary
    from restr.engine.trainer import train
    from restr.eval.evaluate import evaluate_run
    from restr.model.vision import resize_pos_embed
    from restr.runs.folder import VOCAB_FILE, checkpoint_path, load_checkpoint, read_run_config

    f = paper_files
    cfg = get_preset("paper").override({
        "model.vit_weights": str(f["weights"]), "data.glove": str(f["glove"]),
        "data.root": str(f["data"]), "data.dataset": "synthref", "data.split_by": "unc", "data.num_workers": 0,
        "model.image_size": 64, "train.iterations": 2, "train.batch_size": 2, "train.warmup": 0.5,
        "train.val_every": 0, "train.ckpt_every": 0, "train.log_every": 1,
    })
    paper = get_preset("paper")
    assert {line.split(":")[0] for line in paper.diff(cfg)} == {
        "model.vit_weights", "data.glove", "data.root", "data.num_workers", "model.image_size", "train.iterations",
        "train.batch_size", "train.warmup", "train.val_every", "train.ckpt_every", "train.log_every"}
    check_assets(cfg)  # the trainer's first call: both files are there

    run = train(cfg, tmp_path / "run", progress=False, device="cpu")
    result = evaluate_run(run, split="val", max_expressions=4, num_workers=0, batch_size=4)
    assert result["expressions"] == 4
    assert 0.0 <= result["cum_iou"] <= 1.0 and math.isfinite(result["mean_iou"])

    # what was trained, read from the run's files (no second model build)
    cfg_run = read_run_config(run)
    assert cfg_run.model.vit_weights == str(f["weights"])
    assert (cfg_run.model.vit_dim, cfg_run.model.word_dim, cfg_run.model.dim, cfg_run.model.lang_mlp) == \
        (768, 300, 768, 3072)
    state = load_checkpoint(checkpoint_path(run, "last"))
    assert state["step"] == 2
    weights = state["model"]
    # the ViT started from the file (two steps at lr <= 1e-6 move a weight by ~1e-6 at most)
    torch.testing.assert_close(weights["vision.vit.blocks.5.mlp.fc1.weight"], f["state"]["blocks.5.mlp.fc1.weight"],
                               rtol=0, atol=1e-5)
    expected_pos = resize_pos_embed(f["state"]["pos_embed"], (4, 4), 1, "bicubic_antialias")  # 24 x 24 -> 4 x 4
    torch.testing.assert_close(weights["vision.vit.pos_embed"], expected_pos, rtol=0, atol=1e-5)
    # the words started from the GloVe file (lr 1e-5)
    vocab = Vocabulary.load(run / VOCAB_FILE)
    embed = weights["language.embed.weight"]
    for word in vocab.words[2:6]:  # the most frequent words
        torch.testing.assert_close(embed[vocab.index[word]], torch.from_numpy(f["vectors"][word]), rtol=0, atol=1e-4)
    assert torch.equal(embed[0], torch.zeros(300))


def _refcocog_layout(data, root):
    """The synthetic set laid out as the paper profile's data (refcocog, google split)."""
    import shutil

    target = root / "refcocog"
    target.mkdir(parents=True)
    shutil.copy(data / "synthref" / "refs(unc).p", target / "refs(google).p")
    shutil.copy(data / "synthref" / "instances.json", target / "instances.json")
    (target / "images").symlink_to((data / "synthref" / "images").resolve())
    return root


def _book(args, tmp_path, env=None):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "restr", "book", "--profile", "paper", "--no-site",
                           "--runs", str(tmp_path / "runs"), "--build", str(tmp_path / "build"), *args],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1",
                                                                             "RESTR_NO_ZOO": "1", **(env or {})})


@pytest.mark.slow
def test_paper_book_without_its_files_stops_before_any_notebook(paper_files, tmp_path):
    data = _refcocog_layout(paper_files["data"], tmp_path / "refer")
    done = _book(["--data", str(data), "--only", "01"], tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "vit_base_patch16_384.augreg_in21k_ft_in1k" in done.stderr and "glove.840B.300d" in done.stderr
    assert "model.vit_weights" in done.stderr and "data.glove" in done.stderr
    assert not (tmp_path / "build").exists() and not (tmp_path / "runs").exists()
    bad = _book(["--data", str(data), "--only", "01", "--set", "model.no_such_field=1"], tmp_path)
    assert bad.returncode == 2 and "no_such_field" in bad.stderr


@pytest.mark.slow
def test_paper_profile_notebook_runs_through_papermill(paper_files, tmp_path):
    """Chapter 1 under the paper profile, with the files given as the README says (--set)."""
    import json

    f = paper_files
    data = _refcocog_layout(f["data"], tmp_path / "refer")
    done = _book(["--data", str(data), "--only", "01", "--set", f"model.vit_weights={f['weights']}",
                  "--set", f"data.glove={f['glove']}", "--set", "model.image_size=64",
                  "--set", "train.iterations=2", "--set", "train.batch_size=2", "--set", "data.num_workers=0"],
                 tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    executed = tmp_path / "build" / "executed" / "paper" / "01_patch_embedding.ipynb"
    text = json.dumps(json.loads(executed.read_text())["cells"])
    assert "preset paper" in text and "(64, 64)" in text  # the paper preset, at the reduced size
    runs = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1 and runs[0].name.startswith("paper-")
    cfg = json.loads((runs[0] / "config.json").read_text())
    assert cfg["model"]["vit_dim"] == 768 and cfg["model"]["word_dim"] == 300
    assert cfg["model"]["vit_weights"] == str(f["weights"]) and cfg["train"]["iterations"] == 2
