"""The `keras-r21d` command line (also `python -m keras_r21d`)."""

import argparse
import json
import os
import sys

from keras_r21d.version import __version__

# = keras_r21d.training.strategy.STRATEGIES, spelled here so that `--help` imports no TensorFlow (a test compares).
STRATEGIES = ("auto", "default", "mirrored", "multiworker", "one_device", "data_parallel")
# = keras_r21d.layers.video_conv.IMPLEMENTATIONS, spelled here so that `--help` imports no Keras (a test compares).
IMPLEMENTATIONS = ("auto", "conv2d", "conv3d", "shifted")

CROPS_HELP = ("1: the center crop (the paper's protocol); 3: three crops along the frames' long side "
              "(MMAction2's and PySlowFast's ThreeCrop), each clip's softmaxes averaged with the rest")
MAX_PIXELS_HELP = ("refuse videos whose test-clip frames, at the size they are decoded at (the pre-crop size), "
                   "exceed N pixels (clip frames x height x width; default 2^30)")
# Exit codes: 0 success, 1 some inputs failed (bad videos: predict, check-videos), 2 usage or input error,
# 130 interrupted (Ctrl-C).
EXIT_BAD_INPUTS = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def _quiet_start(verbose):
    """TensorFlow, Keras, OpenCV and FFmpeg keep their start-up and per-file log lines to themselves.

    TensorFlow prints several lines from C++ as it loads (before its log
    level applies): it is imported here with the process's stderr pointed at
    /dev/null, and its Python loggers are set to errors only. `--verbose`
    leaves all of them as they are.
    """
    if verbose:
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "24")  # FFmpeg's warnings
        os.environ.setdefault("OPENCV_LOG_LEVEL", "INFO")
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import logging
    import warnings

    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        import keras  # noqa: F401 - imports TensorFlow (its C++ start-up lines go to /dev/null)
        import tensorflow as tf  # noqa: F401
    except ImportError:
        pass  # the command says which package is missing when it needs it
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
    for name in ("tensorflow", "absl", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # (A module filter matches the start of the name: "keras_r21d" must not match "keras".)
    warnings.filterwarnings("ignore", module=r"(keras|tensorflow|absl)(\.|$)")


def _prefer_onednn(say):
    """TensorFlow's oneDNN kernels on for a command that runs networks (`keras_r21d.onednn`), said in one line
    when `say` (the training commands; the inference ones keep their output as it was)."""
    from keras_r21d.onednn import VARIABLE, prefer_onednn

    if prefer_onednn() and say:
        print(f"TensorFlow's oneDNN CPU kernels: on ({VARIABLE}=0 to leave TensorFlow's own choice)", flush=True)


def _one_line_warnings(command):
    """Warnings (the package's own: a class pairing by position, a batch larger than the data) as one line each."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"keras-r21d {command}: warning: {message}", file=sys.stderr)

    warnings.showwarning = show


DATA_SERVICE_HELP = ("run the input pipeline on the tf.data service workers of this dispatcher (needs --data "
                     "shards:DIR from keras-r21d prepare; see keras-r21d data-service)")
DATA_SERVICE_TIMEOUT_HELP = ("with --data-service: stop with an error (exit 2; a run resumes with --resume) when no "
                             "batch comes for this long: a worker gone and not restarted at its address (default 600)")


def _positive(kind=int, low=1):
    """An argparse type: a number >= `low` (argparse names the flag in its error)."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


class _ShowDefaults(argparse.HelpFormatter):
    """Help that shows each option's default (but not `None` or a switch's `False`)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (action.option_strings and "%(default)" not in text and default is not None and default is not False
                and default is not argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


POSITIVE = _positive()
NON_NEGATIVE = _positive(low=0)


def cmd_models(args):
    from keras_r21d.models.stats import format_gflops, format_params, models_table

    rows = models_table(args.depth, args.frames, args.size, args.classes, args.width_multiplier)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = f", width x{args.width_multiplier:g}" if args.width_multiplier != 1 else ""
    print(f"depth {args.depth}, input {args.frames}x{args.size}x{args.size}, {args.classes} classes{width}")
    print("| model | variant | params (paper) | params (Keras) | GFLOPs (mult-adds) |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['variant']} | {format_params(r['paper_params'])} | "
              f"{r['keras_params']:,} | {format_gflops(r['gflops'])} |")
    return 0


def cmd_presets(args):
    from keras_r21d.weights.presets import PRESETS, cache_dir, converted_weights_path

    rows = [dict(preset.metadata(), cached=os.path.isfile(converted_weights_path(preset))) for preset in PRESETS]
    rows.sort(key=lambda row: row["handle"])
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("| preset | classes | frames | labels | Video@1 (published) | converted here |")
    print("|---|---:|---:|---|---:|---|")
    for row in rows:
        top1 = "-" if row["video_top1"] is None else f"{row['video_top1']:.2f}"
        print(f"| {row['handle']} | {row['classes']} | {row['frames']} | {row['labels'] or '-'} | {top1} | "
              f"{'yes' if row['cached'] else 'no'} |")
    print(f"cache: {cache_dir()} (keras_r21d.from_preset(HANDLE), --init HANDLE)")
    return 0


class _Progress:
    """A one-line progress bar on stderr (stdout stays clean for --json); with `rate=True`, items/s and ETA."""

    def __init__(self, label, width=30, rate=False):
        self.label = label
        self.width = width
        self.last = -1
        self.rate = rate
        self.start = None

    def _rate(self, done, total):
        import time

        now = time.monotonic()
        if self.start is None:  # the first call (which may report work resumed from before) starts the clock
            self.start = (now, done)
            return ""
        elapsed, counted = now - self.start[0], done - self.start[1]
        if counted <= 0 or elapsed <= 0:
            return ""
        per_second = counted / elapsed
        left = int((total - done) / per_second)
        return f"  {per_second:.1f}/s  ETA {left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"

    def __call__(self, done, total):
        filled = self.width * done // max(total, 1)
        rate = self._rate(done, total) if self.rate else ""
        if filled == self.last and done != total and not self.rate:
            return
        self.last = filled
        bar = "=" * filled + (">" if filled < self.width else "") + " " * (self.width - filled - 1)
        sys.stderr.write(f"\r{self.label} [{bar}] {done}/{total}{rate}   ")
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
    from keras_r21d.data.shards import ShardDataset

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
        if isinstance(dataset, ShardDataset):
            from keras_r21d.data.shard_pipeline import check_shards

            results += check_shards(dataset.subset(fresh), args.frames, args.stride,
                                    progress=_Progress(f"checking {subset} shards"))
            seen.update(dataset.failed)
        elif fresh:
            progress = _Progress(f"checking {subset}")
            results += check_videos(dataset.subset(fresh), args.frames, args.stride, args.timeout, progress=progress,
                                   isolate=not args.in_process)
    bad = [r for r in results if not r["ok"]]
    code = EXIT_BAD_INPUTS if bad else 0  # as linters do: a scan that found problems fails
    if args.json:
        print(json.dumps({"checked": len(results), "bad": len(bad), "videos": results}, indent=2))
        return code
    for r in bad:
        frames = "?" if r["frames"] is None else r["frames"]
        print(f"BAD  {r['path']}  frames={frames}  {r['reason']}")
    print(f"{len(results)} videos checked, {len(results) - len(bad)} ok, {len(bad)} unreadable or too short")
    return code


def _parse_frame_size(text):
    """`--size` of prepare: HEIGHTxWIDTH (the paper's 128x171) or one number, the short side."""
    height, sep, width = text.lower().partition("x")
    try:
        size = (int(height), int(width)) if sep else int(height)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH (e.g. 128x171) or a short side (e.g. 128), got "
                                         f"{text!r}") from None
    if min(size if sep else (size,)) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return size


def cmd_prepare(args):
    from keras_r21d.data.prepare import prepare

    def report(path, reason):
        sys.stderr.write(f"\nkeras-r21d prepare: skipped {path}: {reason}\n")

    manifest = prepare(args.spec, args.out, size=args.size, fps=args.fps, quality=args.quality, workers=args.workers,
                       videos_per_shard=args.videos_per_shard, timeout=args.timeout,
                       progress=_Progress("prepare", rate=True), report=report)
    size = manifest["preprocessing"]["size"]
    stored = f"{size[0]} high x {size[1]} wide" if isinstance(size, list) else f"short side {size}"
    for split, counts in manifest["splits"].items():
        print(f"{split}: {counts['videos_in']} videos in, {counts['written']} written, {counts['failed']} failed; "
              f"{len(counts['shards'])} shards, {counts['bytes'] / 1e6:.1f} MB, {counts['frames']} frames")
    print(f"frames stored at {stored}, JPEG quality {manifest['preprocessing']['quality']}"
          + (f", {manifest['preprocessing']['fps']:g} fps" if manifest["preprocessing"]["fps"] else ""))
    if manifest["failed"]:
        print(f"{len(manifest['failed'])} video(s) could not be written (each reported above; listed with the reason "
              f"in {os.path.join(args.out, 'manifest.json')})")
    print(f"dataset spec: shards:{args.out}")
    return EXIT_BAD_INPUTS if manifest["failed"] else 0


def cmd_data_service(args):
    from keras_r21d.data import service

    if args.role == "dispatcher":
        server = service.start_dispatcher(args.port, args.work_dir, args.worker_timeout)
        print(f"dispatcher ready on port {args.port} (train --data-service HOST:{args.port}; workers: keras-r21d "
              f"data-service worker --dispatcher HOST:{args.port})", flush=True)
    else:
        server = service.start_worker(args.dispatcher, args.port, args.host, args.heartbeat)
        print(f"worker ready, registered with {args.dispatcher}", flush=True)
    server.join()  # until the process is stopped (Ctrl-C, SIGTERM)
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
        batch_size=args.batch_size, accumulate=args.accumulate, epochs=args.epochs, lr=args.lr,
        schedule=args.schedule,
        decay_epochs=args.decay_epochs, warmup_epochs=args.warmup_epochs, weight_decay=args.weight_decay,
        momentum=args.momentum, nesterov=not args.no_nesterov, width_multiplier=args.width_multiplier,
        dropout=args.dropout, val_data=args.val_data, val_freq=args.val_freq, test_clips=args.test_clips,
        test_crops=args.test_crops, label_smoothing=args.label_smoothing, mixup=args.mixup, cutmix=args.cutmix,
        ema=args.ema,
        frame_stride=args.frame_stride, flip=not args.no_flip, strategy=args.strategy,
        mixed_precision=args.mixed_precision, jit_compile=args.xla, implementation=args.implementation,
        autotune_lowering=args.autotune_lowering, seed=args.seed, max_train_videos=args.max_train_videos,
        tensorboard=not args.no_tensorboard, init=args.init, freeze_backbone_epochs=args.freeze_backbone_epochs,
        finetune_lr=args.finetune_lr, trainable_from=args.trainable_from, data_service=args.data_service,
        data_service_timeout=args.data_service_timeout,
    )
    result = run_or_exit(train, config, resume=args.resume)
    if result["report"] is not None:
        _print_report(result["report"])
        skipped = result["skipped_videos"]
        if skipped:
            print(f"{len(skipped)} video(s) could not be decoded during the run (each reported once above; "
                  "listed in run.json)")
        print(f"model: {result['model_path']}\nrun: {result['run_dir']}")
    return 0


def _print_report(report):
    print(f"Clip@1 {100 * report['clip_top1']:.2f}  Clip@5 {100 * report['clip_top5']:.2f}  "
          f"Video@1 {100 * report['video_top1']:.2f}  Video@5 {100 * report['video_top5']:.2f}  "
          f"({report['videos']} videos, {report['clips']} clips, "
          f"{report['protocol'] if report.get('crops', 1) > 1 else format(report['clips_per_video'], '.0f')} "
          "per video)")
    for name, accuracy in report["per_class_video_top1"].items():
        print(f"  {name:30s} {'-' if accuracy is None else f'{100 * accuracy:.1f}'}")
    if report.get("skipped_videos"):
        print(f"{len(report['skipped_videos'])} test videos skipped (unreadable)")


def cmd_evaluate(args):
    from keras_r21d.training import evaluate

    report = evaluate(args.model, args.data, clips=args.clips, frames=args.frames, size=args.size,
                      batch_size=args.batch_size, out_dir=args.out, data_service=args.data_service,
                      data_service_timeout=args.data_service_timeout, crops=args.crops)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
        if args.out:
            print(f"report: {os.path.join(args.out, 'report.json')}")
    return 0


def _calibration_clips(spec, config, count):
    """Normalized test clips of the first videos of a dataset spec, for int8 calibration."""
    from keras_r21d.data.datasets import load_dataset
    from keras_r21d.data.pipeline import read_test_clips
    from keras_r21d.data.video import VideoDecodeError

    dataset = load_dataset(spec, "train")
    clips = []
    for path in dataset.paths:
        try:
            raw = read_test_clips(path, config)
        except VideoDecodeError as error:
            print(f"calibration: skipped {path}: {error.reason}", file=sys.stderr)
            continue
        clips.extend(config.preprocessor(raw).numpy())
        if len(clips) >= count:
            break
    if not clips:
        raise ValueError(f"no calibration clip could be decoded from {spec}")
    import numpy as np

    return np.stack(clips[:count])


def cmd_export(args):
    from keras_r21d.export import export_saved_model, export_tflite
    from keras_r21d.training.evaluation import load_model, run_record, test_clip_config

    model = load_model(args.model)
    record = run_record(args.model) or {}
    config = test_clip_config(model, record, args.clips, args.frames, args.size, args.crops)
    class_names = record.get("class_names")
    if args.format == "savedmodel":
        if args.quantization or args.calibration_data:
            raise ValueError("--quantization and --calibration-data apply to --format tflite only")
        report = export_saved_model(model, args.out, version=args.version, class_names=class_names,
                                    clip_config=config, top_k=args.top_k, model_name=args.model_name,
                                    overwrite=args.overwrite, fold_batchnorm=not args.keep_batchnorm)
    else:
        if args.version is not None:
            raise ValueError("--version applies to --format savedmodel only")
        if not args.out.endswith(".tflite"):
            raise ValueError(f"--out must name a .tflite file for --format tflite. Received: {args.out}")
        data = (_calibration_clips(args.calibration_data, config, args.calibration_clips)
                if args.calibration_data else None)
        if args.quantization == "int8" and data is None:
            raise ValueError("--quantization int8 needs --calibration-data SPEC (videos to calibrate on)")
        report = export_tflite(model, args.out, quantization=args.quantization, representative_data=data,
                               implementation=args.implementation, clip_config=config, class_names=class_names,
                               fold_batchnorm=not args.keep_batchnorm)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"exported {args.model} -> {report['path']}")
    if "ops" in report:
        print(f"  {report['quantization']}, input {report['input_shape']}, {report['size_bytes'] / 1e6:.1f} MB, "
              f"max |TFLite - Keras| {report['max_abs_diff']:.2e}, top-1 agreement "
              f"{100 * report['top1_agreement']:.1f}% on {report['checked_clips']} clips")
        print("  ops: " + ", ".join(f"{name} x{count}" for name, count in report["ops"].items()))
        for note in report["notes"]:
            print(f"  note: {note}")
    else:
        print(f"  version {report['version']}, signatures {', '.join(report['signatures'])}, "
              f"max |SavedModel - Keras| {report['max_abs_diff']:.2e}")
    return 0


def cmd_predict(args):
    from keras_r21d.data.video import VideoDecodeError
    from keras_r21d.inference import load_predictor

    predictor = load_predictor(args.model, clips=args.clips, max_pixels=args.max_pixels, crops=args.crops)
    if args.timeline:
        return _predict_timelines(predictor, args)
    results, failed = [], 0
    for video in args.videos:
        try:
            result = predictor.classify(video, top=args.top)
        except VideoDecodeError as error:
            failed += 1
            result = {"video": video, "error": error.reason}
            print(f"keras-r21d predict: skipped {video}: {error.reason}", file=sys.stderr)
        result.pop("probabilities", None)
        results.append(result)
        if not args.json and "top" in result:
            print(video)
            for entry in result["top"]:
                print(f"  {entry['score']:.4f}  {entry['class']}")
    if args.json:
        print(json.dumps(results, indent=2))
    return EXIT_BAD_INPUTS if failed else 0


def _predict_timelines(predictor, args):
    """`predict --timeline OUT`: a window every `--window-stride` seconds over each video; CSV, JSON and PNG per
    video in OUT (named after the video), and the segments where a class leads printed."""
    from keras_r21d.data.video import VideoDecodeError
    from keras_r21d.timeline import video_timeline

    failed, answers = 0, []
    for video in args.videos:
        prefix = os.path.join(args.timeline, os.path.splitext(os.path.basename(video))[0] + ".timeline")
        try:
            timeline = video_timeline(predictor, video, window_stride=args.window_stride)
        except VideoDecodeError as error:
            failed += 1
            print(f"keras-r21d predict: skipped {video}: {error.reason}", file=sys.stderr)
            answers.append({"video": video, "error": error.reason})
            continue
        paths = timeline.write(prefix, top=args.top)
        segments = timeline.segments()
        answers.append({"video": video, "windows": len(timeline.starts), "segments": segments, "files": paths})
        if not args.json:
            print(f"{video}: {len(timeline.starts)} windows of {timeline.window_frames / timeline.fps:.2f} s, "
                  f"every {timeline.stride_frames / timeline.fps:.2f} s")
            for segment in segments:
                print(f"  {segment['start']:9.2f} - {segment['end']:9.2f} s  {segment['score']:.4f}  "
                      f"{segment['class']}")
            print(f"  {paths['csv']}, {paths['json']}, {paths['png']}")
    if args.json:
        print(json.dumps(answers, indent=2))
    return EXIT_BAD_INPUTS if failed else 0


def cmd_extract(args):
    from keras_r21d.data.datasets import load_dataset
    from keras_r21d.data.shards import ShardDataset
    from keras_r21d.inference import extract_features, load_predictor

    predictor = load_predictor(args.model, clips=args.clips, max_pixels=args.max_pixels, crops=args.crops)
    subsets = ["train", "test"] if args.subset == "all" else [args.subset]
    datasets = [load_dataset(args.data, subset) for subset in subsets]
    if isinstance(datasets[0], ShardDataset):  # each split is read from its own shards; a video in both, once
        seen = set(datasets[0].paths)
        keep = [i for i, path in enumerate(datasets[-1].paths) if path not in seen] if len(datasets) > 1 else None
        parts = datasets[:1] + ([datasets[1].subset(keep)] if keep else [])
    else:
        paths = list(dict.fromkeys(path for dataset in datasets for path in dataset.paths))
        parts = [datasets[0].__class__(datasets[0].name, paths, [0] * len(paths), datasets[0].class_names)]
    written, skipped = [], {}
    root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for dataset in parts for p in dataset.paths])
    for dataset in parts:
        more, also = extract_features(predictor, dataset, args.out, progress=_Progress("extract"), root=root)
        written += more
        skipped.update(also)
    for path, reason in skipped.items():
        print(f"keras-r21d extract: skipped {path}: {reason}", file=sys.stderr)
    print(f"{len(written)} feature files in {args.out}, {len(skipped)} videos skipped")
    return 0


def cmd_convert(args):
    import re

    from keras_r21d.models.registry import get_model, parse_model_name
    from keras_r21d.models.specs import clip_input_shape
    from keras_r21d.training.io import atomic_save_model, atomic_write_text
    from keras_r21d.weights import PREPROCESSING, class_names, convert_state_dict, load_torch_checkpoint
    from keras_r21d.weights.presets import sha256_of

    if os.path.exists(args.out) and not args.overwrite:
        raise ValueError(f"{args.out} exists: pass --overwrite to replace it")
    if not args.out.endswith(".keras"):
        raise ValueError(f"--out must name a .keras file. Received: {args.out}")
    variant, _ = parse_model_name(args.arch)
    state = load_torch_checkpoint(args.checkpoint)
    if "fc.weight" not in state:
        raise ValueError(f"{args.checkpoint}: no fc.weight tensor: not a torchvision VideoResNet checkpoint")
    classes = int(state["fc.weight"].shape[0])
    midplanes = "torchvision" if args.source == "torchvision" else "paper"
    clip = re.search(r"clip(\d+)", os.path.basename(args.checkpoint))
    frames = args.frames or (int(clip.group(1)) if clip else 16)
    shape = clip_input_shape(frames, variant)
    model = get_model(args.arch, input_shape=shape, classes=classes, midplanes=midplanes)
    convert_state_dict(state, model, args.checkpoint)
    atomic_save_model(model, args.out)
    digest = sha256_of(args.checkpoint)
    record = {
        "config": {"arch": variant, "frames": frames, "size": PREPROCESSING["crop"],
                   "frame_stride": PREPROCESSING["frame_stride"], "resize_to": PREPROCESSING["resize"]},
        "class_names": class_names("kinetics400") if classes == 400 else None,
        "source": {"checkpoint": os.path.abspath(args.checkpoint), "sha256": digest, "from": args.source,
                   "midplanes": midplanes},
    }
    atomic_write_text(args.out + ".json", json.dumps(record, indent=2))
    print(f"converted {args.checkpoint} ({len(state)} tensors, sha256 {digest[:12]}...) -> {args.out}: "
          f"{args.arch}, {classes} classes, midplanes={midplanes}, clips of {frames} frames")
    return 0


def _csv(kind):
    def parse(text):
        try:
            return tuple(kind(item) for item in text.split(",") if item.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {text!r}") \
                from None

    return parse


def cmd_tune(args):
    from keras_r21d.tuning import SearchSpace, distributed_role, tune

    role = distributed_role()
    if args.distributed and role is None:
        raise ValueError("--distributed needs KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT")
    if role and not args.distributed:
        raise ValueError("KERASTUNER_ORACLE_IP is set: pass --distributed to run as a chief or worker")
    fixed = {name: value for name, value in (("variant", args.arch), ("depth", args.depth), ("frames", args.frames),
                                             ("width_multiplier", args.width_multiplier), ("lr", args.lr),
                                             ("weight_decay", args.weight_decay),
                                             ("warmup_epochs", args.warmup_epochs),
                                             ("label_smoothing", args.label_smoothing), ("mixup", args.mixup),
                                             ("cutmix", args.cutmix)) if value is not None}
    space = SearchSpace(**{k: v for k, v in dict(
        variants=args.variants, per_stage=args.per_stage, depths=args.depths, frames=args.clip_lengths,
        width_multipliers=args.widths, lr=args.lr_range, weight_decay=args.wd_range,
        warmup_epochs=args.warmup_choices, label_smoothing=args.label_smoothing_choices, mixup=args.mixup_choices,
        cutmix=args.cutmix_choices).items() if v is not None}, fixed=fixed)
    settings = dict(size=args.size, batch_size=args.batch_size, frame_stride=args.frame_stride,
                    flip=not args.no_flip, test_clips=args.test_clips, test_crops=args.test_crops,
                    strategy=args.strategy)
    for name in ("val_data", "max_train_videos", "data_service"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if args.resize_to:
        settings["resize_to"] = _parse_size(args.resize_to)[::-1]
    rows = tune(args.data, args.out, space, algorithm=args.algorithm, objective=args.objective,
                max_trials=args.max_trials, epochs=args.epochs, budget_minutes=args.budget_minutes, seed=args.seed,
                overwrite=args.overwrite, trial_timeout_minutes=args.trial_timeout_minutes, **settings)
    if rows is None:
        print(f"worker {os.environ.get('KERASTUNER_TUNER_ID')} done")
        return 0
    with open(os.path.join(args.out, "results.md"), encoding="utf-8") as f:
        print(f.read(), end="")
    print(f"results: {os.path.join(args.out, 'results.csv')}, plot: {os.path.join(args.out, 'pareto.png')}")
    best = os.path.join(args.out, "best_model.keras")
    if os.path.isfile(best):
        print(f"best model: {best} (keras-r21d export --model {best} ...)")
    return 0


def cmd_study(args):
    from keras_r21d.study import config_from_args, run_study

    config = config_from_args(args)
    study = run_study(config, log=lambda line: print(line, flush=True))
    with open(os.path.join(config.out, "summary.md"), encoding="utf-8") as f:
        print(f.read(), end="")
    return 0 if study["table"] else 1


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-r21d",
        description="R(2+1)D and the other networks of Tran et al. (CVPR 2018) for Keras 3.",
        epilog="Exit codes: 0 success; 1 some inputs failed (bad videos in predict or check-videos); 2 a usage, "
               "input or file error (one line on stderr); 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"keras-r21d {__version__}")
    parser.add_argument("--verbose", action="store_true",
                        help="keep TensorFlow's, Keras' and FFmpeg's own log lines and warnings")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("models", help="print every variant with its parameters and FLOPs")
    p.add_argument("--depth", type=int, default=18, help="network depth (default 18)")
    p.add_argument("--frames", type=POSITIVE, default=8, help="clip length (default 8)")
    p.add_argument("--size", type=POSITIVE, default=112, help="frame height and width (default 112)")
    p.add_argument("--classes", type=POSITIVE, default=400, help="classifier size (default 400)")
    p.add_argument("--width-multiplier", type=float, default=1.0, help="channel width multiplier (default 1)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("presets", help="list the pretrained checkpoints: one handle each, with classes, clip "
                                       "length, published Video@1 and whether it is converted here")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("check-videos", help="scan a dataset for unreadable or too-short videos (exit 1 if any)")
    p.add_argument("spec", help="dataset spec, e.g. ucf101:/data/UCF101:split=1 or folder:/data/videos")
    p.add_argument("--subset", choices=["train", "test", "all"], default="all")
    p.add_argument("--frames", type=POSITIVE, default=16, help="clip length a video must cover (default 16)")
    p.add_argument("--stride", type=POSITIVE, default=1, help="frame stride (default 1)")
    p.add_argument("--timeout", type=_positive(float, 0.001), default=60.0, help="seconds per video (default 60)")
    p.add_argument("--in-process", action="store_true",
                   help="decode in this process (default: in a worker process, so a file that crashes or hangs "
                        "the decoder is reported and the scan goes on)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a report")
    p.set_defaults(func=cmd_check_videos)

    p = sub.add_parser("prepare", help="decode a dataset once into frame shards (TFRecords of JPEG frames): "
                                       "train from shards:DIR, locally or through tf.data service (exit 1 if a "
                                       "video could not be written)")
    p.add_argument("spec", help="dataset spec, e.g. ucf101:/data/UCF101:split=1 (both splits are written)")
    p.add_argument("--out", required=True, help="shard folder: new, empty, or an earlier run of this command "
                                                "(resumed: finished shards are kept)")
    p.add_argument("--size", type=_parse_frame_size, default=(128, 171),
                   help="frames are stored at HEIGHTxWIDTH, or at a short side N (default 128x171, the paper's "
                        "pre-crop size)")
    p.add_argument("--fps", type=_positive(float, 0.001), default=None,
                   help="resample every video to this frame rate (default: keep every frame)")
    p.add_argument("--quality", type=int, default=90, choices=range(1, 101), metavar="1..100",
                   help="JPEG quality (default 90)")
    p.add_argument("--workers", type=POSITIVE, default=None, help="decoding processes (default: the cores)")
    p.add_argument("--videos-per-shard", type=POSITIVE, default=64, help="videos per TFRecord file (default 64)")
    p.add_argument("--timeout", type=_positive(float, 0.001), default=600.0,
                   help="seconds one video may take to decode (default 600)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("data-service", help="run a tf.data service dispatcher or worker (for train/evaluate/tune "
                                            "--data-service; frame shards only)")
    roles = p.add_subparsers(dest="role", metavar="ROLE")
    roles.required = True
    r = roles.add_parser("dispatcher", help="the service's dispatcher: trainers and workers connect to it")
    r.add_argument("--port", type=_positive(int, 1), required=True)
    r.add_argument("--work-dir", help="journal here: a restarted dispatcher recovers its jobs (fault-tolerant mode)")
    r.add_argument("--worker-timeout", type=_positive(float, 0.001), default=None,
                   help="seconds without a heartbeat before a worker is dropped (default TensorFlow's)")
    r = roles.add_parser("worker", help="a worker: runs the shard pipelines of the dispatcher's jobs")
    r.add_argument("--dispatcher", required=True, metavar="HOST:PORT")
    r.add_argument("--port", type=_positive(int, 0), default=0, help="its port (default: any free one)")
    r.add_argument("--host", default=None, help="the name trainers reach it by (default: this machine's hostname)")
    r.add_argument("--heartbeat", type=_positive(float, 0.001), default=None,
                   help="seconds between heartbeats to the dispatcher (default TensorFlow's)")
    p.set_defaults(func=cmd_data_service)

    p = sub.add_parser("make-synthetic", help="write the synthetic motion dataset (UCF101 layout)")
    p.add_argument("out_dir")
    p.add_argument("--classes", type=int, default=8, help="2..12 (default 8)")
    p.add_argument("--videos-per-class", type=POSITIVE, default=24)
    p.add_argument("--frames", default="32..64", help="video length, N or MIN..MAX (default 32..64)")
    p.add_argument("--size", default="128x96", help="WIDTHxHEIGHT (default 128x96)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_make_synthetic)

    from keras_r21d.models.specs import DEPTHS, VARIANTS

    p = sub.add_parser("train", help="train a network on a video dataset (the paper's recipe by default)",
                       formatter_class=_ShowDefaults)
    p.add_argument("--data", required=True, help="dataset spec, e.g. ucf101:/data/UCF101:split=1")
    p.add_argument("--out", required=True,
                   help="run directory: a new or empty folder, or an existing run with --resume")
    p.add_argument("--arch", default="r2plus1d", choices=sorted(VARIANTS), help="network variant")
    p.add_argument("--depth", type=int, default=18, choices=sorted(DEPTHS), help="network depth")
    p.add_argument("--frames", type=POSITIVE, default=16, help="clip length")
    p.add_argument("--size", type=POSITIVE, default=112, help="crop size (frames are resized to 128/112 of it first)")
    p.add_argument("--batch-size", type=POSITIVE, default=8,
                   help="global batch size (at most the number of training videos)")
    p.add_argument("--accumulate", type=POSITIVE, default=1, metavar="N",
                   help="gradient accumulation: one update per N batches, as one batch of N x --batch-size clips "
                        "(the learning rate scales with it; BatchNorm still sees --batch-size clips)")
    p.add_argument("--epochs", type=POSITIVE, default=None, help="(default: 45, or 10 when fine-tuning with --init)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out (its settings must match: see run.json)")
    p.add_argument("--width-multiplier", type=float, default=1.0, help="channel width multiplier")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout before the classifier")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default: 0.01 x batch / 32; with --init: of the head-only epochs)")
    p.add_argument("--schedule", choices=["step", "cosine", "constant"], default="step", help="learning-rate schedule")
    p.add_argument("--decay-epochs", type=POSITIVE, default=10, help="step schedule: divide by 10 every N epochs")
    p.add_argument("--warmup-epochs", type=float, default=0.0, help="linear warm-up epochs")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="decoupled weight decay (not on BatchNorm/biases)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--no-nesterov", action="store_true", help="plain momentum instead of Nesterov's")
    p.add_argument("--val-data", help="validation dataset spec (default: the test subset of --data; folder: and csv: "
                                      "without a split hold out 20%% of each class, see :holdout=)")
    p.add_argument("--val-freq", type=POSITIVE, default=1, help="compute Video@1 every N epochs")
    p.add_argument("--test-clips", type=POSITIVE, default=10, help="clips per video for Video@1")
    p.add_argument("--test-crops", type=int, choices=[1, 3], default=1,
                   help="crops per clip for Video@1: " + CROPS_HELP)
    p.add_argument("--label-smoothing", type=float, default=0.0, metavar="EPS",
                   help="soft training targets: (1 - EPS) on the label, EPS spread over all classes (default 0: off)")
    p.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA",
                   help="mix each training batch with itself reversed, weight ~ Beta(ALPHA, ALPHA) (default 0: off)")
    p.add_argument("--cutmix", type=float, default=0.0, metavar="ALPHA",
                   help="paste a box (the same in every frame) from the paired clip, area ~ Beta(ALPHA, ALPHA), "
                        "labels mixed by area; with --mixup each batch takes one of the two (default 0: off)")
    p.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="keep an exponential moving average of the weights (e.g. 0.999): validation and the saved "
                        "model use it, checkpoints keep both (default 0: off)")
    p.add_argument("--frame-stride", type=POSITIVE, default=1, help="take every N-th frame")
    p.add_argument("--no-flip", action="store_true",
                   help="no horizontal flips (needed when left/right is the label, as in make-synthetic data)")
    p.add_argument("--strategy", choices=STRATEGIES, default="auto",
                   help="auto: MultiWorkerMirrored with TF_CONFIG, Mirrored with several GPUs; on JAX, data_parallel "
                        "with several devices")
    p.add_argument("--mixed-precision", action="store_true",
                   help="mixed_float16 on GPUs (with loss scaling), mixed_bfloat16 elsewhere; float32 variables, "
                        "BatchNorm statistics, softmax and loss")
    p.add_argument("--xla", action="store_true", help="jit_compile the train step (slower on CPUs)")
    p.add_argument("--implementation", choices=IMPLEMENTATIONS, default="auto",
                   help="lowering of the convolutions (conv2d, shifted: no 5-D kernels; which is faster depends on "
                        "the machine, see BENCHMARKS.md and --autotune-lowering)")
    p.add_argument("--autotune-lowering", action="store_true",
                   help="with --implementation auto: time each full 3D kernel's lowerings (Conv3D, im2col, shifted) "
                        "on this machine before training and run the fastest; kept in the run's lowering.json")
    p.add_argument("--seed", type=int, default=0, help="random seed (shuffling, augmentation, initialization)")
    p.add_argument("--max-train-videos", type=POSITIVE, default=None, help="train on the first N videos only")
    p.add_argument("--data-service", metavar="HOST:PORT", default=None, help=DATA_SERVICE_HELP)
    p.add_argument("--data-service-timeout", type=_positive(float, 1), default=600.0, metavar="SECONDS",
                   help=DATA_SERVICE_TIMEOUT_HELP)
    p.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard logs/")
    g = p.add_argument_group("fine-tuning")
    g.add_argument("--init", help="start from a .keras file, a run directory or a preset (kinetics400, ...; "
                                  "with --arch/--depth); the head is replaced if the class count differs")
    g.add_argument("--freeze-backbone-epochs", type=NON_NEGATIVE, default=0,
                   help="train the head alone for N epochs first (frozen BatchNorm statistics too)")
    g.add_argument("--finetune-lr", type=float, default=None,
                   help="learning rate once the backbone trains (default 0.001 x batch / 32)")
    g.add_argument("--trainable-from", choices=["conv1", "conv2", "conv3", "conv4", "conv5", "head"],
                   help="keep the stages before this one frozen throughout (default: train all)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="Clip@1/Video@1 of a model on a dataset's test subset")
    p.add_argument("--model", required=True, help="a .keras file")
    p.add_argument("--data", required=True, help="dataset spec")
    p.add_argument("--clips", type=POSITIVE, default=10, help="uniform clips per video (default 10)")
    p.add_argument("--crops", type=int, choices=[1, 3], default=1, help=CROPS_HELP)
    p.add_argument("--frames", type=POSITIVE, default=None, help="clip length (default: the model's or its run's)")
    p.add_argument("--size", type=POSITIVE, default=None, help="crop size (default: the model's or its run's)")
    p.add_argument("--batch-size", type=POSITIVE, default=8)
    p.add_argument("--out", help="write report.json and confusion_matrix.png here")
    p.add_argument("--data-service", metavar="HOST:PORT", help=DATA_SERVICE_HELP)
    p.add_argument("--data-service-timeout", type=_positive(float, 1), default=600.0, metavar="SECONDS",
                   help=DATA_SERVICE_TIMEOUT_HELP)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="export a .keras model as a TF Serving SavedModel or a .tflite file")
    p.add_argument("--model", required=True, help="a .keras file (loaded with safe_mode)")
    p.add_argument("--format", choices=["savedmodel", "tflite"], default="savedmodel")
    p.add_argument("--out", required=True, help="savedmodel: base directory (writes OUT/VERSION/); tflite: file")
    p.add_argument("--version", type=POSITIVE, default=None, help="savedmodel version (default: next free number)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version")
    p.add_argument("--model-name", default="model", help="TF Serving --model_name for the warm-up requests")
    p.add_argument("--clips", type=POSITIVE, default=10, help="classify_video: uniform clips per video (default 10)")
    p.add_argument("--crops", type=int, choices=[1, 3], default=1,
                   help="classify_video: spatial views per clip (default 1); " + CROPS_HELP)
    p.add_argument("--frames", type=POSITIVE, default=None, help="clip length (default: the model's or its run's)")
    p.add_argument("--size", type=POSITIVE, default=None, help="crop size (default: the model's or its run's)")
    p.add_argument("--top-k", type=POSITIVE, default=5)
    p.add_argument("--quantization", choices=["float16", "dynamic", "int8"], default=None, help="tflite only")
    p.add_argument("--implementation", choices=IMPLEMENTATIONS, default="conv2d",
                   help="tflite: conv2d (default) and shifted have no CONV_3D op; auto/conv3d keep 3D kernels as "
                        "CONV_3D")
    p.add_argument("--keep-batchnorm", action="store_true",
                   help="export the BatchNorm layers as they are (default: folded into the convolutions, "
                        "the same function, faster)")
    p.add_argument("--calibration-data", help="dataset spec of videos for int8 calibration and the check")
    p.add_argument("--calibration-clips", type=POSITIVE, default=32)
    p.add_argument("--json", action="store_true", help="print the export report as JSON")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="top classes of video files")
    p.add_argument("--model", required=True, help="a .keras file, a SavedModel directory or a .tflite file")
    p.add_argument("videos", nargs="+", metavar="VIDEO")
    p.add_argument("--top", type=POSITIVE, default=5, help="classes to print per video (default 5)")
    p.add_argument("--clips", type=POSITIVE, default=None, help="uniform clips per video (default: the model's, 10)")
    p.add_argument("--crops", type=int, choices=[1, 3], default=None,
                   help="spatial views per clip (default: the export's, else 1); " + CROPS_HELP)
    p.add_argument("--max-pixels", type=POSITIVE, default=None, metavar="N", help=MAX_PIXELS_HELP)
    p.add_argument("--timeline", metavar="OUT", default=None,
                   help="slide one clip over each whole video instead: per-window probabilities as "
                        "OUT/VIDEO.timeline.csv/.json/.png, and the segments where a class leads")
    p.add_argument("--window-stride", type=_positive(float, 0), default=1.0, metavar="SECONDS",
                   help="--timeline: seconds between window starts (default 1)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("extract", help="write pooled clip features of every video as .npy files")
    p.add_argument("--model", required=True, help="a .keras file or a SavedModel directory")
    p.add_argument("--data", required=True, help="dataset spec")
    p.add_argument("--out", required=True, help="output directory (mirrors the video paths)")
    p.add_argument("--subset", choices=["train", "test", "all"], default="all")
    p.add_argument("--clips", type=POSITIVE, default=None, help="uniform clips per video (default 10)")
    p.add_argument("--crops", type=int, choices=[1, 3], default=None,
                   help="spatial views per clip (default: the export's, else 1); " + CROPS_HELP)
    p.add_argument("--max-pixels", type=POSITIVE, default=None, metavar="N", help=MAX_PIXELS_HELP)
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("convert", help="convert a PyTorch checkpoint (torchvision VideoResNet layout) to .keras")
    p.add_argument("checkpoint", help="a .pth state dict (read with torch.load(weights_only=True); needs torch)")
    p.add_argument("--from", dest="source", choices=["torchvision", "ig65m"], default="torchvision",
                   help="torchvision: per-block M, BatchNorm epsilon 1e-5; ig65m: the paper's per-conv M, 1e-3")
    p.add_argument("--arch", required=True, help="r3d_18, mc3_18, r2plus1d_18, r2plus1d_34, ...")
    p.add_argument("--frames", type=POSITIVE, default=None,
                   help="clip length it is used at (default: clipN in the file name, else 16)")
    p.add_argument("--out", required=True, help="the .keras file to write (and OUT.json beside it)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("tune", help="search variants / per-stage conv types, depth, clip length, width, recipe")
    p.add_argument("--data", required=True, help="dataset spec (trials train on train, score on test)")
    p.add_argument("--out", required=True, help="search directory (rerun the same command to resume)")
    p.add_argument("--algorithm", choices=["random", "bayesian", "hyperband"], default="random")
    p.add_argument("--objective", choices=["video", "clip"], default="video", help="validation Video@1 or Clip@1")
    p.add_argument("--max-trials", type=POSITIVE, default=10)
    p.add_argument("--epochs", type=POSITIVE, default=5, help="epochs per trial (hyperband: the most per trial)")
    p.add_argument("--budget-minutes", type=float, default=None, help="start no trial after this many minutes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="discard a previous search in --out")
    g = p.add_argument_group("search space (comma-separated choices)")
    g.add_argument("--variants", type=_csv(str), help=f"default all: {','.join(sorted(VARIANTS))}")
    g.add_argument("--per-stage", action="store_true", help="choose the stem and each stage's conv type instead")
    g.add_argument("--depths", type=_csv(int), help="default 10,18")
    g.add_argument("--clip-lengths", type=_csv(int), help="default 8,16")
    g.add_argument("--widths", type=_csv(float), help="width multipliers, default 0.25,0.5,1.0")
    g.add_argument("--lr-range", type=_csv(float), help="LOW,HIGH (log-uniform), default 0.001,0.1")
    g.add_argument("--wd-range", type=_csv(float), help="LOW,HIGH (log-uniform), default 1e-5,1e-3")
    g.add_argument("--warmup-choices", type=_csv(int), help="default 0,1")
    g.add_argument("--label-smoothing-choices", type=_csv(float), help="e.g. 0,0.1 (default 0: off)")
    g.add_argument("--mixup-choices", type=_csv(float), help="mixup alphas, e.g. 0,0.2 (default 0: off)")
    g.add_argument("--cutmix-choices", type=_csv(float), help="cutmix alphas, e.g. 0,1 (default 0: off)")
    g = p.add_argument_group("fixed values (the train command's flags: fix instead of search)")
    g.add_argument("--arch", choices=sorted(VARIANTS))
    g.add_argument("--depth", type=int, choices=sorted(DEPTHS))
    g.add_argument("--frames", type=POSITIVE)
    g.add_argument("--width-multiplier", type=float)
    g.add_argument("--lr", type=float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--warmup-epochs", type=int)
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--mixup", type=float)
    g.add_argument("--cutmix", type=float)
    g.add_argument("--size", type=POSITIVE, default=112)
    g.add_argument("--batch-size", type=POSITIVE, default=8)
    g.add_argument("--frame-stride", type=POSITIVE, default=1)
    g.add_argument("--resize-to", help="WIDTHxHEIGHT before cropping (default 128/112 of --size)")
    g.add_argument("--no-flip", action="store_true")
    g.add_argument("--test-clips", type=POSITIVE, default=10)
    g.add_argument("--test-crops", type=int, choices=[1, 3], default=1, help="crops per test clip: " + CROPS_HELP)
    g.add_argument("--val-data")
    g.add_argument("--max-train-videos", type=POSITIVE)
    g.add_argument("--data-service", metavar="HOST:PORT", help=DATA_SERVICE_HELP)
    g.add_argument("--strategy", choices=STRATEGIES, default="auto")
    g = p.add_argument_group("distributed (keras-tuner's chief/worker mode)")
    g.add_argument("--distributed", action="store_true",
                   help="run as the chief or a worker named by KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP/_PORT")
    g.add_argument("--trial-timeout-minutes", type=float, default=None,
                   help="chief: mark a trial failed when its worker has not finished it after this long")
    p.set_defaults(func=cmd_tune)

    from keras_r21d.study import add_arguments as add_study_arguments

    p = sub.add_parser("study", help="the paper's comparison of all 12 variants, error curves and clip lengths")
    add_study_arguments(p)
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("bench", help="keras_r21d vs torchvision speed on this machine (see --help after bench)",
                       add_help=False)
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="options of tools/bench.py (bench --help)")
    return parser


# The commands that train or run networks: TensorFlow's oneDNN kernels train every network faster on an x86 CPU,
# and run the inference of all but R(2+1)D at batch 1 faster (BENCHMARKS.md). `export` keeps TensorFlow's choice.
TRAINING_COMMANDS = ("train", "tune", "study")
ONEDNN_COMMANDS = (*TRAINING_COMMANDS, "evaluate", "predict", "extract")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # its own options (tools/bench.py's), parsed there
        from keras_r21d.bench import main as bench_main

        return bench_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ONEDNN_COMMANDS:
        _prefer_onednn(say=args.command in TRAINING_COMMANDS)
    _quiet_start(args.verbose)
    _one_line_warnings(args.command)
    from keras_r21d.errors import ExportError, ResumeError

    try:
        return args.func(args)
    except KeyboardInterrupt as interrupt:
        # Training says after which epoch and how to resume; anything else was simply stopped. The process ends
        # at once: TensorFlow's input-pipeline threads, stopped mid-step, abort a normal interpreter exit.
        print(f"keras-r21d {args.command}: {interrupt or 'interrupted'}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)
    except (ValueError, ResumeError, ExportError, ImportError, OSError) as error:
        print(f"keras-r21d {args.command}: error: {error}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
