"""``python -m restr data synth|stats``: the command line of :mod:`restr.data.synth` and :mod:`restr.data.stats`."""
from __future__ import annotations

import argparse
import json
import sys

from ..data.errors import DataError
from ..data.synth import DEFAULT_NUM_IMAGES, DEFAULT_VERSION, VERSIONS
from ..utils.files import DiskFullError, human_size


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m restr data", description="generate or check a refer-format data set")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write the embedded synthref data set",
                       description="Write synthref in the refer format under <out>/synthref/ "
                                   "(refs(unc).p, instances.json, scenes.json, images/). "
                                   "<out> is the data root to pass as --root / data.root.")

    s.add_argument("--out", default="data/synthref", help="data root (default: data/synthref)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--num-images", type=int, default=DEFAULT_NUM_IMAGES,
                   help="images over all splits: 80%% train, 8%% val, 6%% testA, 6%% testB "
                        f"(default {DEFAULT_NUM_IMAGES})")
    s.add_argument("--expressions", type=int, default=3, help="expressions per object (default 3)")
    s.add_argument("--quality", type=int, default=92, help="JPEG quality (default 92)")
    s.add_argument("--scale", type=float, default=1.0,
                   help="canvas scale (default 1: 96-128 px sides; 5: 480-640 px, COCO-sized, for timing the loader)")
    s.add_argument("--version", type=int, default=DEFAULT_VERSION, choices=VERSIONS,
                   help=f"data set version (default {DEFAULT_VERSION}, the model zoo's data; 2: look-alike "
                        "distractors, expressions as long as the scene needs; see data/README.md)")
    s.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.add_argument("--quiet", action="store_true", help="no progress bar")

    t = sub.add_parser("stats", help="count, histogram and validate a data set",
                       description="Per split: refs, sentences, images, total mask pixels, sentence length "
                                   "histogram and buckets, OOV rate. Validates every file it touches and "
                                   "lists every problem; exits with status 1 if there is any.")
    t.add_argument("--root", required=True, help="data root holding <dataset>/refs(<split_by>).p")
    t.add_argument("--dataset", required=True)
    t.add_argument("--split-by", required=True)
    t.add_argument("--image-root", default=None, help="folder of the image files (default: see data/README.md)")
    t.add_argument("--glove", default="default", help="'default' (6B 50d), a glove.*.txt path, or 'none'")
    t.add_argument("--no-image-decode", action="store_true", help="only check that image files exist")
    t.add_argument("--json", action="store_true", help="print the result as JSON")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "synth":
            from ..data.synth import Pictures, argument_problem, generate

            problem = argument_problem(num_images=args.num_images, expressions_per_object=args.expressions,
                                       jpeg_quality=args.quality, workers=args.workers, scale=args.scale,
                                       version=args.version)
            if problem:
                name, value, why = problem
                option = {"expressions_per_object": "expressions", "jpeg_quality": "quality"}.get(name, name)
                shown = f"{value:g}" if isinstance(value, float) else value
                raise DataError(f"--{option.replace('_', '-')} {shown}: {why}")

            summary = generate(args.out, seed=args.seed, num_images=args.num_images,
                               expressions_per_object=args.expressions, version=args.version,
                               pictures=Pictures(scale=args.scale, jpeg_quality=args.quality),
                               workers=args.workers, progress=not args.quiet)
            if args.json:
                print(json.dumps(summary, indent=2))
            else:
                print(f"synthref version {summary['version']} written in {summary['seconds']:.1f} s: "
                      f"{summary['images']} images, "
                      f"{summary['refs']} refs, {summary['sentences']} sentences")
                for name, c in summary["splits"].items():
                    print(f"  {name:<6} {c['images']:>5} images {c['refs']:>6} refs {c['sentences']:>6} sentences")
                fractions = summary["bucket_fractions"].items()
                print("  length buckets: " + ", ".join(f"{k}: {100 * v:.1f}%" for k, v in fractions))
                for key in ("refs_file", "instances_file", "scenes_file", "image_dir"):
                    print(f"  {key.replace('_', ' ')}: {summary[key]}")
                print(f"read it with: ReferDataset({summary['root']!r}, 'synthref', 'unc', 'train') or "
                      f"python -m restr data stats --root {summary['root']} --dataset synthref --split-by unc")
            return 0
        from ..data.stats import dataset_stats, format_stats

        result = dataset_stats(args.root, args.dataset, args.split_by, args.image_root,
                               glove=None if args.glove.lower() == "none" else args.glove,
                               check_images=not args.no_image_decode, progress=not args.quiet)
        print(json.dumps(result, indent=2) if args.json else format_stats(result))
        return 1 if result["problems"] else 0
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DiskFullError as exc:  # from this process or, whole, from an image worker's
        room = f", {human_size(exc.free)} free" if exc.free is not None else ""
        print(f"error: disk full: could not write {exc.path} ({human_size(exc.needed)} needed{room}); free some "
              f"space, then run the same command again", file=sys.stderr)
        return 2
