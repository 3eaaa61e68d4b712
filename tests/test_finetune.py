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
from keras_r21d.models.network import stage_layer_names
from keras_r21d.training import TrainConfig, train
from keras_r21d.training.finetune import set_trainable
from tests.test_case import MOTION_RECIPE

RECIPE = {key: value for key, value in MOTION_RECIPE.items() if key not in ("arch", "epochs")}


@pytest.fixture(scope="module")
def source_run(motion_run):
    """An R(2+1)D trained on dataset A (4 motion classes; Video@1 well above chance, the test below)."""
    return motion_run


@pytest.mark.slow
def test_reaches_clearly_above_chance(motion_run):
    """A small R(2+1)D learns motion-only classes (two time-reversed pairs) from real videos. (Here, beside the
    fine-tuning tests that start from the same run: `make test`'s workers each take whole files, so one file
    trains it once.)"""
    report = motion_run["report"]
    chance = 1 / 4
    assert report["videos"] == 64
    assert report["video_top1"] >= 1.6 * chance, report


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
    assert stage_layer_names(model) == {
        "conv1": ("conv1_spatial", "conv1_spatial_bn", "conv1_spatial_relu", "conv1_temporal", "conv1_bn",
                  "conv1_relu"),
        "conv2": ("conv2_block1",), "conv3": ("conv3_block1",), "conv4": ("conv4_block1",),
        "conv5": ("conv5_block1",), "head": ("avg_pool", "predictions"),
    }
    frozen = set_trainable(model, "conv4")
    assert frozen == ["conv1_spatial", "conv1_spatial_bn", "conv1_temporal", "conv1_bn", "conv2_block1",
                      "conv3_block1"]
    assert {v.path.split("/")[0] for v in model.trainable_variables} == {"conv4_block1", "conv5_block1",
                                                                       "predictions"}
    set_trainable(model, None)
    assert len(model.trainable_variables) == len([w for w in model.weights if w.trainable])
    with pytest.raises(ValueError, match="trainable_from"):
        set_trainable(model, "conv6")


def test_a_frozen_backbone_stays_frozen_after_saving_and_loading(tmp_path):
    """A model saved with its backbone frozen (the head-only phase's checkpoints) trains its head alone when
    loaded: the blocks' inner BatchNorms keep their statistics (they built unfrozen on load before)."""
    model = keras_r21d.R2Plus1D(10, input_shape=(4, 32, 32, 3), classes=3, width_multiplier=0.125)
    set_trainable(model, "head")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    path = str(tmp_path / "frozen.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    inner = [layer for layer in loaded.get_layer("conv2_block1")._flatten_layers(include_self=False)]
    assert inner and not any(layer.trainable for layer in inner)
    again = keras.models.load_model(path, safe_mode=True)
    set_trainable(again, "head")  # what a resumed head-only phase does
    for candidate in (loaded, again):
        before = _weights(candidate)
        clips = np.random.default_rng(0).normal(size=(4, 4, 32, 32, 3)).astype("float32")
        candidate.fit(clips, np.array([0, 1, 2, 0]), epochs=1, verbose=0)
        after = _weights(candidate)
        changed = [name for name in before if not _same(before[name], after[name])]
        assert changed == ["predictions"], changed


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
    stage_of = {name: stage for stage, names in stage_layer_names(source_run["model"]).items() for name in names}
    for name in source:
        assert _same(after[name], source[name]) == (stage_of[name] not in ("conv5", "head")), name


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


PRESET_CLI = os.path.join(os.path.dirname(__file__), "workers", "cli_with_preset.py")


@pytest.mark.slow
def test_init_from_a_preset_through_train_and_resume_into_the_finetuning_phase(tmp_path):
    """`train --init kinetics400` (a local preset), killed after its head-only epoch, resumes into fine-tuning."""
    import signal

    from keras_r21d.weights import presets
    from tests.test_case import read_until
    from tests.workers.cli_with_preset import CACHE_FILE, PRESET

    data = make_synthetic_dataset(str(tmp_path / "syn"), classes=3, videos_per_class=4, frames=(12, 16),
                                  size=(48, 32), seed=0)
    cache = tmp_path / "cache"
    cache.mkdir()
    keras.utils.set_random_seed(3)
    reference = presets._reference_model(PRESET)  # the preset's converted weights, as a first use leaves them
    reference.save_weights(str(cache / CACHE_FILE))
    backbone = {name: values for name, values in _weights(reference).items() if name != "predictions"}
    out = tmp_path / "run"
    command = [sys.executable, PRESET_CLI, "train", "--data", data, "--out", str(out), "--arch", "r2plus1d",
               "--depth", "10", "--init", "kinetics400", "--epochs", "3", "--freeze-backbone-epochs", "1",
               "--frames", "4", "--size", "32", "--batch-size", "4", "--test-clips", "1", "--no-flip",
               "--no-tensorboard"]
    env = {**os.environ, "KERAS_R21D_CACHE": str(cache), "CI": "1", "PYTHONUNBUFFERED": "1",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        read_until(process, "Epoch 2/3", timeout=600)  # the head-only epoch is checkpointed
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 1
    after_head = _weights(keras.models.load_model(out / "checkpoints" / state["checkpoint"], safe_mode=True))
    # The preset's backbone (BatchNorm statistics included) was loaded and kept frozen; a new 3-class head trained.
    assert all(_same(after_head[name], values) for name, values in backbone.items())
    assert after_head["predictions"][0].shape == (512, 3)
    resumed = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "done" and run["resumed_from_epoch"] == 1
    assert run["init"]["init"] == "preset 'kinetics400' of r2plus1d_10" and not run["init"]["kept_head"]
    assert [(p["end_epoch"], p["trainable_from"]) for p in run["phases"]] == [(1, "head"), (3, None)]
    final = _weights(keras.models.load_model(out / "model.keras", safe_mode=True))
    changed = [name for name, values in backbone.items() if not _same(final[name], values)]
    assert "conv1_spatial" in changed and "conv5_block1" in changed  # the resumed epochs trained the backbone
    with open(out / "history.csv") as f:
        rates = [float(row["learning_rate"]) for row in csv.DictReader(f)]
    # Head at 0.01 per 32 clips, then fine-tuning at 0.001 per 32 clips (batch 4).
    np.testing.assert_allclose(rates, [0.01 * 4 / 32, 0.001 * 4 / 32, 0.001 * 4 / 32], rtol=1e-5)
