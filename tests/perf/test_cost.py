"""Table 3(b) and Table 5 counts, measured by restr.perf.cost on the paper preset.

The paper preset is built on the meta device (shape-only tensors): the forward pass
dispatches the same operators, so FlopCounterMode sees the same matrix products; one
test checks that a real CPU run gives the same counts.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from restr import get_preset
from restr.perf.cost import measure as measure_cost

LAYER = 7_087_872  # one ViT-B transformer layer (D=768, MLP 3072, qkv bias)


def measure(**model):
    return measure_cost(get_preset("paper", model=model).model, device="meta")


@pytest.mark.parametrize("fusion", ["vme", "ime", "cme"])
def test_table3b_fusion_parameters(fusion):
    r = measure(fusion=fusion)
    assert round(r["params"]["fusion"] / 1e6, 2) == 28.35
    # four layers plus the seed and the output norm, nothing else
    assert r["params"]["fusion"] == 4 * LAYER + 768 + 2 * 768


def test_table3b_shared_parameters():
    r = measure(fusion="cme", shared=True)
    assert round(r["params"]["fusion"] / 1e6, 2) == 14.18


@pytest.mark.parametrize("fusion,paper_gmacs", [("vme", 31.36), ("ime", 15.96), ("cme", 15.96)])
def test_table3b_fusion_macs_at_480(fusion, paper_gmacs):
    r = measure(fusion=fusion)
    assert r["config"]["num_patches"] == 900
    assert r["macs"]["fusion"] / 1e9 == pytest.approx(paper_gmacs, rel=0.01)


def test_shared_fusion_has_the_same_macs():
    assert measure(shared=True)["macs"]["fusion"] == measure()["macs"]["fusion"]


def test_table5_whole_model_at_320_release_width():
    r = measure(image_size=320, lang_mlp=1200)
    assert r["params"]["total"] / 1e6 == pytest.approx(122.87, rel=0.02)
    assert r["macs"]["total"] / 1e9 == pytest.approx(52.29, rel=0.02)
    shared = measure(image_size=320, lang_mlp=1200, shared=True)
    assert shared["params"]["total"] / 1e6 == pytest.approx(108.70, rel=0.02)
    assert r["params"]["total"] - shared["params"]["total"] == 2 * LAYER
    # reference points for the timm ViT-B/16 at 320 (no head), measured once with FlopCounterMode on timm's own model
    assert round(r["params"]["vision"] / 1e6, 2) == 85.96
    assert round(r["macs"]["vision"] / 1e9, 2) == 37.26


def test_table5_text_width_is_about_7m_larger():
    release = measure(image_size=320, lang_mlp=1200)
    text = measure(image_size=320)  # the paper's text: 3,072
    extra = text["params"]["total"] - release["params"]["total"]
    assert extra == 6 * 2 * 300 * (3072 - 1200) + 6 * (3072 - 1200)  # fc1 + fc2 weights and fc1 bias
    assert 6.5e6 < extra < 7.5e6


def test_word_embeddings_are_reported_apart():
    r = measure()
    assert r["params"]["word_embeddings"] == 12112 * 300
    assert "word_embeddings" not in r["macs"]


def test_decoder_blocks_cost_about_the_same():
    r = measure(image_size=320)
    # ~1.9G per block: Table 5's 52.29G adds up only so
    assert r["macs"]["decoder"] / 1e9 == pytest.approx(4 * 1.887, rel=0.02)
    off = measure(image_size=320, decoder=False)
    assert off["params"]["decoder"] == 0
    assert off["macs"]["decoder"] == 400 * 768  # only the inner product of Eq. (9) is left


def test_real_cpu_run_counts_the_same_as_meta():
    cfg = get_preset("smoke", model={"fusion": "vme"}).model
    assert measure_cost(cfg, device="cpu")["macs"] == measure_cost(cfg, device="meta")["macs"]


def test_cli_json_has_params_and_macs():
    out = subprocess.run(
        [sys.executable, "-m", "restr", "cost", "--preset", "paper", "--fusion", "vme", "--shared",
         "--image-size", "320", "--lang-mlp", "1200", "--device", "meta", "--json"],
        capture_output=True, text=True, check=True,
    )
    data = json.loads(out.stdout)
    assert set(data["params"]) >= {"vision", "language", "fusion", "decoder", "total"}
    assert set(data["macs"]) >= {"vision", "language", "fusion", "decoder", "total"}
    assert data["config"]["fusion"] == "vme" and data["config"]["shared"] is True
    assert data["params"]["fusion"] == LAYER + 768 + 1536  # shared VME: one block


def test_cli_rejects_bad_preset():
    out = subprocess.run([sys.executable, "-m", "restr", "cost", "--preset", "huge"], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown preset 'huge'" in out.stderr
