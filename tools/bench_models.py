"""Benchmark: forward and training-step clips/s of keras_r21d networks on this machine.

Times R(2+1)D-18 and R3D-18 at 16x112x112 (inference at batch 1 and 8, one
SGD training step at batch 4), with each convolution lowering side by side in
one run: configurations are interleaved rep by rep, so drift of the machine
hits all of them alike. Prints a Markdown table and, with --json, JSON.

    python tools/bench_models.py                 # the full run (about 10 minutes on 2 cores)
    python tools/bench_models.py --quick         # batch 1 inference only, 3 reps
"""

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_r21d  # noqa: E402

CONFIGS = [
    ("r2plus1d_18", "conv2d", "R(2+1)D-18, (2+1)D as Conv2D on reshaped tensors (default)"),
    ("r2plus1d_18", "conv3d", "R(2+1)D-18, (2+1)D as two 5-D Conv3D"),
    ("r3d_18", "conv3d", "R3D-18, Conv3D (default)"),
    ("r3d_18", "conv2d", "R3D-18, temporal im2col + Conv2D"),
]


def build(name, implementation, frames, size):
    model = keras_r21d.get_model(name, input_shape=(frames, size, size, 3), implementation=implementation)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="sparse_categorical_crossentropy",
        jit_compile=False,
    )
    return model


def make_runner(model, mode, x, y):
    """A no-argument callable running one inference batch or one training step."""
    if mode == "infer":
        forward = tf.function(lambda clips: model(clips, training=False))

        def run():
            return forward(x).numpy()
    else:

        def run():
            return model.train_on_batch(x, y)

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    modes = [("infer", 1)] if args.quick else [("infer", 1), ("infer", 8), ("train", 4)]
    reps = 3 if args.quick else args.reps

    rng = np.random.default_rng(0)
    results = []
    for mode, batch in modes:
        x = rng.standard_normal((batch, args.frames, args.size, args.size, 3)).astype("float32")
        y = rng.integers(0, 400, batch)
        runners = []
        for name, implementation, label in CONFIGS:
            model = build(name, implementation, args.frames, args.size)
            run = make_runner(model, mode, x, y)
            for _ in range(args.warmup):
                run()
            gflops = keras_r21d.model_stats(model)["gflops"]
            runners.append((name, implementation, label, run, gflops, []))
        for _ in range(reps):
            for runner in runners:
                start = time.perf_counter()
                runner[3]()
                runner[5].append(time.perf_counter() - start)
        for name, implementation, label, _, gflops, times in runners:
            median = statistics.median(times)
            clips = batch / median
            factor = 3 if mode == "train" else 1  # a training step is ~3x the forward FLOPs
            results.append(
                {
                    "model": name, "implementation": implementation, "label": label, "mode": mode,
                    "batch": batch, "clips_per_s": clips, "median_s": median,
                    "achieved_gflops": 2 * gflops * factor * clips,
                }
            )
        del runners

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"TensorFlow {tf.__version__}, Keras {keras.__version__}; input {args.frames}x{args.size}x{args.size}; "
          f"median of {reps} after {args.warmup} warm-ups")
    print("| network and lowering | mode | batch | clips/s | GFLOP/s |")
    print("|---|---|---:|---:|---:|")
    for r in results:
        print(f"| {r['label']} | {r['mode']} | {r['batch']} | {r['clips_per_s']:.2f} | {r['achieved_gflops']:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
