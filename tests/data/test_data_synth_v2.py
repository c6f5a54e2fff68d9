"""synthref version 2: look-alike distractors, and expressions as long as the scene needs.

Property tests on a small generated set: every expression picks out its target; location
words appear when, and only when, the target's attributes cannot single it out (or as
recorded redundant words); so the share of targets that their attributes single out falls
from the shortest length bucket to the longest.
"""
from __future__ import annotations

import dataclasses
import json
import pickle
from collections import Counter
from pathlib import Path

import pytest

from restr.book import runner as book
from restr.commands.data import main as data_main
from restr.config import BOOK_PROFILES, SynthData
from restr.data import DataError, ReferData, bucket_of, load_glove, synth, synth_v2, tokenize
from restr.data.fingerprint import data_fingerprint
from restr.data.stats import length_stats
from restr.data.synth_language import ATTRS, attributes_single_out

N_IMAGES = 120
LOCATION = ("ordinal", "region", "relations")


@pytest.fixture(scope="module")
def v2_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth2") / "data"
    summary = synth.generate(root, seed=3, num_images=N_IMAGES, version=2, workers=1, progress=False)
    assert summary["images"] == N_IMAGES and summary["version"] == 2
    return root


def _expressions(root: Path):
    """(scene, shapes, target index, object, sentence, program, redundant parts) of every expression."""
    refs = {r["ref_id"]: r for r in pickle.loads((root / "synthref" / "refs(unc).p").read_bytes())}
    for scene in synth.load_scenes(root)["images"]:
        shapes = synth.scene_shapes(scene)
        for t, obj in enumerate(scene["objects"]):
            sentences = refs[obj["ref_id"]]["sentences"]
            assert len(sentences) == len(obj["programs"]) == len(obj["redundant"])
            for sent, program, redundant in zip(sentences, obj["programs"], obj["redundant"]):
                yield scene, shapes, t, obj, sent, program, redundant


def test_the_version_is_recorded_and_changes_the_fingerprint(v2_root, tmp_path):
    inst = json.loads((v2_root / "synthref" / "instances.json").read_text())
    assert inst["info"]["version"] == 2 and "version 2" in inst["info"]["description"]
    assert synth.load_scenes(v2_root)["version"] == 2 and synth.version_of(v2_root) == 2
    synth.generate(tmp_path, seed=3, num_images=N_IMAGES, version=1, workers=1, progress=False)
    assert synth.version_of(tmp_path) == 1
    cfg = BOOK_PROFILES["smoke"]
    data = dataclasses.make_dataclass("D", ["root", "dataset", "split_by", "train_split"])
    v1 = data_fingerprint(data(tmp_path, cfg.dataset, cfg.split_by, "train"))
    v2 = data_fingerprint(data(v2_root, cfg.dataset, cfg.split_by, "train"))
    assert v1["refs"] != v2["refs"] and v1["instances"] != v2["instances"]
    with pytest.raises(DataError, match="version 3: choose one of 1, 2"):
        synth.generate(tmp_path / "x", num_images=4, version=3, progress=False)


def test_every_expression_picks_out_exactly_its_target(v2_root):
    checked = Counter()
    for scene, shapes, t, obj, sent, program, _ in _expressions(v2_root):
        assert synth.referents(program, shapes, scene["width"], scene["height"]) == [t], sent["sent"]
        for name, value in program["attrs"].items():
            assert obj[name] == value
        for _, lm_attrs in program.get("relations", []):  # a landmark its attributes single out
            assert sum(all(o[k] == v for k, v in lm_attrs.items()) for o in scene["objects"]) == 1
        checked[next((k for k in LOCATION if k in program), "attributes")] += 1
    assert all(checked[k] > 20 for k in ("attributes", *LOCATION)), checked


def test_location_words_only_when_needed_or_recorded_as_redundant(v2_root):
    """A target that its attributes single out gets location words only as recorded redundant
    words; a target with a twin always gets them. Every recorded redundant part can be taken
    out and the expression still picks out its target."""
    for scene, shapes, t, obj, sent, program, redundant in _expressions(v2_root):
        location = [k for k in LOCATION if k in program]
        if attributes_single_out(t, shapes):
            needed = [k for k in location if k.rstrip("s") not in redundant]
            assert not needed, (sent["sent"], program, redundant)
        else:
            assert location, sent["sent"]
        assert set(redundant) <= {*ATTRS, "region", "relation"} and len(redundant) <= 2
        for part in redundant:
            fewer = json.loads(json.dumps(program))
            if part in ATTRS:
                del fewer["attrs"][part]
            elif part == "region":
                del fewer["region"]
            else:
                fewer["relations"].pop()
                if not fewer["relations"]:
                    del fewer["relations"]
            assert synth.referents(fewer, shapes, scene["width"], scene["height"]) == [t], (sent["sent"], part)


def test_length_follows_need(v2_root):
    """The property of issue 21: the share of expressions whose target is the only object of
    its image with its shape, colour and size falls from the shortest bucket to the longest."""
    stats = length_stats(ReferData(v2_root, "synthref", "unc"))
    assert stats["synthref_version"] == 2
    everything = Counter()
    for split in ("train", "val", "testA", "testB"):
        for label, b in stats[split]["buckets"].items():
            everything[label, "n"] += b["count"]
            everything[label, "alone"] += b["count"] * b["attributes_suffice"]
    shares = [everything[label, "alone"] / everything[label, "n"] for label in ("1-2", "3", "4-5", "6-20")]
    assert all(everything[label, "n"] >= 60 for label in ("1-2", "3", "4-5", "6-20")), everything
    assert shares == sorted(shares, reverse=True), shares
    assert shares[0] >= 0.9 and shares[-1] <= 0.5, shares
    # a real share of targets needs words beyond attributes, most have a same-shape distractor
    targets = [(t, shapes) for scene in synth.load_scenes(v2_root)["images"]
               for shapes in [synth.scene_shapes(scene)] for t in range(len(shapes))]
    twins = sum(not attributes_single_out(t, shapes) for t, shapes in targets) / len(targets)
    same_shape = sum(any(j != t and s.shape == shapes[t].shape for j, s in enumerate(shapes))
                     for t, shapes in targets) / len(targets)
    assert 0.2 <= twins <= 0.7 and same_shape > 0.5, (twins, same_shape)


def test_redundant_words_at_about_their_stated_rates(v2_root):
    parts = Counter()
    n = 0
    for *_, redundant in _expressions(v2_root):
        n += 1
        parts["attribute"] += any(p in ATTRS for p in redundant)
        parts["location"] += any(p in ("region", "relation") for p in redundant)
    # at most the stated rate (a part is added only where one is left to add), and not far below it
    assert 0.6 * synth_v2.P_REDUNDANT_ATTRIBUTE <= parts["attribute"] / n <= synth_v2.P_REDUNDANT_ATTRIBUTE + 0.05
    assert 0.5 * synth_v2.P_REDUNDANT_LOCATION <= parts["location"] / n <= synth_v2.P_REDUNDANT_LOCATION + 0.05


def test_test_splits_keep_their_scene_kinds(v2_root):
    for s in synth.load_scenes(v2_root)["images"]:
        n = len(s["objects"])
        if s["split"] == "testA":
            assert s["kind"] == "sparse" and 3 <= n <= 4 and not any(o["occluded"] for o in s["objects"])
        if s["split"] == "testB":
            assert s["kind"] == "crowded" and 5 <= n <= 6


def test_words_in_glove_and_texts_distinct(v2_root):
    glove = set(load_glove()[0])
    per_object: dict[int, list[str]] = {}
    for *_, obj, sent, _program, _redundant in _expressions(v2_root):
        assert set(tokenize(sent["raw"])) <= synth.WORDS <= glove
        assert 1 <= len(sent["tokens"]) <= 20
        per_object.setdefault(obj["ann_id"], []).append(sent["sent"])
    assert all(len(texts) == len(set(texts)) >= 2 for texts in per_object.values())


def test_deterministic_whatever_the_workers(v2_root, tmp_path):
    synth.generate(tmp_path, seed=3, num_images=N_IMAGES, version=2, workers=2, progress=False)
    for name in ("refs(unc).p", "instances.json", "scenes.json"):
        assert (tmp_path / "synthref" / name).read_bytes() == (v2_root / "synthref" / name).read_bytes(), name


def test_cli_writes_and_reports_version_2(tmp_path, capsys):
    out = tmp_path / "data"
    assert data_main(["synth", "--out", str(out), "--num-images", "12", "--version", "2", "--quiet",
                      "--workers", "1"]) == 0
    assert "synthref version 2 written" in capsys.readouterr().out
    assert data_main(["stats", "--root", str(out), "--dataset", "synthref", "--split-by", "unc", "--quiet",
                      "--glove", "none", "--no-image-decode"]) == 0
    report = capsys.readouterr().out
    assert report.startswith("synthref version 2 (unc)")
    assert "attributes suffice" in report and "redundant words" in report and "problems: none" in report
    with pytest.raises(SystemExit):  # argparse: not one of the versions
        data_main(["synth", "--out", str(out), "--version", "3"])


def test_book_refuses_a_folder_of_another_version(tmp_path):
    v2 = dataclasses.replace(BOOK_PROFILES["smoke"], synth=SynthData(seed=1, num_images=8, version=2))
    root = book.ensure_data(v2, tmp_path / "synth")
    assert synth.version_of(root) == 2
    v1 = dataclasses.replace(v2, synth=SynthData(seed=1, num_images=8))
    with pytest.raises(book.BookError, match="holds synthref version 2, the smoke profile asks for version 1"):
        book.ensure_data(v1, root)


def test_stats_by_bucket_agree_with_the_scenes(v2_root):
    """length_stats' per-bucket numbers, recomputed here from scenes.json and the refs."""
    expected: dict = {}
    for scene, shapes, t, obj, sent, _program, redundant in _expressions(v2_root):
        n = len(sent["tokens"])
        rows = expected.setdefault((scene["split"], bucket_of(n, "synthref")), [])
        rows.append((n, any(j != t and s.shape == shapes[t].shape for j, s in enumerate(shapes)),
                     attributes_single_out(t, shapes), bool(redundant)))
    stats = length_stats(ReferData(v2_root, "synthref", "unc"))
    for (split, label), rows in expected.items():
        b = stats[split]["buckets"][label]
        assert b["count"] == len(rows)
        assert b["mean_length"] == pytest.approx(sum(r[0] for r in rows) / len(rows))
        for k, key in enumerate(("same_category", "attributes_suffice", "redundant"), start=1):
            assert b[key] == pytest.approx(sum(r[k] for r in rows) / len(rows)), (split, label, key)
    assert sum(b["count"] for e in stats.values() if isinstance(e, dict) for b in e["buckets"].values()) == \
        sum(len(rows) for rows in expected.values())
