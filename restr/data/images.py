"""One way in for images: a file path, a PIL image or a NumPy array -> H x W x 3 uint8 RGB.

Prediction (:meth:`restr.eval.predict.Predictor.load_image`), the data loader and evaluation
(:func:`read_image`, through :class:`restr.data.refer.ReferData`) all read images here,
so the same picture gives the same pixels whichever form it comes in.

Accepted forms, and how their values are read:

- a path (``str`` or ``os.PathLike``) to any file PIL decodes; it is decoded fully and
  read as the PIL image it opens to;
- a PIL image: its EXIF orientation is applied (a phone photo stored sideways with
  orientation 6 comes out upright), then, by mode:

  - 8-bit modes (``1``, ``L``, ``P``, ``RGB``, ``RGBA``, ``LA``, ``PA``, ``CMYK``,
    ``YCbCr``, ...) are converted to RGB by PIL (alpha dropped);
  - 16-bit grey (``I;16*``) and 32-bit integer (``I``, how PIL may open 16-bit PNG and
    TIFF files) are 16-bit values, as the uint16 arrays below;
  - 32-bit float (``F``) as the float arrays below;

- a NumPy array of shape H x W (grey), H x W x 1 (grey), H x W x 3 (RGB) or H x W x 4
  (RGBA, alpha dropped), channels last (an array whose last axis has 1, 3 or 4 entries is
  read channels last), whose dtype says how to read it:

  - ``uint8``: 0-255, as is;
  - ``uint16``: 0-65535, the full 16-bit range (``round(v / 257)``), whatever the image's
    own maximum; a dark 16-bit image stays dark;
  - other integers (int8 ... int64, uint32, uint64): 8-bit values, which must lie in 0-255;
  - floats: 0-1 (``round(v * 255)``); values outside [0, 1] and NaN or infinite values
    are refused (normalised tensors must be mapped back first).

Everything else is refused with a :class:`DataError` that names what was given and what
to pass instead: other types (lists, bytes, torch tensors), channels-first arrays
(3 x H x W), other channel counts, bool and complex arrays, empty arrays.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps

from .errors import DataError

__all__ = ["load_rgb", "read_image", "pil_to_rgb", "array_to_rgb", "ACCEPTED"]

ACCEPTED = "a file path, a PIL image or a NumPy array (H x W, H x W x 3 or H x W x 4; uint8, uint16 or 0-1 floats)"
CHANNELS = (1, 3, 4)  # grey, RGB, RGBA: the last axis when it has one of these, else the array is refused
EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def load_rgb(image: Any) -> np.ndarray:
    """Any accepted form (module docstring) -> a new C-contiguous H x W x 3 uint8 RGB array."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)
    if isinstance(image, np.ndarray):
        return array_to_rgb(image)
    kind = type(image)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__.split('.')[0]}.{kind.__name__}"
    hint = " (for a tensor: tensor.permute(1, 2, 0).cpu().numpy(), in 0-1 or uint8)" if name == "torch.Tensor" else ""
    raise DataError(f"cannot read an image from a {name}: give {ACCEPTED}{hint}")


def read_image(path: str | os.PathLike, expect_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image file fully to H x W x 3 uint8 RGB, upright (EXIF orientation applied).

    ``expect_hw`` is the size a data set's annotations record (instances.json). Annotations
    of the upright picture match the upright size; if they match only the stored (raw)
    size, they were drawn on the raw pixels, which are then returned as stored so that
    image and masks stay aligned. A square image is taken upright.

    Raises :class:`DataError` naming the file if it is missing, corrupt or truncated, or
    if its size matches neither.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}" + (" (it is a folder)" if path.is_dir() else ""))
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone relaxed PIL globally; we still want errors
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(path) as im:
            im.load()
            raw_hw = (im.height, im.width)
            upright = _upright(im)
            if expect_hw is not None and (upright.height, upright.width) != tuple(expect_hw) \
                    and raw_hw == tuple(expect_hw):
                upright = im  # the annotations were drawn on the pixels as stored
            rgb = pil_to_rgb(upright, orient=False)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:  # DataError is a ValueError
        raise DataError(f"cannot read image {path}: {exc}") from None
    if expect_hw is not None and tuple(rgb.shape[:2]) != tuple(expect_hw):
        raise DataError(
            f"image {path} is {rgb.shape[0]}x{rgb.shape[1]} (h x w) but instances.json says "
            f"{expect_hw[0]}x{expect_hw[1]}"
        )
    return rgb


def _upright(im: Image.Image) -> Image.Image:
    """``im`` with its EXIF orientation applied (itself if it has none)."""
    try:
        orientation = im.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError):  # unreadable EXIF: take the pixels as stored
        return im
    if orientation in (None, 1):
        return im
    return ImageOps.exif_transpose(im)


def pil_to_rgb(im: Image.Image, orient: bool = True) -> np.ndarray:
    """A PIL image -> H x W x 3 uint8 RGB (module docstring); ``orient``: apply EXIF orientation."""
    if orient:
        im = _upright(im)
    if im.mode in _SIXTEEN_BIT:
        arr = np.asarray(im)
        if im.mode == "I":  # 32-bit integers holding 16-bit samples
            if arr.size and (arr.min() < 0 or arr.max() > 65535):
                raise DataError(f"a PIL image of mode I with values from {arr.min()} to {arr.max()}: expected "
                                f"16-bit values (0-65535)")
            arr = arr.astype(np.uint16)
        return array_to_rgb(arr.astype(np.uint16, copy=False))
    if im.mode == "F":
        return array_to_rgb(np.asarray(im))
    if im.mode in ("P", "PA") and "transparency" in im.info:
        im = im.convert("RGBA")
    return np.array(im.convert("RGB"), dtype=np.uint8, order="C")


def _channels_last(arr: np.ndarray) -> np.ndarray:
    """``arr`` as H x W x C with C in (1, 3, 4), or a DataError saying what it is."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise DataError(f"an array of shape {arr.shape} is not an image: give H x W, H x W x 3 or H x W x 4")
    if 0 in arr.shape:
        raise DataError(f"an empty array of shape {arr.shape} is not an image")
    if arr.shape[2] not in CHANNELS:
        if arr.shape[0] in CHANNELS:
            raise DataError(f"an array of shape {arr.shape} looks channels first (C x H x W); images are channels "
                            f"last: pass arr.transpose(1, 2, 0)")
        raise DataError(f"an array of shape {arr.shape} has {arr.shape[2]} channels: give H x W, H x W x 3 or "
                        f"H x W x 4")
    return arr


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Values by dtype (module docstring) -> uint8."""
    kind = arr.dtype
    if kind == np.uint8:
        return arr
    if kind == np.bool_:
        raise DataError("a bool array is a mask, not an image: give uint8 (mask.astype(np.uint8) * 255)")
    if kind == np.uint16:
        return np.round(arr / 257.0).astype(np.uint8)
    if np.issubdtype(kind, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise DataError(f"an {kind} image with values up to {hi} (and down to {lo}): integer images other "
                            f"than uint16 are read as 8-bit values, 0 to 255")
        return arr.astype(np.uint8)
    if np.issubdtype(kind, np.floating):
        bad = ~np.isfinite(arr)
        if bad.any():
            nan = int(np.isnan(arr).sum())
            raise DataError(f"a float image with {nan} NaN and {int(bad.sum()) - nan} infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > 1:
            raise DataError(f"a float image with values from {lo:g} to {hi:g}: float images are read as [0, 1]; "
                            f"map it there (e.g. (x + 1) / 2 for [-1, 1]) or give 0-255 values as uint8")
        return np.round(arr.astype(np.float64) * 255.0).astype(np.uint8)
    raise DataError(f"a {kind} array is not an image: give uint8, uint16 or 0-1 floats")


def array_to_rgb(arr: np.ndarray) -> np.ndarray:
    """A NumPy array -> H x W x 3 uint8 RGB (module docstring)."""
    arr = _channels_last(np.asarray(arr))
    arr = _to_uint8(arr)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr[..., :3])
