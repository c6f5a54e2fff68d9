"""Messages instead of tracebacks: expressions over max_words (warned, reported, shown by
the explorer) and the commands' last raw tracebacks (no GPU, a file that is not a
checkpoint, a bad --out, zero or negative counts, a corrupt image inside a data set)."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restr.data.refer import ReferDataset
from restr.eval.predict import Predictor
from restr.runs.folder import read_run_config

LONG = "the big red circle that is " * 3 + "just below on the far left"  # 24 words after tokenisation


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(path)
    return path


# ----------------------------------------------------------------------------------------
# item 6: expressions over max_words

def test_a_long_expression_is_warned_about_and_reported(smoke_run, image):
    from restr.data.vocab import tokenize

    p = Predictor.from_run(smoke_run)
    words = tokenize(LONG)
    assert len(words) == 24 and p.cfg.model.max_words == 20
    with pytest.warns(UserWarning, match=r"24 words; the model reads only the first 20: 'on the far left' is ignored"):
        r = p.predict(image, LONG)
    assert r["truncated_words"] == words[20:]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert p.predict(image, "the red circle")["truncated_words"] == []


def test_predict_cli_reports_the_truncation(smoke_run, image, tmp_path, capsys):
    from restr.commands.predict import main

    out = tmp_path / "m.png"
    assert main(["--run", str(smoke_run), "--image", str(image), "--text", LONG, "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    assert "warning: the expression has 24 words; the model reads only the first 20" in captured.err
    assert json.loads(captured.out)["truncated_words"] == ["on", "the", "far", "left"]


def test_the_explorer_shows_the_truncation(smoke_run):
    import matplotlib

    matplotlib.use("Agg")
    from restr.book.explorer import Explorer

    cfg = read_run_config(smoke_run)
    p = Predictor.from_run(smoke_run)
    val = ReferDataset(cfg.data.root, "synthref", "unc", "val")
    explorer = Explorer(p, val)
    image_id = next(iter(explorer.examples))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig = explorer.run(image_id, LONG)
    texts = " ".join(t.get_text() for ax in fig.axes for t in [ax.title, *ax.texts]) + " ".join(
        t.get_text() for t in fig.texts)
    assert "24 words: the model reads the first 20" in texts and "ignored: on the far left" in texts
    labels = [t.get_text() for t in fig.axes[2].get_yticklabels()]
    assert labels[:-1] == LONG.split()[:20]  # the attention bars are those of the words read
    import matplotlib.pyplot as plt

    plt.close(fig)


# ----------------------------------------------------------------------------------------
# item 11: the remaining raw tracebacks

@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_a_gpu(smoke_run, image, tmp_path, capsys):
    from restr.commands.evaluate import main as evaluate_main
    from restr.commands.predict import main as predict_main

    assert evaluate_main(["--run", str(smoke_run), "--device", "cuda", "--no-progress"]) == 2
    assert "--device cuda: CUDA is not available" in capsys.readouterr().err
    assert predict_main(["--run", str(smoke_run), "--image", str(image), "--text", "red", "--out",
                         str(tmp_path / "m.png"), "--device", "cuda"]) == 2
    assert "--device cuda: CUDA is not available" in capsys.readouterr().err
    assert predict_main(["--run", str(smoke_run), "--image", str(image), "--text", "red", "--out",
                         str(tmp_path / "m.png"), "--device", "gpu"]) == 2
    assert "--device gpu: not a device" in capsys.readouterr().err


def test_predict_checkpoint_that_is_not_a_checkpoint(smoke_run, image, tmp_path, capsys):
    from restr.commands.predict import main

    base = ["--run", str(smoke_run), "--image", str(image), "--text", "red", "--out", str(tmp_path / "m.png")]
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    for bad in (text, image, tmp_path):
        assert main([*base, "--checkpoint", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and str(bad) in err and "Traceback" not in err
        assert "not a restr checkpoint" in err or "is a folder" in err


def test_predict_out_is_checked_before_inference(smoke_run, image, tmp_path, capsys):
    from restr.commands.predict import main

    base = ["--run", str(tmp_path / "no-such-run"), "--image", str(image), "--text", "red"]
    assert main([*base, "--out", str(tmp_path)]) == 2  # checked before the (missing) run is even loaded
    assert f"--out {tmp_path} is a folder" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "mask.xyz")]) == 2
    assert "--out " in (err := capsys.readouterr().err) and "'.xyz'" in err and ".png" in err
    assert main([*base, "--out", str(tmp_path / "m.png"), "--overlay", str(tmp_path / "o.nope")]) == 2
    assert "--overlay" in capsys.readouterr().err


def test_evaluate_counts_must_be_positive(smoke_run, capsys):
    from restr.commands.evaluate import main

    for option, value in (("--batch-size", "0"), ("--max-expressions", "-3"), ("--max-expressions", "0"),
                          ("--workers", "-1"), ("--threads", "0")):
        assert main(["--run", str(smoke_run), option, value, "--json", "--no-progress"]) == 2
        captured = capsys.readouterr()
        assert f"{option} {value}: must be" in captured.err and captured.out == ""


def test_evaluate_json_is_standard_json(smoke_run, tmp_path, capsys):
    from restr.commands.evaluate import main

    out = tmp_path / "r.json"
    threads = torch.get_num_threads()
    try:
        assert main(["--run", str(smoke_run), "--max-expressions", "3", "--json", "--no-progress", "--workers", "0",
                     "--threads", "3", "--output", str(out)]) == 0
        assert torch.get_num_threads() == 3  # --threads is what the CPU evaluation ran with
    finally:
        torch.set_num_threads(threads)
    text = capsys.readouterr().out
    for doc in (text, out.read_text()):
        json.loads(doc, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_data_synth_counts_must_be_positive(tmp_path, capsys):
    from restr.commands.data import main

    for option, value in (("--num-images", "0"), ("--num-images", "3"), ("--expressions", "0"),
                          ("--quality", "101"), ("--workers", "-2"), ("--scale", "0")):
        assert main(["synth", "--out", str(tmp_path / "d"), option, value, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {option} {value}: ") and "Traceback" not in err


@pytest.fixture()
def broken_image_data(smoke_run, tmp_path):
    """A copy of the smoke run's data with one training image cut short."""
    src = Path(read_run_config(smoke_run).data.root)
    root = tmp_path / "data"
    shutil.copytree(src, root)
    train_set = ReferDataset(root, "synthref", "unc", "train")
    path = train_set.image_path(train_set.image_ids()[0])
    path.write_bytes(path.read_bytes()[:200])
    return root, path


def test_a_corrupt_image_inside_a_training_set_is_one_line(broken_image_data, tmp_path, capsys):
    from restr.commands.train import main

    root, path = broken_image_data
    code = main(["--preset", "smoke", "--data", str(root), "--workers", "1", "--iterations", "40",
                 "--set", "train.val_every=0", "--no-progress", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and "DataLoader worker" not in err.splitlines()[0]
    first = err.splitlines()[0]
    assert first.startswith("error: cannot read image ") and str(path) in first
    assert f"python -m restr data stats --root {root} --dataset synthref --split-by unc" in err
    assert len(err.strip().splitlines()) <= 3
