"""The book's trained models, in one list: what the notebooks ask for is what the zoo trains.

A notebook never builds a training config itself: it asks for a model by name and seed,
``model_config(prof, data_root, "table3-vme", seed=s)``, and gets the exact
:class:`restr.config.Config` that ``python -m restr zoo train`` trains for that name
(:func:`book_models` lists them all). The names a notebook may ask for (*requests*):

``main``
    the book's main model: CME, 4 fusion layers, decoder on, the profile's main length
    (chapters 1, 3, 4 and 5);
``table3-vme``, ``table3-ime``, ``table3-cme``, ``table3-cme-dagger``
    Table 3(b): the fusion variants with 4 fusion layers and *without* the decoder, as
    the paper measured them (chapter 2);
``table4-<L>L[-shared][-dec]``
    Table 4's rows at the profile's depths (``profile.table4_layers``): ``L`` fusion
    layers, weight sharing, decoder (chapter 3);
``head-release``
    chapter 3's head comparison: ``table4-4L-dec`` with the release's form of Eq. (9)-(10);
``table2-conv`` (profiles with ``"conv"`` in ``profile.arms``)
    claim 6's convolutional baseline (``model.fusion = "concat-conv"``, the decoder on);
``start-dense``, ``start-none`` (profiles with ``"starts"``)
    the main model from the other backbone starts: dense in-domain pretraining, and no
    pretraining (the fidelity page's backbone-start row);
``m3att``, ``m3att-generic``, ``m3att-no-imi``, ``m3att-imi-same``, ``m3att-no-lfr`` (profiles with ``"m3att"``)
    chapter 7: Liu et al.'s model on the same encoders, and one component changed at a time.

Every model but ``main`` is trained for the profile's ``variant_iterations``.

Seeds: the headline models (Table 3's four variants and the decoder on/off pair at 4
layers, ``table4-4L`` and ``table4-4L-dec``: the comparisons the verdicts rest on) are
trained with every seed of ``profile.seeds``; every other model, ``main`` included, with
the first seed only. A profile with ``claim_seeds`` (the converged zoo) trains every
model a claim compares with every seed, and only the fidelity models (``head-release``,
the starts) with the first.

Identical configs are one model: requests whose configs are equal (``table4-4L`` *is*
``table3-cme``; ``table4-4L-dec`` is ``main`` when the profile trains its variants as
long as its main model) share one :class:`BookModel`, named after the first of them in
the order above, with the union of their seeds.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..config import BookProfile, Config, get_preset
from ..model import build_model
from ..zoo.cache import get_run
from .claims import Arm, load_arm
from .paper import TABLE4

def run_config(profile: BookProfile, data_root: str | Path, iterations: int | None = None, seed: int = 0,
               overrides: Mapping[str, Any] | None = None, **model: Any) -> Config:
    """The full config of one of the book's training runs: the profile's preset on its data,
    with ``model`` overrides (e.g. ``fusion="vme"``) and ``iterations`` (default: the
    profile's main-run length) and the profile's own overrides; ``profile.curve_points``
    validations and a checkpoint every quarter of the run; last, ``overrides``
    (``{"section.field": value}``: ``python -m restr book --set``, which the notebooks get
    as their ``overrides`` parameter), so the config is a function of the arguments only.
    Notebooks do not call it: they ask :func:`restr.book.models.model_config` for one of
    the book's models by name, which calls it."""
    its = int(iterations or profile.iterations)
    cfg = get_preset(profile.preset)
    changes: dict[str, Any] = {
        "data.root": str(data_root),
        "data.dataset": profile.dataset,
        "data.split_by": profile.split_by,
        "train.iterations": its,
        "train.seed": seed,
        "train.val_every": max(its // profile.curve_points, 1),  # a learning curve of curve_points points
        "train.ckpt_every": max(its // 4, 1),
        **dict(profile.overrides),
    }
    changes.update({f"model.{k}": v for k, v in model.items()})
    changes.update(overrides or {})
    return cfg.override(changes)


TABLE3_VARIANTS = {  # Table 3(b)'s rows: request name -> model overrides (4 fusion layers, no decoder)
    "VME": ("table3-vme", {"fusion": "vme"}),
    "IME": ("table3-ime", {"fusion": "ime"}),
    "CME": ("table3-cme", {"fusion": "cme"}),
    "CME†": ("table3-cme-dagger", {"fusion": "cme", "shared": True}),
}
HEADLINE = ("table3-vme", "table3-ime", "table3-cme", "table3-cme-dagger", "table4-4L", "table4-4L-dec")
FIDELITY = ("head-release", "start-dense", "start-none")  # one seed in every profile
STARTS = {"start-dense": {"vit_pretrain": "dense"}, "start-none": {"vit_weights": None}}
# M3Att's arms (profiles with "m3att"): the full model and one component changed at a time
M3ATT_ARMS = {
    "m3att": {},
    "m3att-generic": {"m3att_attention": "generic"},  # Table I's "Generic (LAV only)"
    "m3att-no-imi": {"m3att_imi": "off"},
    "m3att-imi-same": {"m3att_imi": "same"},  # Table II's IMI*: every layer gets the same language feature
    "m3att-no-lfr": {"m3att_lfr": False},
}


class UnknownModel(KeyError):
    """A model name or seed that the book's list does not hold."""

    def __str__(self) -> str:  # KeyError quotes its message
        return str(self.args[0])


@dataclass(frozen=True)
class Request:
    """One model as a notebook asks for it."""

    name: str
    model: tuple[tuple[str, Any], ...]  # model overrides, as sorted (field, value) pairs
    main: bool  # trained for the profile's main length (else its variant length)
    headline: bool  # trained with every seed of the profile

    @property
    def overrides(self) -> dict[str, Any]:
        return dict(self.model)


@dataclass(frozen=True)
class BookModel:
    """One trained model of the book (one config; one run per seed)."""

    name: str
    model: tuple[tuple[str, Any], ...]  # model overrides (those of its first request)
    iterations: int
    seeds: tuple[int, ...]
    requests: tuple[str, ...]  # every request this model answers

    @property
    def overrides(self) -> dict[str, Any]:
        return dict(self.model)

    def config(self, profile: BookProfile, data_root: str | Path, seed: int | None = None,
               overrides: Mapping[str, Any] | None = None) -> Config:
        """The full training config of this model with ``seed`` (default: its first) and the
        book's ``--set`` ``overrides``."""
        seed = self.seeds[0] if seed is None else seed
        if seed not in self.seeds:
            raise UnknownModel(f"model {self.name!r} of the {profile.name} book is trained with seeds "
                               f"{list(self.seeds)}, not {seed}")
        return run_config(profile, data_root, iterations=self.iterations, seed=seed, overrides=overrides,
                          **self.overrides)


def table4_name(layers: int, shared: bool, decoder: bool) -> str:
    """The request name of one Table 4 row, e.g. ``table4-4L-shared-dec``."""
    return f"table4-{layers}L{'-shared' if shared else ''}{'-dec' if decoder else ''}"


def requests(profile: BookProfile) -> list[Request]:
    """Every model the profile's notebooks ask for, in the book's order (see the module doc)."""
    def req(name: str, main: bool = False, **model: Any) -> Request:
        seeded = name in HEADLINE or (profile.claim_seeds and name not in FIDELITY)
        return Request(name, tuple(sorted(model.items())), main, seeded)

    out = [req("main", main=True, fusion="cme", fusion_layers=4, decoder=True)]
    out += [req(name, fusion_layers=4, decoder=False, **kw) for name, kw in TABLE3_VARIANTS.values()]
    for row in TABLE4:
        if row["layers"] in profile.table4_layers:
            out.append(req(table4_name(row["layers"], row["shared"], row["decoder"]), fusion="cme",
                           fusion_layers=row["layers"], shared=row["shared"], decoder=row["decoder"]))
    if 4 in profile.table4_layers:
        out.append(req("head-release", fusion="cme", fusion_layers=4, decoder=True, head="release"))
    if "conv" in profile.arms:
        out.append(req("table2-conv", fusion="concat-conv", fusion_layers=4, decoder=True))
    if "starts" in profile.arms:
        out += [req(name, main=True, fusion="cme", fusion_layers=4, decoder=True, **kw) for name, kw in STARTS.items()]
    if "m3att" in profile.arms:
        out += [req(name, family="m3att", **kw) for name, kw in M3ATT_ARMS.items()]
    return out


def _identity(profile: BookProfile, r: Request) -> str:
    """What makes two requests one model: the full config they produce (at seed 0)."""
    cfg = run_config(profile, "data", iterations=profile.iterations if r.main else profile.variant_iterations,
                     **r.overrides)
    return json.dumps(cfg.to_dict(), sort_keys=True)


def book_models(profile: BookProfile) -> list[BookModel]:
    """The profile's trained models, each once (see the module doc), in the book's order."""
    groups: dict[str, list[Request]] = {}
    for r in requests(profile):
        groups.setdefault(_identity(profile, r), []).append(r)
    models = []
    for rs in groups.values():
        first = rs[0]
        seeds = profile.seeds if any(r.headline for r in rs) else profile.seeds[:1]
        models.append(BookModel(first.name, first.model,
                                profile.iterations if first.main else profile.variant_iterations,
                                tuple(seeds), tuple(r.name for r in rs)))
    return models


def find_model(profile: BookProfile, name: str) -> BookModel:
    """The model that answers the request (or model name) ``name``."""
    for m in book_models(profile):
        if name in m.requests:
            return m
    names = [r.name for r in requests(profile)]
    raise UnknownModel(f"the {profile.name} book has no model {name!r}; it asks for: {', '.join(names)}")


def model_config(profile: BookProfile, data_root: str | Path, name: str, seed: int | None = None,
                 overrides: Mapping[str, Any] | None = None) -> Config:
    """The exact training config of the book's model ``name`` with ``seed`` (default: the
    model's first seed) and the book's ``--set`` ``overrides``; the only way a notebook gets
    a config to train or load (through :class:`restr.book.chapter.Chapter`)."""
    return find_model(profile, name).config(profile, data_root, seed, overrides)


def model_seeds(profile: BookProfile, name: str) -> tuple[int, ...]:
    """The seeds the book trains model ``name`` with."""
    return find_model(profile, name).seeds


def arm(profile: BookProfile, data_root: str | Path, name: str, runs_dir: str | Path = "runs",
        label: str | None = None, max_expressions: int | None = None, level: str = "pixel",
        overrides: Mapping[str, Any] | None = None) -> Arm:
    """The book's model ``name`` as an arm of a claim (:class:`restr.book.claims.Arm`): every
    seed's run (found in ``runs_dir``, taken from the zoo, or trained), scored on the
    profile's evaluation split (``max_expressions`` of it, spread; None: all of it)."""
    seeds = model_seeds(profile, name)
    runs = [get_run(model_config(profile, data_root, name, seed=s, overrides=overrides), runs_dir=runs_dir)
            for s in seeds]
    return load_arm(label or name, runs, seeds, profile.eval_split, max_expressions, level)


def ships_weights(profile: BookProfile, name: str, seed: int) -> bool:
    """Whether the zoo ships the weights of model ``name``'s run with ``seed``
    (:attr:`~restr.config.BookProfile.every_seed_weights`), or only its log and scores."""
    model = find_model(profile, name)
    every = profile.every_seed_weights
    return every is None or seed == model.seeds[0] or any(r in every for r in model.requests)


def runs_count(profile: BookProfile) -> int:
    """How many trained runs the profile's book uses: one per model and seed."""
    return sum(len(m.seeds) for m in book_models(profile))


def describe(profile: BookProfile) -> list[dict[str, Any]]:
    """One row per model: name, overrides, iterations, seeds, the requests it answers."""
    return [{"model": m.name, "overrides": ", ".join(f"{k}={v}" for k, v in m.model), "iterations": m.iterations,
             "seeds": " ".join(map(str, m.seeds)), "answers": ", ".join(m.requests)} for m in book_models(profile)]


def weights_megabytes(profile: BookProfile, vocab_size: int, bytes_per_weight: int = 2) -> float:
    """The weights the zoo ships of the profile's book in MB (fp16 by default, as the zoo
    stores them; :func:`ships_weights`), for a vocabulary of ``vocab_size`` words (the
    embedded data's: 58)."""
    import torch


    total = 0
    for m in book_models(profile):
        model_cfg = m.config(profile, "data").override({"model.vocab_size": vocab_size,
                                                        "model.vit_weights": None}).model  # shapes only
        with torch.device("meta"):
            params = sum(p.numel() for p in build_model(model_cfg).parameters())
        total += params * sum(ships_weights(profile, m.name, s) for s in m.seeds)
    return total * bytes_per_weight / 1e6
