"""`--mixed-precision`: mixed_bfloat16 on a CPU (mixed_float16 on GPUs), on TensorFlow and JAX: the run records
and restores the policy, the saved model computes in bfloat16 on float32 variables, and its float32 copy (what
folding and the exports serve) agrees with it. On TensorFlow the whole learning run still learns; on JAX a
3-epoch run checks the same mechanics (JAX's float32 learning run is tests/test_train_backends.py; its mixed
15-epoch run cost 163 s of make test).

TensorFlow's learning run needs a CPU with AVX-512, where oneDNN has bfloat16 kernels (62-140 s in make test on the
machines of docs/development.md's earlier figures). On an AVX2-only CPU TensorFlow emulates bfloat16 and the same run
took 575 s, the largest part of make test there (80 minutes against CI's 90): there it runs the JAX variant's 3
epochs and checks the mechanics, not the learning."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_r21d.data import load_dataset, make_synthetic_dataset
from keras_r21d.models.fold import as_float32
from keras_r21d.training import TrainConfig, predict_clips
from keras_r21d.training.evaluation import video_predictions
from tests.test_case import MOTION_RECIPE, needs

pytestmark = pytest.mark.slow  # two learning runs: make test, not make test-fast


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return set(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []))
    except OSError:
        return set()


# TensorFlow's bfloat16 kernels are oneDNN's on AVX-512 CPUs; elsewhere they are emulated, several times slower.
NATIVE_BF16 = "avx512f" in _cpu_flags()

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "workers", "learn.py")
VIDEOS_PER_CLASS = 64  # 32 learned only just above the band on JAX (0.44): too close to be a test


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed") / "syn"
    return make_synthetic_dataset(str(root), classes=4, videos_per_class=VIDEOS_PER_CLASS, seed=0)


@pytest.mark.parametrize("backend, epochs", [("tensorflow", None if NATIVE_BF16 else 3), ("jax", 3)])
def test_mixed_bfloat16_learns_and_its_float32_copy_agrees(backend, epochs, data, tmp_path):
    if backend == "jax":
        needs("jax")
    run = tmp_path / "run"
    env = {**os.environ, "KERAS_BACKEND": backend, "CI": "1"}
    result = subprocess.run([sys.executable, WORKER, data, str(run), "--mixed-precision"]
                            + (["--epochs", str(epochs)] if epochs else []), capture_output=True,
                            text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["backend"] == backend and answer["policy_after"] == "float32"  # train() restores the policy
    record = json.loads((run / "run.json").read_text())
    assert record["dtype_policy"] == "mixed_bfloat16"  # no GPU here: bfloat16, no loss scaling
    chance = 1 / 4
    report = answer["report"]
    assert report["videos"] == len(load_dataset(data, "test"))
    if epochs is None:  # the recipe's epochs
        assert report["video_top1"] >= 1.6 * chance, answer

    # The saved model computes in bfloat16 with float32 variables; its float32 copy is the network it serves.
    model = keras.saving.load_model(str(run / "model.keras"), compile=False)
    assert model.get_layer("conv2_block1").dtype_policy.name == "mixed_bfloat16"
    assert {v.dtype for v in model.weights} == {"float32"}
    config = TrainConfig(data=data, out=str(run), **MOTION_RECIPE).clip_config()
    test_set = load_dataset(data, "test")
    mixed, labels, videos = predict_clips(model, test_set, config)
    full, _, _ = predict_clips(as_float32(model), test_set, config)
    error = np.abs(mixed - full).max()
    assert error <= 0.05  # bfloat16 keeps 8 bits of mantissa: probabilities within 0.05
    mixed_videos, full_videos = (video_predictions(p, labels, videos)[0] for p in (mixed, full))
    agree = (mixed_videos.argmax(1) == full_videos.argmax(1)).mean()
    if epochs is None:
        assert agree >= 0.9
    # A video whose float32 top-2 margin exceeds twice the largest error cannot change its answer.
    top2 = np.sort(full_videos, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * error
    assert clear.mean() >= 0.5 and (mixed_videos.argmax(1) == full_videos.argmax(1))[clear].all()
