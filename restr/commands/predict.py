"""``python -m restr predict``: the command line of :mod:`restr.eval.predict`."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from ..config import ConfigError
from ..data.errors import DataError
from ..eval import predict
from ..eval.predict import Predictor, TruncatedExpressionWarning, UnknownWordsWarning
from ..runs.folder import RunError
from ..utils.devices import device_from_arg
from ..utils.overlay import overlay_mask


def check_image_out(option: str, path: str | None) -> str:
    """Why ``path`` cannot take an image written by PIL ("" if it can), before any work is done."""
    if path is None:
        return ""
    from PIL import Image

    p = Path(path)
    if p.is_dir():
        return f"{option} {path} is a folder: give a file name, e.g. {p / 'mask.png'}"
    ext = p.suffix.lower()
    writable = {e for e, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}
    if ext not in writable:
        return (f"{option} {path}: {ext!r} is not an image format PIL can write"
                f"{'' if ext else ' (no extension)'}; use .png (or .bmp, .tif)")
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m restr predict", description=predict.__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="run directory written by `python -m restr train`")
    parser.add_argument("--image", required=True, help="image file")
    parser.add_argument("--text", required=True, help="the referring expression")
    parser.add_argument("--out", required=True, help="output mask PNG (white = the referred object)")
    parser.add_argument("--overlay", help="also write the image with the mask overlaid here")
    parser.add_argument("--checkpoint", default="last", help="last | best | a checkpoint path")
    parser.add_argument("--device", default="cpu", help="cpu (default) | cuda | cuda:N | auto")
    parser.add_argument("--strict", action="store_true", help="error (not warn) when every word is unknown")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    args = parser.parse_args(argv)
    from PIL import Image


    problem = check_image_out("--out", args.out) or check_image_out("--overlay", args.overlay)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if not Path(args.image).is_file():
        print(f"error: image file not found: {args.image}", file=sys.stderr)
        return 2
    try:
        predictor = Predictor.from_run(args.run, args.checkpoint, device_from_arg(args.device))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UnknownWordsWarning)
            warnings.simplefilter("always", TruncatedExpressionWarning)
            r = predictor.predict(args.image, args.text, strict=args.strict)
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
    except (RunError, DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(r["mask"].astype(np.uint8) * 255).save(args.out)
    if args.overlay:
        Path(args.overlay).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(overlay_mask(Predictor.load_image(args.image), r["mask"])).save(args.overlay)
    summary = {"mask": args.out, "overlay": args.overlay, "pixels": int(r["mask"].sum()),
               "fraction": float(r["mask"].mean()), "size": list(r["mask"].shape),
               "unknown_words": r["unknown_words"], "truncated_words": r["truncated_words"],
               "checkpoint": str(predictor.checkpoint), "step": predictor.step}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"wrote {args.out}: {summary['pixels']} of {r['mask'].size} pixels ({100 * summary['fraction']:.1f} %)"
              + (f", overlay {args.overlay}" if args.overlay else ""))
    return 0
