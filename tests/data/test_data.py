"""restr.data: vocabulary, GloVe, transforms, the refer reader, bad input, `data stats`.

The refer-format data sets here are written by the tests' own code (not by
restr.data.synth), with masks whose pixels are known exactly.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restr.commands.data import main as data_main
from restr.data import (LENGTH_BUCKETS, DataError, EmptyExpressionError, LetterboxMeta, ReferData, ReferDataset,
                        Vocabulary, bucket_of, collate, denormalize, embedding_matrix, letterbox, letterbox_mask,
                        load_glove, normalize, normalize_batch, tokenize, unletterbox)
from restr.data.stats import dataset_stats
from restr.data.transforms import augment, mentions_left_right

# ----------------------------------------------------------------------------------------
# a hand-written refer data set


def _rle_uncompressed(m: np.ndarray) -> list[int]:
    """Column-major run lengths, starting with a run of zeros (COCO's convention)."""
    flat = m.T.reshape(-1).tolist()
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    return runs


def _rect(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _rect_poly(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _expected_masks():
    """ann id -> expected mask (the segmentations below rasterise to exactly these)."""
    disk = np.zeros((30, 40), np.uint8)
    yy, xx = np.mgrid[0:30, 0:40]
    disk[(xx - 28) ** 2 + (yy - 15) ** 2 <= 36] = 1
    blob = np.zeros((24, 20), np.uint8)
    blob[3:9, 2:15] = 1
    blob[12:20, 5:7] = 1
    blob[0, 0] = 1  # a run that starts at pixel 0
    return {
        11: np.maximum(_rect(30, 40, 2, 3, 12, 9), _rect(30, 40, 5, 1, 9, 20)),  # overlapping polygons
        12: disk,  # compressed RLE
        13: blob,  # uncompressed RLE
        14: np.maximum(_rect(16, 16, 1, 1, 4, 12), _rect(16, 16, 1, 9, 11, 12)),  # L made of 2 rects
        15: _rect(20, 30, 10, 4, 25, 15),
    }


def write_refer(root: Path, *, dataset="refcoco", split_by="unc", broken: set[str] = frozenset()) -> Path:
    """Write a tiny refer data set under ``root``; ``broken`` adds named problems."""
    from pycocotools import mask as mask_utils

    exp = _expected_masks()
    ddir = root / dataset
    ddir.mkdir(parents=True, exist_ok=True)
    image_root = root / "images" / "mscoco" / "images" / "train2014"
    image_root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def name(i):
        return f"COCO_train2014_{i:012d}"

    # images: RGB jpeg, greyscale png, RGBA png, CMYK jpeg
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(image_root / f"{name(101)}.jpg", quality=95)
    Image.fromarray(rng.integers(0, 255, (24, 20), dtype=np.uint8), mode="L").save(image_root / f"{name(102)}.png")
    rgba = np.dstack([np.full((16, 16), 200, np.uint8), np.full((16, 16), 10, np.uint8),
                      np.full((16, 16), 60, np.uint8), np.full((16, 16), 128, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(image_root / f"{name(103)}.png")
    Image.new("CMYK", (30, 20), (0, 255, 255, 0)).save(image_root / f"{name(104)}.jpg", quality=95)
    images = [
        {"id": 101, "file_name": f"{name(101)}.jpg", "height": 30, "width": 40},
        {"id": 102, "file_name": f"{name(102)}.png", "height": 24, "width": 20},
        {"id": 103, "file_name": f"{name(103)}.png", "height": 16, "width": 16},
        {"id": 104, "file_name": f"{name(104)}.jpg", "height": 20, "width": 30},
    ]
    disk_rle = mask_utils.encode(np.asfortranarray(exp[12]))
    anns = [
        {"id": 11, "image_id": 101, "category_id": 1, "iscrowd": 0,
         "segmentation": [_rect_poly(2, 3, 12, 9), _rect_poly(5, 1, 9, 20)]},
        {"id": 12, "image_id": 101, "category_id": 2, "iscrowd": 0,
         "segmentation": {"size": [30, 40], "counts": disk_rle["counts"].decode("ascii")}},
        {"id": 13, "image_id": 102, "category_id": 1, "iscrowd": 1,
         "segmentation": {"size": [24, 20], "counts": _rle_uncompressed(exp[13])}},
        {"id": 14, "image_id": 103, "category_id": 1, "iscrowd": 0,
         "segmentation": [[1, 1, 4, 1, 4, 9, 11, 9, 11, 12, 1, 12]]},
        {"id": 15, "image_id": 104, "category_id": 2, "iscrowd": 0,
         "segmentation": [_rect_poly(10, 4, 25, 15)]},
    ]
    for a in anns:
        m = exp[a["id"]]
        ys, xs = np.nonzero(m)
        a["area"] = int(m.sum())
        a["bbox"] = [int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1), int(np.ptp(ys) + 1)]

    def sent(i, text):
        return {"sent_id": i, "sent": text, "raw": text, "tokens": tokenize(text)}

    refs = [
        {"ref_id": 1, "ann_id": 11, "image_id": 101, "split": "train",
         "sentences": [sent(1, "the plus sign on the left"), sent(2, "Cross.")]},
        {"ref_id": 2, "ann_id": 12, "image_id": 101, "split": "train",
         "sentences": [sent(3, "round thing, right side")]},
        {"ref_id": 3, "ann_id": 13, "image_id": 102, "split": "val",
         "sentences": [sent(4, "blob"), sent(5, "the weird blob at the top of the grey picture")]},
        {"ref_id": 4, "ann_id": 14, "image_id": 103, "split": "testA", "sentences": [sent(6, "letter l")]},
        {"ref_id": 5, "ann_id": 15, "image_id": 104, "split": "testB", "sentences": [sent(7, "red box")]},
    ]
    if "missing_ann" in broken:
        refs.append({"ref_id": 6, "ann_id": 999, "image_id": 101, "split": "train", "sentences": [sent(8, "ghost")]})
    if "missing_image_file" in broken:
        images.append({"id": 105, "file_name": f"{name(105)}.jpg", "height": 10, "width": 10})
        anns.append({"id": 16, "image_id": 105, "category_id": 1, "segmentation": [_rect_poly(1, 1, 5, 5)]})
        refs.append({"ref_id": 7, "ann_id": 16, "image_id": 105, "split": "train", "sentences": [sent(9, "lost")]})
    if "corrupt_image" in broken:
        (image_root / f"{name(106)}.jpg").write_bytes(b"this is not a jpeg at all" * 10)
        images.append({"id": 106, "file_name": f"{name(106)}.jpg", "height": 10, "width": 10})
        anns.append({"id": 17, "image_id": 106, "category_id": 1, "segmentation": [_rect_poly(1, 1, 5, 5)]})
        refs.append({"ref_id": 8, "ann_id": 17, "image_id": 106, "split": "train", "sentences": [sent(10, "junk")]})
    if "truncated_image" in broken:
        big = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        path = image_root / f"{name(107)}.jpg"
        Image.fromarray(big).save(path, quality=95)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        images.append({"id": 107, "file_name": f"{name(107)}.jpg", "height": 64, "width": 64})
        anns.append({"id": 18, "image_id": 107, "category_id": 1, "segmentation": [_rect_poly(1, 1, 5, 5)]})
        refs.append({"ref_id": 9, "ann_id": 18, "image_id": 107, "split": "train", "sentences": [sent(11, "half")]})
    if "empty_mask" in broken:
        anns.append({"id": 19, "image_id": 101, "category_id": 1,
                     "segmentation": {"size": [30, 40], "counts": [1200]}})
        refs.append({"ref_id": 10, "ann_id": 19, "image_id": 101, "split": "train", "sentences": [sent(12, "nothing")]})
    if "empty_expression" in broken:
        refs.append({"ref_id": 11, "ann_id": 12, "image_id": 101, "split": "train",
                     "sentences": [sent(13, " . ")]})
    for r in refs:
        ann_suffix = r["ann_id"]
        r["category_id"] = 1
        img = next(i for i in images if i["id"] == r["image_id"])
        stem, ext = img["file_name"].rsplit(".", 1)
        r["file_name"] = f"{stem}_{ann_suffix}.{ext}"
        r["sent_ids"] = [s["sent_id"] for s in r["sentences"]]
    with open(ddir / f"refs({split_by}).p", "wb") as fh:
        pickle.dump(refs, fh)
    (ddir / "instances.json").write_text(json.dumps({
        "images": images, "annotations": anns,
        "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "stuff"}],
    }))
    return root


@pytest.fixture
def refer_root(tmp_path):
    return write_refer(tmp_path / "refer")


# ----------------------------------------------------------------------------------------
# vocabulary and GloVe


def test_tokenize_follows_release():
    assert tokenize("The man, on the LEFT.") == ["the", "man", ",", "on", "the", "left"]
    assert tokenize("guy   in red-shirt") == ["guy", "in", "red", "-", "shirt"]
    assert tokenize("a . b.") == ["a", ".", "b"]
    assert tokenize(" . ") == []


def test_vocabulary_encode_pads_front_truncates_and_maps_unknown(tmp_path):
    v = Vocabulary.from_sentences(["red circle", "the red square", "red"])
    assert v.words[:3] == ["<pad>", "<unk>", "red"] and v.pad_id == 0 and v.unk_id == 1
    ids, n = v.encode("the blue circle", max_words=5)
    assert ids.dtype == np.int64 and ids.shape == (5,) and n == 3
    assert ids.tolist() == [0, 0, v.index["the"], 1, v.index["circle"]]
    long = " ".join(["red"] * 12 + ["square"] * 12)
    ids, n = v.encode(long, max_words=20)
    assert n == 20 and ids.tolist() == [v.index["red"]] * 12 + [v.index["square"]] * 8
    assert v.decode(v.encode("red square", 4)[0]) == "red square"
    with pytest.raises(EmptyExpressionError, match="' . '"):
        v.encode(" . ")
    v.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json").words == v.words
    assert len(Vocabulary.from_sentences(["a a b"], min_count=2)) == 3
    rep = v.oov_rate(["red zebra zebra"], glove_words={"red", "zebra"})
    assert rep["tokens"] == 3 and rep["unk_tokens"] == 2 and rep["glove_oov_rate"] == 0.0
    rep = v.oov_rate(["red qqqzz"], glove_words={"red"})
    assert rep["glove_oov_words"] == ["qqqzz"] and rep["glove_oov_rate"] == 0.5


def test_default_glove_and_embedding_matrix():
    words, vectors = load_glove()
    assert len(words) == 400_000 and vectors.shape == (400_000, 50) and vectors.dtype == np.float32
    assert words[0] == "the"
    # the published glove.6B.50d vector of "the" starts 0.418 0.24968 -0.41242
    np.testing.assert_allclose(vectors[0, :3], [0.418, 0.24968, -0.41242], atol=1e-5)
    v = Vocabulary.from_sentences(["red circle", "qqzzxx circle"])
    emb, oov = embedding_matrix(v, words, vectors)
    assert emb.shape == (len(v), 50) and emb.dtype == np.float32
    assert not emb[0].any()
    np.testing.assert_array_equal(emb[v.index["circle"]], vectors[words.index("circle")])
    assert oov == ["qqzzxx"]
    # OOV rows are small, deterministic and independent of the vocabulary's order
    v2 = Vocabulary(["<pad>", "<unk>", "qqzzxx", "red"])
    emb2, _ = embedding_matrix(v2, words, vectors)
    np.testing.assert_array_equal(emb2[2], emb[v.index["qqzzxx"]])
    assert 0 < np.abs(emb[v.index["qqzzxx"]]).mean() < np.abs(vectors[:1000]).mean()


def test_glove_text_file(tmp_path):
    f = tmp_path / "glove.test.3d.txt"
    f.write_text("the 0.1 0.2 0.3\nat name@x.com 1 2 3\ncircle -1 0 1e-1\n")
    words, vectors = load_glove(str(f))
    assert words == ["the", "at name@x.com", "circle"]
    np.testing.assert_allclose(vectors[2], [-1, 0, 0.1])
    bad = tmp_path / "glove.bad.txt"
    bad.write_text("the 0.1 0.2 0.3\ncircle 0.1 zz 0.3\n")
    with pytest.raises(DataError, match=r"glove\.bad\.txt:2"):
        load_glove(str(bad))
    short = tmp_path / "glove.short.txt"
    short.write_text("the 0.1 0.2 0.3\ncircle\n")
    with pytest.raises(DataError, match=r"glove\.short\.txt:2"):
        load_glove(str(short))
    with pytest.raises(DataError, match="glove.missing.txt"):
        load_glove(str(tmp_path / "glove.missing.txt"))


# ----------------------------------------------------------------------------------------
# transforms


def test_letterbox_geometry_and_exact_round_trip_at_scale_one():
    mask = np.zeros((30, 40), np.uint8)
    mask[3:20, 5:9] = 1
    out, meta = letterbox_mask(mask, 40)
    assert out.shape == (40, 40) and meta.scale == 1.0
    assert (meta.pad_top, meta.pad_left, meta.new_h, meta.new_w) == (5, 0, 30, 40)  # centred
    assert out[:5].sum() == 0 and out[35:].sum() == 0
    back = unletterbox(torch.from_numpy(out), meta)
    assert back.shape == (30, 40)
    assert torch.equal(back, torch.from_numpy(mask).float())


def test_letterbox_downscaled_round_trip_and_batched_meta():
    h, w = 96, 128
    yy, xx = np.mgrid[0:h, 0:w]
    mask = (((xx - 40) ** 2 + (yy - 50) ** 2) <= 20 ** 2).astype(np.uint8)
    image = np.dstack([mask * 200, np.full_like(mask, 30), yy.astype(np.uint8)]).astype(np.uint8)
    img64, meta = letterbox(image, (64, 64))
    m64, meta2 = letterbox_mask(mask, (64, 64))
    assert meta == meta2 and img64.shape == (64, 64, 3) and m64.shape == (64, 64)
    assert (meta.new_h, meta.new_w, meta.pad_top, meta.pad_left) == (48, 64, 8, 0)
    assert img64[:8].max() == 0 and img64[56:].max() == 0
    # logits in, original resolution out; also from a lower-resolution (16 x 16) prediction
    logits = torch.from_numpy(m64.astype(np.float32) * 8 - 4)
    for pred in (logits, torch.nn.functional.avg_pool2d(logits[None, None], 4)[0, 0]):
        back = unletterbox(pred, meta) >= 0
        m = torch.from_numpy(mask).bool()
        iou = (back & m).sum() / (back | m).sum()
        assert back.shape == (h, w) and iou > 0.93
    # the meta passes through collate as a (B, 9) tensor and back
    other = LetterboxMeta(10, 20, 3.2, 0, 0, 32, 64, 64, 64)
    batch = collate([{"meta": meta.to_tensor()}, {"meta": other.to_tensor()}])
    assert batch["meta"].shape == (2, 9)
    metas = LetterboxMeta.batch_from_tensor(batch["meta"])
    assert metas[0] == meta and metas[1].orig_w == 20 and metas[1].scale == pytest.approx(3.2)
    out = unletterbox(torch.zeros(3, 2, 64, 64), batch["meta"][0])
    assert out.shape == (3, 2, 96, 128)


def test_normalize_round_trip():
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    x = normalize(img)
    assert x.shape == (3, 5, 7) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert x[0, 0, 0].item() == pytest.approx(img[0, 0, 0] / 127.5 - 1)
    np.testing.assert_array_equal(denormalize(x), img)
    assert denormalize(x[None]).shape == (1, 5, 7, 3)


def test_normalize_batch_is_normalize_on_uint8_batches():
    imgs = np.random.default_rng(1).integers(0, 256, (2, 6, 9, 3), dtype=np.uint8)
    batch = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
    out = normalize_batch(batch)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 6, 9)
    for i in range(2):
        assert torch.equal(out[i], normalize(imgs[i]))  # bit for bit
    with pytest.raises(DataError, match="uint8"):
        normalize_batch(out)


@pytest.mark.parametrize("flipped", [False, True])
def test_photometric_jitter_is_the_plain_formula_bit_for_bit(flipped):
    from restr.data.transforms import photometric

    rng = np.random.default_rng(5)
    for _ in range(20):
        h, w = rng.integers(20, 300, 2)
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if flipped:
            image = image[:, ::-1]  # augment passes flipped views
        b, c, s = (1.0 + float(v) for v in rng.uniform(-0.15, 0.15, 3))
        img = image.astype(np.float32)
        grey = img.mean(axis=2, keepdims=True)
        img = grey + (img - grey) * s
        img = (img - img.mean()) * c + img.mean()
        expected = np.clip(img * b + 0.5, 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(photometric(image, b, c, s), expected)


def test_augment_never_flips_left_right_sentences_and_keeps_target():
    img = np.zeros((40, 60, 3), np.uint8)
    img[:, :10] = 255  # bright stripe on the left
    mask = np.zeros((40, 60), np.uint8)
    mask[10:20, 5:15] = 1
    assert mentions_left_right(["the", "left-most", "cup"]) and not mentions_left_right(["red", "cup"])
    flips_lr, flips_plain = 0, 0
    for seed in range(40):
        for tokens, counter in ((["man", "on", "the", "left"], "lr"), (["red", "cup"], "plain")):
            out, m = augment(img, mask, tokens, np.random.default_rng(seed), max_crop=0.0, jitter=0.0)
            flipped = out[:, -1].mean() > out[:, 0].mean()
            assert m.sum() == mask.sum()
            if counter == "lr":
                flips_lr += flipped
            else:
                flips_plain += flipped
        out, m = augment(img, mask, ["cup"], np.random.default_rng(seed))
        assert m.sum() == mask.sum() and out.shape[:2] == m.shape  # crop never cuts the target
        assert out.shape[0] >= 40 * 0.84 and out.shape[1] >= 60 * 0.84
    assert flips_lr == 0 and 5 < flips_plain < 35


# ----------------------------------------------------------------------------------------
# the reader


def test_reader_masks_pixel_for_pixel_and_splits(refer_root):
    exp = _expected_masks()
    counts = {}
    for split in ("train", "val", "testA", "testB"):
        ds = ReferDataset(refer_root, "refcoco", "unc", split, image_size=32, return_original=True)
        counts[split] = (len(ds.refs), len(ds))
        for i in range(len(ds)):
            item = ds[i]
            ann = item["ann_id"]
            np.testing.assert_array_equal(ds.load_mask(ann), exp[ann])
            np.testing.assert_array_equal(item["orig_mask"].numpy(), exp[ann])
            boxed, meta = letterbox_mask(exp[ann], 32)
            np.testing.assert_array_equal(item["mask"].numpy(), boxed)
            assert torch.equal(item["meta"], meta.to_tensor())
            assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
            assert item["words"].shape == (20,) and item["words"].dtype == torch.int64
            assert item["length"] == len(tokenize(item["sentence"])) == (item["words"] != 0).sum()
    assert counts == {"train": (2, 3), "val": (1, 2), "testA": (1, 1), "testB": (1, 1)}
    # overlapping polygons are a union, not a sum
    assert exp[11].max() == 1 and exp[11].sum() < 10 * 6 + 4 * 19


def test_reader_items_order_vocab_and_images(refer_root):
    train = ReferDataset(refer_root, "refcoco", "unc", "train", image_size=(24, 32))
    assert train.sentences() == ["the plus sign on the left", "Cross.", "round thing, right side"]
    assert train.lengths() == [6, 1, 5]
    assert [train[i]["sent_id"] for i in range(3)] == [1, 2, 3]
    assert train[0]["image"].shape == (3, 24, 32)
    assert "cross" in train.vocab and train.vocab.words[:2] == ["<pad>", "<unk>"]
    val = ReferDataset(refer_root, "refcoco", "unc", "val", vocab=train.vocab, max_words=4)
    item = val[1]  # "the weird blob at the top ..." with the train vocabulary
    assert item["num_words"] == 10 and item["length"] == 4
    assert item["words"].tolist() == [train.vocab.index["the"], 1, 1, 1]
    assert val.image_path(102).name == "COCO_train2014_000000000102.png"
    assert val.refs[0]["file_name"] == "COCO_train2014_000000000102_13.png"  # the ann id suffix
    # grey, RGBA and CMYK images all load as RGB
    grey = val.load_image(102)
    assert grey.shape == (24, 20, 3) and (grey[..., 0] == grey[..., 2]).all()
    rgba = train.data.load_image(103)
    assert rgba.shape == (16, 16, 3) and tuple(rgba[0, 0]) == (200, 10, 60)
    cmyk = train.data.load_image(104)
    assert cmyk.shape == (20, 30, 3) and cmyk[..., 0].mean() > 200 and cmyk[..., 1].mean() < 40


def test_item_options_as_one_object_or_by_name(refer_root):
    from restr.data import ItemOptions

    opts = ItemOptions(image_size=(24, 32), max_words=4, uint8=True)
    ds = ReferDataset(refer_root, "refcoco", "unc", "val", None, None, opts, max_words=3)  # a name overrides
    assert ds.options == ItemOptions(image_size=(24, 32), max_words=3, uint8=True)
    assert (ds.image_size, ds.max_words, ds.uint8, ds.augment) == ((24, 32), 3, True, False)
    item = ds[1]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 24, 32) and item["length"] == 3
    with pytest.raises(TypeError, match="'image_sise'"):
        ReferDataset(refer_root, "refcoco", "unc", "val", image_sise=32)
    with pytest.raises(DataError, match="max_words must be >= 1"):
        ReferDataset(refer_root, "refcoco", "unc", "val", options=opts, max_words=0)
    with pytest.raises(DataError, match="image_size must be"):
        ReferDataset(refer_root, "refcoco", "unc", "val", image_size=(0, 3))


def test_reader_in_a_dataloader_and_collate(refer_root):
    ds = ReferDataset(refer_root, "refcoco", "unc", "train", image_size=32, return_original=True, augment=True)
    torch.manual_seed(0)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate, num_workers=1)))
    assert batch["image"].shape == (3, 3, 32, 32) and batch["mask"].shape == (3, 32, 32)
    assert batch["words"].shape == (3, 20) and batch["length"].tolist() == [6, 1, 5]
    assert batch["meta"].shape == (3, 9) and batch["ref_id"].tolist() == [1, 1, 2]
    assert isinstance(batch["sentence"], list) and isinstance(batch["orig_mask"], list)
    assert set(torch.unique(batch["mask"]).tolist()) <= {0.0, 1.0}
    for k in range(3):  # the (possibly cropped) mask maps back through the meta
        meta = LetterboxMeta.from_tensor(batch["meta"][k])
        assert tuple(batch["orig_mask"][k].shape) == (meta.orig_h, meta.orig_w)


def test_uint8_items_carry_the_same_pixels(refer_root):
    """The trainer's items (uint8, normalised on the device) hold exactly the float items' data."""
    plain = ReferDataset(refer_root, "refcoco", "unc", "train", image_size=32)
    raw = ReferDataset(refer_root, "refcoco", "unc", "train", image_size=32, uint8=True)
    batch = collate([raw[i] for i in range(len(raw))])
    assert batch["image"].dtype == torch.uint8 and batch["mask"].dtype == torch.uint8
    ref = collate([plain[i] for i in range(len(plain))])
    assert torch.equal(normalize_batch(batch["image"]), ref["image"])
    assert torch.equal(batch["mask"].float(), ref["mask"])
    assert torch.equal(batch["words"], ref["words"])


def test_length_buckets_match_table_2():
    assert [bucket_of(n, "refcoco") for n in (1, 2, 3, 4, 5, 6, 20, 31)] == ["1-2", "1-2", "3", "4-5", "4-5", "6-20",
                                                                              "6-20", "6-20"]
    assert [bucket_of(n, "refcocog") for n in (5, 6, 7, 8, 10, 11)] == ["1-5", "6-7", "6-7", "8-10", "8-10", "11-20"]
    assert [bucket_of(n, "refclef") for n in (1, 2, 3, 4, 5)] == ["1", "2", "3-4", "3-4", "5-20"]
    assert LENGTH_BUCKETS["refcoco+"] == LENGTH_BUCKETS["synthref"] == LENGTH_BUCKETS["refcoco"]
    with pytest.raises(DataError, match="nope"):
        bucket_of(3, "nope")


# ----------------------------------------------------------------------------------------
# bad input


def test_unknown_names(refer_root):
    with pytest.raises(DataError, match="'refcocoX'"):
        ReferDataset(refer_root, "refcocoX", "unc", "train")
    with pytest.raises(DataError, match="'umd'.*unc"):
        ReferDataset(refer_root, "refcoco", "umd", "train")
    with pytest.raises(DataError, match="'test'.*testA"):
        ReferDataset(refer_root, "refcoco", "unc", "test")


def test_missing_files(tmp_path, refer_root):
    with pytest.raises(DataError, match=r"refs\(unc\)\.p"):
        ReferDataset(tmp_path / "nowhere", "refcoco", "unc", "train")
    (refer_root / "refcoco" / "instances.json").unlink()
    with pytest.raises(DataError, match="instances.json"):
        ReferDataset(refer_root, "refcoco", "unc", "train")


def test_corrupt_pickle(refer_root):
    (refer_root / "refcoco" / "refs(unc).p").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match=r"refs\(unc\)\.p"):
        ReferDataset(refer_root, "refcoco", "unc", "train")


@pytest.mark.parametrize(
    "problem, pattern",
    [
        ("missing_ann", r"ref 6: annotation 999 is not in .*instances\.json"),
        ("missing_image_file", r"ref 7: image file not found: .*COCO_train2014_000000000105\.jpg"),
        ("empty_expression", r"ref 11, sentence 13: empty expression ' \. '"),
    ],
)
def test_structural_problems_fail_at_construction(tmp_path, problem, pattern):
    root = write_refer(tmp_path / "r", broken={problem})
    with pytest.raises(DataError, match=pattern) as info:
        ReferDataset(root, "refcoco", "unc", "train")
    if problem == "empty_expression":
        assert isinstance(info.value, EmptyExpressionError)


@pytest.mark.parametrize(
    "problem, ref_id, pattern",
    [
        ("corrupt_image", 8, r"cannot read image .*COCO_train2014_000000000106\.jpg"),
        ("truncated_image", 9, r"cannot read image .*COCO_train2014_000000000107\.jpg.*truncated"),
        ("empty_mask", 10, r"ref 10: annotation 19 .*empty mask"),
    ],
)
def test_item_problems_name_the_file_or_ref(tmp_path, problem, ref_id, pattern):
    root = write_refer(tmp_path / "r", broken={problem})
    ds = ReferDataset(root, "refcoco", "unc", "train")
    index = next(i for i in range(len(ds)) if ds.item_ref(i)[0]["ref_id"] == ref_id)
    with pytest.raises(DataError, match=pattern):
        ds[index]
    ds[0]  # the good items still load
    # and inside a DataLoader worker the same message reaches the main process
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, [index]), collate_fn=collate, num_workers=1)
    with pytest.raises(Exception, match=pattern.split(" .*")[0]):
        next(iter(loader))


def test_bad_segmentations(tmp_path):
    from restr.data import decode_segmentation

    with pytest.raises(DataError, match="ann 5: RLE size"):
        decode_segmentation({"size": [3, 4], "counts": [12]}, 4, 4, "ann 5")
    with pytest.raises(DataError, match="sum to 16"):
        decode_segmentation({"size": [4, 4], "counts": [3, 4]}, 4, 4, "ann 5")
    with pytest.raises(DataError, match="corrupt compressed RLE"):
        decode_segmentation({"size": [4, 4], "counts": "~~~"}, 4, 4, "ann 5")
    with pytest.raises(DataError, match="covers"):
        decode_segmentation({"size": [4, 4], "counts": "12"}, 4, 4, "ann 5")
    with pytest.raises(DataError, match="at least 3 points"):
        decode_segmentation([[1, 1, 2, 2]], 4, 4, "ann 5")


# ----------------------------------------------------------------------------------------
# ReferIt's layout: every mask a list of RLE dicts, several parts per object


def _disk_mask(h, w, cx, cy, r):
    yy, xx = np.mgrid[0:h, 0:w]
    return ((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r).astype(np.uint8)


def _compressed_rle(m: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": rle["counts"].decode("ascii")}


def _referit_parts() -> dict[int, list[np.ndarray]]:
    """ann id -> the parts of its mask, as drawn (all on 30 x 40 images)."""
    h, w = 30, 40
    return {
        21: [_rect(h, w, 2, 2, 20, 8), _rect(h, w, 8, 5, 14, 25)],                 # a T: two overlapping bars
        22: [_disk_mask(h, w, 30, 15, 6)],                                           # one part
        23: [_disk_mask(h, w, 24, 20, 5), _disk_mask(h, w, 30, 20, 5), _rect(h, w, 25, 12, 29, 29)],  # 3 overlap
        24: [_rect(h, w, 0, 0, 5, 5), _rect(h, w, 35, 25, 40, 30)],                 # apart, first and last pixel
        25: [_rect(h, w, 10, 10, 20, 20), _rect(h, w, 15, 15, 25, 25)],             # second part uncompressed
    }


def write_referit(root: Path) -> Path:
    """A refclef-style data set (refs(unc).p, instances.json, images/saiapr_tc-12)."""
    parts = _referit_parts()
    ddir, image_root = root / "refclef", root / "images" / "saiapr_tc-12"
    ddir.mkdir(parents=True)
    image_root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    images = []
    for image_id in (7, 8):
        Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(image_root / f"{image_id}.png")
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": 30, "width": 40})
    anns, refs = [], []
    for k, (ann_id, ps) in enumerate(parts.items()):
        seg = [_compressed_rle(m) for m in ps]
        if ann_id == 25:
            seg[1] = {"size": [30, 40], "counts": _rle_uncompressed(ps[1])}
        image_id = 7 if ann_id < 24 else 8
        union = np.maximum.reduce(ps)
        ys, xs = np.nonzero(union)
        anns.append({"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "segmentation": seg,
                     "area": int(union.sum()), "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1),
                                                        int(np.ptp(ys) + 1)]})
        text = f"thing number {k + 1}"
        refs.append({"ref_id": k + 1, "ann_id": ann_id, "image_id": image_id, "category_id": 1,
                     "split": ("train", "val", "testA", "testB", "testC")[k], "file_name": f"{image_id}_{ann_id}.png",
                     "sent_ids": [k + 1], "sentences": [{"sent_id": k + 1, "sent": text, "raw": text,
                                                         "tokens": tokenize(text)}]})
    with open(ddir / "refs(unc).p", "wb") as fh:
        pickle.dump(refs, fh, protocol=2)
    (ddir / "instances.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                     "categories": [{"id": 1, "name": "thing"}]}))
    return root


def test_referit_rle_lists_read_pixel_for_pixel_as_a_union(tmp_path):
    from toolkit_reader import toolkit_mask

    root = write_referit(tmp_path / "referit")
    parts = _referit_parts()
    seen = set()
    for split in ("train", "val", "testA", "testB", "testC"):
        ds = ReferDataset(root, "refclef", "unc", split, image_size=32, return_original=True)
        item = ds[0]
        ann = item["ann_id"]
        union = np.maximum.reduce(parts[ann])
        np.testing.assert_array_equal(ds.load_mask(ann), union)
        np.testing.assert_array_equal(item["orig_mask"].numpy(), union)
        np.testing.assert_array_equal(item["mask"].numpy(), letterbox_mask(union, 32)[0])
        seen.add(ann)
    assert seen == set(parts)
    # the toolkit sums the parts: 2 (and 3) where they overlap, so `mask == 1` would cut holes
    inst = json.loads((root / "refclef" / "instances.json").read_text())
    seg = {a["id"]: a["segmentation"] for a in inst["annotations"]}
    for ann in (21, 22, 23, 24):
        summed = toolkit_mask(seg[ann], 30, 40)
        np.testing.assert_array_equal(summed, np.sum(parts[ann], axis=0))
        np.testing.assert_array_equal(summed > 0, np.maximum.reduce(parts[ann]) > 0)
    assert toolkit_mask(seg[21], 30, 40).max() == 2 and toolkit_mask(seg[23], 30, 40).max() == 3
    with pytest.raises(TypeError):  # uncompressed counts in a list: the toolkit's decode wants bytes
        toolkit_mask(seg[25], 30, 40)
    with pytest.raises(KeyError):  # a bare RLE dict: the toolkit reads segmentation[0]
        toolkit_mask(seg[22][0], 30, 40)


@pytest.mark.parametrize(
    "segmentation, found",
    [
        ("oops", r"found str oops"),
        ([], r"found an empty list"),
        (None, r"found NoneType None"),
        (7, r"found int 7"),
        (["a", "b"], r"found a list of str"),
        ([[1, 1, 9, 1, 9, 9], {"size": [30, 40], "counts": [1200]}], r"found a list of dict and list"),
    ],
)
def test_unreadable_segmentations_name_the_annotation_and_what_was_found(refer_root, segmentation, found):
    inst_path = refer_root / "refcoco" / "instances.json"
    inst = json.loads(inst_path.read_text())
    inst["annotations"].append({"id": 77, "image_id": 101, "category_id": 1, "segmentation": segmentation})
    inst_path.write_text(json.dumps(inst))
    data = ReferData(refer_root, "refcoco", "unc")
    with pytest.raises(DataError, match=r"annotation 77 \(image 101, instances\.json\): a segmentation must be .*"
                                        + found):
        data.load_mask(77)


def test_rle_list_parts_are_checked_one_by_one():
    from restr.data import decode_segmentation

    good = _compressed_rle(_rect(4, 4, 0, 0, 2, 2))
    np.testing.assert_array_equal(decode_segmentation([good, {"size": [4, 4], "counts": [12, 4]}], 4, 4),
                                  np.maximum(_rect(4, 4, 0, 0, 2, 2), _rect(4, 4, 3, 0, 4, 4)))
    with pytest.raises(DataError, match="ann 5, RLE part 1: RLE size"):
        decode_segmentation([good, {"size": [3, 4], "counts": [12]}], 4, 4, "ann 5")
    with pytest.raises(DataError, match="ann 5, RLE part 0: an RLE needs 'size' and 'counts'"):
        decode_segmentation([{"counts": "12"}], 4, 4, "ann 5")


def test_stats_reports_mask_forms_and_warns_once_per_form(tmp_path, refer_root, capsys):
    s = dataset_stats(write_referit(tmp_path / "referit"), "refclef", "unc", glove=None, progress=False)
    assert s["problems"] == []
    assert s["mask_forms"] == {"RLE list": 4, "RLE list (uncompressed)": 1}
    assert len(s["warnings"]) == 1 and "1 ref(s) have uncompressed RLE counts" in s["warnings"][0]
    # RefCOCO-style polygons, and COCO's crowd form (a bare RLE dict, compressed or not): read, with one warning
    s = dataset_stats(refer_root, "refcoco", "unc", glove=None, progress=False)
    assert s["problems"] == []
    assert s["mask_forms"] == {"polygons": 3, "RLE dict": 1, "RLE dict (uncompressed)": 1}
    assert len(s["warnings"]) == 1 and s["warnings"][0].startswith("2 ref(s) have a bare RLE dict")
    assert data_main(["stats", "--root", str(refer_root), "--dataset", "refcoco", "--split-by", "unc",
                      "--quiet", "--glove", "none"]) == 0
    out = capsys.readouterr().out
    assert "mask forms (refs): polygons 3, RLE dict 1, RLE dict (uncompressed) 1" in out
    assert "warnings: 1\n  - 2 ref(s) have a bare RLE dict" in out and "problems: none" in out


# ----------------------------------------------------------------------------------------
# data stats


def test_stats_counts_and_histogram(refer_root, capsys):
    s = dataset_stats(refer_root, "refcoco", "unc", progress=False)
    assert s["problems"] == []
    exp = _expected_masks()
    train = s["splits"]["train"]
    assert (train["refs"], train["sentences"], train["images"]) == (2, 3, 1)
    assert train["mask_pixels"] == int(exp[11].sum() + exp[12].sum())
    assert train["length_histogram"] == {1: 1, 5: 1, 6: 1}
    assert train["length_buckets"] == {"1-2": 1, "3": 0, "4-5": 1, "6-20": 1}
    assert s["splits"]["val"]["glove_oov_rate"] == 0.0
    assert data_main(["stats", "--root", str(refer_root), "--dataset", "refcoco", "--split-by", "unc", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "problems: none" in out and "1-2: 1" in out and "train" in out
    assert data_main(["stats", "--root", str(refer_root), "--dataset", "refcoco", "--split-by", "unc",
                      "--quiet", "--json", "--glove", "none"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert parsed["splits"]["testB"]["refs"] == 1 and "glove_oov_rate" not in parsed["splits"]["testB"]


def test_stats_lists_every_problem_in_one_pass(tmp_path, capsys):
    everything = {"missing_ann", "missing_image_file", "corrupt_image", "truncated_image", "empty_mask",
                  "empty_expression"}
    root = write_refer(tmp_path / "r", broken=everything)
    s = dataset_stats(root, "refcoco", "unc", glove=None, progress=False)
    text = "\n".join(s["problems"])
    for needle in ("ref 6: annotation 999", "000000000105.jpg", "000000000106.jpg", "000000000107.jpg",
                   "annotation 19", "empty mask", "ref 11, sentence 13: empty expression"):
        assert needle in text, needle
    assert len(s["problems"]) == 6
    assert data_main(["stats", "--root", str(root), "--dataset", "refcoco", "--split-by", "unc",
                      "--quiet", "--glove", "none"]) == 1
    assert "problems: 6" in capsys.readouterr().out
    # missing files and unknown names: a clear message, non-zero exit
    assert data_main(["stats", "--root", str(tmp_path / "none"), "--dataset", "refcoco", "--split-by", "unc",
                      "--quiet"]) == 1
    assert "refs(unc).p" in capsys.readouterr().out
    assert data_main(["stats", "--root", str(root), "--dataset", "refcoco", "--split-by", "nope", "--quiet"]) == 2
    assert "'nope'" in capsys.readouterr().err
