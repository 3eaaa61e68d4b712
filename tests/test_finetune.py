"""Fine-tuning from a trained model: new head, frozen backbone, partial fine-tuning, other clip lengths."""

import csv
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_r21d
from keras_r21d.data import make_synthetic_dataset
from keras_r21d.training import TrainConfig, train
from keras_r21d.training.finetune import set_trainable, stage_of
from tests.test_case import MOTION_RECIPE

RECIPE = {key: value for key, value in MOTION_RECIPE.items() if key not in ("arch", "epochs")}


@pytest.fixture(scope="module")
def source_run(motion_run):
    """An R(2+1)D trained on dataset A (4 motion classes; Video@1 well above chance, see test_training)."""
    return motion_run


def _weights(model):
    return {layer.name: [np.array(w) for w in layer.get_weights()] for layer in model.layers if layer.weights}


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


class _Snapshots(keras.callbacks.Callback):
    """The model's weights (BatchNorm moving statistics included) when training starts and after each epoch."""

    def __init__(self):
        super().__init__()
        self.start = None
        self.epochs = []

    def on_train_begin(self, logs=None):
        if self.start is None:
            self.start = _weights(self.model)

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(_weights(self.model))


def test_stages_and_freezing():
    model = keras_r21d.R2Plus1D(10, input_shape=(4, 32, 32, 3), classes=3, width_multiplier=0.125)
    assert [stage_of(n) for n in ("conv1_spatial", "conv1_bn", "conv3_block1", "conv5_block1", "avg_pool",
                                  "predictions")] == ["conv1", "conv1", "conv3", "conv5", "head", "head"]
    frozen = set_trainable(model, "conv4")
    assert frozen == ["conv1_spatial", "conv1_spatial_bn", "conv1_temporal", "conv1_bn", "conv2_block1",
                      "conv3_block1"]
    assert {v.path.split("/")[0] for v in model.trainable_variables} == {"conv4_block1", "conv5_block1",
                                                                       "predictions"}
    set_trainable(model, None)
    assert len(model.trainable_variables) == len([w for w in model.weights if w.trainable])
    with pytest.raises(ValueError, match="trainable_from"):
        set_trainable(model, "conv6")


@pytest.mark.slow
def test_finetune_on_another_dataset(source_run, tmp_path):
    source = _weights(source_run["model"])
    data = make_synthetic_dataset(str(tmp_path / "B"), classes=2, videos_per_class=48, seed=1)
    snapshots = _Snapshots()
    config = TrainConfig(data=data, out=str(tmp_path / "run"), init=source_run["run_dir"], epochs=5,
                         freeze_backbone_epochs=2, finetune_lr=0.003, **RECIPE)
    result = train(config, callbacks=[snapshots])
    model = result["model"]
    assert model.output_shape == (None, 2)
    backbone = [name for name in source if name != "predictions"]
    # Fine-tuning starts from A's backbone ...
    assert all(_same(snapshots.start[name], source[name]) for name in backbone)
    # ... which stays bit-identical, BatchNorm moving statistics included, through the frozen epochs,
    for frozen_epoch in snapshots.epochs[:2]:
        assert all(_same(frozen_epoch[name], source[name]) for name in backbone)
    assert not _same(snapshots.epochs[1]["predictions"], snapshots.start["predictions"])  # while the head learns
    # ... and trains once unfrozen.
    assert sum(not _same(snapshots.epochs[-1][name], source[name]) for name in backbone) == len(backbone)
    report = result["report"]
    assert report["video_top1"] >= 0.8, report  # chance 0.5
    record = json.loads(open(os.path.join(result["run_dir"], "run.json")).read())
    assert record["init"]["kept_head"] is False and record["init"]["source_classes"] == 4
    assert [(p["start_epoch"], p["end_epoch"], p["trainable_from"]) for p in record["phases"]] == [
        (0, 2, "head"), (2, 5, None)]
    with open(os.path.join(result["run_dir"], "history.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3, 4]
    assert [round(float(r["learning_rate"]), 4) for r in rows] == [0.01, 0.01, 0.003, 0.003, 0.003]


@pytest.mark.slow
def test_partial_finetuning_at_another_clip_length(source_run, tmp_path):
    data = make_synthetic_dataset(str(tmp_path / "C"), classes=4, videos_per_class=8, frames=(20, 24), seed=2)
    snapshots = _Snapshots()
    recipe = dict(RECIPE, frames=16)
    config = TrainConfig(data=data, out=str(tmp_path / "run"), init=source_run["model_path"], epochs=1,
                         trainable_from="conv5", **recipe)
    result = train(config, callbacks=[snapshots])
    source = _weights(source_run["model"])
    after = snapshots.epochs[-1]
    assert result["report"]["videos"] == 8
    # Same class count: the head is kept; the stages before conv5 are untouched.
    assert _same(snapshots.start["predictions"], source["predictions"])
    for name in source:
        assert _same(after[name], source[name]) == (stage_of(name) not in ("conv5", "head")), name


def test_r2d_cannot_change_clip_length(tmp_path):
    model = keras_r21d.R2D(10, input_shape=(8, None, None, 3), classes=4, width_multiplier=0.125)
    model.save(tmp_path / "r2d.keras")
    data = make_synthetic_dataset(str(tmp_path / "D"), classes=2, videos_per_class=4, frames=(20, 24), seed=3)
    result = subprocess.run(
        [sys.executable, "-m", "keras_r21d", "train", "--data", data, "--out", str(tmp_path / "run"), "--init",
         str(tmp_path / "r2d.keras"), "--frames", "16", "--size", "32", "--epochs", "1", "--no-tensorboard"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    assert "takes clips of exactly 8 frames (R2D" in result.stderr and "--frames 8" in result.stderr
    with pytest.raises(ValueError, match="need `init`"):
        TrainConfig(data=data, freeze_backbone_epochs=1)
    with pytest.raises(ValueError, match="freeze_backbone_epochs"):
        TrainConfig(data=data, init="x.keras", epochs=2, freeze_backbone_epochs=2)
