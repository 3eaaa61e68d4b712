import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import keras_r21d
from keras_r21d.data import ClipConfig, load_dataset, make_synthetic_dataset
from keras_r21d.training import ResumeError, TrainConfig, compute_metrics, load_checkpoint, predict_clips, train
from keras_r21d.training.recipe import WarmupSchedule
from tests.test_case import free_port, read_until

HERE = os.path.dirname(__file__)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CI": "1"}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """4 motion classes, 8 videos each (6 train, 2 test per class)."""
    root = tmp_path_factory.mktemp("tiny") / "syn"
    return make_synthetic_dataset(str(root), classes=4, videos_per_class=8, frames=(12, 16), size=(48, 32), seed=0)


def _tiny_config(data, out, **overrides):
    settings = dict(data=data, out=str(out), arch="r2plus1d", depth=10, frames=4, size=32, batch_size=4, epochs=2,
                    width_multiplier=0.125, test_clips=2, flip=False, tensorboard=False)
    settings.update(overrides)
    return TrainConfig(**settings)


def test_schedule():
    lr = WarmupSchedule(0.1, steps_per_epoch=10, total_epochs=30, warmup_epochs=2, schedule="step", decay_epochs=10)
    values = [float(lr(step)) for step in (0, 10, 20, 99, 100, 200, 299)]
    np.testing.assert_allclose(values, [0.01, 0.055, 0.1, 0.1, 0.01, 0.001, 0.001], rtol=1e-5)
    cosine = WarmupSchedule(0.1, steps_per_epoch=10, total_epochs=10, schedule="cosine")
    np.testing.assert_allclose([float(cosine(s)) for s in (0, 50, 100)], [0.1, 0.05, 0.0], atol=1e-6)
    assert keras_r21d.training.scaled_learning_rate(64) == pytest.approx(0.02)


def _recipe_step(gradient):
    """One optimizer step of the default `TrainConfig` recipe on a small R(2+1)D; the variables before and after."""
    from keras_r21d.training.train import _compile

    model = keras_r21d.R2Plus1D(10, input_shape=(4, 16, 16, 3), classes=3, width_multiplier=0.125)
    config = TrainConfig(data="unused", out="unused")
    _compile(model, config, lr=0.1, steps_per_epoch=10, epochs=30)
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    lr = float(optimizer.learning_rate)
    before = {v.path: np.array(v) for v in model.trainable_variables}
    optimizer.apply_gradients([(keras.ops.full(v.shape, gradient), v) for v in model.trainable_variables])
    after = {v.path: np.array(v) for v in model.trainable_variables}
    return config, lr, before, after


def test_recipe_decays_conv_and_dense_kernels_but_not_batchnorm_or_biases():
    config, lr, before, after = _recipe_step(0.0)  # a zero gradient: only the weight decay moves a variable
    assert config.weight_decay == 1e-4
    kernels = [p for p in before if p.endswith("/kernel")]
    kept = [p for p in before if p.endswith(("/gamma", "/beta", "/bias"))]
    # stem (2), four blocks of two (2+1)D convs (16), three projection shortcuts, the classifier
    assert len(kernels) == 2 + 4 * 2 * 2 + 3 + 1 and kept and len(kernels) + len(kept) == len(before)
    for path in kernels:  # decoupled decay: w <- w - lr * wd * w
        np.testing.assert_allclose(after[path], before[path] * (1 - lr * 1e-4), rtol=1e-6, err_msg=path)
    for path in kept:
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)


def test_recipe_uses_nesterov_momentum_0_9():
    config, lr, before, after = _recipe_step(1.0)
    assert (config.momentum, config.nesterov) == (0.9, True)
    # First step with gradient g: velocity v = -lr g; Nesterov moves by momentum * v - lr g = -1.9 lr g
    # (plain momentum would move by -lr g).
    bias = next(p for p in before if p.endswith("predictions/bias"))
    np.testing.assert_allclose(after[bias] - before[bias], -1.9 * lr, rtol=1e-5)


def test_accumulated_gradients_update_as_one_big_batch():
    """`accumulate=2`: two batches of 4 then one update give the weights of one step on the batch of 8 (a network
    without BatchNorm, the recipe's SGD with Nesterov momentum and weight decay, two updates); between the two
    batches the weights do not move."""
    from keras_r21d.layers import VideoConv
    from keras_r21d.training.train import _compile

    def network():
        inputs = keras.Input((4, 8, 8, 3))
        x = VideoConv(6, (3, 3, 3), activation="relu", use_bias=True)(inputs)
        x = keras.layers.GlobalAveragePooling3D()(x)
        return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))

    rng = np.random.default_rng(0)
    clips = rng.normal(size=(16, 4, 8, 8, 3)).astype("float32")
    labels = rng.integers(0, 3, 16)
    accumulated, big = network(), network()
    big.set_weights(accumulated.get_weights())
    _compile(accumulated, TrainConfig(data="unused", out="unused", accumulate=2), lr=0.5, steps_per_epoch=4,
             epochs=10)
    _compile(big, TrainConfig(data="unused", out="unused"), lr=0.5, steps_per_epoch=2, epochs=10)
    start = [w.copy() for w in accumulated.get_weights()]
    accumulated.train_on_batch(clips[:4], labels[:4])
    for before, after in zip(start, accumulated.get_weights()):
        np.testing.assert_array_equal(after, before)  # accumulated, not applied
    accumulated.train_on_batch(clips[4:8], labels[4:8])
    accumulated.train_on_batch(clips[8:12], labels[8:12])
    accumulated.train_on_batch(clips[12:], labels[12:])
    big.train_on_batch(clips[:8], labels[:8])
    big.train_on_batch(clips[8:], labels[8:])
    assert int(accumulated.optimizer.iterations) == int(big.optimizer.iterations) == 2
    moved = False
    for a, b, before in zip(accumulated.get_weights(), big.get_weights(), start):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        moved = moved or not np.allclose(b, before, atol=1e-4)
    assert moved


def test_accumulate_scales_the_learning_rate_and_counts_updates(tiny_data, tmp_path, monkeypatch):
    """`train(accumulate=4)`: the learning rate scales with the effective batch, an epoch is whole updates, and
    run.json records both batches; `--accumulate` reaches the config."""
    from keras_r21d import cli
    from keras_r21d.training import scaled_learning_rate

    result = train(_tiny_config(tiny_data, tmp_path / "run", batch_size=4, accumulate=4, epochs=1))
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    # 24 training videos: 6 batches of 4, rounded up to 8 for whole updates of 4 batches each
    assert (run["batch_size"], run["accumulate"], run["effective_batch"], run["steps_per_epoch"]) == (4, 4, 16, 8)
    assert run["phases"][0]["learning_rate"] == pytest.approx(scaled_learning_rate(16))
    assert int(result["model"].optimizer.iterations) == 2
    with pytest.raises(ValueError, match="accumulate"):
        TrainConfig(data=tiny_data, accumulate=0)
    seen = {}
    monkeypatch.setattr(keras_r21d.training, "run_or_exit",
                        lambda function, config, resume: seen.update(config=config) or {"report": None})
    cli.main(["train", "--data", tiny_data, "--out", str(tmp_path / "cli"), "--accumulate", "3"])
    assert seen["config"].accumulate == 3


def test_accumulate_is_refused_under_mirrored_replicas(tiny_data, tmp_path):
    """Keras' gradient accumulation cannot run under tf.distribute over several replicas: a `ValueError` that says
    so (the CLI prints it as one line, exit 2) before anything is trained or written, not an error from inside the
    first step."""
    args = [sys.executable, os.path.join(HERE, "workers", "train_worker.py"), tiny_data, str(tmp_path / "run"),
            str(tmp_path / "result.json"), "mirrored", "--cpus", "2", "--accumulate", "2"]
    process = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=600)
    assert process.returncode == 1, process.stdout + process.stderr
    assert ("ValueError: accumulate=2 (--accumulate) cannot train under MirroredStrategy over 2 replicas"
            in process.stderr), process.stderr
    assert "merge_call" not in process.stderr and not (tmp_path / "run" / "run.json").exists()


@pytest.mark.slow
def test_learns_with_gradient_accumulation(tmp_path):
    """The learning test's recipe with half the batch and `accumulate=2` (the same updates' batch of 16) learns."""
    from tests.test_case import MOTION_RECIPE

    data = make_synthetic_dataset(str(tmp_path / "syn"), classes=4, videos_per_class=64, seed=0)
    result = train(TrainConfig(data=data, out=str(tmp_path / "run"), **dict(MOTION_RECIPE, batch_size=8,
                                                                           accumulate=2)))
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (run["batch_size"], run["effective_batch"]) == (8, 16)
    assert result["report"]["video_top1"] >= 1.6 / 4, result["report"]


@pytest.mark.slow
def test_video_accuracy_equals_the_clip_average_by_hand(tiny_data, tmp_path):
    result = train(_tiny_config(tiny_data, tmp_path / "run"))
    report = result["report"]
    model = keras.models.load_model(result["model_path"], safe_mode=True)
    dataset = load_dataset(tiny_data, "test")
    config = ClipConfig(clip_len=4, resize=(37, 49), crop=32, test_clips=2)
    probabilities, labels, videos = predict_clips(model, dataset, config, batch_size=4)
    assert probabilities.shape == (2 * len(dataset), 4)
    correct = []
    for video in np.unique(videos):
        mean = probabilities[videos == video].mean(axis=0)
        correct.append(mean.argmax() == labels[videos == video][0])
    assert report["video_top1"] == pytest.approx(np.mean(correct))
    assert report["clip_top1"] == pytest.approx(np.mean(probabilities.argmax(1) == labels))
    assert report["videos"] == len(dataset) and report["clips"] == 2 * len(dataset)
    run = json.load(open(tmp_path / "run" / "run.json"))
    assert run["status"] == "done" and run["results"]["video_top1"] == report["video_top1"]
    assert run["versions"]["keras"] == keras.__version__
    from keras_r21d.onednn import onednn_enabled  # whether TensorFlow's oneDNN kernels ran, as the process had it

    assert run["versions"]["tensorflow_onednn"] is onednn_enabled() and isinstance(onednn_enabled(), bool)
    for name in ["loss.png", "error.png", "learning_rate.png", "eval/confusion_matrix.png", "eval/report.json",
                 "history.csv", "checkpoints/best.keras", "model.keras"]:
        assert os.path.getsize(tmp_path / "run" / name) > 0, name
    history = open(tmp_path / "run" / "history.csv").read().splitlines()
    assert len(history) == 3 and "val_video_accuracy" in history[0] and "learning_rate" in history[0]


def test_compute_metrics_small_case():
    probabilities = np.array([[0.6, 0.4], [0.3, 0.7], [0.2, 0.8], [0.9, 0.1]])
    labels = np.array([0, 0, 1, 1])
    videos = np.array([0, 0, 1, 1])
    m = compute_metrics(probabilities, labels, videos, ["a", "b"])
    assert m["clip_top1"] == 0.5
    # Video 0 averages to (0.45, 0.55) -> "b", video 1 to (0.55, 0.45) -> "a": both wrong.
    assert m["video_top1"] == 0.0
    assert m["confusion_matrix"] == [[0, 1], [1, 0]]
    assert m["per_class_video_top1"] == {"a": 0.0, "b": 0.0}


def test_best_checkpoint_is_chosen_by_validation_video_accuracy(tmp_path):
    """`best.keras` follows `val_video_accuracy`, not clip accuracy or loss; a resumed callback keeps the best."""
    from keras_r21d.training.callbacks import ResumableCheckpoint, read_state

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    model.compile(optimizer="sgd", loss="mse")
    epochs = [  # (Video@1, Clip@1, loss): Video@1 is best at epoch 2, the others at epoch 3
        (0.50, 0.40, 0.9), (0.75, 0.30, 0.8), (0.60, 0.90, 0.1),
    ]
    checkpoints = str(tmp_path / "checkpoints")
    callback = ResumableCheckpoint(checkpoints)
    callback.set_model(model)
    marks = []
    for epoch, (video, clip, loss) in enumerate(epochs[:2]):
        model.get_layer("dense").bias.assign([epoch + 1.0, 0.0])  # identifies the epoch's weights
        callback.on_epoch_end(epoch, {"val_video_accuracy": video, "val_accuracy": clip, "val_loss": loss,
                                      "loss": loss})
        marks.append(epoch + 1.0)
    # A new callback (a resumed run) reads the best so far and keeps it through a worse epoch.
    callback = ResumableCheckpoint(checkpoints)
    callback.set_model(model)
    model.get_layer("dense").bias.assign([3.0, 0.0])
    video, clip, loss = epochs[2]
    callback.on_epoch_end(2, {"val_video_accuracy": video, "val_accuracy": clip, "val_loss": loss, "loss": loss})
    state = read_state(checkpoints)
    assert state["monitor"] == "val_video_accuracy" and state["best"] == 0.75 and state["epoch"] == 3
    best = keras.models.load_model(os.path.join(checkpoints, "best.keras"), safe_mode=True)
    assert float(best.get_layer("dense").bias[0]) == 2.0
    latest = keras.models.load_model(os.path.join(checkpoints, state["checkpoint"]), safe_mode=True)
    assert float(latest.get_layer("dense").bias[0]) == 3.0


def test_a_run_writes_tensorboard_logs_and_keeps_its_best_video_accuracy(tiny_data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    train(_tiny_config(tiny_data, out, epochs=3, tensorboard=True))
    scalars = {}
    for split in ("train", "validation"):
        events = EventAccumulator(str(out / "logs" / split), size_guidance={"tensors": 0}).Reload()
        scalars[split] = {tag: [event.step for event in events.Tensors(tag)] for tag in events.Tags()["tensors"]}
    assert scalars["train"]["epoch_loss"] == [0, 1, 2] and scalars["train"]["epoch_learning_rate"] == [0, 1, 2]
    assert scalars["validation"]["epoch_video_accuracy"] == [0, 1, 2]
    history = (out / "history.csv").read_text().splitlines()
    column = history[0].split(",").index("val_video_accuracy")
    video = [float(row.split(",")[column]) for row in history[1:]]
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["monitor"] == "val_video_accuracy" and state["best"] == pytest.approx(max(video))


def _cli(*args, env=ENV, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "keras_r21d", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


TRAIN_ARGS = ["--arch", "r2plus1d", "--depth", "10", "--frames", "4", "--size", "32", "--batch-size", "2",
              "--width-multiplier", "0.125", "--test-clips", "2", "--no-tensorboard"]


@pytest.mark.slow
def test_kill_and_resume(tiny_data, tmp_path):
    out = tmp_path / "run"
    state = out / "checkpoints" / "state.json"
    process = _cli("train", "--data", tiny_data, "--out", str(out), "--epochs", "4", *TRAIN_ARGS,
                   env={**ENV, "PYTHONUNBUFFERED": "1"})
    read_until(process, "Epoch 2/4", timeout=300)  # epoch 1 is checkpointed, epoch 2 has begun
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    killed_at = json.loads(state.read_text())["epoch"]
    assert killed_at == 1
    # Every checkpoint on disk is complete: it loads (a ".tmp-" file is a save the kill interrupted).
    checkpoints = [n for n in os.listdir(out / "checkpoints") if n.endswith(".keras") and not n.startswith(".tmp-")]
    assert f"epoch-{killed_at:03d}.keras" in checkpoints and "best.keras" in checkpoints
    for name in checkpoints:
        keras.models.load_model(out / "checkpoints" / name, safe_mode=True)
    # Without --resume the run directory is not overwritten.
    refused = _cli("train", "--data", tiny_data, "--out", str(out), "--epochs", "4", *TRAIN_ARGS)
    output = refused.communicate(timeout=300)[0]
    assert refused.returncode == 2 and "already holds a run" in output
    resumed = _cli("train", "--data", tiny_data, "--out", str(out), "--epochs", "4", "--resume", *TRAIN_ARGS)
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output
    assert f"Epoch {killed_at + 1}/4" in output and "Epoch 1/4" not in output
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "done" and run["resumed_from_epoch"] == killed_at
    assert json.loads(state.read_text())["epoch"] == 4
    assert not [n for n in os.listdir(out / "checkpoints") if n.startswith(".tmp-")]
    rows = (out / "history.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows][-1] == 3


@pytest.mark.slow
def test_corrupt_checkpoint_is_a_clear_error(tiny_data, tmp_path):
    out = tmp_path / "run"
    train(_tiny_config(tiny_data, out, epochs=1))
    checkpoints = out / "checkpoints"
    latest = checkpoints / json.loads((checkpoints / "state.json").read_text())["checkpoint"]
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 2])
    with pytest.raises(ResumeError, match=f"{latest}.*corrupt or unreadable"):
        load_checkpoint(str(checkpoints))
    result = _cli("train", "--data", tiny_data, "--out", str(out), "--epochs", "2", "--resume", *TRAIN_ARGS)
    output = result.communicate(timeout=300)[0]
    assert result.returncode == 2
    assert "refusing to start from scratch" in output and str(latest) in output
    (checkpoints / "state.json").write_text("{not json")
    with pytest.raises(ResumeError, match="state.json is corrupt"):
        load_checkpoint(str(checkpoints))


def _worker_env(ports, index):
    config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
    return {**ENV, "TF_CONFIG": json.dumps(config)}


def _start_workers(data, tmp_path, extra=None):
    ports = [free_port(), free_port()]
    processes = []
    for index in range(2):
        args = [sys.executable, os.path.join(HERE, "workers", "train_worker.py"), data, str(tmp_path / "run"),
                str(tmp_path / f"result{index}.json"), "multiworker", *(extra or {}).get(index, [])]
        processes.append(subprocess.Popen(args, env=_worker_env(ports, index), stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
    return processes


@pytest.mark.slow
def test_multi_worker_mirrored_two_workers(tiny_data, tmp_path):
    processes = _start_workers(tiny_data, tmp_path)
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    results = [json.loads((tmp_path / f"result{i}.json").read_text()) for i in range(2)]
    assert results[0]["digest"] == results[1]["digest"]  # identical trainable weights on both workers
    assert [r["chief"] for r in results] == [True, False]
    assert results[0]["model_path"] == str(tmp_path / "run" / "model.keras") and results[1]["model_path"] is None
    assert os.path.exists(tmp_path / "run" / "model.keras")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["strategy"] in (
        "MultiWorkerMirroredStrategy", "CollectiveAllReduceStrategy")


@pytest.mark.slow
def test_multi_worker_failure_does_not_hang(tiny_data, tmp_path):
    processes = _start_workers(tiny_data, tmp_path, extra={1: ["--fail-at-batch", "2"]})
    start = time.monotonic()
    for process in processes:
        try:
            process.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            pytest.fail("a worker hung after its peer failed")
    assert all(p.returncode != 0 for p in processes)
    assert time.monotonic() - start < 240


@pytest.mark.slow
def test_mirrored_strategy_over_two_logical_cpus(tiny_data, tmp_path):
    args = [sys.executable, os.path.join(HERE, "workers", "train_worker.py"), tiny_data, str(tmp_path / "run"),
            str(tmp_path / "result.json"), "mirrored", "--cpus", "2"]
    process = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stdout + process.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["replicas"] == 2
    assert json.loads((tmp_path / "run" / "run.json").read_text())["strategy"] == "MirroredStrategy"


def test_autotune_lowering_run_keeps_its_measurements(tiny_data, tmp_path):
    """`autotune_lowering=True`: the full 3D kernels' lowerings are timed before the first step, kept in the run's
    lowering.json, used for training and the final evaluation, and uninstalled when `train` returns."""
    from keras_r21d.layers import LoweringTable, VideoConv
    from keras_r21d.layers.autotune import choose
    from keras_r21d.layers.lowering import installed

    out = tmp_path / "run"
    result = train(_tiny_config(tiny_data, out, arch="r3d", epochs=1, autotune_lowering=True))
    table = LoweringTable.load(str(out / "lowering.json"))
    convs = [layer for layer in result["model"]._flatten_layers() if isinstance(layer, VideoConv) and
             layer.full_kernel]
    shapes = {tuple(layer._call_shape[1:]) + (layer.strides, layer.filters) for layer in convs}
    assert {tuple(e["input_shape"]) + (tuple(e["strides"]), e["filters"]) for e in table.entries} == shapes
    assert {e["mode"] for e in table.entries} == {"train", "infer"} and table.machine_matches()
    assert all(e["batch_size"] == 4 and e["choice"] == choose(e["ms"]) for e in table.entries)
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["autotune_lowering"] is True and run["status"] == "done"
    assert installed() == {}  # the run's choices stay with the run
