"""The options that several commands share: a preset, its model overrides and ``--set``
(the one parser of ``section.field=value`` items, used by every command that takes them)."""
from __future__ import annotations

import argparse
from typing import Any

from ..config import FUSION_VARIANTS, ConfigError, get_preset


def add_model_overrides(parser: argparse.ArgumentParser) -> None:
    """Options shared by commands that build a model from a preset."""
    parser.add_argument("--preset", default="paper", help="paper | release | tiny | smoke (default: paper)")
    parser.add_argument("--fusion", choices=list(FUSION_VARIANTS), help="fusion variant (concat-conv: the baseline)")
    parser.add_argument("--fusion-layers", type=int, help="number of fusion layers (2, 4, 6 in Table 4)")
    parser.add_argument("--shared", action="store_true", default=None, help="weight sharing (CME-dagger)")
    parser.add_argument("--no-decoder", dest="decoder", action="store_false", default=None,
                        help="switch the decoder off")
    parser.add_argument("--image-size", type=int, nargs="+", metavar="PX", help="side, or height width")
    parser.add_argument("--lang-mlp", type=int, help="language MLP width (text: 3072, release: 1200)")
    parser.add_argument("--head", choices=["paper", "release"], help="Eq. (9)-(10) form")
    parser.add_argument("--family", choices=["restr", "m3att"],
                        help="model family: ReSTR (default) or M3Att on the same encoders (model.family)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="any other override, e.g. --set model.lang_block=post (repeatable)")


def config_from_args(args: argparse.Namespace):
    return get_preset(args.preset).override(overrides_from_args(args))


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The model options and ``--set`` items of ``args`` as ``{"section.field": value}``."""
    overrides: dict[str, Any] = {}
    if args.fusion is not None:
        overrides["model.fusion"] = args.fusion
    if args.fusion_layers is not None:
        overrides["model.fusion_layers"] = args.fusion_layers
    if args.shared is not None:
        overrides["model.shared"] = args.shared
    if args.decoder is not None:
        overrides["model.decoder"] = args.decoder
    if args.image_size is not None:
        if len(args.image_size) not in (1, 2):
            raise ConfigError("--image-size takes one side or height and width")
        overrides["model.image_size"] = args.image_size[0] if len(args.image_size) == 1 else tuple(args.image_size)
    if args.lang_mlp is not None:
        overrides["model.lang_mlp"] = args.lang_mlp
    if args.head is not None:
        overrides["model.head"] = args.head
    if getattr(args, "family", None) is not None:
        overrides["model.family"] = args.family
    overrides.update(parse_set(args.set))
    return overrides


def parse_set(items: list[str]) -> dict[str, str]:
    """``--set section.field=value`` items as ``{"section.field": "value"}`` (the values are
    read by :meth:`restr.config.Config.override`, which names a bad field or value)."""
    overrides: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: write it as section.field=value")
        key, value = item.split("=", 1)
        overrides[key.strip()] = value
    return overrides
