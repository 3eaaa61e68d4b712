"""Per-layer lowering of full 3D kernels: `Conv3D` against temporal im2col, forward and training, layer by layer.

    python tools/bench_lowering.py [--models r3d_18,mc3_18] [--batch 4] [--shape 16x112x1] [--reps 5]
    python tools/bench_lowering.py --models r3d_10 --batch 16 --shape 8x48x0.25     # the study's networks

For every distinct full 3D convolution (`t, h, w > 1`) of each network
(input shape, kernel, strides, channels), one `VideoConv` per lowering
(`implementation="conv3d"`: 5-D `Conv3D`; `"conv2d"`: the `t` frames a
window reads stacked on the channel axis, then `Conv2D`) with the same
weights runs, alternating rep by rep: the forward pass (a `tf.function`),
and a training pass (forward, then the gradients of the input and the
kernel, as a training step needs). Prints the median times, which lowering
is faster per layer, the totals per network over its layers (each shape
times its count), and the largest output difference between the two
(they compute the same convolution).
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_r21d  # noqa: E402
from keras_r21d.layers import VideoConv  # noqa: E402

LOWERINGS = ("conv3d", "conv2d")


def full_3d_convs(model_name, shape, width):
    """`{(input shape without batch, kernel, strides, padding, filters): count}` of a network's full 3D convs."""
    model = keras_r21d.get_model(model_name, input_shape=shape, classes=400, width_multiplier=width,
                                 implementation="conv3d", midplanes="torchvision")
    convs = {}

    def visit(layer):
        for sub in layer._flatten_layers(include_self=False, recursive=True):
            if isinstance(sub, VideoConv) and min(sub.kernel_size) > 1:
                key = (tuple(sub._build_shapes_dict["input_shape"][1:]), sub.kernel_size, sub.strides, sub.padding,
                       sub.filters)
                convs[key] = convs.get(key, 0) + 1

    visit(model)
    return convs


def timed(fn, x):
    """Seconds of `fn(x)`, its results brought to NumPy (the work done, not only dispatched)."""
    start = time.perf_counter()
    out = fn(x)
    [t.numpy() for t in (out if isinstance(out, list) else [out])]
    return time.perf_counter() - start


def measure(key, batch, reps):
    """Median seconds of forward and training per lowering, and the max abs difference of the outputs."""
    in_shape, kernel, strides, padding, filters = key
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((batch, *in_shape)).astype("float32"))
    layers, forwards, trainings = {}, {}, {}
    for lowering in LOWERINGS:
        layer = VideoConv(filters, kernel, strides=strides, padding=padding, implementation=lowering)
        layer.build((None, *in_shape))
        if layers:
            layer.set_weights(next(iter(layers.values())).get_weights())
        layers[lowering] = layer

        def forward(x, layer=layer):
            return layer(x)

        def training(x, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
                loss = tf.reduce_sum(y * y)
            return tape.gradient(loss, [x, layer.kernel])

        forwards[lowering] = tf.function(forward)
        trainings[lowering] = tf.function(training)
    outputs = {name: forwards[name](x).numpy() for name in LOWERINGS}
    for name in LOWERINGS:  # warm-up: tracing, oneDNN's primitive caches
        [g.numpy() for g in trainings[name](x)]
    times = {(name, mode): [] for name in LOWERINGS for mode in ("forward", "training")}
    for _ in range(reps):
        for name in LOWERINGS:
            times[(name, "forward")].append(timed(forwards[name], x))
            times[(name, "training")].append(timed(trainings[name], x))
    medians = {k: statistics.median(v) for k, v in times.items()}
    return medians, float(np.abs(outputs["conv3d"] - outputs["conv2d"]).max())


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
    print("| network | input (T, H, W, C) | kernel | strides | filters | layers | forward ms: Conv3D / im2col | "
          "training ms: Conv3D / im2col | faster in training | max abs diff |")
    print("|---|---|---|---|---:|---:|---:|---:|---|---:|")
    for model_name in args.models.split(","):
        totals = {(name, mode): 0.0 for name in LOWERINGS for mode in ("forward", "training")}
        best = 0.0
        for key, count in full_3d_convs(model_name, shape, width).items():
            medians, diff = measure(key, args.batch, args.reps)
            for k, seconds in medians.items():
                totals[k] += seconds * count
            best += min(medians[("conv3d", "training")], medians[("conv2d", "training")]) * count
            c3, c2 = medians[("conv3d", "training")], medians[("conv2d", "training")]
            faster = f"im2col {c3 / c2:.2f}x" if c2 < c3 else f"Conv3D {c2 / c3:.2f}x"
            print(f"| {model_name} | {key[0]} | {key[1]} | {key[2]} | {key[4]} | {count} | "
                  f"{1e3 * medians[('conv3d', 'forward')]:.1f} / {1e3 * medians[('conv2d', 'forward')]:.1f} | "
                  f"{1e3 * c3:.1f} / {1e3 * c2:.1f} | {faster} | {diff:.1e} |", flush=True)
        print(f"| {model_name} | all full 3D convs | | | | | {1e3 * totals[('conv3d', 'forward')]:.0f} / "
              f"{1e3 * totals[('conv2d', 'forward')]:.0f} | {1e3 * totals[('conv3d', 'training')]:.0f} / "
              f"{1e3 * totals[('conv2d', 'training')]:.0f} (per-layer best {1e3 * best:.0f}) | | |", flush=True)


if __name__ == "__main__":
    main()
