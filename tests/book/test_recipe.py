"""The recipe sweep's rows, and the analyses of the training chapter (learning curve,
time to a level, kinds of expressions, the resolution's bounds)."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from restr.book import analysis
from restr.book.recipe import BEFORE, CONVERGED, SWEEP, sweep_configs
from restr.commands.recipe import main as recipe_main
from restr.config import get_preset


def test_sweep_rows_add_one_change_each_from_the_old_preset():
    rows = sweep_configs("data/synthref", expressions=9600)
    assert [c.name for c, _ in rows] == [c.name for c in SWEEP]
    before = rows[0][1]
    for key, value in BEFORE.items():
        section, name = key.split(".")
        assert getattr(getattr(before, section), name) == value, key
    assert before.train.iterations == 9600 // 16
    recipe = before
    for change, cfg in rows[1:]:
        diff = {line.split(":")[0] for line in recipe.diff(cfg)}
        changed = {k for k in change.overrides} | {"train.iterations", "train.val_every", "train.ckpt_every"}
        assert diff <= changed, (change.name, diff - changed)  # one change to the kept recipe, nothing else
        assert cfg.train.iterations * cfg.train.batch_size == 9600
        if change.kept:
            recipe = cfg
    # the kept rows make the tiny preset's recipe (up to the sweep's length and validation, and the ViT's start:
    # the sweep's was the one of its day, restr.config.FORMER_START; the preset's is now the protocol's)
    last, tiny = recipe, get_preset("tiny")
    keep = {"train.iterations", "train.val_every", "train.ckpt_every", "train.val_max_expressions", "data.root",
            "model.vit_pretrain", "model.vit_pos_init"}
    assert (last.model.vit_pretrain, last.model.vit_pos_init) == ("dense", "random")
    assert [d for d in last.diff(tiny) if d.split(":")[0] not in keep] == []


def test_the_converged_sweep_tries_each_change_alone_against_the_final_start(tmp_path, capsys):
    rows = sweep_configs("data/synthref-v2", expressions=12800, sweep="converged")
    assert [c.name for c, _ in rows] == [c.name for c in CONVERGED]
    start = rows[0][1]
    assert start.model.vit_pretrain == "classify" and start.model.vit_weights == "pretrain"
    assert start.model.vit_pos_init == "sincos"
    # the former start is a row of its own, whose runs keep the folders they were trained in
    former = dict((c.name, cfg) for c, cfg in rows)["random positions"]
    assert former.model.vit_pos_init == "random"
    assert former.run_key() == start.override({"model.vit_pos_init": "random"}).run_key() != start.run_key()
    assert start.data.root == "data/synthref-v2" and start.train.iterations == 12800 // 64
    for change, cfg in rows[1:]:
        diff = {line.split(":")[0] for line in start.diff(cfg)}
        changed = set(change.overrides) | {"train.iterations", "train.val_every", "train.ckpt_every"}
        assert diff and diff <= changed, (change.name, diff - changed)  # the first row plus this change only
        assert cfg.train.iterations * cfg.train.batch_size == 12800
    # data of the other generator version is refused by name, with the command that makes the right one
    from restr.data.synth import generate

    generate(tmp_path, seed=1, num_images=8, progress=False)  # version 1
    assert recipe_main(["sweep", "--sweep", "converged", "--data", str(tmp_path), "--only", "final start"]) == 2
    err = capsys.readouterr().err
    assert "runs on version 2 of the embedded data" in err and f"--out {tmp_path} --version 2" in err
    absent = tmp_path / "absent"
    assert recipe_main(["sweep", "--sweep", "converged", "--data", str(absent), "--only", "final start"]) == 2
    assert f"write it with: python -m restr data synth --out {absent} --version 2" in capsys.readouterr().err
    assert recipe_main(["sweep", "--sweep", "converged", "--only", "no such row"]) == 2
    assert "the rows of --sweep converged are: final start, random positions, 8 per image" in capsys.readouterr().err


def test_a_sweep_takes_sigterm_as_a_stop_request_only_while_it_runs(monkeypatch):
    """Inside the sweep a SIGTERM asks the row under way to stop at a checkpoint; after it,
    the caller's handler is back (one left behind made every later forked pool worker
    ignore the pool's terminate(), and CI hung)."""
    import signal

    from restr.commands import recipe as recipe_cmd
    from restr.config import ConfigError
    from restr.engine.trainer import request_stop

    seen = []

    def run_sweep(*args):
        seen.append(signal.getsignal(signal.SIGTERM))
        raise ConfigError("no row to run")

    monkeypatch.setattr(recipe_cmd, "_check_sweep_args", lambda args, data: None)
    monkeypatch.setattr(recipe_cmd, "run_sweep", run_sweep)
    before = signal.getsignal(signal.SIGTERM)
    assert before is not request_stop
    assert recipe_main(["sweep", "--sweep", "converged", "--only", "final start"]) == 2
    assert seen == [request_stop]
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_sweep_file_keeps_the_rows_not_run_again_and_tells_arithmetic_apart(tmp_path):
    from restr.book.recipe import arithmetic, merge_rows

    def row(name, arith, iou):
        return {"name": name, "arithmetic": arith, "final": {"cum_iou": iou}}

    old = {"sweep": "converged", "expressions": 1000,
           "rows": [row("batch 32", "float32", 0.1), row("final start", "float32", 0.2)]}
    merged = merge_rows(old, [row("final start", "bfloat16", 0.3), row("batch 32", "float32", 0.4)], "converged", 1000)
    assert [(r["name"], r["arithmetic"], r["final"]["cum_iou"]) for r in merged] == [
        ("final start", "bfloat16", 0.3), ("final start", "float32", 0.2), ("batch 32", "float32", 0.4)]
    assert merge_rows(old, [], "converged", 2000) == []  # another budget's file is not merged into this one
    # what a run computed in, read from its log rows
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    assert arithmetic(run) == "unrecorded"
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0, "arithmetic": "bfloat16"}\n')
    assert arithmetic(run) == "bfloat16"
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 2, "loss": 1.0, "arithmetic": "float32"}\n')
    assert arithmetic(run) == "mixed"


def test_expression_kinds_from_programs():
    assert analysis.expression_kind({"attrs": {"colour": "red"}}) == "attributes"
    assert analysis.expression_kind({"attrs": {}, "region": [None, "top"]}) == "region"
    assert analysis.expression_kind({"attrs": {}, "relations": [["left", {}]], "region": [None, "top"]}) == "relation"
    assert analysis.expression_kind({"attrs": {}, "ordinal": ["x", 1], "relations": [["left", {}]]}) == "ordinal"


def test_time_to_a_level_reads_the_first_validation_there():
    curve = pd.DataFrame({"step": [100, 200, 300], "expressions": [6400, 12800, 19200],
                          "minutes": [1.0, 2.5, 4.0], "IoU": [30.0, 52.0, 49.0]})
    assert analysis.time_to(curve, 50) == {"expressions": 12800.0, "minutes": 2.5, "step": 200}
    assert analysis.time_to(curve, 60) is None


def test_resolution_bounds(tmp_path):
    from restr.data.refer import ReferDataset
    from restr.data.synth import generate

    generate(tmp_path, seed=3, num_images=20, progress=False)
    val = ReferDataset(tmp_path, "synthref", "unc", "train", image_size=64, return_original=True)
    b = analysis.resolution_bounds(val, patch_size=8, max_expressions=60)
    assert 80 < b["pixel"] <= 100 and 20 < b["patch"] < b["pixel"]
    coarse = analysis.resolution_bounds(val, patch_size=32, max_expressions=60)
    assert coarse["patch"] < b["patch"]  # bigger patches lose more


def test_starts_table_reads_each_runs_curve_and_start(smoke_run, tmp_path):
    import json
    import shutil

    with pytest.raises(ValueError, match="has no validation in its log"):
        analysis.starts_table({"main": smoke_run})
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    with (run / "metrics.jsonl").open("a") as f:
        for step, iou in ((2, 0.2), (4, 0.45)):
            f.write(json.dumps({"step": step, "split": "val", "cum_iou": iou, "mean_iou": iou,
                                "expressions_seen": 4 * step, "elapsed_s": 30.0 * step}) + "\n")
    t = analysis.starts_table({"main": run}, levels=(30, 101)).iloc[0]
    assert t["start"] == "trained from scratch" and t["steps"] == 4 and t["last val cIoU %"] == pytest.approx(45)
    assert t["to 30 %"] == "2 min (0k expr.)" and t["to 101 %"] == "not reached"


def test_curve_keeps_each_kinds_ciou_when_the_log_has_it(tmp_path):
    from restr.book.recipe import curve

    rows = [{"step": 10, "split": "val", "cum_iou": 0.4, "mean_iou": 0.3, "expressions_seen": 640, "elapsed_s": 5.0},
            {"step": 20, "split": "val", "cum_iou": 0.5, "mean_iou": 0.4, "expressions_seen": 1280, "elapsed_s": 9.0,
             "kinds": {"attributes": {"n": 3, "cum_iou": 0.7}, "ordinal": {"n": 1, "cum_iou": 0.1}}},
            {"step": 20, "loss": 0.2}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    old, new = curve(tmp_path)
    assert "kinds" not in old and new["kinds"] == {"attributes": 0.7, "ordinal": 0.1}
    assert old["precision"] == new["precision"] == {}
    assert (new["step"], new["expressions"], new["seconds"], new["cum_iou"]) == (20, 1280, 9.0, 0.5)


def test_kind_curves_read_a_sweep_curve_and_a_run_log_alike():
    sweep = [{"step": 10, "cum_iou": 0.4}, {"step": 20, "cum_iou": 0.5, "kinds": {"attributes": 0.7, "ordinal": 0.1}}]
    log = [{"step": 20, "kinds": {"attributes": {"n": 3, "cum_iou": 0.7}, "ordinal": {"n": 1, "cum_iou": 0.1}}}]
    a, b = analysis.kind_curves(sweep), analysis.kind_curves(log)
    assert a.to_dict("records") == b.to_dict("records") == [
        {"step": 20, "kind": "attributes", "IoU": 70.0}, {"step": 20, "kind": "ordinal", "IoU": 10.0}]
    assert analysis.kind_curves(sweep[:1]).empty


def test_precision_curves_read_the_longest_rung_that_logs_them(tmp_path):
    from restr.book.recipe import curve

    def rung(name, steps, with_precision):
        rows = [{"step": s, "split": "val", "cum_iou": 0.1 * k, "mean_iou": 0.1, "expressions_seen": 64 * s,
                 "elapsed_s": 1.0, **({"prec@0.5": 0.2 * k, "prec@0.7": 0.1 * k, "prec@0.9": 0.01 * k}
                                      if with_precision else {})}
                for k, s in enumerate((steps // 2, steps), start=1)]
        run = tmp_path / name
        run.mkdir()
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        f = tmp_path / f"{name}.json"
        row = {"name": "final start", "config": {"train": {"iterations": steps}}, "curve": curve(run)}
        f.write_text(json.dumps({"sweep": "converged", "expressions": 64 * steps, "rows": [row]}))
        return f

    files = [rung("short", 100, True), rung("long", 400, True), rung("longest", 800, False)]
    frame = analysis.precision_curves(files)
    assert frame.attrs["steps"] == 400  # the 800-step rung logs no precision
    wide = frame.pivot(index="step", columns="measure", values="value")
    assert list(wide.index) == [200, 400]
    assert wide.loc[400].to_dict() == pytest.approx({"cIoU": 20.0, "IoU > 0.5": 40.0, "IoU > 0.7": 20.0,
                                                     "IoU > 0.9": 2.0})
    assert analysis.precision_curves(files[2:]).empty
