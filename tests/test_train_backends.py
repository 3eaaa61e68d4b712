"""`keras-r21d train` under `KERAS_BACKEND=jax`: trains, resumes, records its backend; TensorFlow evaluates and
fine-tunes what it wrote. The input is the same tf.data pipeline on every backend."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_r21d.data import make_synthetic_dataset

pytestmark = pytest.mark.slow  # subprocess trainings: make test, not make test-fast

TRAIN = ["--arch", "r2plus1d", "--depth", "10", "--frames", "4", "--size", "32", "--width-multiplier", "0.125",
         "--batch-size", "4", "--test-clips", "2", "--no-flip", "--no-tensorboard"]


def _cli(args, backend="tensorflow", timeout=600):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2", "CI": "1"}
    return subprocess.run([sys.executable, "-m", "keras_r21d", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("backends") / "syn"
    return make_synthetic_dataset(str(root), classes=2, videos_per_class=6, frames=(12, 16), size=(48, 32), seed=0)


def test_train_on_jax_resumes_and_tensorflow_evaluates_and_finetunes_the_run(data, tmp_path):
    pytest.importorskip("jax")
    run = tmp_path / "jax_run"
    first = _cli(["train", "--data", data, "--out", str(run), "--epochs", "2", *TRAIN], backend="jax")
    assert first.returncode == 0, first.stderr[-3000:]
    record = json.loads((run / "run.json").read_text())
    assert record["backend"] == "jax" and record["devices"] == ["cpu:0"] and record["status"] == "done"

    resumed = _cli(["train", "--data", data, "--out", str(run), "--epochs", "3", "--resume", *TRAIN], backend="jax")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((run / "run.json").read_text())
    assert record["backend"] == "jax" and record["resumed_from_epoch"] == 2 and record["status"] == "done"
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]  # each epoch trained once
    assert all(0 <= float(r["val_video_accuracy"]) <= 1 for r in rows)
    assert json.loads((run / "checkpoints" / "state.json").read_text())["epoch"] == 3

    # TensorFlow evaluates the JAX-trained model: the same clip probabilities as the run's own evaluation.
    evaluated = _cli(["evaluate", "--model", str(run / "model.keras"), "--data", data, "--clips", "2",
                      "--out", str(tmp_path / "eval_tf")])
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    on_jax = np.load(run / "eval" / "clip_predictions.npz")
    on_tf = np.load(tmp_path / "eval_tf" / "clip_predictions.npz")
    np.testing.assert_array_equal(on_jax["video_ids"], on_tf["video_ids"])
    np.testing.assert_allclose(on_jax["probabilities"], on_tf["probabilities"], atol=1e-5)
    assert json.loads((tmp_path / "eval_tf" / "report.json").read_text())["video_top1"] == record["results"][
        "video_top1"]

    # ... and fine-tunes from it.
    tuned = tmp_path / "tf_finetune"
    finetune = _cli(["train", "--data", data, "--out", str(tuned), "--init", str(run), "--epochs", "1",
                     "--freeze-backbone-epochs", "0", *TRAIN])
    assert finetune.returncode == 0, finetune.stderr[-3000:]
    record = json.loads((tuned / "run.json").read_text())
    assert record["backend"] == "tensorflow" and record["init"] and record["status"] == "done"


def test_a_tf_distribute_strategy_on_jax_is_refused_naming_the_backend(data, tmp_path):
    pytest.importorskip("jax")
    result = _cli(["train", "--data", data, "--out", str(tmp_path / "run"), "--epochs", "1", "--strategy",
                   "mirrored", *TRAIN], backend="jax", timeout=300)
    assert result.returncode != 0
    assert "strategy='mirrored' is a tf.distribute strategy" in result.stderr and "'jax'" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
