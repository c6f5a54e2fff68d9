"""The model zoo's machinery (export, identity, checks, materialised runs) on a smoke run,
and the ViT pretraining command that the tiny recipe can start from."""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from restr.config import get_preset
from restr.data.fingerprint import data_fingerprint, short
from restr.runs.folder import load_run, read_run_config
from restr.utils.files import read_jsonl
from restr.zoo.manifest import (SIZE_LIMIT_MB, ZooError, add_to_zoo, find, format_space, materialize, read_manifest,
                                  ship_scores, write_manifest, zoo_identity, zoo_space)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def zoo(smoke_run, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("zoo")
    add_to_zoo(smoke_run, "smoke-main", "pytest", 1.0, folder)
    return folder


def test_export_writes_weights_log_and_a_manifest_entry(zoo, smoke_run):
    (entry,) = read_manifest(zoo)
    assert entry["name"] == "smoke-main" and entry["dtype"] == "float16"
    assert (zoo / entry["file"]).is_file() and (zoo / entry["metrics_file"]).is_file()
    for key in ("identity", "data_fingerprint", "config", "seed", "commit", "command", "wall_s", "cpu", "vocab"):
        assert key in entry, key
    # fp16 weights evaluate within 0.1 IoU points of the fp32 run's
    assert abs(entry["metrics"]["cum_iou"] - entry["fp32_metrics"]["cum_iou"]) < 1e-3
    assert entry["metrics"]["expressions"] == entry["fp32_metrics"]["expressions"] > 0


def test_identity_ignores_where_the_data_lives_but_not_what_it_is(smoke_run, tmp_path):
    cfg = read_run_config(smoke_run)
    fp = short(data_fingerprint(cfg.data))
    moved = cfg.override({"data.root": "/elsewhere", "data.num_workers": 7, "train.log_every": 3})
    assert zoo_identity(moved, fp) == zoo_identity(cfg, fp)
    assert zoo_identity(cfg.override({"train.lr": 0.5}), fp) != zoo_identity(cfg, fp)
    assert zoo_identity(cfg, "another-data-set") != zoo_identity(cfg, fp)


def test_a_matching_request_finds_the_model_and_rebuilds_its_run(zoo, smoke_run, tmp_path):
    cfg = read_run_config(smoke_run).override({"model.vocab_size": get_preset("smoke").model.vocab_size})
    entry = find(cfg, zoo)
    assert entry is not None and entry["name"] == "smoke-main"
    run = materialize(entry, tmp_path / "run", cfg, zoo)
    loaded, original = load_run(run), load_run(smoke_run)
    for (k, a), b in zip(loaded.model.state_dict().items(), original.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3, msg=k)  # fp16 rounding only
    assert loaded.step == cfg.train.iterations
    assert find(cfg.override({"train.lr": 0.5}), zoo) is None
    # the gzipped log comes back as the run's own log, row for row
    assert read_jsonl(run / "metrics.jsonl") == read_jsonl(Path(smoke_run) / "metrics.jsonl") != []


def test_shipped_scores_come_with_the_model_and_are_read_only_under_their_stamp(zoo, smoke_run, tmp_path,
                                                                                monkeypatch):
    from restr.book import analysis
    from restr.eval.evaluate import Inference

    cfg = read_run_config(smoke_run).override({"model.vocab_size": get_preset("smoke").model.vocab_size})
    entry = find(cfg, zoo)
    # the book scores the materialised model once; those scores are what `zoo scores` ships
    first = materialize(entry, tmp_path / "first", cfg, zoo)
    computed = analysis.expression_scores(first, "val", 12)
    stamp = json.loads((first / "scores" / "val-pixel-12.json").read_text())
    assert stamp["weights_sha256"] == analysis.weights_digest(first) and stamp["arithmetic"] in ("float32", "bfloat16")
    assert stamp.pop("computed_on") == analysis.scoring_cpu()  # beside the stamp, not part of it
    shipped = zoo / "scores" / entry["name"]
    assert ship_scores(first, shipped) == 2  # the stamp as it is, the scores gzipped
    assert sorted(p.name for p in shipped.iterdir()) == ["val-pixel-12.csv.gz", "val-pixel-12.json"]
    assert gzip.decompress((shipped / "val-pixel-12.csv.gz").read_bytes()) == \
        (first / "scores" / "val-pixel-12.csv").read_bytes()
    # computed on another CPU (its bf16 sums differ by rounding only): still read, as are stamps from before the field
    (shipped / "val-pixel-12.json").write_text(json.dumps({**stamp, "computed_on": "Other CPU (2 cores); amx_bf16"}))
    # a fresh clone's run of the same model: scores read, nothing evaluated
    again = materialize(entry, tmp_path / "again", cfg, zoo)
    assert sorted(p.name for p in (again / "scores").iterdir()) == ["val-pixel-12.csv", "val-pixel-12.json"]
    with monkeypatch.context() as m:
        m.setattr(Inference, "run", lambda *a, **k: pytest.fail("evaluated although the zoo shipped the scores"))
        read = analysis.expression_scores(again, "val", 12)
    assert read.equals(computed) and read.equals(analysis.expression_scores(again, "val", 12, cache=False))
    # scores of other weights (or another arithmetic) are never read: scored again
    stamp["weights_sha256"] = "0" * 64
    (shipped / "val-pixel-12.json").write_text(json.dumps(stamp))
    other = materialize(entry, tmp_path / "other", cfg, zoo)
    evaluated = []
    original_run = Inference.run
    monkeypatch.setattr(Inference, "run", lambda self, *a, **k: evaluated.append(1) or original_run(self, *a, **k))
    assert analysis.expression_scores(other, "val", 12).equals(computed) and evaluated == [1]
    shutil.rmtree(zoo / "scores")


def test_a_model_trained_before_a_config_field_existed_is_still_found(zoo, smoke_run, tmp_path):
    """An entry whose stored config lacks a field added since (here: model.norm_eps) is
    read with that field's default; one whose config names a field this code does not
    know is an error naming the model."""
    old = tmp_path / "zoo"
    shutil.copytree(zoo, old)
    (entry,) = read_manifest(old)
    del entry["config"]["model"]["norm_eps"]
    write_manifest([entry], old)
    cfg = read_run_config(smoke_run).override({"model.vocab_size": get_preset("smoke").model.vocab_size})
    assert find(cfg, old)["name"] == "smoke-main"
    assert find(cfg.override({"model.norm_eps": 1e-5}), old) is None
    entry["config"]["model"]["a_field_from_the_future"] = 1
    write_manifest([entry], old)
    with pytest.raises(ZooError, match="smoke-main.*does not load"):
        find(cfg, old)


def test_a_corrupt_or_missing_zoo_file_is_named(zoo, smoke_run, tmp_path):
    broken = tmp_path / "zoo"
    shutil.copytree(zoo, broken)
    (entry,) = read_manifest(broken)
    cfg = read_run_config(smoke_run)
    data = bytearray((broken / entry["file"]).read_bytes())
    data[-1] ^= 0xFF
    (broken / entry["file"]).write_bytes(bytes(data))
    with pytest.raises(ZooError, match=r"smoke-main.*corrupt or was replaced.*--retrain"):
        materialize(entry, tmp_path / "run", cfg, broken)
    (broken / entry["file"]).unlink()
    with pytest.raises(ZooError, match="is missing"):
        materialize(entry, tmp_path / "run2", cfg, broken)
    assert not (tmp_path / "run").exists() and not (tmp_path / "run2").exists()


def test_the_log_is_stored_gzipped_reproducibly_and_a_bad_one_is_named(zoo, smoke_run, tmp_path):
    """The zoo keeps a run's log gzipped, with the same bytes for the same rows (no
    timestamp: git stores one blob); exporting again replaces a former plain log; a log
    that is not gzip is an error naming it, and nothing is written."""
    (entry,) = read_manifest(zoo)
    assert entry["metrics_file"] == "smoke-main.metrics.jsonl.gz"
    gz = (zoo / entry["metrics_file"]).read_bytes()
    assert gz[:2] == b"\x1f\x8b" and len(gz) < (Path(smoke_run) / "metrics.jsonl").stat().st_size
    again = tmp_path / "again"
    again.mkdir()
    (again / "smoke-main.metrics.jsonl").write_text("{}\n")  # a plain log of a former model of this name
    add_to_zoo(smoke_run, "smoke-main", "pytest", 1.0, again)
    assert (again / "smoke-main.metrics.jsonl.gz").read_bytes() == gz
    assert not (again / "smoke-main.metrics.jsonl").exists()
    (again / "smoke-main.metrics.jsonl.gz").write_bytes(b"not gzip")
    cfg = read_run_config(smoke_run)
    with pytest.raises(ZooError, match=r"smoke-main.metrics.jsonl.gz is not a readable gzip"):
        materialize(read_manifest(again)[0], tmp_path / "run", cfg, again)
    assert not (tmp_path / "run").exists()


def test_the_space_report_sorts_the_zoo_by_what_takes_it(zoo):
    space = zoo_space(zoo)
    files = [f for f in zoo.rglob("*") if f.is_file()]
    assert space["total"] == sum(f.stat().st_size for f in files) > 0
    assert space["weights"] == sum(f.stat().st_size for f in files if f.suffix == ".safetensors") > 0
    assert space["logs"] == sum(f.stat().st_size for f in files if f.name.endswith(".metrics.jsonl.gz")) > 0
    assert format_space(space).startswith("data/zoo: ") and "OVER" not in format_space(space)
    assert "OVER THE LIMIT" in format_space({**space, "total": int(SIZE_LIMIT_MB * 1e6) + 1})


def test_the_shipped_zoo_is_within_its_size_limit():
    """Issue 22's limit on the repository's own zoo: data/zoo at most 200 MB."""
    space = zoo_space(REPO / "data" / "zoo")
    assert 0 < space["total"] <= SIZE_LIMIT_MB * 1e6, format_space(space)


def test_pretraining_labels_and_weights(tmp_path):
    from restr.data.refer import ReferData
    from restr.data.synth import generate
    from restr.engine.pretrain import CategoryMaps, PretrainConfig, ensure_pretrained

    generate(tmp_path / "data", seed=6, num_images=60, progress=False)
    data = ReferData(tmp_path / "data", "synthref", "unc")
    image_id = next(iter(data.images))
    maps = CategoryMaps(data, [image_id], (32, 32), augment=False)
    labels = maps.labels[0]
    for ann in (a for a in data.anns.values() if a["image_id"] == image_id):
        inside = labels[data.load_mask(ann["id"]).astype(bool)]
        # an object's pixels carry its category, except where a later object covers it
        assert np.mean(inside == maps.classes[ann["category_id"]]) > 0.5
    assert (labels == 0).any()

    model = get_preset("smoke").model
    p = PretrainConfig(epochs=1, batch_size=8, val_images=8)
    path = ensure_pretrained(model, str(tmp_path / "data"), "synthref", "unc", p, tmp_path / "pre")
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["steps"] >= 1 and 0.0 <= info["pixel_accuracy"] <= 1.0
    assert ensure_pretrained(model, str(tmp_path / "data"), "synthref", "unc", p, tmp_path / "pre") == path  # cached
    from restr.model import build_model

    vision = build_model(get_preset("smoke", model={"vit_weights": str(path)}).model).vision
    from safetensors.torch import load_file

    saved = load_file(str(path))
    assert torch.equal(vision.vit.state_dict()["patch_embed.proj.weight"], saved["patch_embed.proj.weight"])


def test_zoo_train_then_get_run_uses_the_zoo_model(tmp_path, monkeypatch, capsys):
    """`zoo train` trains a book model into the zoo; a later request in another runs
    folder is answered from the zoo (no training), and says so; --retrain is refused
    nothing but trains again."""
    import restr.zoo.cache
    from restr.book.models import model_config
    from restr.book.runner import book_profile
    from restr.book.zoo_train import zoo_train
    from restr.zoo.cache import get_run

    monkeypatch.setenv("RESTR_ZOO", str(tmp_path / "zoo"))
    monkeypatch.chdir(tmp_path)  # the smoke profile's data root is relative
    monkeypatch.setattr("restr.book.runner.REPO", tmp_path)
    added = zoo_train("smoke", only=["main"], runs_dir=str(tmp_path / "runs"))
    assert added == ["smoke-main-s0"]  # the profile in the name: never the shipped quick model main-s0
    assert zoo_train("smoke", only=["main"], runs_dir=str(tmp_path / "runs")) == []  # in the zoo already

    prof = book_profile("smoke")
    cfg = model_config(prof, prof.data_root, "main", seed=0)
    calls = []
    monkeypatch.setattr(restr.zoo.cache, "train", lambda *a, **k: calls.append(a))
    capsys.readouterr()
    run = get_run(cfg, tmp_path / "other-runs", progress=False)
    assert calls == [] and "zoo: " in capsys.readouterr().err
    assert load_run(run).step == cfg.train.iterations
    with pytest.raises(ZooError, match="no book model named"):
        zoo_train("smoke", only=["nope"], runs_dir=str(tmp_path / "runs"))


def test_the_queue_trains_seed_0_of_every_model_first():
    from types import SimpleNamespace

    from restr.book.zoo_train import queue

    a, b, c = (SimpleNamespace(name=n, seeds=s) for n, s in (("a", (0, 1, 2)), ("b", (0,)), ("c", (0, 1, 2))))
    order = [(m.name, s) for m, s in queue([a, b, c])]
    assert order == [("a", 0), ("b", 0), ("c", 0), ("a", 1), ("c", 1), ("a", 2), ("c", 2)]
    assert [(m.name, s) for m, s in queue([a, b, c], only=["c"], seeds=[2, 0])] == [("c", 0), ("c", 2)]


def test_a_deadline_starts_only_the_jobs_expected_to_finish_before_it():
    from types import SimpleNamespace

    from restr.book.zoo_train import expected_minutes, next_job
    from restr.commands.zoo import parse_until

    def entry(name, seed, wall_min, family="restr"):
        return {"name": f"converged-{name}-s{seed}", "seed": seed, "profile": "converged", "wall_s": 60 * wall_min,
                "config": {"model": {"family": family}}}

    entries = [entry("main", 0, 100), entry("table3-vme", 0, 60), entry("m3att", 0, 250, "m3att"),
               {**entry("main", 0, 999), "name": "main-s0", "profile": "quick"}]  # another profile's: not read
    assert expected_minutes("main", "converged", entries) == 100  # its own other seed
    assert expected_minutes("table3-ime", "converged", entries) == 100  # the profile's longest ReSTR model
    assert expected_minutes("m3att-no-imi", "converged", entries) == 250  # the profile's longest M3Att model
    assert expected_minutes("main", "smoke", entries) is None
    pending = [(SimpleNamespace(name=n), 1) for n in ("main", "table3-vme")]
    now = 1_000_000.0
    assert next_job(pending, "converged", entries, None, now) == (0, "")
    assert next_job(pending, "converged", entries, now + 60 * 120, now)[0] == 0  # 110 min needed, 120 left
    pick, note = next_job(pending, "converged", entries, now + 60 * 90, now)  # main does not fit; vme does
    assert pick == 1
    pick, note = next_job(pending, "converged", entries, now + 60 * 30, now)
    assert pick is None and "30 min left before --until" in note and "main seed 1 (about 100 min)" in note
    # a stopped run of main holding 70 % of it needs 30 min: it fits in 40
    assert next_job(pending, "converged", entries, now + 60 * 40, now, done={0: 0.7})[0] == 0
    # a run under way goes before the new runs of its seed, with or without a deadline; not before an earlier seed
    assert next_job(pending, "converged", entries, None, now, done={1: 0.35}) == (1, "")
    assert next_job(pending, "converged", entries, now + 60 * 120, now, done={1: 0.35})[0] == 1
    assert next_job(pending, "converged", entries, None, now, done={0: 0.07, 1: 0.35}) == (1, "")  # furthest first
    mixed = [(SimpleNamespace(name="main"), 0), (SimpleNamespace(name="table3-vme"), 1)]
    assert next_job(mixed, "converged", entries, None, now, done={1: 0.35}) == (0, "")
    # a later seed's job never goes ahead of an earlier seed's, even when only it fits (seen: table3-ime seed 1,
    # 53 min, started while seed 0 of ten models waited); with --spill the earlier one starts anyway
    pick, note = next_job(mixed, "converged", entries, now + 60 * 80, now)
    assert pick is None and "main seed 0 (about 100 min)" in note and "table3-vme" not in note
    assert next_job(mixed, "converged", entries, now + 60 * 80, now, spill=True)[0] == 0
    # --spill: when nothing fits, the first job starts anyway if 20 min are left, not with less
    pick, note = next_job(pending, "converged", entries, now + 60 * 30, now, spill=True)
    assert pick == 0 and "main seed 1 (about 100 min) will not finish; started anyway (--spill)" in note
    assert next_job(pending, "converged", entries, now + 60 * 19, now, spill=True)[0] is None
    unknown = [(SimpleNamespace(name="new-arm"), 0)]
    assert next_job(unknown, "smoke", entries, now + 60 * 20, now) == (0, "new-arm seed 0: no recorded time, "
                                                                           "started without an estimate")
    # with less than that left, a job of unknown length waits; once the deadline's stop lead has come, none starts
    # (a campaign called with --until +1 once started and stopped all 51 of its jobs in turn)
    pick, note = next_job(unknown, "smoke", entries, now + 60 * 19, now)
    assert pick is None and "new-arm seed 0 (no recorded time)" in note
    assert next_job(pending, "converged", entries, now + 60, now) == (None, "--until has come: no job starts")
    assert next_job(pending, "converged", entries, now + 60, now, spill=True)[0] is None
    # --until: a time today or minutes from now; a time already past is refused by name
    assert parse_until("+90", now=now) == now + 5400
    from datetime import datetime

    noon = datetime(2026, 12, 3, 12, 0).timestamp()
    assert parse_until("17:05", now=noon) == datetime(2026, 12, 3, 17, 5).timestamp()
    with pytest.raises(ZooError, match="that time has passed today"):
        parse_until("11:30", now=noon)
    # a block that ends after midnight: 00:40 at 22:06 is tomorrow's (the command refused it once)
    late = datetime(2026, 12, 4, 22, 6).timestamp()
    assert parse_until("00:40", now=late) == datetime(2026, 12, 5, 0, 40).timestamp()
    with pytest.raises(ZooError, match="HH:MM"):
        parse_until("soon", now=noon)


@pytest.mark.slow
def test_zoo_train_jobs_trains_two_at_a_time_and_commits_each_model(tmp_path, monkeypatch):
    """The campaign's command: `zoo train --jobs 2 --commit` trains the queue in two
    processes, adds each model to the zoo under the manifest's lock, commits each with its
    log, records its wall and CPU time, and resumes by skipping what the zoo holds."""
    import subprocess
    import sys

    repo = tmp_path / "repo"
    (repo / "zoo").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    for key, value in (("user.email", "t@example.org"), ("user.name", "t")):
        subprocess.run(["git", "-C", str(repo), "config", key, value], check=True)
    env = {**__import__("os").environ, "RESTR_ZOO": str(repo / "zoo"), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "restr", "zoo", "train", "--profile", "smoke", "--only", "main", "table4-2L",
           "--runs", str(tmp_path / "runs"), "--jobs", "2", "--commit"]
    proc = subprocess.run(cmd + ["--until", "+600"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 model(s) to train, 2 at a time" in proc.stderr
    assert "main seed 0: no recorded time, started without an estimate" in proc.stderr  # an empty zoo: no estimate
    manifest = {e["name"]: e for e in read_manifest(repo / "zoo")}
    assert set(manifest) == {"smoke-main-s0", "smoke-table4-2L-s0"}
    assert all(e["cpu_s"] > 0 and e["wall_s"] > 0 for e in manifest.values())
    log = subprocess.run(["git", "-C", str(repo), "log", "--format=%s"], capture_output=True, text=True).stdout
    assert sorted(line.split(" (")[0] for line in log.splitlines()) == ["zoo: smoke-main-s0", "zoo: smoke-table4-2L-s0"]
    tracked = subprocess.run(["git", "-C", str(repo), "ls-files"], capture_output=True, text=True).stdout.split()
    assert {"zoo/manifest.json", "zoo/smoke-main-s0.safetensors", "zoo/smoke-main-s0.metrics.jsonl.gz"} <= set(tracked)
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "0 model(s) to train" in again.stderr



@pytest.mark.slow
def test_a_job_spilling_over_the_deadline_stops_at_a_checkpoint_and_the_next_call_resumes_it(tmp_path):
    """`zoo train --until T --spill`: a job longer than what is left starts, is asked to
    stop (SIGTERM) before T, stops at a checkpoint (exit 3), and with --park is parked and
    committed; the next call unparks it into a fresh runs folder, resumes it where it
    stopped and adds the model, with the same weights as an uninterrupted run."""
    import subprocess
    import sys


    repo = tmp_path / "repo"
    (repo / "zoo").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    for key, value in (("user.email", "t@example.org"), ("user.name", "t")):
        subprocess.run(["git", "-C", str(repo), "config", key, value], check=True)
    env = {**__import__("os").environ, "RESTR_ZOO": str(repo / "zoo"), "PYTHONPATH": str(REPO),
           "RESTR_PARK_DIR": str(repo / "parked")}
    code = ("import sys, time; from restr.book import zoo_train as zt; from restr.commands.zoo import main; "
            "zt.STOP_LEAD_S = 0; zt.SPILL_MIN_MINUTES = 0; sys.exit(main(sys.argv[1:]))")
    cmd = [sys.executable, "-c", code, "train", "--profile", "smoke", "--only", "main", "--runs",
           str(tmp_path / "runs"), "--jobs", "2", "--commit", "--spill", "--park"]
    # 30 steps of at least a second each: the job is still training when it is asked to stop, 18 s in
    first = subprocess.run(cmd + ["--until", "+0.3"], cwd=tmp_path, env={**env, "RESTR_TEST_STEP_SLEEP": "1"},
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "no recorded time, started without an estimate" in first.stderr
    assert "asked to stop" in first.stderr and "stopped at" in first.stderr, first.stderr[-3000:]
    assert "stopped at a checkpoint, to resume with the same command: smoke-main-s0" in first.stdout
    parked = list((repo / "parked").glob("*/checkpoints/last.pt"))
    assert len(parked) == 1
    log = subprocess.run(["git", "-C", str(repo), "log", "--format=%s"], capture_output=True, text=True).stdout
    assert log.startswith("parked: zoo model smoke-main-s0 stopped at the block's end")
    step = json.loads(parked[0].with_suffix(".json").read_text())["step"]
    shutil.rmtree(tmp_path / "runs")  # the machine lost runs/: the parked copy is what resumes
    second = subprocess.run(cmd + ["--until", "+10"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "unparked" in second.stderr and "resuming at" in second.stderr
    (entry,) = read_manifest(repo / "zoo")
    assert entry["name"] == "smoke-main-s0" and 0 < step < entry["config"]["train"]["iterations"]
    rows = gzip.decompress((repo / "zoo" / entry["metrics_file"]).read_bytes()).decode().splitlines()
    assert [json.loads(r)["step"] for r in rows if '"stopped"' in r] == [step]


def test_zoo_scores_ships_the_scores_a_book_run_computed(smoke_book, tmp_path):
    """`python -m restr zoo scores` after a book run: each zoo model gets the scores its
    rebuilt runs computed, stamped with its weights; nothing of other weights."""
    from restr.book.analysis import expression_scores, weights_digest
    from restr.book.zoo_train import zoo_scores

    zoo_dir, runs = tmp_path / "zoo", tmp_path / "runs"
    trained = sorted(p for p in (smoke_book / "runs").glob("*") if (p / "scores").is_dir())
    entry = add_to_zoo(trained[0], "smoke-main-s0", "pytest", 1.0, zoo_dir, profile="smoke")
    cfg = read_run_config(trained[0])
    run = materialize(entry, runs / "rebuilt", cfg, zoo_dir)   # what a book run holds: the zoo model...
    shutil.copytree(trained[0] / "scores", run / "scores")     # ...which the book scored (fp16 weights:
    shutil.copytree(trained[0], runs / "trained")              # not the trained run's, never shipped)
    assert zoo_scores(runs, zoo_dir) == {}
    expression_scores(run, "val", 12)
    assert zoo_scores(runs, zoo_dir) == {"smoke-main-s0": 2}
    shipped = zoo_dir / "scores" / "smoke-main-s0"
    assert sorted(f.name for f in shipped.iterdir()) == ["val-pixel-12.csv.gz", "val-pixel-12.json"]
    assert (shipped / "val-pixel-12.json").read_bytes() == (run / "scores" / "val-pixel-12.json").read_bytes()
    assert gzip.decompress((shipped / "val-pixel-12.csv.gz").read_bytes()) == \
        (run / "scores" / "val-pixel-12.csv").read_bytes()
    assert json.loads((shipped / "val-pixel-12.json").read_text())["weights_sha256"] == weights_digest(run)


def test_the_shipped_scores_carry_the_stamp_a_fresh_book_reads():
    """Every score file shipped with the zoo names its model's weights, the arithmetic the
    zoo is evaluated in, and today's scoring format and protocol; a stale stamp made a fresh
    clone's book score every model again (26 min instead of about 4)."""
    from restr.book.analysis import SCORES_FORMAT, protocol_digest, state_digest
    from restr.zoo.manifest import SCORES_DIR, entry_arithmetic, load_weights, zoo_folder

    from restr.zoo.manifest import entry_model

    scored = set()
    for entry in read_manifest():
        digest = state_digest(load_weights(entry)) if entry["file"] else entry["weights_sha256"]
        assert entry.get("weights_sha256", digest) == digest, entry["name"]
        for stamp_file in sorted((zoo_folder() / SCORES_DIR / entry["name"]).glob("*.json")):
            stamp = json.loads(stamp_file.read_text())
            assert stamp["weights_sha256"] == digest, stamp_file
            assert stamp["arithmetic"] == entry_arithmetic(entry), stamp_file
            assert (stamp["format"], stamp["protocol"]) == (SCORES_FORMAT, protocol_digest()), stamp_file
            scored.add(entry["name"])
    # every model ships its scores: the quick ones from a book run (python -m restr zoo scores), the converged
    # ones computed when they join the zoo (or by python -m restr zoo scores --compute converged), the whole
    # validation split at least
    assert scored == {e["name"] for e in read_manifest()}, sorted({e["name"] for e in read_manifest()} - scored)
    for entry in read_manifest():
        if entry_model(entry)[0] == "converged":
            assert (zoo_folder() / SCORES_DIR / entry["name"] / "val-pixel-all.csv.gz").is_file(), entry["name"]


def test_a_job_killed_by_the_stop_request_before_its_training_began_is_stopped_not_failed(tmp_path, capsys):
    import signal

    from restr.book.zoo_train import Job, Schedule, reap

    outcome = {"added": [], "failed": [], "stopped": []}
    asked = Job("converged-main-s0", tmp_path / "log", tmp_path / "run", asked_to_stop=True)
    reap(-signal.SIGTERM, asked, Schedule(), outcome)
    assert outcome["stopped"] == ["converged-main-s0"] and outcome["failed"] == []
    assert "stopped after 0.0 min, before its training began" in capsys.readouterr().err
    unasked = Job("converged-main-s1", tmp_path / "log", tmp_path / "run")  # killed by someone else: a failure
    reap(-signal.SIGTERM, unasked, Schedule(), outcome)
    assert outcome["failed"] == ["converged-main-s1"]


def test_a_landed_model_commits_the_deletion_of_its_parked_copy(tmp_path):
    """Once a parked run finishes, its model is committed and its parked copy deleted in the same commit."""
    import subprocess

    from restr.book.zoo_train import commit_model
    from restr.runs.park import drop_parked

    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("config", "user.email", "t@example.org")
    git("config", "user.name", "t")
    zoo, spot = tmp_path / "zoo", tmp_path / "parked" / "tiny-abc-0123" / "checkpoints"
    zoo.mkdir()
    spot.mkdir(parents=True)
    (spot / "last.pt").write_bytes(b"weights")
    (tmp_path / "unrelated.txt").write_text("left alone\n")
    git("add", ".")
    git("commit", "-qm", "parked")
    entry = {"name": "converged-main-s1", "file": "converged-main-s1.safetensors",
             "metrics_file": "converged-main-s1.metrics.jsonl.gz", "metrics": {"cum_iou": 0.5},
             "wall_s": 600, "config": {"train": {"iterations": 9000}}}
    (zoo / entry["file"]).write_bytes(b"fp16")
    (zoo / entry["metrics_file"]).write_bytes(b"log")
    (zoo / "manifest.json").write_text(json.dumps({"models": [entry]}))
    (tmp_path / "unrelated.txt").write_text("changed, not committed\n")
    assert drop_parked("tiny-none-0123", tmp_path / "parked") is None  # nothing parked under that name
    dropped = drop_parked("tiny-abc-0123", tmp_path / "parked")
    assert dropped == tmp_path / "parked" / "tiny-abc-0123" and not dropped.exists()
    commit_model("converged-main-s1", zoo, also=[str(dropped)])
    assert git("log", "-1", "--format=%s").startswith("zoo: converged-main-s1 (val slice cIoU 50.0 %")
    assert git("ls-files").split() == ["unrelated.txt", "zoo/converged-main-s1.metrics.jsonl.gz",
                                       "zoo/converged-main-s1.safetensors", "zoo/manifest.json"]
    assert git("status", "--porcelain").split() == ["M", "unrelated.txt"]  # only what the model brought

    # a later seed that ships its log and its scores, not its weights
    bare = {**entry, "name": "converged-table4-2L-s1", "file": None,
            "metrics_file": "converged-table4-2L-s1.metrics.jsonl.gz"}
    (zoo / bare["metrics_file"]).write_bytes(b"log")
    (zoo / "scores" / bare["name"]).mkdir(parents=True)
    (zoo / "scores" / bare["name"] / "val-pixel-all.csv.gz").write_bytes(gzip.compress(b"iou\n"))
    (zoo / "converged-table4-2L-s1.safetensors").write_bytes(b"dropped weights left behind")
    (zoo / "manifest.json").write_text(json.dumps({"models": [entry, bare]}))
    commit_model(bare["name"], zoo)
    assert git("show", "--name-only", "--format=", "HEAD").split() == [
        "zoo/converged-table4-2L-s1.metrics.jsonl.gz", "zoo/manifest.json",
        "zoo/scores/converged-table4-2L-s1/val-pixel-all.csv.gz"]


def test_a_models_cpu_time_is_its_logs_over_every_session():
    from restr.book.zoo_train import run_cpu_seconds

    rows = [{"step": 360, "split": "val", "cpu_s": 200.0}, {"step": 720, "split": "val", "cpu_s": 410.5}]
    assert run_cpu_seconds(rows, this_session=90.0) == 410.5  # the log's, not this session's 90 s
    assert run_cpu_seconds(rows + [{"step": 1080, "split": "val", "cpu_s": None}], 90.0) is None  # not known
    assert run_cpu_seconds([{"step": 360, "split": "val"}], 90.0) == 90.0  # a log from before: as recorded then


def test_a_model_without_weights_ships_its_log_and_scores_and_the_book_reads_them(smoke_run, tmp_path, monkeypatch,
                                                                                   capsys):
    """The converged campaign's later seeds (issue 22's 200 MB): the zoo keeps their log and
    the scores computed from their fp16 weights when they joined it, not the weights. A
    rebuilt run reads as finished, gives the book its curve and its scores, and names the
    retrain command to whatever asks for its weights."""
    from restr.book.analysis import expression_scores, learning_curve, weights_digest
    from restr.runs.folder import RunError
    from restr.zoo.cache import get_run, run_status
    from restr.zoo.manifest import Shipping, load_weights

    zoo_dir = tmp_path / "zoo"
    shipping = Shipping(weights=False, score=lambda run: expression_scores(run, "val", 12))
    entry = add_to_zoo(smoke_run, "converged-main-s0", "python -m restr zoo train --profile converged --only main "
                       "--seeds 0", 1.0, zoo_dir, profile="converged", shipping=shipping)
    assert entry["file"] is None and entry["sha256"] is None and not list(zoo_dir.glob("*.safetensors"))
    shipped = zoo_dir / "scores" / "converged-main-s0"
    assert sorted(f.name for f in shipped.iterdir()) == ["val-pixel-12.csv.gz", "val-pixel-12.json"]
    assert json.loads((shipped / "val-pixel-12.json").read_text())["weights_sha256"] == entry["weights_sha256"]
    with pytest.raises(ZooError, match="ships its log and scores but not its weights.*--only main --seeds 0"):
        load_weights(entry, zoo_dir)

    monkeypatch.setenv("RESTR_ZOO", str(zoo_dir))
    cfg = read_run_config(smoke_run).override({"model.vocab_size": get_preset("smoke").model.vocab_size})
    run = get_run(cfg, tmp_path / "runs", progress=False)  # rebuilt from the zoo, not trained
    assert "its log and scores, no weights" in capsys.readouterr().err
    assert run_status(run)["finished"] and weights_digest(run) == entry["weights_sha256"]
    scores = expression_scores(run, "val", 12)
    assert (run / "scores" / "val-pixel-12.csv").read_bytes() == gzip.decompress(
        (shipped / "val-pixel-12.csv.gz").read_bytes())
    fp32 = expression_scores(smoke_run, "val", 12, cache=False)  # the trained run's: the same expressions
    assert list(scores["sent_id"]) == list(fp32["sent_id"]) and len(scores) > 0
    assert len(learning_curve(run)) == len(learning_curve(smoke_run))
    # the scores of other weights a run holds (a replaced model's, copied in with it) are not shipped
    assert ship_scores(run, tmp_path / "other", digest="0" * 64) == 0
    assert ship_scores(run, tmp_path / "same", digest=entry["weights_sha256"]) == 2
    with pytest.raises(RunError, match="ships its training log and its scores but not its weights.*--seeds 0"):
        load_run(run)
    with pytest.raises(RunError, match="ships no weights and no readable val-pixel-all.csv"):
        expression_scores(run, "val", None)  # never scored: nothing to read, nothing to score with

    stamp = run / "scores" / "val-pixel-12.json"
    other = json.loads(stamp.read_text()) | {"arithmetic": "float16"}
    stamp.write_text(json.dumps(other))
    assert expression_scores(run, "val", 12).equals(scores)
    assert "computed in float16" in capsys.readouterr().err
    stamp.write_text(json.dumps(other | {"protocol": "another"}))
    with pytest.raises(RunError, match="differ from what this code asks for in protocol"):
        expression_scores(run, "val", 12)


def test_zoo_scores_compute_scores_only_the_converged_models_that_lack_them(tmp_path, monkeypatch):
    """`python -m restr zoo scores --compute converged`: the models that joined the zoo
    before joining scored them get their scores; the others are left alone."""
    from restr.book import zoo_train

    zoo = tmp_path / "zoo"
    shutil.copytree(REPO / "data" / "zoo" / "scores", zoo / "scores")
    shutil.copy(REPO / "data" / "zoo" / "manifest.json", zoo / "manifest.json")
    monkeypatch.setattr(zoo_train, "ensure_data", lambda *a: None)
    asked = []

    def materialize(entry, *a):
        asked.append(entry["name"])
        raise ZooError("not materialised in this test")

    monkeypatch.setattr(zoo_train, "materialize", materialize)
    assert zoo_train.compute_scores("converged", zoo) == {} and asked == []  # every converged model has its scores
    shutil.rmtree(zoo / "scores" / "converged-main-s0")
    with pytest.raises(ZooError, match="not materialised"):
        zoo_train.compute_scores("converged", zoo)
    assert asked == ["converged-main-s0"]
