"""Data: the refer-format reader, the embedded synthref generator, vocabulary, transforms."""
from .errors import DataError, EmptyExpressionError
from .refer import (
    DATASETS,
    LENGTH_BUCKETS,
    ReferData,
    ReferDataset,
    bucket_labels,
    bucket_of,
    collate,
    decode_segmentation,
    default_image_root,
    read_image,
)
from .transforms import (
    MEAN,
    STD,
    LetterboxMeta,
    augment,
    denormalize,
    letterbox,
    letterbox_mask,
    normalize,
    unletterbox,
)
from .vocab import Vocabulary, embedding_matrix, load_glove, tokenize

__all__ = [
    "DataError",
    "EmptyExpressionError",
    "DATASETS",
    "LENGTH_BUCKETS",
    "ReferData",
    "ReferDataset",
    "bucket_labels",
    "bucket_of",
    "collate",
    "decode_segmentation",
    "default_image_root",
    "read_image",
    "MEAN",
    "STD",
    "LetterboxMeta",
    "augment",
    "denormalize",
    "letterbox",
    "letterbox_mask",
    "normalize",
    "unletterbox",
    "Vocabulary",
    "embedding_matrix",
    "load_glove",
    "tokenize",
]
