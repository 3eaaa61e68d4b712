"""The main job on a fresh machine (`make demo`).

For now: the model table of the paper's 18-layer family and one forward pass
of R(2+1)D-18 on a random 16x112x112 clip.
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import keras_r21d  # noqa: E402
from keras_r21d.cli import main as cli_main  # noqa: E402


def main():
    cli_main(["models", "--depth", "18", "--frames", "8"])
    model = keras_r21d.R2Plus1D(18)
    clip = np.random.default_rng(0).random((1, 16, 112, 112, 3), dtype=np.float32)
    model(clip)  # warm-up
    start = time.perf_counter()
    probabilities = np.asarray(model(clip))
    elapsed = time.perf_counter() - start
    print(f"R(2+1)D-18 forward pass on one 16x112x112 clip: {elapsed:.2f} s, "
          f"output {probabilities.shape}, sum {probabilities.sum():.4f}")


if __name__ == "__main__":
    main()
