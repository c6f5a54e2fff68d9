"""The convolutional fusion baseline (``model.fusion = "concat-conv"``): shapes, gradients,
what the sentence feature and the coordinates are, its cost, and a smoke training run."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from restr import ConfigError, get_preset
from restr.model import build_model
from restr.model.convfusion import ConcatConvFusion, ConvPatchHead, spatial_coordinates
from restr.perf.cost import measure as measure_cost


def smoke(**model):
    return get_preset("smoke", model={"fusion": "concat-conv", **model}).model


def words_batch(cfg, lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.zeros(len(lengths), cfg.max_words, dtype=torch.long)
    for i, n in enumerate(lengths):  # padded at the front, as the data layer does
        w[i, cfg.max_words - n:] = torch.randint(2, cfg.vocab_size, (n,), generator=g)
    return w


@pytest.mark.parametrize("hw", [(32, 32), (24, 48)])
@pytest.mark.parametrize("decoder", [True, False])
def test_output_shapes(hw, decoder):
    cfg = smoke(decoder=decoder)
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model.fusion, ConcatConvFusion) and isinstance(model.head, ConvPatchHead)
    out = model(torch.randn(3, 3, *hw), words_batch(cfg, [1, 7, 20]))
    assert out.mask_logits.shape == (3, 1, *hw)
    assert out.patch_logits.shape == (3, 1, hw[0] // 8, hw[1] // 8)
    assert out.seed_attention is None
    assert torch.isfinite(out.mask_logits).all()


def test_layers_alternate_3x3_and_1x1_with_groupnorm_and_relu():
    model = build_model(smoke(fusion_layers=4))
    convs = [layer[0] for layer in model.fusion.layers]
    assert [c.kernel_size for c in convs] == [(3, 3), (1, 1), (3, 3), (1, 1)]
    d = model.cfg.dim
    assert convs[0].in_channels == 2 * d + 8 and all(c.out_channels == d for c in convs)
    assert all(isinstance(layer[1], torch.nn.GroupNorm) and isinstance(layer[2], torch.nn.ReLU)
               for layer in model.fusion.layers)


@pytest.mark.parametrize("init", ["default", "release"])
def test_gradients_reach_every_parameter(init):
    cfg = smoke(init=init)
    torch.manual_seed(1)
    model = build_model(cfg)
    masks = (torch.rand(2, 32, 32) > 0.5).float()
    out = model(torch.randn(2, 3, 32, 32), words_batch(cfg, [4, 9]))
    from restr.model.losses import restr_loss

    loss, _ = restr_loss(out.mask_logits, out.patch_logits, masks, tau=0.5, lam=0.1)
    loss.backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert silent == []


def test_the_sentence_feature_is_the_mean_of_the_real_words():
    words = torch.randn(2, 5, 4)
    mask = torch.tensor([[False, False, True, True, True], [True, True, True, True, True]])
    s = ConcatConvFusion.sentence_feature(words, mask)
    torch.testing.assert_close(s[0], words[0, 2:].mean(0))
    torch.testing.assert_close(s[1], words[1].mean(0))


@pytest.mark.parametrize("mask_padding", [True, False])
def test_the_expression_changes_the_prediction_and_padding_does_not(mask_padding):
    cfg = smoke(mask_padding=mask_padding)
    torch.manual_seed(2)
    model = build_model(cfg).eval()
    images = torch.randn(1, 3, 32, 32).expand(2, -1, -1, -1)
    words = words_batch(cfg, [5, 5], seed=3)
    words[1] = words_batch(cfg, [5], seed=4)[0]
    with torch.no_grad():
        out = model(images, words).mask_logits
        assert (out[0] - out[1]).abs().max() > 1e-4  # two expressions, two predictions
        if mask_padding:  # the words alone decide: fewer padding positions give the same prediction
            short = model(images[:1], words[:1, -8:]).mask_logits
            torch.testing.assert_close(short, out[:1], rtol=1e-5, atol=1e-5)


def test_image_index_encodes_each_image_once_with_the_same_result():
    cfg = smoke()
    torch.manual_seed(5)
    model = build_model(cfg).eval()
    images, words = torch.randn(2, 3, 32, 32), words_batch(cfg, [3, 6, 2])
    index = torch.tensor([0, 1, 1])
    with torch.no_grad():
        grouped = model(images, words, index).mask_logits
        flat = model(images[index], words).mask_logits
    torch.testing.assert_close(grouped, flat, rtol=1e-5, atol=1e-5)


def test_spatial_coordinates():
    xy = spatial_coordinates(2, 4)  # (8, gh, gw)
    assert xy.shape == (8, 2, 4)
    torch.testing.assert_close(xy[:, 0, 0], torch.tensor([-1.0, -1.0, -0.5, 0.0, -0.75, -0.5, 0.25, 0.5]))
    torch.testing.assert_close(xy[:, 1, 3], torch.tensor([0.5, 0.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.5]))


def test_bad_options_are_named():
    with pytest.raises(ConfigError, match="model.shared = True: concat-conv has no transformer blocks"):
        smoke(shared=True)
    with pytest.raises(ConfigError, match="model.fusion_layers = 0"):
        smoke(fusion_layers=0)
    model = build_model(smoke())
    with pytest.raises(ValueError, match="no class seed"):
        model(torch.randn(1, 3, 32, 32), words_batch(model.cfg, [3]), return_attention=True)


# ----------------------------------------------------------------------------------------
# cost

def test_paper_scale_cost_is_counted_per_layer():
    """At 480 x 480 (30 x 30 patches, D = 768): two 3 x 3 and two 1 x 1 layers, the first
    on 2D + 8 channels; GroupNorm scales and shifts; MACs = one multiply-add per weight and
    patch. Close to CME's fusion MACs with fewer parameters."""
    cfg = get_preset("paper", model={"fusion": "concat-conv"}).model
    r = measure_cost(cfg, device="meta")
    d, n = 768, 900
    weights = 9 * (2 * d + 8) * d + d * d + 9 * d * d + d * d
    assert r["params"]["fusion"] == weights + 4 * 2 * d
    assert r["macs"]["fusion"] == n * weights
    cme = measure_cost(get_preset("paper").model, device="meta")
    assert r["macs"]["fusion"] / cme["macs"]["fusion"] == pytest.approx(0.97, abs=0.01)
    # the patch logit: D weights and a bias in place of Eq. (9)'s inner product; the decoder unchanged
    assert r["params"]["decoder"] == cme["params"]["decoder"] + d + 1
    assert r["macs"]["decoder"] == cme["macs"]["decoder"]
    assert r["params"]["vision"] == cme["params"]["vision"] and r["params"]["language"] == cme["params"]["language"]


def test_cost_cli_prints_the_baseline():
    out = subprocess.run([sys.executable, "-m", "restr", "cost", "--preset", "tiny", "--fusion", "concat-conv",
                          "--device", "meta"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("concat-conv baseline, 4 convolution layers, 64x64 input")
    fusion_row = next(line for line in out.stdout.splitlines() if line.startswith("fusion"))
    assert fusion_row.split()[1:] == ["0.49M", "0.03G"]


# ----------------------------------------------------------------------------------------
# training

def test_smoke_training_run(data_root, tmp_path):
    """``python -m restr train --preset smoke --set model.fusion=concat-conv`` trains, saves
    and reloads the baseline."""
    from restr.runs.folder import load_run
    from restr.utils import read_jsonl

    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "restr", "train", "--preset", "smoke", "--data", str(data_root),
                          "--set", "model.fusion=concat-conv", "--set", "data.num_workers=0", "--iterations", "8",
                          "--out", str(run), "--no-progress"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [r for r in read_jsonl(run / "metrics.jsonl") if "loss" in r]
    assert rows and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    loaded = load_run(run)
    assert loaded.model.cfg.fusion == "concat-conv" and isinstance(loaded.model.fusion, ConcatConvFusion)
