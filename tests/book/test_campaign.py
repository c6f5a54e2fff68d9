"""The converged campaign's progress, read from the repository alone (the zoo's manifest
and logs, the parked runs): what a fresh clone's chapter 6 and `zoo campaign` show."""
from __future__ import annotations

import gzip
import json

from restr.book import budget
from restr.book import campaign
from restr.book.campaign import campaign_status, float32_slowdown, format_status, trained_in
from restr.book.models import book_models
from restr.book.runner import book_profile


def test_the_campaign_status_says_where_every_run_is(tmp_path, monkeypatch):
    monkeypatch.setattr(budget, "BUDGET_FILE", tmp_path / "protocol-budget.json")
    (tmp_path / "protocol-budget.json").write_text(json.dumps({"steps": 4500}))
    zoo, park = tmp_path / "zoo", tmp_path / "parked"
    zoo.mkdir()
    # the main arm's seed 0 in the zoo: a log whose last fifth is flat (the rule passes)
    flat = [0.30, 0.50, 0.60, 0.64, 0.66, 0.67, 0.675, 0.676, 0.676, 0.677]
    rows = [{"step": 450 * (i + 1), "split": "val", "cum_iou": v} for i, v in enumerate(flat)]
    (zoo / "converged-main-s0.metrics.jsonl.gz").write_bytes(gzip.compress(
        "".join(json.dumps(r) + "\n" for r in [{"step": 10, "loss": 1.0}] + rows).encode()))
    entry = {"name": "converged-main-s0", "metrics_file": "converged-main-s0.metrics.jsonl.gz", "wall_s": 3000.0,
             "cpu_s": 3600.0, "profile": "converged", "seed": 0, "config": {"model": {}}}
    (zoo / "manifest.json").write_text(json.dumps({"models": [entry]}))
    # Table 3's VME, seed 0, parked part-way under its run's name
    profile = book_profile("converged")
    vme = next(m for m in book_models(profile) if m.name == "table3-vme")
    cfg = vme.config(profile, profile.data_root, 0)  # the data root as zoo train names it
    spot = park / f"{cfg.preset}-{cfg.run_key()}-0123abcd" / "checkpoints"  # any data fingerprint
    spot.mkdir(parents=True)
    (spot / "last.pt").write_bytes(b"weights")
    (spot / "last.json").write_text(json.dumps({"step": 1200, "iterations": 4500}))

    status = campaign_status(zoo_dir=zoo, park_dir=park)
    assert len(status) == budget.campaign_runs() == 51
    assert list(status.seed[:19]) == [0] * 19 and set(status.seed[19:]) == {1, 2}  # seed 0 of every model first
    main = status.iloc[0]
    assert (main.model, main.state, main.converged) == ("main", "in the zoo", "passes")
    assert abs(main["val cIoU %"] - 67.7) < 1e-9 and main.minutes == 50 and main["CPU hours"] == 1
    assert status.set_index(["model", "seed"]).loc[("table3-vme", 0), "state"] == "parked at step 1,200"
    assert (status.state == "to train").sum() == 49
    keeps = status.set_index(["model", "seed"])["zoo keeps"]
    assert (keeps == "log, scores").sum() == 28 and keeps[("table3-vme", 2)] == keeps[("table4-2L", 0)] == "weights"
    text = format_status(status)
    assert ("1 of the campaign's 51 runs are in the zoo (1 of the 19 first seeds, which are trained first), "
            "1 parked part-way; they took 1.0 CPU hours, 50 minutes a run on average, and 1 of them pass") in text
    # the time left: each run's model's recorded minutes (here only main's 50, for every ReSTR model), less what a
    # parked run has done; M3Att's 15 runs have no recorded time of their family yet
    left = status.set_index(["model", "seed"])["minutes left"]
    assert left[("table3-vme", 0)] == 50 * (1 - 1200 / 4500) and left[("table4-2L", 1)] == 50
    assert left[("m3att", 0)] != left[("m3att", 0)]  # NaN
    hours = (34 * 50 + 50 * (1 - 1200 / 4500)) / 60 / 2
    assert f"Left: about {hours:.0f} hours of wall time, 2 runs at a time" in text
    assert "15 run(s) with no estimate yet" in text
    # a run still rising in its last fifth fails the rule
    rows[-1]["cum_iou"] = 0.75
    (zoo / "converged-main-s0.metrics.jsonl.gz").write_bytes(gzip.compress(
        "".join(json.dumps(r) + "\n" for r in rows).encode()))
    status = campaign_status(zoo_dir=zoo, park_dir=park)
    assert status.iloc[0].converged == "fails (still learning)" and status.iloc[0]["last-fifth rise"] > 1
    # a run whose CPU time is not known (resumed from a checkpoint that did not keep it) is not counted
    entry["cpu_s"] = None
    (zoo / "manifest.json").write_text(json.dumps({"models": [entry]}))
    assert ("they took 0.0 CPU hours (1 run(s) not counted: resumed from a checkpoint that did not keep its CPU "
            "time)") in format_status(campaign_status(zoo_dir=zoo, park_dir=park))
    # runs under way on this machine (zoo campaign --runs): ahead of the parked copy, or just started
    runs = tmp_path / "runs"
    ahead = runs / f"{cfg.preset}-{cfg.run_key()}-0123abcd" / "checkpoints"
    ahead.mkdir(parents=True)
    (ahead / "last.pt").write_bytes(b"weights")
    (ahead / "last.json").write_text(json.dumps({"step": 2400, "iterations": 4500}))
    ime = next(m for m in book_models(profile) if m.name == "table3-ime").config(profile, profile.data_root, 0)
    (runs / f"{ime.preset}-{ime.run_key()}-0123abcd").mkdir()
    status = campaign_status(zoo_dir=zoo, park_dir=park, runs_dir=runs).set_index(["model", "seed"])
    assert status.loc[("table3-vme", 0), "state"] == "at step 2,400 here"
    assert status.loc[("table3-ime", 0), "state"] == "started here"
    assert "2 under way on this machine" in format_status(status.reset_index())
    (ahead / "last.json").write_text(json.dumps({"step": 600, "iterations": 4500}))  # behind the parked copy
    status = campaign_status(zoo_dir=zoo, park_dir=park, runs_dir=runs).set_index(["model", "seed"])
    assert status.loc[("table3-vme", 0), "state"] == "parked at step 1,200"


def test_the_fidelity_page_reads_the_three_starts_from_the_zoo(tmp_path, monkeypatch):
    from restr.book.fidelity import starts_section

    monkeypatch.setattr(budget, "BUDGET_FILE", tmp_path / "protocol-budget.json")
    (tmp_path / "protocol-budget.json").write_text(json.dumps({"steps": 1000}))
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    assert "None of the three is in the zoo yet" in starts_section(zoo)

    def ship(arm, ious, model_cfg):
        name = f"converged-{arm}-s0"
        rows = [{"step": 100 * (i + 1), "split": "val", "cum_iou": v / 100, "mean_iou": v / 100,
                 "elapsed_s": 60.0 * (i + 1), "expressions_seen": 6400 * (i + 1)} for i, v in enumerate(ious)]
        (zoo / f"{name}.metrics.jsonl.gz").write_bytes(gzip.compress(
            "".join(json.dumps(r) + "\n" for r in rows).encode()))
        return {"name": name, "metrics_file": f"{name}.metrics.jsonl.gz", "profile": "converged", "seed": 0,
                "config": {"model": model_cfg, "train": {"iterations": 1000}}}

    classify = {"vit_weights": "pretrain", "vit_pretrain": "classify"}
    models = [ship("main", [20, 40, 52, 58, 61, 62, 63, 64, 64, 64], classify),
              ship("start-dense", [50, 65, 71, 75, 77, 78, 79, 80, 81, 82], {**classify, "vit_pretrain": "dense"})]
    (zoo / "manifest.json").write_text(json.dumps({"models": models}))
    text = starts_section(zoo)
    assert "| `main` | pretrained to classify generated pictures" in text
    assert "| 64.0 | +0.00 | 10 | 3 min (19k expr.) | 5 min (32k expr.) | not reached |" in text  # main's row
    assert "Not in the zoo yet: `start-none`." in text
    assert "ends 18.0 points below the former in-domain dense start" in text
    models.append(ship("start-none", [5, 10, 20, 30, 40, 45, 50, 52, 54, 55], {"vit_weights": None}))
    (zoo / "manifest.json").write_text(json.dumps({"models": models}))
    text = starts_section(zoo)
    assert "| `start-none` | trained from scratch | 1,000 | 55.0 |" in text and "Not in the zoo yet" not in text
    assert "and 9.0 points above no pretraining at all" in text


def test_trained_in_reads_each_span_of_arithmetic_from_the_log():
    train = [{"step": s, "loss": 0.1, "arithmetic": a} for s, a in
             ((20, "bfloat16"), (40, "bfloat16"), (60, "float32"), (80, "float32"), (100, "bfloat16"))]
    val = [{"step": 40, "split": "val", "cum_iou": 0.5}]
    assert trained_in(train[:2] + val) == "bfloat16"
    assert trained_in(train[:4] + val) == "bfloat16, float32 from step 60"
    assert trained_in(train) == "bfloat16, float32 from step 60, bfloat16 from step 100"
    assert trained_in([{"step": 20, "loss": 0.1}]) == "unrecorded"  # logs from before the field
    assert trained_in(val) == "unrecorded"


def test_the_campaign_summary_counts_runs_trained_in_another_arithmetic(tmp_path, monkeypatch):
    monkeypatch.setattr(budget, "BUDGET_FILE", tmp_path / "protocol-budget.json")
    (tmp_path / "protocol-budget.json").write_text(json.dumps({"steps": 4500}))
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    entries = []
    for name, arithmetic in (("main", ["bfloat16", "bfloat16"]), ("table3-vme", ["bfloat16", "float32"])):
        rows = [{"step": 10 * (i + 1), "loss": 1.0, "arithmetic": a} for i, a in enumerate(arithmetic)]
        rows += [{"step": 450 * (i + 1), "split": "val", "cum_iou": 0.1 * i} for i in range(10)]
        log = f"converged-{name}-s0.metrics.jsonl.gz"
        (zoo / log).write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
        entries.append({"name": f"converged-{name}-s0", "metrics_file": log, "wall_s": 60.0, "cpu_s": 60.0,
                        "profile": "converged", "seed": 0, "config": {"model": {}}})
    (zoo / "manifest.json").write_text(json.dumps({"models": entries}))
    status = campaign_status(zoo_dir=zoo, park_dir=tmp_path / "parked").set_index(["model", "seed"])
    assert status.loc[("main", 0), "trained in"] == "bfloat16"
    assert status.loc[("table3-vme", 0), "trained in"] == "bfloat16, float32 from step 20"
    text = format_status(status.reset_index())
    assert "bfloat16, float32 from step 20" in text
    assert "; 1 of them computed some or all of their steps in another arithmetic than bfloat16" in text


def test_the_float32_slowdown_is_measured_in_runs_that_met_both_arithmetics():
    def log(speeds):  # (arithmetic, images per second) per training row
        return [{"step": 20 * (i + 1), "loss": 0.1, "arithmetic": a, "images_per_s": v}
                for i, (a, v) in enumerate(speeds)] + [{"step": 40, "split": "val", "cum_iou": 0.5}]

    only_bf16 = log([("bfloat16", 80.0)] * 3)
    assert float32_slowdown([only_bf16]) is None  # nothing to compare yet
    mixed = log([("bfloat16", 78.0), ("bfloat16", 80.0), ("bfloat16", 90.0), ("float32", 20.0), ("float32", 40.0)])
    assert float32_slowdown([only_bf16, mixed]) == 80.0 / 30.0  # medians: 80 in bf16, 30 in float32
    other = log([("bfloat16", 60.0), ("float32", 30.0)])
    assert float32_slowdown([mixed, other, only_bf16]) == (80.0 / 30.0 + 2.0) / 2  # the median over runs


def test_the_time_left_says_when_this_machine_trains_in_float32(tmp_path, monkeypatch):
    monkeypatch.setattr(budget, "BUDGET_FILE", tmp_path / "protocol-budget.json")
    (tmp_path / "protocol-budget.json").write_text(json.dumps({"steps": 4500}))
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    rows = [{"step": 10, "loss": 1.0, "arithmetic": "bfloat16", "images_per_s": 90.0},
            {"step": 20, "loss": 1.0, "arithmetic": "float32", "images_per_s": 30.0}]
    rows += [{"step": 450 * (i + 1), "split": "val", "cum_iou": 0.1 * i} for i in range(10)]
    (zoo / "converged-main-s0.metrics.jsonl.gz").write_bytes(
        gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    entry = {"name": "converged-main-s0", "metrics_file": "converged-main-s0.metrics.jsonl.gz", "wall_s": 3000.0,
             "cpu_s": 3000.0, "profile": "converged", "seed": 0, "config": {"model": {}}}
    (zoo / "manifest.json").write_text(json.dumps({"models": [entry]}))
    hours = 35 * 50 / 60 / 2  # the 35 ReSTR runs left at main's 50 minutes, two at a time
    monkeypatch.setattr(campaign, "cpu_has_fast_bf16", lambda: True)
    text = format_status(campaign_status(zoo_dir=zoo, park_dir=tmp_path / "parked"))
    assert f"Left: about {hours:.0f} hours" in text and "float32" not in text.split("Left:")[1]
    monkeypatch.setattr(campaign, "cpu_has_fast_bf16", lambda: False)
    text = format_status(campaign_status(zoo_dir=zoo, park_dir=tmp_path / "parked"))
    assert (f"This machine has no native bf16, so its runs compute in float32: at the 3.0 times longer steps "
            f"measured in the runs whose logs hold both arithmetics, about {3 * hours:.0f} hours here") in text
    rows[1]["arithmetic"] = "bfloat16"  # no run met both: no measured slowdown
    (zoo / "converged-main-s0.metrics.jsonl.gz").write_bytes(
        gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    text = format_status(campaign_status(zoo_dir=zoo, park_dir=tmp_path / "parked"))
    assert ("its runs compute in float32 and take longer than this estimate, which comes from runs in "
            "bfloat16") in text
