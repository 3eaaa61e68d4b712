"""`keras-r21d train` under `KERAS_BACKEND=jax`: trains, resumes, records its backend; TensorFlow evaluates and
fine-tunes what it wrote. The input is the same tf.data pipeline on every backend."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from keras_r21d.data import make_synthetic_dataset
from tests.test_case import needs

pytestmark = pytest.mark.slow  # subprocess trainings: make test, not make test-fast

TRAIN = ["--arch", "r2plus1d", "--depth", "10", "--frames", "4", "--size", "32", "--width-multiplier", "0.125",
         "--batch-size", "4", "--test-clips", "2", "--no-flip", "--no-tensorboard"]


def _cli(args, backend="tensorflow", timeout=600, devices=None):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2", "CI": "1"}
    if devices:  # XLA's host platform as that many devices
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return subprocess.run([sys.executable, "-m", "keras_r21d", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("backends") / "syn"
    return make_synthetic_dataset(str(root), classes=2, videos_per_class=6, frames=(12, 16), size=(48, 32), seed=0)


@pytest.fixture(scope="module")
def jax_run(data, tmp_path_factory):
    """Two epochs on JAX, one device (the tests that go on with it copy it first)."""
    needs("jax")
    run = tmp_path_factory.mktemp("jax") / "run"
    result = _cli(["train", "--data", data, "--out", str(run), "--epochs", "2", "--strategy", "default", *TRAIN],
                  backend="jax", devices=1)
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def test_train_on_jax_resumes_and_tensorflow_evaluates_and_finetunes_the_run(data, jax_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(jax_run, run)
    record = json.loads((run / "run.json").read_text())
    assert record["backend"] == "jax" and record["devices"] == ["cpu:0"] and record["status"] == "done"
    assert record["dtype_policy"] == "float32"

    resumed = _cli(["train", "--data", data, "--out", str(run), "--epochs", "3", "--resume", "--strategy", "default",
                    *TRAIN], backend="jax")
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

    # ... exports it (TFLite: its parity check against Keras passes) ...
    exported = _cli(["export", "--model", str(run / "model.keras"), "--format", "tflite", "--out",
                     str(tmp_path / "jax_run.tflite"), "--json"])
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert json.loads(exported.stdout)["max_abs_diff"] <= 1e-4

    # ... and fine-tunes from it.
    tuned = tmp_path / "tf_finetune"
    finetune = _cli(["train", "--data", data, "--out", str(tuned), "--init", str(run), "--epochs", "1",
                     "--freeze-backbone-epochs", "0", *TRAIN])
    assert finetune.returncode == 0, finetune.stderr[-3000:]
    record = json.loads((tuned / "run.json").read_text())
    assert record["backend"] == "tensorflow" and record["init"] and record["status"] == "done"


def test_a_tf_distribute_strategy_on_jax_is_refused_naming_the_backend(data, tmp_path):
    needs("jax")
    result = _cli(["train", "--data", data, "--out", str(tmp_path / "run"), "--epochs", "1", "--strategy",
                   "mirrored", *TRAIN], backend="jax", timeout=300)
    assert result.returncode != 0
    assert "strategy='mirrored' is a tf.distribute strategy" in result.stderr and "'jax'" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def _weights(path):
    import keras

    return {v.path: np.asarray(v) for v in keras.saving.load_model(path, compile=False).weights}


def test_data_parallel_on_two_jax_devices_trains_what_one_device_trains(data, jax_run, tmp_path):
    """Two host devices (XLA's forced device count): the global batch of 4 splits 2 + 2; the gradients and the
    BatchNorm batch statistics are the global batch's, so the weights, the validation loss and accuracy (computed
    outside fit on every clip) and Video@1 equal one device's, up to float summation order."""
    run = tmp_path / "devices2"
    result = _cli(["train", "--data", data, "--out", str(run), "--epochs", "2", "--strategy", "auto", *TRAIN],
                  backend="jax", devices=2)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {1: jax_run, 2: run}
    one, two = (json.loads((runs[d] / "run.json").read_text()) for d in (1, 2))
    assert (two["strategy"], two["replicas"], two["devices"]) == ("DataParallel", 2, ["cpu:0", "cpu:1"])
    assert (one["replicas"], one["devices"]) == (1, ["cpu:0"]) and one["batch_size"] == two["batch_size"] == 4
    first, second = _weights(str(runs[1] / "model.keras")), _weights(str(runs[2] / "model.keras"))
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_allclose(second[name], first[name], rtol=1e-3, atol=1e-4, err_msg=name)
    histories = []
    for devices in (1, 2):
        with open(runs[devices] / "history.csv") as f:
            histories.append(list(csv.DictReader(f)))
    for row_one, row_two in zip(*histories, strict=True):
        for key in ("loss", "val_loss", "val_accuracy", "val_video_accuracy"):
            assert float(row_two[key]) == pytest.approx(float(row_one[key]), rel=1e-3, abs=1e-4), key
    assert two["results"]["video_top1"] == one["results"]["video_top1"]

    # ... and resumes on two devices: the third epoch only, data-parallel again.
    resumed = _cli(["train", "--data", data, "--out", str(run), "--epochs", "3", "--resume", "--strategy", "auto",
                    *TRAIN], backend="jax", devices=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((run / "run.json").read_text())
    assert (record["resumed_from_epoch"], record["strategy"], record["replicas"]) == (2, "DataParallel", 2)
    with open(run / "history.csv") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [0, 1, 2]


def test_data_parallel_refuses_a_batch_that_does_not_split_over_the_devices(data, tmp_path):
    needs("jax")
    assert TRAIN[-6:-4] == ["--batch-size", "4"]
    result = _cli(["train", "--data", data, "--out", str(tmp_path / "run"), "--epochs", "1", *TRAIN[:-6],
                   "--batch-size", "3", *TRAIN[-4:]], backend="jax", timeout=300, devices=2)
    assert result.returncode != 0
    assert "the global batch of 3 clips does not split evenly over the 2 devices" in result.stderr


def test_train_on_torch_evaluates_on_tensorflow_and_resumes_only_on_torch(data, tmp_path):
    """A run trained on PyTorch: TensorFlow evaluates its model (loaded without the torch optimizer it names);
    resuming it on TensorFlow is refused before any checkpoint is read, naming both backends."""
    needs("torch")
    run = tmp_path / "torch_run"
    # Soft targets: tf.data graph ops, which feed every backend (a JAX run took 114 s more of make test: torch's
    # covers another backend).
    soft = ["--label-smoothing", "0.1", "--mixup", "0.2", "--cutmix", "1.0"]
    trained = _cli(["train", "--data", data, "--out", str(run), "--epochs", "1", *TRAIN, *soft], backend="torch")
    assert trained.returncode == 0, trained.stderr[-3000:]
    record = json.loads((run / "run.json").read_text())
    assert record["backend"] == "torch" and record["config"]["mixup"] == 0.2 and record["config"]["cutmix"] == 1.0
    evaluated = _cli(["evaluate", "--model", str(run / "model.keras"), "--data", data, "--clips", "2",
                      "--out", str(tmp_path / "eval_tf")])
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    on_torch = np.load(run / "eval" / "clip_predictions.npz")["probabilities"]
    np.testing.assert_allclose(np.load(tmp_path / "eval_tf" / "clip_predictions.npz")["probabilities"], on_torch,
                               atol=1e-5)
    refused = _cli(["train", "--data", data, "--out", str(run), "--epochs", "2", "--resume", *TRAIN, *soft])
    assert refused.returncode != 0
    assert "on the Keras backend 'tensorflow': it trained on 'torch'" in refused.stderr
    assert "KERAS_BACKEND=torch" in refused.stderr
    resumed = _cli(["train", "--data", data, "--out", str(run), "--epochs", "2", "--resume", *TRAIN, *soft],
                   backend="torch")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run / "run.json").read_text())["resumed_from_epoch"] == 1
