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


class _Progress:
    """A one-line progress bar on stderr (stdout stays clean for --json)."""

    def __init__(self, label, width=30):
        self.label = label
        self.width = width
        self.last = -1

    def __call__(self, done, total):
        filled = self.width * done // max(total, 1)
        if filled == self.last and done != total:
            return
        self.last = filled
        bar = "=" * filled + (">" if filled < self.width else "") + " " * (self.width - filled - 1)
        sys.stderr.write(f"\r{self.label} [{bar}] {done}/{total}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _parse_range(text, name):
    low, sep, high = text.partition("..")
    try:
        return (int(low), int(high if sep else low))
    except ValueError:
        raise ValueError(f"{name} must be N or MIN..MAX. Received: {text!r}") from None


def _parse_size(text):
    width, sep, height = text.lower().partition("x")
    try:
        return (int(width), int(height))
    except ValueError:
        raise ValueError(f"--size must be WIDTHxHEIGHT, e.g. 128x96. Received: {text!r}") from None


def cmd_check_videos(args):
    from keras_r21d.data import check_videos, load_dataset

    subsets = ["train", "test"] if args.subset == "all" else [args.subset]
    results, seen = [], set()
    for subset in subsets:
        dataset = load_dataset(args.spec, subset=subset, missing="skip")
        for path in dataset.skipped:
            if path not in seen:
                seen.add(path)
                results.append({"path": path, "ok": False, "frames": None, "reason": "file not found"})
        fresh = [i for i, path in enumerate(dataset.paths) if path not in seen]
        seen.update(dataset.paths)
        if fresh:
            progress = _Progress(f"checking {subset}")
            results += check_videos(dataset.subset(fresh), args.frames, args.stride, args.timeout, progress=progress)
    bad = [r for r in results if not r["ok"]]
    if args.json:
        print(json.dumps({"checked": len(results), "bad": len(bad), "videos": results}, indent=2))
        return 0
    for r in bad:
        frames = "?" if r["frames"] is None else r["frames"]
        print(f"BAD  {r['path']}  frames={frames}  {r['reason']}")
    print(f"{len(results)} videos checked, {len(results) - len(bad)} ok, {len(bad)} unreadable or too short")
    return 0


def cmd_make_synthetic(args):
    from keras_r21d.data import make_synthetic_dataset

    spec = make_synthetic_dataset(
        args.out_dir,
        classes=args.classes,
        videos_per_class=args.videos_per_class,
        frames=_parse_range(args.frames, "--frames"),
        size=_parse_size(args.size),
        seed=args.seed,
        progress=_Progress("writing videos"),
    )
    print(f"wrote {args.classes * args.videos_per_class} videos; dataset spec: {spec}")
    return 0


def cmd_train(args):
    from keras_r21d.training import TrainConfig, run_or_exit, train

    config = TrainConfig(
        data=args.data, out=args.out, arch=args.arch, depth=args.depth, frames=args.frames, size=args.size,
        batch_size=args.batch_size, epochs=args.epochs, lr=args.lr, schedule=args.schedule,
        decay_epochs=args.decay_epochs, warmup_epochs=args.warmup_epochs, weight_decay=args.weight_decay,
        momentum=args.momentum, nesterov=not args.no_nesterov, width_multiplier=args.width_multiplier,
        dropout=args.dropout, val_data=args.val_data, val_freq=args.val_freq, test_clips=args.test_clips,
        frame_stride=args.frame_stride, flip=not args.no_flip, strategy=args.strategy,
        mixed_precision=args.mixed_precision, jit_compile=args.xla, seed=args.seed,
        max_train_videos=args.max_train_videos,
        tensorboard=not args.no_tensorboard,
    )
    result = run_or_exit(train, config, resume=args.resume)
    if result["report"] is not None:
        _print_report(result["report"])
        print(f"model: {result['model_path']}\nrun: {result['run_dir']}")
    return 0


def _print_report(report):
    print(f"Clip@1 {100 * report['clip_top1']:.2f}  Clip@5 {100 * report['clip_top5']:.2f}  "
          f"Video@1 {100 * report['video_top1']:.2f}  Video@5 {100 * report['video_top5']:.2f}  "
          f"({report['videos']} videos, {report['clips']} clips, {report['clips_per_video']:.0f} per video)")
    for name, accuracy in report["per_class_video_top1"].items():
        print(f"  {name:30s} {'-' if accuracy is None else f'{100 * accuracy:.1f}'}")
    if report.get("skipped_videos"):
        print(f"{len(report['skipped_videos'])} videos skipped (unreadable)")


def cmd_evaluate(args):
    from keras_r21d.training import evaluate

    report = evaluate(args.model, args.data, clips=args.clips, frames=args.frames, size=args.size,
                      batch_size=args.batch_size, out_dir=args.out)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
        if args.out:
            print(f"report: {os.path.join(args.out, 'report.json')}")
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

    p = sub.add_parser("check-videos", help="scan a dataset for unreadable or too-short videos")
    p.add_argument("spec", help="dataset spec, e.g. ucf101:/data/UCF101:split=1 or folder:/data/videos")
    p.add_argument("--subset", choices=["train", "test", "all"], default="all")
    p.add_argument("--frames", type=int, default=16, help="clip length a video must cover (default 16)")
    p.add_argument("--stride", type=int, default=1, help="frame stride (default 1)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per video (default 60)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a report")
    p.set_defaults(func=cmd_check_videos)

    p = sub.add_parser("make-synthetic", help="write the synthetic motion dataset (UCF101 layout)")
    p.add_argument("out_dir")
    p.add_argument("--classes", type=int, default=8, help="2..12 (default 8)")
    p.add_argument("--videos-per-class", type=int, default=24)
    p.add_argument("--frames", default="32..64", help="video length, N or MIN..MAX (default 32..64)")
    p.add_argument("--size", default="128x96", help="WIDTHxHEIGHT (default 128x96)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_make_synthetic)

    from keras_r21d.models.specs import DEPTHS, VARIANTS

    p = sub.add_parser("train", help="train a network on a video dataset (the paper's recipe by default)")
    p.add_argument("--data", required=True, help="dataset spec, e.g. ucf101:/data/UCF101:split=1")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--arch", default="r2plus1d", choices=sorted(VARIANTS))
    p.add_argument("--depth", type=int, default=18, choices=sorted(DEPTHS))
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=112, help="crop size (frames are resized to 128/112 of it first)")
    p.add_argument("--batch-size", type=int, default=8, help="global batch size")
    p.add_argument("--epochs", type=int, default=45)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--width-multiplier", type=float, default=1.0)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 0.01 x batch / 32)")
    p.add_argument("--schedule", choices=["step", "cosine", "constant"], default="step")
    p.add_argument("--decay-epochs", type=int, default=10, help="step schedule: divide by 10 every N epochs")
    p.add_argument("--warmup-epochs", type=float, default=0.0)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--no-nesterov", action="store_true")
    p.add_argument("--val-data", help="validation dataset spec (default: the test subset of --data)")
    p.add_argument("--val-freq", type=int, default=1, help="compute Video@1 every N epochs")
    p.add_argument("--test-clips", type=int, default=10, help="clips per video for Video@1")
    p.add_argument("--frame-stride", type=int, default=1)
    p.add_argument("--no-flip", action="store_true",
                   help="no horizontal flips (needed when left/right is the label, as in make-synthetic data)")
    p.add_argument("--strategy", choices=["auto", "default", "mirrored", "multiworker", "one_device"],
                   default="auto")
    p.add_argument("--mixed-precision", action="store_true", help="mixed_float16 (for GPUs)")
    p.add_argument("--xla", action="store_true", help="jit_compile the train step (slower on CPUs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-train-videos", type=int, default=None)
    p.add_argument("--no-tensorboard", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="Clip@1/Video@1 of a model on a dataset's test subset")
    p.add_argument("--model", required=True, help="a .keras file")
    p.add_argument("--data", required=True, help="dataset spec")
    p.add_argument("--clips", type=int, default=10, help="uniform clips per video (default 10)")
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", help="write report.json and confusion_matrix.png here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_tensorflow()
    from keras_r21d.training.callbacks import ResumeError

    try:
        return args.func(args)
    except (ValueError, ResumeError) as error:
        print(f"keras-r21d {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
