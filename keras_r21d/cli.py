"""The `keras-r21d` command line (also `python -m keras_r21d`)."""

import argparse
import json
import os
import sys


def _quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _models_table(args):
    from keras_r21d.models.specs import VARIANTS
    from keras_r21d.models.stats import model_stats
    from keras_r21d.models.video_resnet import BUILDERS

    rows = []
    for variant, (display, _, _) in VARIANTS.items():
        shape = (args.frames, args.size, args.size, 3)
        model = BUILDERS[variant](args.depth, input_shape=shape, classes=args.classes)
        stats = model_stats(model)
        rows.append(
            {
                "name": f"{variant}_{args.depth}",
                "variant": display,
                "paper_params": stats["paper_params"],
                "keras_params": stats["keras_params"],
                "macs": stats["macs"],
                "gflops": round(stats["gflops"], 3),
                "input_shape": list(shape),
            }
        )
    return rows


def cmd_models(args):
    rows = _models_table(args)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"depth {args.depth}, input {args.frames}x{args.size}x{args.size}, {args.classes} classes")
    print("| model | variant | params (paper) | params (Keras) | GFLOPs (mult-adds) |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['name']} | {r['variant']} | {r['paper_params'] / 1e6:.1f}M | "
            f"{r['keras_params']:,} | {r['gflops']:.1f} |"
        )
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-r21d",
        description="R(2+1)D and the other networks of Tran et al. (CVPR 2018) for Keras 3.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("models", help="print every variant with its parameters and FLOPs")
    p.add_argument("--depth", type=int, default=18, help="network depth (default 18)")
    p.add_argument("--frames", type=int, default=8, help="clip length (default 8)")
    p.add_argument("--size", type=int, default=112, help="frame height and width (default 112)")
    p.add_argument("--classes", type=int, default=400, help="classifier size (default 400)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_tensorflow()
    try:
        return args.func(args)
    except ValueError as error:
        print(f"keras-r21d {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
