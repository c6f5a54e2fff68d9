"""A mask reader that behaves like the refer toolkit's ``REFER.getMask``, for the tests.

Written here from the toolkit's documented behaviour (lichengunc/refer; the authors'
release vendors it as ``external/refer/refer.py``), not copied: the type of the FIRST
part decides the branch. A list there means polygons, which pycocotools' ``frPyObjects``
turns into one RLE each; anything else means the segmentation already is a list of
RLE dicts, handed to pycocotools' ``decode`` as it is. The decoded parts are then SUMMED
(not merged), so pixels where two parts overlap count 2.
"""
from __future__ import annotations

import warnings

import numpy as np


def toolkit_mask(segmentation, height: int, width: int) -> np.ndarray:
    """H x W uint8: how many parts of ``segmentation`` cover each pixel (the toolkit's ``mask``)."""
    from pycocotools import mask as mask_utils

    first = segmentation[0]  # a bare RLE dict has no item 0: KeyError, as in the toolkit
    if isinstance(first, list):
        rles = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rles = segmentation
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        parts = mask_utils.decode(rles)  # (H, W, parts)
    return np.sum(parts, axis=2).astype(np.uint8)
