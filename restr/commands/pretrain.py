"""``python -m restr pretrain``: the command line of :mod:`restr.engine.pretrain`."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..config import ConfigError, ModelConfig
from ..data.errors import DataError
from ..engine import pretrain
from ..engine.pretrain import (CLASSIFY_TASKS, INFO_FILE, ClassifyConfig, PretrainConfig, ensure_classify_pretrained,
                               ensure_pretrained)
from .options import add_model_overrides, config_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m restr pretrain", description=pretrain.__doc__.split("\n\n")[0])
    add_model_overrides(parser)
    parser.add_argument("--data", default="data/synthref", help="data root (default: data/synthref)")
    parser.add_argument("--dataset", default="synthref")
    parser.add_argument("--split-by", default="unc")
    parser.add_argument("--folder", help="where pretrained ViTs are kept (default: $RESTR_PRETRAINED, else the "
                                          "repository's data/pretrained)")
    parser.add_argument("--epochs", type=int, help=f"default: {PretrainConfig.epochs} (dense), "
                                                   f"{ClassifyConfig.epochs} (classify)")
    parser.add_argument("--lr", type=float, help=f"default: {PretrainConfig.lr}")
    parser.add_argument("--images", type=int, default=ClassifyConfig.images,
                        help="classify: pictures to generate and train on (default: %(default)s)")
    parser.add_argument("--classify-task", choices=CLASSIFY_TASKS, default=ClassifyConfig.task,
                        help="classify: objects (one object-centric crop a picture, its shape and colour) or "
                             "scenes (the whole picture, which shapes and colours it holds); default: %(default)s")
    args = parser.parse_args(argv)

    try:
        cfg = config_from_args(args)
        if cfg.model.vit_pretrain == "classify":  # --set model.vit_pretrain=classify
            return _main_classify(cfg.model, args)
        p = PretrainConfig(epochs=args.epochs or PretrainConfig.epochs, lr=args.lr or PretrainConfig.lr)
        path = ensure_pretrained(cfg.model, args.data, args.dataset, args.split_by, p, args.folder)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    info = json.loads(path.with_suffix(".json").read_text())
    print(f"{path}: {info['steps']} steps in {info['seconds']:.0f} s; held-out pixel accuracy "
          f"{100 * info['pixel_accuracy']:.1f} % (object pixels {100 * info['object_pixel_accuracy']:.1f} %)")
    print(f"use it with --set model.vit_weights={path}")
    return 0


def _main_classify(model_cfg: ModelConfig, args: argparse.Namespace) -> int:
    """``python -m restr pretrain --set model.vit_pretrain=classify``: make (or find) the entry, print its metrics."""
    c = ClassifyConfig(images=args.images, epochs=args.epochs or ClassifyConfig.epochs, lr=args.lr or ClassifyConfig.lr,
                       task=args.classify_task)
    path = ensure_classify_pretrained(model_cfg, args.data, args.dataset, args.split_by, c, args.folder)
    info = json.loads((path.parent / INFO_FILE).read_text())
    print(f"{path}: {info['images']} generated pictures, {info['steps']} steps in {info['seconds']:.0f} s "
          f"(rendering {info['render_seconds']:.0f} s); held out ({info['held_out_images']} pictures): "
          + _held_out_text(info))
    if "position_structure" in info:  # entries made before it was recorded lack it
        print(f"position embeddings: started {info['position_init']}, structure after pretraining "
              f"{info['position_structure']:.2f} (how their similarity follows closeness on the grid: "
              f"random about 0, a smooth grid table near 1)")
    pos = "" if model_cfg.vit_pos_init == "random" else f" --set model.vit_pos_init={model_cfg.vit_pos_init}"
    print(f"the trainer uses it with --set model.vit_weights=pretrain --set model.vit_pretrain=classify{pos} "
          f"(or --set model.vit_weights={path})")
    return 0


def _held_out_text(info: dict[str, Any]) -> str:
    """A classification entry's held-out metrics in words (either task)."""
    if info.get("classify_task", "scenes") == "objects":
        return (f"object shape {100 * info['shape_accuracy']:.1f} %, colour {100 * info['colour_accuracy']:.1f} %, "
                f"both {100 * info['both_right']:.1f} % (chance: 14.3 % each)")
    return (f"mAP {100 * info['mAP']:.1f} % (shapes {100 * info['shape_mAP']:.1f}, colours "
            f"{100 * info['colour_mAP']:.1f}), label accuracy {100 * info['label_accuracy']:.1f} %, every label right "
            f"{100 * info['exact_match']:.1f} %"
            + (f", largest object's shape {100 * info['largest_accuracy']:.1f} %"
               if "largest_accuracy" in info else ""))
