"""The measured kernel gradients of a network's 2D convolutions on this machine (TensorFlow, oneDNN's kernels).

    python tools/bench_kernel_gradient.py [--model r2plus1d_18] [--batch 4] [--shape 16x112x1] [--steps 3]

Builds the network, traces one training step (which measures, per distinct
2D convolution over 32 or more channels, its kernel gradient as one MatMul
per tap and as oneDNN's `Conv2DBackpropFilter`:
`keras_r21d.layers.kernel_gradient`), prints the measurements and the
choices as a Markdown table, the sums over the measured shapes (each shape
once) for either way and for the choice, then the median of `--steps`
further training steps. Run it with nothing else on the machine.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as `keras-r21d train` runs
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_r21d  # noqa: E402
from keras_r21d.layers import kernel_gradient  # noqa: E402
from keras_r21d.onednn import onednn_enabled  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="r2plus1d_18")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--shape", default="16x112x1", help="FRAMESxSIZE[xWIDTH_MULTIPLIER]")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    frames, size, *rest = args.shape.split("x")
    shape = (int(frames), int(size), int(size), 3)
    model = keras_r21d.get_model(args.model, input_shape=shape, classes=400, midplanes="torchvision",
                                 width_multiplier=float(rest[0]) if rest else 1.0)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, *shape)).astype("float32")
    y = rng.integers(0, 400, args.batch)
    start = time.perf_counter()
    model.train_on_batch(x, y)
    first = time.perf_counter() - start
    entries = kernel_gradient.kernel_gradient_choices()
    print(f"{args.model} batch {args.batch} {args.shape}, oneDNN {onednn_enabled()}, {os.cpu_count()} CPUs")
    print(kernel_gradient.summary(entries))
    if entries:
        taps = sum(e["ms"]["taps"] for e in entries)
        conv = sum(e["ms"]["conv"] for e in entries)
        chosen = sum(e["ms"][e["choice"]] for e in entries)
        print(f"\nsum over the {len(entries)} shapes: MatMuls {taps:.1f} ms, Conv2DBackpropFilter {conv:.1f} ms, "
              f"the choice {chosen:.1f} ms ({sum(e['choice'] == 'taps' for e in entries)} shapes take the MatMuls)")
    seconds = []
    for _ in range(args.steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        seconds.append(time.perf_counter() - start)
    print(f"first step (tracing, measuring) {first:.1f} s; then a step {statistics.median(seconds):.3f} s "
          f"(median of {args.steps})")


if __name__ == "__main__":
    main()
