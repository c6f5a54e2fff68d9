"""The classification start of the ViT (``model.vit_pretrain = "classify"``): its pictures
share nothing with the data set, it learns, its cache entries are whole or absent, and
the trainer loads its weights."""
from __future__ import annotations

import hashlib
from dataclasses import asdict
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restr.config import ConfigError, get_book_profile, get_preset
from restr.data.synth import COLOURS, SHAPES, generate, load_scenes
from restr.engine import pretrain
from restr.engine.pretrain import (ClassifyConfig, ClassifyImages, ObjectCrops, average_precision,
                                   ensure_classify_pretrained, generator_seed, generator_stream, image_labels,
                                   render_pretraining_images)

SEED = 6
SMALL = ClassifyConfig(images=160, val_images=32, epochs=25, batch_size=32, lr=3e-3, largest_head=True, task="scenes")
OBJECTS = ClassifyConfig(images=160, val_images=64, epochs=25, batch_size=32, lr=3e-3)


@pytest.fixture(scope="module")
def data_set(tmp_path_factory) -> Path:
    """A 60-image embedded data set (every split represented)."""
    root = tmp_path_factory.mktemp("synthref")
    generate(root, seed=SEED, num_images=60, progress=False)
    return root


@pytest.fixture(scope="module", params=[1, 2])
def any_version(request, tmp_path_factory) -> tuple[Path, int]:
    """A 60-image embedded data set of each generator version."""
    root = tmp_path_factory.mktemp(f"synthref-v{request.param}")
    generate(root, seed=SEED, num_images=60, progress=False, version=request.param)
    return root, request.param


def pixel_hash(pixels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()


def data_set_pixels(root: Path) -> dict[str, int]:
    """Every data set image's pixel hash -> its image id."""
    instances = json.loads((root / "synthref" / "instances.json").read_text())
    out = {}
    for img in instances["images"]:
        with Image.open(root / "synthref" / "images" / img["file_name"]) as im:
            out[pixel_hash(np.asarray(im.convert("RGB")))] = img["id"]
    return out


def scene_key(objects) -> tuple:
    return tuple((o["shape"], o["colour"], o["size"], round(o["cx"], 3), round(o["cy"], 3), round(o["r"], 3))
                 for o in objects)


def test_no_pretraining_picture_equals_or_shares_its_scene_with_a_data_set_image(any_version):
    data_set, version = any_version
    seed, drawn_by = generator_stream(data_set, "synthref")
    assert (seed, drawn_by) == (SEED, version) and generator_seed(data_set, "synthref") == SEED
    scenes = load_scenes(data_set)["images"]
    assert {s["split"] for s in scenes} == {"train", "val", "testA", "testB"}
    data_pixels = data_set_pixels(data_set)
    data_scenes = {scene_key(s["objects"]) for s in scenes}
    data_objects = {o for s in data_scenes for o in s}
    files_before = sorted(p.name for p in (data_set / "synthref" / "images").iterdir())

    images, records = render_pretraining_images(seed, 120, version=version)
    assert len(images) == len(records) == 120
    assert not {pixel_hash(im) for im in images} & set(data_pixels)
    assert not {scene_key(r["objects"]) for r in records} & data_scenes
    assert not {o for r in records for o in scene_key(r["objects"])} & data_objects  # not one shape placed alike
    assert sorted(p.name for p in (data_set / "synthref" / "images").iterdir()) == files_before  # nothing written

    # the control: the data set's own streams (seed, 0 ...) give its images back, so the
    # checks above would have seen a shared picture or scene
    same, same_records = render_pretraining_images(seed, 2, first_index=0, kinds=[s["kind"] for s in scenes[:2]],
                                                   per_object=3, version=version)
    assert [data_pixels.get(pixel_hash(im)) for im in same] == [1, 2]
    assert [scene_key(r["objects"]) for r in same_records] == [scene_key(s["objects"]) for s in scenes[:2]]


def test_the_pretraining_streams_are_past_any_data_set():
    assert pretrain.CLASSIFY_FIRST_INDEX > 10**9  # the data set's images use (seed, 0 ... num_images - 1)


def test_labels_are_the_shapes_and_colours_present_and_the_largest_shape(data_set):
    from restr.data.synth import COLOURS, SHAPES

    _, records = render_pretraining_images(SEED, 6)
    for rec in records:
        presence, largest = image_labels(rec)
        shapes = {o["shape"] for o in rec["objects"]}
        colours = {o["colour"] for o in rec["objects"]}
        assert {SHAPES[k] for k in np.flatnonzero(presence[:len(SHAPES)])} == shapes
        assert {list(COLOURS)[k] for k in np.flatnonzero(presence[len(SHAPES):])} == colours
        assert SHAPES[largest] == max(rec["objects"], key=lambda o: o["area"])["shape"]


def test_average_precision():
    assert average_precision(np.array([0.9, 0.8, 0.1]), np.array([1, 0, 1])) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(np.array([0.9, 0.8]), np.array([1, 1])) == 1.0
    assert np.isnan(average_precision(np.array([0.5]), np.array([0])))


def test_a_flip_changes_no_label(data_set):
    images, records = render_pretraining_images(SEED, 4)
    ds = ClassifyImages(images, records, (32, 32), augment=True)
    torch.manual_seed(0)
    items = [ds[0] for _ in range(16)]
    flipped = [torch.equal(it["image"], ds.images[0].flip(-1)) for it in items]
    assert any(flipped) and not all(flipped)
    assert all(torch.equal(it["presence"], ds.presence[0]) for it in items)


def test_classification_pretraining_learns_and_is_cached_whole(data_set, tmp_path, monkeypatch):
    model = get_preset("smoke").model
    # no image, expression or mask of the data set is read
    from restr.data.refer import ReferData

    for name in ("load_image", "load_mask", "__init__"):
        monkeypatch.setattr(ReferData, name, lambda *a, **k: pytest.fail("the data set was read"))
    path = ensure_classify_pretrained(model, str(data_set), "synthref", "unc", SMALL, tmp_path / "pre",
                                      progress=False)
    info = json.loads((path.parent / "vit.json").read_text())
    losses = info["epoch_losses"]
    assert len(losses) == SMALL.epochs and losses[-1] < 0.9 * losses[0], losses  # 2.62 -> 2.04 measured
    assert info["steps"] == SMALL.epochs * (SMALL.images // SMALL.batch_size)
    assert info["first_index"] == pretrain.CLASSIFY_FIRST_INDEX and info["generator_seed"] == SEED
    for key in ("mAP", "shape_mAP", "colour_mAP", "label_accuracy", "exact_match", "largest_accuracy"):
        assert 0.0 <= info[key] <= 1.0, key
    assert info["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["position_init"] == "random" and -1.0 <= info["position_structure"] <= 1.0

    # found again without training
    monkeypatch.setattr(pretrain, "pretrain_classify", lambda *a, **k: pytest.fail("pretrained again"))
    assert ensure_classify_pretrained(model, str(data_set), "synthref", "unc", SMALL, tmp_path / "pre") == path


def test_object_crops_are_centred_on_one_object_and_labelled_with_it():
    images, records = render_pretraining_images(SEED, 6)
    held = ObjectCrops(images, records, (32, 32), augment=False)
    item = held[2]
    obj = records[2]["objects"][2 % len(records[2]["objects"])]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.uint8
    assert SHAPES[int(item["shape"])] == obj["shape"] and list(COLOURS)[int(item["colour"])] == obj["colour"]
    # the centre of a held-out crop shows the object's colour (the crop is centred on it)
    centre = item["image"][:, 14:18, 14:18].float().mean((1, 2)).numpy()
    assert np.abs(centre - np.array(COLOURS[obj["colour"]], dtype=float)).max() < 60, (centre, obj["colour"])
    # training crops vary (object, scale, offset, flip) but stay labelled by the object drawn
    train = ObjectCrops(images, records, (32, 32), augment=True)
    torch.manual_seed(0)
    items = [train[0] for _ in range(12)]
    assert len({it["image"].numpy().tobytes() for it in items}) > 6
    pairs = {(SHAPES[int(it["shape"])], list(COLOURS)[int(it["colour"])]) for it in items}
    assert pairs <= {(o["shape"], o["colour"]) for o in records[0]["objects"]}
    with pytest.raises(ConfigError, match="largest_head applies to task = 'scenes' only"):
        ClassifyConfig(largest_head=True).validate()


def test_object_classification_learns_shapes(data_set, tmp_path):
    path = ensure_classify_pretrained(get_preset("smoke").model, str(data_set), "synthref", "unc", OBJECTS,
                                      tmp_path / "pre", progress=False)
    info = json.loads((path.parent / "vit.json").read_text())
    assert info["classify_task"] == "objects" and info["steps"] == OBJECTS.epochs * (OBJECTS.images // 32)
    assert info["epoch_losses"][-1] < 0.8 * info["epoch_losses"][0], info["epoch_losses"]
    # the colour well above chance (1/7) on held-out crops of pictures never trained on; a
    # one-layer, width-32 ViT does not learn shapes in 125 steps (measured: at chance), so the
    # shape is only checked to be a share
    assert info["colour_accuracy"] > 0.5 and 0.0 <= info["shape_accuracy"] <= 1.0, info


def test_a_half_entry_or_an_abandoned_write_is_reported_and_redone(data_set, tmp_path, monkeypatch, capsys):
    model = get_preset("smoke").model
    calls = []

    def fake(model_cfg, seed, c, progress=True, version=1):  # the training itself is tested above
        calls.append(seed)
        return {"w": torch.full((2,), float(len(calls)))}, {"steps": 1}

    monkeypatch.setattr(pretrain, "pretrain_classify", fake)
    folder = tmp_path / "pre"
    path = ensure_classify_pretrained(model, str(data_set), "synthref", "unc", SMALL, folder)
    entry = path.parent
    # no temporary folder left (the entry's lock file stays: removing it would let two processes lock apart)
    assert sorted(p.name for p in folder.iterdir() if p.suffix != ".lock") == [entry.name]

    # a kill before the rename: the temporary folder of a process that no longer runs
    dead = subprocess.Popen(["true"])
    dead.wait()
    abandoned = folder / f".{entry.name}.{dead.pid}.deadbeef.tmp"
    abandoned.mkdir()
    (abandoned / "vit.safetensors").write_bytes(b"half")
    (entry / "vit.json").unlink()  # and an entry missing its record
    assert ensure_classify_pretrained(model, str(data_set), "synthref", "unc", SMALL, folder) == path
    err = capsys.readouterr().err
    assert f"removed {abandoned}" in err and "vit.json is missing" in err and "pretraining again" in err
    assert not abandoned.exists() and len(calls) == 2
    assert pretrain.entry_problem(entry) is None

    # weights replaced after the fact
    (entry / "vit.safetensors").write_bytes(b"other")
    ensure_classify_pretrained(model, str(data_set), "synthref", "unc", SMALL, folder)
    assert "does not match the sha256" in capsys.readouterr().err and len(calls) == 3


def test_a_write_stopped_before_the_rename_leaves_no_entry(data_set, tmp_path, monkeypatch):
    monkeypatch.setattr(pretrain, "pretrain_classify", lambda *a, **k: ({"w": torch.ones(2)}, {"steps": 1}))

    def stopped(*a):
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrain.os, "rename", stopped)
    with pytest.raises(KeyboardInterrupt):
        ensure_classify_pretrained(get_preset("smoke").model, str(data_set), "synthref", "unc", SMALL,
                                   tmp_path / "pre")
    assert [p for p in (tmp_path / "pre").iterdir() if p.suffix != ".lock"] == []


def test_data_that_the_generator_did_not_write_is_refused(tmp_path):
    (tmp_path / "refcoco").mkdir()
    with pytest.raises(ConfigError, match="not a generated data set"):
        generator_seed(tmp_path, "refcoco")
    with pytest.raises(ConfigError, match="model.vit_pretrain = 'xyz'"):
        get_preset("smoke", model={"vit_pretrain": "xyz"})
    with pytest.raises(ConfigError, match="images = 0"):
        ClassifyConfig(images=0).validate()


def test_the_trainer_loads_the_classification_weights(data_set, tmp_path, monkeypatch):
    """``vit_weights = "pretrain"`` with ``vit_pretrain = "classify"``: the trainer makes the
    entry (in ``$RESTR_PRETRAINED`` here; by default the repository's data/pretrained, whatever
    the working folder) and the model it builds starts from exactly those weights."""
    from safetensors.torch import load_file

    from restr.engine.distributed import Dist
    from restr.engine.trainer import vit_weights_for
    from restr.model import build_model

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RESTR_PRETRAINED", str(tmp_path / "cache"))
    small = ClassifyConfig(images=64, val_images=8, epochs=1, batch_size=32)
    monkeypatch.setattr(pretrain, "ClassifyConfig", lambda: small)
    cfg = get_preset("smoke", model={"vit_weights": "pretrain", "vit_pretrain": "classify"},
                     data={"root": str(data_set)})
    model_cfg = vit_weights_for(cfg, None, Dist())
    path = Path(model_cfg.vit_weights)
    assert path.parent.parent == tmp_path / "cache" and path.parent.name.startswith("vit-classify-")
    assert not (tmp_path / "data").exists()  # nothing beside the working folder
    saved = load_file(str(path))
    vit = build_model(model_cfg).vision.vit.state_dict()
    assert set(saved) == set(vit)
    for key, value in saved.items():
        assert torch.equal(vit[key], value), key
    # the tiny preset starts from it (the protocol's start); the quick zoo keeps the former one
    tiny = get_preset("tiny").model
    assert (tiny.vit_weights, tiny.vit_pretrain, tiny.vit_pos_init) == ("pretrain", "classify", "sincos")
    quick = get_book_profile("quick")
    assert dict(quick.overrides) == {"model.vit_pretrain": "dense", "model.vit_pos_init": "random"}


def test_the_cache_is_the_repositorys_whatever_the_working_folder(tmp_path, monkeypatch):
    """The book runs its notebooks from notebooks/: a training there must find the start that
    ``zoo train`` cached from the repository's root, not pretrain another beside the notebooks."""
    from restr.utils.files import REPO

    monkeypatch.delenv("RESTR_PRETRAINED", raising=False)
    monkeypatch.chdir(tmp_path)
    assert pretrain.pretrained_folder() == REPO / "data" / "pretrained"
    assert pretrain.pretrained_folder("elsewhere") == Path("elsewhere")  # a folder given wins
    monkeypatch.setenv("RESTR_PRETRAINED", str(tmp_path / "cache"))
    assert pretrain.pretrained_folder() == tmp_path / "cache"


def test_the_book_names_the_start():
    from restr.book.analysis import vit_start

    assert vit_start(get_preset("tiny").model).startswith("pretrained to classify generated pictures")
    assert vit_start(get_preset("tiny", model={"vit_pretrain": "dense"}).model).startswith(
        "pretrained on the training images")


def test_a_start_with_other_position_embeddings_is_another_cache_entry(tmp_path):
    from restr.engine.pretrain import PretrainConfig, classify_entry, pretrained_path

    model = get_preset("tiny", model={"vit_pos_init": "random"}).model
    sincos = get_preset("tiny").model
    for key in (lambda m: classify_entry(m, ClassifyConfig(), "f" * 64, tmp_path),
                lambda m: pretrained_path(m, PretrainConfig(), "f" * 64, tmp_path)):
        assert key(model) != key(sincos)
    # entries made before the field existed keep their names (the tiny preset's committed start)
    assert classify_entry(model, ClassifyConfig(), "f" * 64, tmp_path).name == "vit-classify-" + hashlib.sha256(
        json.dumps({"task": "classify", "vit": {k: getattr(model, k) for k in (
            "image_size", "patch_size", "vit_dim", "vit_depth", "vit_heads", "vit_mlp_ratio", "drop_path",
            "norm_eps")}, "classify": asdict(ClassifyConfig()), "data": "f" * 64},
            sort_keys=True, default=list).encode()).hexdigest()[:12]


def test_the_sincos_start_is_recorded_and_keeps_its_grid_through_pretraining(data_set, tmp_path, capsys):
    from restr.commands.pretrain import main as pretrain_main

    few = ClassifyConfig(images=64, val_images=16, epochs=2, batch_size=32, task="objects")
    model = get_preset("smoke", model={"vit_pos_init": "sincos"}).model
    path = ensure_classify_pretrained(model, str(data_set), "synthref", "unc", few, tmp_path / "pre", progress=False)
    info = json.loads((path.parent / "vit.json").read_text())
    assert info["position_init"] == "sincos" and info["position_structure"] > 0.5, info
    # the command says it, and names the setting the trainer needs
    assert pretrain_main(["--preset", "smoke", "--data", str(data_set), "--set", "model.vit_pretrain=classify",
                          "--set", "model.vit_pos_init=sincos", "--images", "64", "--epochs", "1",
                          "--folder", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "position embeddings: started sincos, structure after pretraining 0." in out
    assert "--set model.vit_pos_init=sincos" in out


def test_a_stop_request_during_the_pretraining_stops_it_and_caches_nothing(data_set, tmp_path, monkeypatch):
    """A campaign's deadline (SIGTERM) that comes while a run pretrains its ViT: the
    pretraining stops after the step under way (it once ran on for minutes and had to be
    killed), nothing half-done is cached, and the same call pretrains again."""
    from restr.engine import resume
    from restr.engine.resume import TrainingStopped

    monkeypatch.setattr(resume, "STOP_REQUESTS", [15])
    model = get_preset("smoke").model
    with pytest.raises(TrainingStopped, match="during the ViT's classification pretraining, before the run's first"):
        ensure_classify_pretrained(model, str(data_set), "synthref", "unc", SMALL, tmp_path / "pre", progress=False)
    assert not list((tmp_path / "pre").rglob("vit.*"))
    monkeypatch.setattr(resume, "STOP_REQUESTS", [])
    assert ensure_classify_pretrained(model, str(data_set), "synthref", "unc", SMALL, tmp_path / "pre",
                                      progress=False).is_file()


def test_two_processes_asking_for_the_same_entry_pretrain_it_once(data_set, tmp_path, monkeypatch, capsys):
    """A campaign's two jobs start together on a fresh machine and need the same ViT: the
    second waits for the first's entry instead of pretraining it beside it (seen: two jobs
    pretraining the same ViT for 11 minutes each)."""
    import threading
    import time

    from restr.engine import resume
    from restr.engine.resume import TrainingStopped

    model = get_preset("smoke").model
    real, calls = pretrain.pretrain_classify, []

    def slow(*a, **k):
        calls.append(1)
        time.sleep(1.0)  # long enough for the other call to find the entry being made
        return real(*a, **k)

    monkeypatch.setattr(pretrain, "pretrain_classify", slow)
    made = []
    first = threading.Thread(target=lambda: made.append(ensure_classify_pretrained(
        model, str(data_set), "synthref", "unc", SMALL, tmp_path / "pre", progress=False)))
    first.start()
    time.sleep(0.3)
    second = ensure_classify_pretrained(model, str(data_set), "synthref", "unc", SMALL, tmp_path / "pre",
                                        progress=False)
    first.join()
    assert made == [second] and second.is_file() and calls == [1]
    assert "another process is making vit-classify-" in capsys.readouterr().err
    # a stop request ends the wait: the entry's lock held elsewhere, nothing pretrained
    entry = second.parent
    with open(entry.with_name(entry.name + ".lock"), "a") as held:
        import fcntl

        fcntl.flock(held, fcntl.LOCK_EX)
        monkeypatch.setattr(resume, "STOP_REQUESTS", [15])
        with pytest.raises(TrainingStopped, match="during the wait for another process's ViT pretraining"):
            ensure_classify_pretrained(model, str(data_set), "synthref", "unc", SMALL, tmp_path / "pre")
    assert calls == [1]
