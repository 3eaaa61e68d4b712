"""Benchmark: training throughput with the real input pipeline (clips/s of `model.fit`).

Writes synthetic 320x240 videos (MPEG-4 part 2, 300 frames), then trains
R(2+1)D-18 on 16x112x112 clips from them with `keras_r21d.training`'s
optimizer and the `train_dataset` pipeline, and times the steps after the
first (tracing) ones.

    python tools/bench_train.py [--arch r2plus1d] [--depth 18] [--batch-size 4] [--steps 12]
"""

import argparse
import os
import platform
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_r21d  # noqa: E402
from keras_r21d.data import ClipConfig, VideoDataset, train_dataset  # noqa: E402
from keras_r21d.data.synthetic import render_video, write_video  # noqa: E402
from keras_r21d.training import make_optimizer  # noqa: E402


class StepTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="r2plus1d")
    parser.add_argument("--depth", type=int, default=18)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i in range(8):
            path = os.path.join(folder, f"v{i}.avi")
            write_video(path, render_video("horizontal", 1, np.random.default_rng(i), 300, 240, 320))
            paths.append(path)
        dataset = VideoDataset("bench", paths, [i % 4 for i in range(8)], ["a", "b", "c", "d"])
        ds = train_dataset(dataset, args.batch_size, ClipConfig(clip_len=16), seed=0, repeat=True)
        model = keras_r21d.get_model(f"{args.arch}_{args.depth}", classes=400, input_shape=(None, None, None, 3))
        model.compile(optimizer=make_optimizer(0.01, 100, 45), loss="sparse_categorical_crossentropy")
        timer = StepTimer()
        start = time.perf_counter()
        model.fit(ds, epochs=1, steps_per_epoch=args.warmup + args.steps, callbacks=[timer], shuffle=False, verbose=0)
        total = time.perf_counter() - start
    steps = timer.times[args.warmup:]
    clips_per_s = args.batch_size / float(np.median(steps))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; TensorFlow {tf.__version__}, "
          f"Keras {keras.__version__}")
    print(f"{args.arch}-{args.depth}, 16x112x112, batch {args.batch_size}, SGD+Nesterov, real pipeline from "
          f"320x240 MPEG-4 videos: median step {np.median(steps):.2f} s over {len(steps)} steps after "
          f"{args.warmup} warm-up steps -> {clips_per_s:.2f} clips/s (whole fit call {total:.0f} s)")


if __name__ == "__main__":
    main()
