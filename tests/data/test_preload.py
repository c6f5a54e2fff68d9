"""Preloading a training split (restr.data.preload): the same items, read-only arrays, a
budget that is kept, bad files found before training, and no cache in a pickle."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from restr.data.errors import DataError
from restr.data.groups import ExpressionGroups, expression_groups
from restr.data.preload import BUDGET_ENV, budget_mb
from restr.data.refer import ReferDataset
from test_data import write_refer


def _train_split(root, **options):
    return ReferDataset(root, "synthref", "unc", "train", image_size=32, max_words=20, uint8=True, **options)


def _groups_of(dataset, seed: int):
    """Every expression group of epoch 0, made with torch's generator seeded by ``seed``
    (the augmentation's draws follow it)."""
    torch.manual_seed(seed)
    items = ExpressionGroups(dataset)
    return [items[g] for g in expression_groups(dataset, 2, seed=0, epoch=0)]


def test_a_preloaded_split_gives_the_same_augmented_groups_bit_for_bit(data_root):
    plain, preloaded = _train_split(data_root, augment=True), _train_split(data_root, augment=True)
    said = preloaded.preload(budget=64)
    assert "preloaded" in said and "not preloaded" not in said, said
    image_ids = plain.image_ids()
    assert set(preloaded._decoded.images) == set(image_ids)
    assert len(preloaded._decoded.masks) == len({r["ann_id"] for r in plain.refs})
    for a, b in zip(_groups_of(plain, 7), _groups_of(preloaded, 7), strict=True):
        for key in ("image", "mask", "words"):
            assert torch.equal(a[key], b[key]), key
    # the kept arrays are the decoded ones, and nothing can write into them
    image = preloaded.load_image(image_ids[0])
    np.testing.assert_array_equal(image, plain.load_image(image_ids[0]))
    assert not image.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        image[0, 0, 0] = 1


def test_the_budget_is_kept_and_said(data_root, monkeypatch):
    ds = _train_split(data_root)
    said = ds.preload(budget=0.01)
    assert ds._decoded is None
    assert "not preloaded" in said and "over the 0 MB budget" in said and BUDGET_ENV in said, said
    assert "(RESTR_PRELOAD_MB=0)" in ds.preload(budget=0)
    monkeypatch.setenv(BUDGET_ENV, "0")
    assert ds.preload().endswith(f"not preloaded ({BUDGET_ENV}=0)")
    assert budget_mb() == 0
    for bad in ("lots", "-5", "nan"):
        monkeypatch.setenv(BUDGET_ENV, bad)
        with pytest.raises(ValueError, match=rf"{BUDGET_ENV}='{bad}'"):
            budget_mb()


def test_a_pickled_dataset_leaves_its_cache_behind(data_root):
    ds = _train_split(data_root)
    ds.preload(budget=64)
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._decoded is None and ds._decoded is not None
    image_id = ds.image_ids()[0]
    np.testing.assert_array_equal(copy.load_image(image_id), ds.load_image(image_id))


def test_a_corrupt_image_stops_preloading_with_its_name(tmp_path):
    root = write_refer(tmp_path / "r", broken={"corrupt_image"})
    ds = ReferDataset(root, "refcoco", "unc", "train")
    with pytest.raises(DataError, match=r"cannot read image .*COCO_train2014_000000000106\.jpg"):
        ds.preload(budget=64)
    assert ds._decoded is None


def test_workers_read_the_cache_only_when_forked(monkeypatch):
    import multiprocessing

    from restr.data.preload import workers_share_it

    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none=False: "spawn")
    assert not workers_share_it(2) and workers_share_it(0)  # spawned workers get the data set without it
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none=False: "fork")
    assert workers_share_it(2)
