"""Per-layer lowering of full 3D kernels: `Conv3D`, temporal im2col and shifted 2D taps, forward and training.

    python tools/bench_lowering.py [--models r3d_18,mc3_18] [--batch 4] [--shape 16x112x1] [--reps 5]
    python tools/bench_lowering.py --models r3d_10 --batch 16 --shape 8x48x0.25     # the study's networks

For every distinct full 3D convolution (`t > 1`, `h * w > 1`) of each
network (input shape, kernel, strides, channels),
`keras_r21d.layers.autotune_lowering` times one `VideoConv` per lowering
(`"conv3d"`: 5-D `Conv3D`; `"im2col"`: the `t` frames a window reads
stacked on the channel axis, then `Conv2D`; `"shifted"`: the sum of `t`
`Conv2D`s over shifted frames) with the same weights, alternating rep by
rep: the forward pass, and a training pass (forward, then the gradients of
the input and the kernel, as a training step needs). Prints the median
times, the choice `implementation="auto"` makes from them, the totals per
network over its layers (each shape times its count) for each lowering and
for the per-layer choice, and the largest output difference between the
lowerings (they compute the same convolution).
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_r21d  # noqa: E402
from keras_r21d.layers import VideoConv, autotune_lowering  # noqa: E402
from keras_r21d.layers.lowering import FULL_LOWERINGS, IMPLEMENTATION_OF  # noqa: E402


def max_difference(entry):
    """The largest output difference of the lowerings of one measured layer shape, on a random batch of 2."""
    dims = entry["input_shape"]
    x = np.random.default_rng(1).standard_normal((2, *dims)).astype("float32")
    outputs, weights = [], None
    for name in FULL_LOWERINGS:
        layer = VideoConv(entry["filters"], entry["kernel"], strides=entry["strides"], padding=entry["padding"],
                          implementation=IMPLEMENTATION_OF[name])
        layer.build((None, *dims))
        if weights is None:
            weights = layer.get_weights()
        layer.set_weights(weights)
        outputs.append(np.asarray(layer(x)))
    return max(float(np.abs(o - outputs[0]).max()) for o in outputs[1:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="r3d_18,mc3_18")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--shape", default="16x112x1", help="FRAMESxSIZE[xWIDTH_MULTIPLIER]")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    parts = args.shape.split("x")
    frames, size = int(parts[0]), int(parts[1])
    width = float(parts[2]) if len(parts) > 2 else 1.0
    shape = (frames, size, size, 3)
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, {args.threads} threads; batch {args.batch}, "
          f"{frames}x{size}x{size} clips, width x{width:g}; median of {args.reps}, alternating")
    names = " / ".join(FULL_LOWERINGS)
    print(f"| network | input (T, H, W, C) | kernel | strides | filters | layers | forward ms: {names} | "
          f"training ms: {names} | auto: inference, training | max abs diff |")
    print("|---|---|---|---|---:|---:|---:|---:|---|---:|")
    for model_name in args.models.split(","):
        model = keras_r21d.get_model(model_name, input_shape=shape, classes=400, width_multiplier=width,
                                     midplanes="torchvision")
        table = autotune_lowering(model, batch_size=args.batch, reps=args.reps, install=False)
        rows = {}
        for entry in table.entries:
            key = (tuple(entry["input_shape"]), tuple(entry["kernel"]), tuple(entry["strides"]), entry["filters"])
            rows.setdefault(key, {"entry": entry})[entry["mode"]] = entry
        totals = {(name, mode): 0.0 for name in (*FULL_LOWERINGS, "auto") for mode in ("infer", "train")}
        for (dims, kernel, strides, filters), row in rows.items():
            count = row["entry"]["layers"]
            for mode in ("infer", "train"):
                ms = row[mode]["ms"]
                for name in FULL_LOWERINGS:
                    totals[(name, mode)] += ms[name] * count
                totals[("auto", mode)] += ms[row[mode]["choice"]] * count
            cells = [" / ".join(f"{row[mode]['ms'][name]:.1f}" for name in FULL_LOWERINGS)
                     for mode in ("infer", "train")]
            print(f"| {model_name} | {dims} | {kernel} | {strides} | {filters} | {count} | {cells[0]} | {cells[1]} | "
                  f"{row['infer']['choice']}, {row['train']['choice']} | {max_difference(row['entry']):.1e} |",
                  flush=True)
        cells = [" / ".join(f"{totals[(name, mode)]:.0f}" for name in FULL_LOWERINGS) for mode in ("infer", "train")]
        print(f"| {model_name} | all full 3D convs | | | | | {cells[0]} | {cells[1]} | "
              f"{totals[('auto', 'infer')]:.0f}, {totals[('auto', 'train')]:.0f} | |", flush=True)


if __name__ == "__main__":
    main()
