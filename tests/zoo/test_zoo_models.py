"""Every model committed to the zoo (data/zoo/) reproduces its manifest's numbers.

The embedded data set is regenerated from its seed (the zoo's models were trained on
these very bytes: the fingerprints must match), each model is rebuilt from its fp16
file exactly as the book rebuilds it, and the fixed validation slice is scored again on
the CPU: the metrics must equal the manifest's, digit for digit, where this machine
computes in the arithmetic the manifest's metrics were computed in (bf16 autocast needs a
CPU with native bf16), and agree to rounding where it cannot.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest

from restr.book.analysis import scoring_cpu
from restr.book.runner import book_profile
from restr.config import Config
from restr.data.fingerprint import data_fingerprint, short
from restr.data.synth import generate
from restr.zoo.manifest import (EVAL_SLICE, cpu_name, entry_arithmetic, entry_model, eval_arithmetic, evaluate_slice,
                                find, materialize, read_manifest, zoo_folder)

MODELS = read_manifest(zoo_folder())
WEIGHTED = [m for m in MODELS if m["file"] is not None]  # the rest ship their log and scores (test below)


@pytest.fixture(scope="module")
def profile_data(tmp_path_factory):
    """The embedded data set of a book profile (``quick``: version 1; ``converged``: version
    2), regenerated from its seed once per module and profile."""
    made = {}

    def data_of(profile_name: str):
        if profile_name not in made:
            synth = book_profile(profile_name).synth
            root = tmp_path_factory.mktemp(f"synthref-{profile_name}")
            sizes = {} if synth.num_images is None else {"num_images": synth.num_images}
            generate(root, seed=synth.seed, version=synth.version, progress=False, **sizes)
            made[profile_name] = root
        return made[profile_name]

    return data_of


def test_the_zoo_is_committed_and_within_budget():
    assert MODELS, f"no zoo models in {zoo_folder()}"
    quick = [m for m in MODELS if entry_model(m)[0] == "quick"]
    size = sum((zoo_folder() / m["file"]).stat().st_size for m in quick)
    assert size < 80e6, f"the quick zoo holds {size / 1e6:.1f} MB"  # the whole zoo's limit: test_zoo.py
    assert len({m["name"] for m in MODELS}) == len(MODELS)
    assert len({m["sha256"] for m in WEIGHTED}) == len(WEIGHTED)


@pytest.mark.slow
@pytest.mark.parametrize("entry", WEIGHTED, ids=[m["name"] for m in WEIGHTED])
def test_zoo_model_reproduces_its_manifest(entry, profile_data, tmp_path):
    data = profile_data(entry_model(entry)[0])  # the data set of the profile it was trained for
    cfg = Config.from_dict(entry["config"]).override({"data.root": str(data), "data.num_workers": 0})
    fingerprint = short(data_fingerprint(cfg.data))
    assert fingerprint == entry["data_fingerprint"], "the regenerated data set differs from the zoo's"
    assert find(cfg)["name"] == entry["name"]
    run = materialize(entry, tmp_path / "run", cfg)
    metrics = evaluate_slice(run)
    assert metrics["expressions"] == EVAL_SLICE["max_expressions"]
    if eval_arithmetic(cfg) == entry_arithmetic(entry) and entry.get("cpu") == cpu_name():
        assert metrics == entry["metrics"]  # the same arithmetic on the same kind of CPU: digit for digit
    else:
        # a CPU without native bf16 computes what was measured in bf16 in fp32, and another CPU's bf16
        # kernels (AMX tiles against AVX512-BF16 dot products) sum in another order: the same masks up
        # to rounding, so a few of 1,000 expressions may cross a threshold (seen on a Zen 3 in fp32:
        # precisions up to 0.004 apart, mean IoUs 3e-4, cumulative IoUs 5e-5; on an EPYC without
        # AVX-512 in fp32: precisions up to 0.006 (converged-table4-2L-dec-s0 at 0.7: 0.429 against
        # 0.423); on a Xeon with AMX in bf16: precisions 0.001, mean IoUs 1e-4, cumulative IoUs 4e-5).
        # A precision is a count over a threshold, so it gets a bound in expressions, 1 % of the slice;
        # the IoUs themselves, which move with the masks continuously, keep the tight bound.
        assert metrics["cum_iou"] == pytest.approx(entry["metrics"]["cum_iou"], abs=1e-3)
        assert metrics["mean_iou"] == pytest.approx(entry["metrics"]["mean_iou"], abs=1e-3)
        for x in ("0.5", "0.6", "0.7", "0.8", "0.9"):
            assert abs(metrics[f"prec@{x}"] - entry["metrics"][f"prec@{x}"]) <= 0.01, x
    # fp16 storage costs less than 0.1 IoU points against the fp32 run
    assert abs(entry["metrics"]["cum_iou"] - entry["fp32_metrics"]["cum_iou"]) < 1e-3
    # the scores shipped with the model (data/zoo/scores/) are this evaluation's, expression by expression
    shipped = run / "scores" / "val-pixel-1000.csv"
    stamp = json.loads(shipped.with_suffix(".json").read_text()) if shipped.is_file() else None
    if stamp is not None and stamp["arithmetic"] == eval_arithmetic(cfg):
        scores = pd.read_csv(shipped)
        assert len(scores) == metrics["expressions"]
        cum_iou, mean_iou = scores.intersection.sum() / scores.union.sum(), scores.iou.mean()
        if stamp.get("computed_on") == scoring_cpu():  # the same bf16 kernels: digit for digit
            assert cum_iou == pytest.approx(metrics["cum_iou"], rel=1e-12)
            assert mean_iou == pytest.approx(metrics["mean_iou"], rel=1e-9)
            assert (scores.iou >= 0.5).mean() == metrics["prec@0.5"]
        else:  # scored on another CPU (AMX tiles against AVX512-BF16 sums): the same up to rounding, as above
            assert cum_iou == pytest.approx(metrics["cum_iou"], abs=1e-3)
            assert mean_iou == pytest.approx(metrics["mean_iou"], abs=1e-3)
            assert abs((scores.iou >= 0.5).mean() - metrics["prec@0.5"]) <= 0.005


def test_a_model_without_weights_ships_the_scores_of_its_manifest():
    """A model that ships no weights (the converged campaign's later seeds) cannot be evaluated
    again; its shipped scores of the whole validation split must hold the manifest's slice,
    which its fp16 weights scored when it joined the zoo: the slice's expressions picked out of
    them give the manifest's metrics."""
    from restr.eval.evaluate import spread_indices

    for entry in (m for m in MODELS if m["file"] is None):
        shipped = zoo_folder() / "scores" / entry["name"] / f"{EVAL_SLICE['split']}-pixel-all.csv.gz"
        assert shipped.is_file(), f"{entry['name']} ships neither its weights nor {shipped.name}"
        stamp = json.loads(shipped.with_name(shipped.name.replace(".csv.gz", ".json")).read_text())
        assert stamp["weights_sha256"] == entry["weights_sha256"] and stamp["arithmetic"] == entry_arithmetic(entry)
        scores = pd.read_csv(shipped)
        part = scores.iloc[spread_indices(len(scores), EVAL_SLICE["max_expressions"])]
        assert len(part) == entry["metrics"]["expressions"]
        assert part.intersection.sum() / part.union.sum() == pytest.approx(entry["metrics"]["cum_iou"], abs=1e-4)
        assert part.iou.mean() == pytest.approx(entry["metrics"]["mean_iou"], abs=1e-4)
        assert abs((part.iou >= 0.5).mean() - entry["metrics"]["prec@0.5"]) <= 0.002
