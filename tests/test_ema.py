"""`--ema DECAY`: an exponential moving average of the weights (Keras' `use_ema`). Validation and the saved model
use the average; checkpoints keep the training weights and the average; a resumed run continues the average."""

import json

import keras
import numpy as np
import pytest

from keras_r21d.data import eval_dataset, load_dataset, make_synthetic_dataset
from keras_r21d.training import TrainConfig, train
from keras_r21d.training.recipe import make_optimizer

DECAY = 0.8


class WeightRecorder(keras.callbacks.Callback):
    """The trainable weights after every training batch (the training weights: the average is swapped in only
    for validation, at the end of an epoch)."""

    def __init__(self):
        super().__init__()
        self.after_batch = []

    def on_train_batch_end(self, batch, logs=None):
        self.after_batch.append([keras.ops.convert_to_numpy(v).copy() for v in self.model.trainable_variables])


def _average(snapshots, decay, start=None):
    """The moving average Keras keeps: the first update sets it, then `decay * avg + (1 - decay) * w`."""
    average = start
    for weights in snapshots:
        average = [w.copy() for w in weights] if average is None else [
            decay * a + (1 - decay) * w for a, w in zip(average, weights)]
    return average


def _assert_close(actual, expected, atol):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, atol=atol)


def test_the_optimizer_averages_the_weights_and_fit_leaves_the_average():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    model.compile(optimizer=make_optimizer(0.5, 4, 1, weight_decay=0, ema=DECAY), loss="mse")
    recorder = WeightRecorder()
    x = np.random.default_rng(0).normal(size=(16, 5)).astype("float32")
    y = np.random.default_rng(1).normal(size=(16, 3)).astype("float32")
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[recorder])
    assert len(recorder.after_batch) == 4
    expected = _average(recorder.after_batch, DECAY)
    _assert_close([keras.ops.convert_to_numpy(v) for v in model.trainable_variables], expected, 1e-6)
    assert not np.allclose(expected[0], recorder.after_batch[-1][0])  # the average is not the last weights
    with pytest.raises(ValueError, match="ema"):
        make_optimizer(0.1, 4, 1, ema=1.0)
    with pytest.raises(ValueError, match="--ema"):
        TrainConfig(data="x", ema=-0.1)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ema") / "syn"
    return make_synthetic_dataset(str(root), classes=4, videos_per_class=8, frames=(12, 16), size=(48, 32), seed=0)


def _config(data, out, epochs):
    return TrainConfig(data=data, out=str(out), arch="r2plus1d", depth=10, frames=4, size=32, batch_size=4,
                       epochs=epochs, width_multiplier=0.125, test_clips=2, flip=False, tensorboard=False, ema=DECAY)


def _history(run):
    with open(run / "history.csv") as f:
        header, *rows = [line.strip().split(",") for line in f]
    return [dict(zip(header, row)) for row in rows]


def test_a_run_validates_and_saves_the_average_and_resumes_it(tiny_data, tmp_path):
    run = tmp_path / "run"
    first = WeightRecorder()
    train(_config(tiny_data, run, 1), callbacks=[first])
    saved = keras.saving.load_model(str(run / "model.keras"))
    weights = [keras.ops.convert_to_numpy(v) for v in saved.trainable_variables]
    average = _average(first.after_batch, DECAY)
    _assert_close(weights, average, 1e-5)  # model.keras holds the average
    # The checkpoint holds the training weights, and the average in its optimizer. (On TensorFlow Keras swaps them
    # by additions and subtractions: the training weights come back to within float32 rounding, 3e-8 here.)
    checkpoint = keras.saving.load_model(str(run / "checkpoints" / "epoch-001.keras"))
    _assert_close([keras.ops.convert_to_numpy(v) for v in checkpoint.trainable_variables], first.after_batch[-1],
                  1e-6)
    averages = [keras.ops.convert_to_numpy(v) for v in checkpoint.optimizer.variables if "average" in v.path]
    _assert_close(averages, average, 1e-6)
    # Validation ran on the average: the epoch's val_loss is model.keras's on the same clips, not the training
    # weights'; its Video@1 is the final report's (made from model.keras).
    val = eval_dataset(load_dataset(tiny_data, "test"), 4, _config(tiny_data, run, 1).clip_config(test_clips=1),
                       with_video_id=False)
    losses = {name: m.evaluate(val, verbose=0, return_dict=True)["loss"] for name, m in
              (("average", saved), ("training", checkpoint))}
    logged = float(_history(run)[-1]["val_loss"])
    assert logged == pytest.approx(losses["average"], abs=1e-5)
    assert abs(losses["training"] - losses["average"]) > 1e-3  # the test can tell them apart
    record = json.loads((run / "run.json").read_text())
    assert float(_history(run)[-1]["val_video_accuracy"]) == record["results"]["video_top1"]
    assert record["config"]["ema"] == DECAY

    # Resumed, the average goes on from the checkpoint's (a new one would start from the first weights).
    second = WeightRecorder()
    train(_config(tiny_data, run, 2), callbacks=[second], resume=True)
    saved = keras.saving.load_model(str(run / "model.keras"))
    expected = _average(second.after_batch, DECAY, start=average)
    _assert_close([keras.ops.convert_to_numpy(v) for v in saved.trainable_variables], expected, 1e-5)
    restarted = _average(second.after_batch, DECAY)
    assert max(np.abs(a - b).max() for a, b in zip(expected, restarted)) > 1e-4  # the test can tell them apart
    assert float(_history(run)[-1]["val_video_accuracy"]) == json.loads(
        (run / "run.json").read_text())["results"]["video_top1"]


def test_the_cli_passes_ema_and_the_soft_targets(tmp_path, monkeypatch):
    import keras_r21d
    from keras_r21d import cli

    seen = {}
    monkeypatch.setattr(keras_r21d.training, "run_or_exit",
                        lambda function, config, resume: seen.update(config=config) or {"report": None})
    cli.main(["train", "--data", "ucf101:/nowhere", "--out", str(tmp_path / "cli"), "--ema", "0.999",
              "--label-smoothing", "0.1", "--mixup", "0.2", "--cutmix", "1", "--test-crops", "3"])
    config = seen["config"]
    assert (config.ema, config.label_smoothing, config.mixup, config.cutmix, config.test_crops) == (
        0.999, 0.1, 0.2, 1.0, 3)
