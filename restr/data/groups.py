"""Training batches of expression groups: several expressions of one image, one image.

An image of the embedded data set carries about 13 expressions (RefCOCO about 3 per
object). With ``train.expressions_per_image = E > 1`` a training batch holds
``batch_size / E`` images and, for each, ``E`` of its expressions: the image is
loaded, augmented (one transform for the whole group: :func:`augment_group`) and
encoded by the ViT once (the model's ``image_index`` argument). The loss is the same
mean over expressions as in a flat batch, so a group gives exactly the gradient of the
same expressions in a flat batch with the image repeated (tested in float64).

Each epoch, the expressions of every image are shuffled (seeded by the run's seed and
the epoch) and cut into groups of ``E``; the ``n mod E`` left over that epoch wait for
the next one. The groups are then ordered by :class:`GroupedSampler`, which is the
resumable, per-process sampler of :mod:`restr.data.order` over groups instead of
expressions.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from torch.utils.data import Dataset

from .order import ResumableSampler
from .transforms import augment_group, letterbox, letterbox_mask
from .vocab import tokenize


def expression_groups(dataset, per_image: int, seed: int, epoch: int) -> list[tuple[int, ...]]:
    """The groups of epoch ``epoch``: each image's expression indices shuffled by a
    generator seeded with (seed, epoch) and cut into groups of ``per_image``."""
    by_image: dict[int, list[int]] = defaultdict(list)
    for index in range(len(dataset)):
        ref, _ = dataset.item_ref(index)
        by_image[int(ref["image_id"])].append(index)
    rng = np.random.default_rng([seed & 0xFFFFFFFF, epoch, 0x6772])
    groups = []
    for image_id in sorted(by_image):
        items = rng.permutation(by_image[image_id]).tolist()
        groups += [tuple(items[i:i + per_image]) for i in range(0, len(items) - per_image + 1, per_image)]
    return groups


class GroupedSampler(ResumableSampler):
    """:class:`ResumableSampler` over expression groups: yields ``(group, item seed)``,
    ``batch_size / E`` groups per global batch. The number of groups is the same every
    epoch (it depends on the images' expression counts only)."""

    def __init__(self, dataset, per_image: int, global_batch: int, world: int, rank: int, seed: int):
        if global_batch % per_image:
            raise ValueError(f"train.batch_size = {global_batch} is not a multiple of "
                             f"train.expressions_per_image = {per_image}")
        self.dataset, self.per_image = dataset, per_image
        self._groups: tuple[int, list[tuple[int, ...]]] | None = None
        n = len(expression_groups(dataset, per_image, seed, 0))
        super().__init__(n, global_batch // per_image, world, rank, seed, shuffle=True)

    def groups(self, epoch: int) -> list[tuple[int, ...]]:
        if self._groups is None or self._groups[0] != epoch:
            self._groups = (epoch, expression_groups(self.dataset, self.per_image, self.seed, epoch))
        return self._groups[1]

    def __iter__(self):
        groups = self.groups(self.epoch)
        for index, seed in super().__iter__():
            yield groups[index], seed


class ExpressionGroups(Dataset):
    """Item ``group`` (a tuple of indices of ``base``, all of one image): the image once,
    and each expression's mask and words. ``base`` is a training :class:`ReferDataset`
    (``uint8=True``); its ``augment`` setting applies to the group as a whole."""

    def __init__(self, base):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, group: tuple[int, ...]) -> dict:
        base = self.base
        refs = [base.item_ref(i) for i in group]
        texts = [base.data.sentence_text(sent) for _, sent in refs]
        image = base.load_image(refs[0][0]["image_id"])
        masks = [base.load_mask(ref["ann_id"]) for ref, _ in refs]
        if base.augment:
            seed = int(torch.randint(0, 2**62, (1,)).item())  # follows torch's (per-worker) seed
            image, masks = augment_group(image, masks, [tokenize(t) for t in texts], np.random.default_rng(seed))
        boxed, _ = letterbox(image, base.image_size)
        encoded = [base.vocab.encode(t, base.max_words)[0] for t in texts]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(boxed.transpose(2, 0, 1))),  # (3, H, W) uint8
            "mask": torch.from_numpy(np.stack([letterbox_mask(m, base.image_size)[0] for m in masks])),  # (E, H, W)
            "words": torch.from_numpy(np.stack(encoded)),  # (E, L)
        }


def collate_groups(groups: list[dict]) -> dict:
    """G groups of E -> ``image`` (G, 3, H, W), ``words`` (G*E, L), ``mask`` (G*E, H, W)
    and ``image_index`` (G*E,), the image of each expression."""
    sizes = [len(g["words"]) for g in groups]
    return {
        "image": torch.stack([g["image"] for g in groups]),
        "words": torch.cat([g["words"] for g in groups]),
        "mask": torch.cat([g["mask"] for g in groups]),
        "image_index": torch.repeat_interleave(torch.arange(len(groups)), torch.tensor(sizes)),
    }
