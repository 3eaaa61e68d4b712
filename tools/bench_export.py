"""Deployment speed: TFLite R(2+1)D with 2D convolutions under XNNPACK vs a CONV_3D export, and
SavedModel `classify_video` latency for a 10-second 320x240 video; each with BatchNorm folded into the
convolutions (the exports' default) and, for comparison, kept.

    python tools/bench_export.py [--depth 18] [--frames 16] [--size 112] [--threads 2] [--repeats 5]

Prints a Markdown table and writes JSON (--json PATH). Random weights: speed
does not depend on them.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=18)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--video-seconds", type=float, default=10.0)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras_r21d
    from keras_r21d.bench._protocol import timed_median
    from keras_r21d.data.pipeline import ClipConfig
    from keras_r21d.data.transforms import resize_for_crop
    from keras_r21d.export import export_saved_model, export_tflite
    from keras_r21d.export.tflite import interpreter

    shape = (args.frames, args.size, args.size, 3)
    model = keras_r21d.R2Plus1D(depth=args.depth, input_shape=(None, None, None, 3), classes=400)
    config = ClipConfig(clip_len=args.frames, crop=args.size, resize=resize_for_crop(args.size), test_clips=10)
    clip = np.random.default_rng(0).normal(size=(1, *shape)).astype("float32")
    rows = []
    for label, network in (("BatchNorm kept", model), ("BatchNorm folded", keras_r21d.fold_batchnorm(model))):
        forward = tf.function(lambda x, network=network: network(x, training=False))
        seconds = timed_median(lambda forward=forward: forward(clip).numpy(), args.repeats)
        rows.append({"what": f"Keras (TensorFlow) inference, batch 1, {label}", "seconds": seconds})

    with tempfile.TemporaryDirectory() as folder:
        for implementation, fold, label in (("conv2d", True, "TFLite, (2+1)D as CONV_2D, BatchNorm folded"),
                                            ("conv2d", False, "TFLite, (2+1)D as CONV_2D, BatchNorm kept"),
                                            ("conv3d", True, "TFLite, CONV_3D export, BatchNorm folded")):
            path = os.path.join(folder, f"{implementation}_{fold}.tflite")
            start = time.perf_counter()
            report = export_tflite(model, path, implementation=implementation, clip_config=config, check_data=clip,
                                   fold_batchnorm=fold)
            convert = time.perf_counter() - start
            for delegates in (True, False):
                runner = interpreter(path, num_threads=args.threads, delegates=delegates)
                index = runner.get_input_details()[0]["index"]

                def invoke(runner=runner, index=index):
                    runner.set_tensor(index, clip)
                    runner.invoke()

                seconds = timed_median(invoke, args.repeats)
                rows.append({
                    "what": f"{label}, {'XNNPACK' if delegates else 'builtin kernels'}",
                    "seconds": seconds, "conv3d_ops": report["ops"].get("CONV_3D", 0),
                    "conv2d_ops": report["ops"].get("CONV_2D", 0), "export_seconds": round(convert, 1),
                    "mul_add_ops": report["ops"].get("MUL", 0) + report["ops"].get("ADD", 0),
                    "max_abs_diff": report["max_abs_diff"],
                })

        frames = int(round(args.video_seconds * 30))
        video = tf.constant(np.random.default_rng(1).integers(0, 256, (frames, 240, 320, 3), dtype=np.uint8))
        for fold, label in ((True, "BatchNorm folded"), (False, "BatchNorm kept")):
            base = os.path.join(folder, f"serving_{fold}")
            start = time.perf_counter()
            export = export_saved_model(model, base, clip_config=config, fold_batchnorm=fold)
            export_seconds = time.perf_counter() - start
            classify = tf.saved_model.load(export["path"]).signatures["classify_video"]
            seconds = timed_median(lambda classify=classify: classify(frames=video)["probabilities"].numpy(),
                                   max(3, args.repeats // 2))
            rows.append({"what": f"SavedModel classify_video, {args.video_seconds:g} s 320x240 at 30 fps "
                                 f"({frames} frames, 10 clips), {label}", "seconds": seconds,
                         "export_seconds": round(export_seconds, 1)})

    print(f"R(2+1)D-{args.depth}, {args.frames}x{args.size}x{args.size}, 400 classes, {args.threads} threads, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; median of {args.repeats}")
    print("| what | latency (s) | clips/s | CONV_3D ops | MUL + ADD ops |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        clips = 10 if "classify_video" in row["what"] else 1
        row["clips_per_second"] = clips / row["seconds"]
        print(f"| {row['what']} | {row['seconds']:.3f} | {row['clips_per_second']:.2f} | "
              f"{row.get('conv3d_ops', '')} | {row.get('mul_add_ops', '')} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
