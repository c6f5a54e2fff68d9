"""check_assets: the paper preset's ViT weights and GloVe file, checked before any work."""
from __future__ import annotations

import pytest

from restr import get_preset
from restr.config import ConfigError
from restr.engine import assets
from restr.engine.assets import AssetError, check_assets

HUB_URL = "https://huggingface.co/timm/vit_base_patch16_384.augreg_in21k_ft_in1k/resolve/main/model.safetensors"


@pytest.fixture
def offline(monkeypatch):
    """No network and an empty Hugging Face cache (the network is never touched)."""
    calls = []
    monkeypatch.setattr(assets, "hub_cached", lambda repo: calls.append(("cache", repo)) or False)
    monkeypatch.setattr(assets, "hub_reachable",
                        lambda url, timeout=5.0: calls.append(("head", url)) or (False, "URLError: no network"))
    return calls


def glove(tmp_path, dim, name="glove.test.300d.txt"):
    path = tmp_path / name
    path.write_text("the " + " ".join(["0.1"] * dim) + "\nred " + " ".join(["0.2"] * dim) + "\n")
    return path


def test_paper_preset_without_network_or_glove_names_both_files(offline):
    with pytest.raises(AssetError) as info:
        check_assets(get_preset("paper"))
    text = str(info.value)
    assert text.startswith("the 'paper' preset needs files that are not available (nothing was loaded or built)")
    assert HUB_URL in text and "--set model.vit_weights=/path/to/model.safetensors" in text
    assert "https://nlp.stanford.edu/data/glove.840B.300d.zip" in text
    assert "--glove /path/to/glove.840B.300d.txt" in text and "--set data.glove=" in text
    assert "URLError: no network" in text
    assert len(text.splitlines()) == 3  # one message, one line per missing file
    assert ("cache", "timm/vit_base_patch16_384.augreg_in21k_ft_in1k") in offline and ("head", HUB_URL) in offline
    assert isinstance(info.value, ConfigError)  # the CLI's exit code 2


def test_cached_or_reachable_hub_weights_pass(monkeypatch, tmp_path):
    cfg = get_preset("paper", data={"glove": str(glove(tmp_path, 300))})
    monkeypatch.setattr(assets, "hub_cached", lambda repo: True)
    monkeypatch.setattr(assets, "hub_reachable", lambda url, timeout=5.0: pytest.fail("no request when cached"))
    check_assets(cfg)
    monkeypatch.setattr(assets, "hub_cached", lambda repo: False)
    monkeypatch.setattr(assets, "hub_reachable", lambda url, timeout=5.0: (True, ""))
    check_assets(cfg)


def test_hf_hub_offline_is_respected(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert assets.hub_reachable(HUB_URL) == (False, "HF_HUB_OFFLINE is set")


def test_local_files_are_checked_without_the_network(offline, tmp_path):
    vit = tmp_path / "vit.safetensors"
    vit.write_bytes(b"x")
    cfg = get_preset("paper", model={"vit_weights": str(vit)}, data={"glove": str(glove(tmp_path, 300))})
    check_assets(cfg)
    assert offline == []
    missing = get_preset("paper", model={"vit_weights": str(tmp_path / "nope.pth")},
                         data={"glove": str(tmp_path / "glove.840B.300d.txt")})
    with pytest.raises(AssetError) as info:
        check_assets(missing)
    text = str(info.value)
    assert "nope.pth' is not a file" in text and "glove.840B.300d.txt' is not a file" in text
    assert HUB_URL in text  # where the paper's ViT comes from


def test_glove_dimension_must_match(offline, tmp_path):
    cfg = get_preset("paper", model={"vit_weights": None}, data={"glove": str(glove(tmp_path, 50, "glove.6B.50d.txt"))})
    with pytest.raises(AssetError, match=r"holds 50-d vectors, but model.word_dim = 300"):
        check_assets(cfg)
    tiny = get_preset("tiny", data={"glove": str(glove(tmp_path, 300))})
    with pytest.raises(AssetError, match=r"holds 300-d vectors, but model.word_dim = 50"):
        check_assets(tiny)


@pytest.mark.parametrize("preset", ["tiny", "smoke"])
def test_small_presets_need_nothing(offline, preset):
    check_assets(get_preset(preset))
    check_assets(get_preset(preset, model={"vit_weights": "pretrain"}))  # made by the trainer
    assert offline == []


def test_release_preset_asks_for_the_same_files(offline):
    with pytest.raises(AssetError, match="the 'release' preset"):
        check_assets(get_preset("release"))


def test_train_command_stops_before_any_work(offline, tmp_path, capsys):
    from restr.commands.train import main
    from restr.data.synth import generate

    root = tmp_path / "data"
    generate(root, seed=1, num_images=8, progress=False)
    out = tmp_path / "run"
    code = main(["--preset", "paper", "--data", str(root), "--dataset", "synthref", "--split-by", "unc",
                 "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "needs files that are not available" in err and HUB_URL in err and "glove.840B.300d" in err
    assert not out.exists()
