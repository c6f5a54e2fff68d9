"""Image input: one loading path for files, PIL images and arrays (the accepted forms,
everything else refused by name), and EXIF orientation applied wherever an image is read
(prediction, evaluation, the data loader)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from restr.data.errors import DataError
from restr.data.refer import ReferDataset, read_image
from restr.eval.predict import Predictor

EXIF_ORIENTATION = 0x0112


def gradient_rgb(h: int = 12, w: int = 20) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 12, y * 20, (x + y) * 5], axis=2).astype(np.uint8)


# ----------------------------------------------------------------------------------------
# accepted forms

def test_16_bit_images_are_the_same_as_a_path_a_pil_image_and_an_array(tmp_path):
    grey16 = (np.arange(12 * 20).reshape(12, 20) * 250).astype(np.uint16)  # 0 ... 59750
    path = tmp_path / "grey16.png"
    Image.fromarray(grey16).save(path)
    expected = np.repeat(np.round(grey16 / 257.0).astype(np.uint8)[..., None], 3, axis=2)
    from_path = Predictor.load_image(path)
    with Image.open(path) as im:
        assert im.mode == "I;16"
        from_pil = Predictor.load_image(im)
    from_array = Predictor.load_image(grey16)
    for got in (from_path, from_pil, from_array):
        assert got.dtype == np.uint8 and got.shape == (12, 20, 3)
        np.testing.assert_array_equal(got, expected)  # not all white, not scaled by 255
    # a dark 16-bit image (max 200 of 65535) stays dark: the range is the type's, not the data's
    dark = np.full((4, 4), 200, np.uint16)
    Image.fromarray(dark).save(tmp_path / "dark16.png")
    assert Predictor.load_image(tmp_path / "dark16.png").max() == 1
    assert Predictor.load_image(dark).max() == 1


def test_float_images_are_read_as_0_to_1():
    rgb = gradient_rgb()
    as_float = rgb.astype(np.float32) / 255.0
    np.testing.assert_array_equal(Predictor.load_image(as_float), rgb)
    dark = np.full((4, 4, 3), 0.5 / 255, np.float64)  # a dark image given as 0-1 floats stays dark
    assert Predictor.load_image(dark).max() <= 1
    with pytest.raises(DataError, match=r"float image with values from -1 to 0\.788.*read as \[0, 1\]"):
        Predictor.load_image(as_float * 2 - 1)
    with pytest.raises(DataError, match=r"float image with values from 0 to 228.*\[0, 1\].*uint8"):
        Predictor.load_image(rgb.astype(np.float32))
    with_nan = as_float.copy()
    with_nan[3, 4, 1] = np.nan
    with pytest.raises(DataError, match="1 NaN"):
        Predictor.load_image(with_nan)


def test_array_shapes_channels_and_integer_types():
    rgb = gradient_rgb()
    grey = rgb[..., 0]
    np.testing.assert_array_equal(Predictor.load_image(grey), np.repeat(grey[..., None], 3, axis=2))
    np.testing.assert_array_equal(Predictor.load_image(grey[..., None]), np.repeat(grey[..., None], 3, axis=2))
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(Predictor.load_image(rgba), rgb)  # alpha dropped, as for a PIL RGBA image
    np.testing.assert_array_equal(Predictor.load_image(Image.fromarray(rgba)), rgb)
    np.testing.assert_array_equal(Predictor.load_image(rgb.astype(np.int64)), rgb)  # 0-255 in a wider type
    with pytest.raises(DataError, match=r"int64 image with values up to 300.*0 to 255"):
        Predictor.load_image(np.full((4, 4, 3), 300, np.int64))
    with pytest.raises(DataError, match=r"\(3, 12, 20\) looks channels first.*transpose\(1, 2, 0\)"):
        Predictor.load_image(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
    with pytest.raises(DataError, match=r"\(12, 20, 2\).*H x W x 3"):
        Predictor.load_image(rgb[..., :2])
    with pytest.raises(DataError, match="bool array"):
        Predictor.load_image(grey > 100)
    with pytest.raises(DataError, match=r"\(0, 20, 3\)"):
        Predictor.load_image(rgb[:0])


def test_other_inputs_are_refused_by_name():
    import torch

    for thing, name in ((rgb := gradient_rgb()).tolist(), "list"), (torch.zeros(3, 8, 8), "torch.Tensor"), \
            (b"\x89PNG", "bytes"), (None, "NoneType"):
        with pytest.raises(DataError, match=rf"cannot read an image from a {name}.*path, a PIL image or a NumPy"):
            Predictor.load_image(thing)
    assert rgb.shape == (12, 20, 3)


def test_pil_modes_agree_with_their_files(tmp_path):
    rgb = gradient_rgb()
    for mode in ("L", "P", "CMYK", "LA", "1"):
        im = Image.fromarray(rgb).convert(mode)
        path = tmp_path / f"im_{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
        im.save(path)
        with Image.open(path) as again:
            np.testing.assert_array_equal(Predictor.load_image(path), Predictor.load_image(again))


# ----------------------------------------------------------------------------------------
# EXIF orientation

def write_orientation_6(upright: np.ndarray, path) -> None:
    """Store ``upright`` as a phone does: the pixels rotated, EXIF orientation 6 to undo it."""
    raw = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    raw.save(path, exif=exif, quality=100, subsampling=0)


def left_bright(h: int = 40, w: int = 64) -> np.ndarray:
    img = np.full((h, w, 3), 20, np.uint8)
    img[:, : w // 4] = 235  # a bright band on the LEFT of the upright picture
    return img


def test_exif_orientation_is_applied_to_files_and_pil_images(tmp_path):
    upright = left_bright()
    path = tmp_path / "phone.jpg"
    write_orientation_6(upright, path)
    with Image.open(path) as im:
        assert im.size == (40, 64)  # stored sideways: 40 wide, 64 high
    got = read_image(path)
    assert got.shape == (40, 64, 3)
    assert np.abs(got.astype(int) - upright).max() <= 8  # JPEG at quality 100
    with Image.open(path) as im:
        np.testing.assert_array_equal(Predictor.load_image(im), got)
    np.testing.assert_array_equal(Predictor.load_image(path), got)


def test_annotations_of_the_raw_pixels_keep_the_raw_pixels(tmp_path):
    """A data set whose instances.json records the stored (sideways) size drew its masks on
    the raw pixels: the reader then keeps them as stored, so image and masks stay aligned."""
    upright = left_bright()
    path = tmp_path / "phone.jpg"
    write_orientation_6(upright, path)
    raw = read_image(path, expect_hw=(64, 40))
    assert raw.shape == (64, 40, 3)
    assert np.abs(raw.astype(int) - np.rot90(upright, 1)).max() <= 8  # as stored: rotated a quarter turn
    assert read_image(path, expect_hw=(40, 64)).shape == (40, 64, 3)
    with pytest.raises(DataError, match=r"phone\.jpg is 40x64 \(h x w\) but instances.json says 50x50"):
        read_image(path, expect_hw=(50, 50))


def test_prediction_on_a_rotated_jpeg_is_upright(smoke_run, tmp_path):
    upright = left_bright()
    phone, plain = tmp_path / "phone.jpg", tmp_path / "plain.png"
    write_orientation_6(upright, phone)
    Image.fromarray(read_image(phone)).save(plain)  # the same pixels, upright, no EXIF
    p = Predictor.from_run(smoke_run)
    a, b = p.predict(phone, "the red circle"), p.predict(plain, "the red circle")
    assert a["mask"].shape == (40, 64)
    np.testing.assert_array_equal(a["probability"], b["probability"])


@pytest.fixture()
def data_with_a_phone_photo(tmp_path):
    """A synthref copy whose first non-square val image is stored sideways with EXIF 6
    (instances.json keeps the upright size its masks were drawn on)."""
    from restr.data.synth import generate

    root = tmp_path / "data"
    generate(root, seed=3, num_images=12, progress=False)
    val = ReferDataset(root, "synthref", "unc", "val", image_size=32, return_original=True)
    image_id = next(i for i in val.image_ids() if len(set(val.load_image(i).shape[:2])) == 2)
    upright = val.load_image(image_id)
    path = val.image_path(image_id)
    shutil.copy(path, tmp_path / "original.jpg")
    write_orientation_6(upright, path)
    return root, image_id, upright


def test_data_loader_and_evaluation_read_rotated_images_upright(data_with_a_phone_photo, smoke_run, tmp_path):
    from restr.eval.evaluate import evaluate_run

    root, image_id, upright = data_with_a_phone_photo
    val = ReferDataset(root, "synthref", "unc", "val", image_size=32, return_original=True)
    got = val.load_image(image_id)  # checked against instances.json's (upright) size
    assert got.shape == upright.shape
    assert np.abs(got.astype(int) - upright).mean() < 2
    index = next(i for i in range(len(val)) if int(val.item_ref(i)[0]["image_id"]) == image_id)
    item = val[index]
    assert tuple(item["orig_mask"].shape) == upright.shape[:2]
    r = evaluate_run(smoke_run, "val", data_root=str(root), num_workers=0, save_images=tmp_path / "pred")
    assert r["expressions"] == len(val)
