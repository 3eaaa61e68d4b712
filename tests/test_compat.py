"""Files written by keras_r21d 0.1.0 (tests/data/v0_1_0/, see its README) and by main after the core redesign
(tests/data/main_9fbe431/) keep loading with the same outputs."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from keras_r21d.training import evaluate, load_model, train
from keras_r21d.training.train import TrainConfig

HERE = os.path.join(os.path.dirname(__file__), "data", "v0_1_0")


@pytest.fixture()
def old_run(tmp_path):
    """The 0.1.0 run and its data, copied; the run's recorded paths moved with them."""
    shutil.copytree(os.path.join(HERE, "syn"), tmp_path / "syn")
    shutil.copytree(os.path.join(HERE, "run"), tmp_path / "run")
    record = tmp_path / "run" / "run.json"
    record.write_text(record.read_text().replace("/tmp/old", str(tmp_path)))
    return tmp_path


def test_old_files_load_with_plain_keras(old_run):
    script = ("import sys\nimport keras_r21d\nimport keras\n"
              "for path in sys.argv[1:]:\n    keras.models.load_model(path, safe_mode=True)\nprint('ok')\n")
    files = [old_run / "run" / "model.keras", old_run / "run" / "checkpoints" / "epoch-001.keras"]
    result = subprocess.run([sys.executable, "-c", script, *map(str, files)], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_old_model_evaluates_to_its_recorded_report(old_run):
    recorded = json.loads((old_run / "run" / "eval" / "report.json").read_text())
    report = evaluate(str(old_run / "run" / "model.keras"), f"ucf101:{old_run / 'syn'}", clips=2)
    for key in ("clip_top1", "clip_top5", "video_top1", "video_top5", "clips", "videos", "per_class_video_top1",
                "confusion_matrix", "class_names"):
        assert report[key] == recorded[key], key


def test_old_run_resumes(old_run):
    config = json.loads((old_run / "run" / "run.json").read_text())["config"]
    config.update(epochs=2)
    before = load_model(str(old_run / "run" / "model.keras")).get_weights()
    result = train(TrainConfig(**config), resume=True)
    record = json.loads((old_run / "run" / "run.json").read_text())
    assert record["status"] == "done" and record["resumed_from_epoch"] == 1 and record["config"]["epochs"] == 2
    assert any((a != b).any() for a, b in zip(before, result["model"].get_weights()))  # it trained on
    rows = (old_run / "run" / "history.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in rows] == [0, 1]


MODELS = os.path.join(HERE, "models")
MODEL_FILES = sorted(name[:-6] for name in os.listdir(MODELS) if name.endswith(".keras"))


def test_the_model_files_are_all_there():
    assert MODEL_FILES == ["fr2d", "mc3", "r2d", "r2plus1d", "r2plus1d_50", "r2plus1d_finetuned_head",
                           "r2plus1d_torchvision", "r3d", "rmc3"]


REDESIGN_MODELS = os.path.join(os.path.dirname(__file__), "data", "main_9fbe431", "models")


@pytest.mark.parametrize("folder, name", [(MODELS, name) for name in MODEL_FILES] + [
    (REDESIGN_MODELS, name) for name in ("r2d", "r3d", "r2plus1d", "r2plus1d_torchvision")])
def test_old_model_files_give_their_recorded_outputs(folder, name):
    """Models written by 0.1.0 (non-trivial BatchNorm statistics; a bottleneck depth, torchvision's reading, a
    fine-tuned head), and by main after the core redesign (its networks are rebuilt from their configs, so their
    weights' paths in the file follow today's layer classes), load with plain Keras and give the outputs they
    recorded, folded too."""
    import keras
    import numpy as np

    import keras_r21d

    recorded = np.load(os.path.join(folder, "outputs.npz"))
    model = keras.models.load_model(os.path.join(folder, f"{name}.keras"), safe_mode=True)
    outputs = np.asarray(model(recorded["clips"], training=False))
    # 1e-5: the recorded outputs came from another CPU, and oneDNN's kernels sum in another order on each
    # instruction set (R(2+1)D-50's 50 layers came 1.2e-6 away on an AVX-512 Xeon; the rest within 1e-6).
    np.testing.assert_allclose(outputs, recorded[name], atol=1e-5)
    folded = keras_r21d.fold_batchnorm(model)
    np.testing.assert_allclose(np.asarray(folded(recorded["clips"], training=False)), recorded[name], atol=1e-4)


def test_an_old_fine_tuned_model_is_a_source_for_fine_tuning(tmp_path):
    from keras_r21d.training.finetune import init_model, load_source

    source, description, names = load_source(os.path.join(MODELS, "r2plus1d_finetuned_head.keras"))
    assert names is None and source.output_shape == (None, 3)  # 0.1.0 wrote no class names beside a bare model
    model, kept = init_model(source, 3, 8, description)
    assert kept and model.input_shape == (None, None, None, None, 3)
    for layer in source.layers:
        for a, b in zip(layer.get_weights(), model.get_layer(layer.name).get_weights()):
            assert (a == b).all(), layer.name


@pytest.fixture()
def old_finetune(old_run):
    """0.1.0's fine-tuning run (tests/data/v0_1_0/finetune: from the run above, one head-only epoch, then one
    epoch of the whole network), copied beside the run and the data, its recorded paths moved with them."""
    shutil.copytree(os.path.join(HERE, "finetune"), old_run / "finetune")
    record = old_run / "finetune" / "run.json"
    record.write_text(record.read_text().replace("/tmp/old", str(old_run)))
    return old_run / "finetune"


def test_an_old_fine_tuning_run_evaluates_and_is_a_fine_tuning_source(old_finetune):
    from keras_r21d.training.finetune import init_model, load_source

    recorded = json.loads((old_finetune / "eval" / "report.json").read_text())
    report = evaluate(str(old_finetune / "model.keras"), f"ucf101:{old_finetune.parent / 'syn'}", clips=2)
    for key in ("clip_top1", "video_top1", "clips", "videos", "confusion_matrix", "class_names"):
        assert report[key] == recorded[key], key
    source, description, names = load_source(str(old_finetune))  # the run directory, as train --init reads it
    assert names == ["MoveLeft", "MoveRight", "RotateClockwise", "RotateCounterClockwise"]
    model, kept = init_model(source, 3, 4, description)
    assert not kept and model.output_shape == (None, 3) and type(model).__name__ == "VideoClassifier"
    for layer in model.backbone.layers:
        for a, b in zip(layer.get_weights(), source.get_layer(layer.name).get_weights()):
            assert (a == b).all(), layer.name


def test_an_old_fine_tuning_run_resumes_in_its_fine_tuning_phase(old_finetune):
    """The 0.1.0 checkpoint is a plain functional model: the resumed phase finds its stages through the backbone
    it is read as (models.legacy), trains every stage and leaves the head-only phase as it was recorded."""
    record = json.loads((old_finetune / "run.json").read_text())
    assert [phase["trainable_from"] for phase in record["phases"]] == ["head", None]
    config = dict(record["config"], epochs=3)
    before = load_model(str(old_finetune / "checkpoints" / "epoch-002.keras"))
    result = train(TrainConfig(**config), resume=True)
    after = json.loads((old_finetune / "run.json").read_text())
    assert after["status"] == "done" and after["resumed_from_epoch"] == 2
    assert [phase["trainable_from"] for phase in after["phases"]] == ["head", None]
    model = result["model"]
    assert all(layer.trainable for layer in model.layers)
    changed = {layer.name for layer in before.layers
               if any((a != b).any() for a, b in zip(layer.get_weights(), model.get_layer(layer.name).get_weights()))}
    assert {"conv1_conv", "conv1_spatial", "conv2_block1", "conv5_block1", "predictions"} & changed == \
        {"conv1_spatial", "conv2_block1", "conv5_block1", "predictions"}  # R(2+1)D: every stage trained on
    rows = (old_finetune / "history.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in rows] == [0, 1, 2]
