"""Files written by keras_r21d 0.1.0 (tests/data/v0_1_0/, see its README) keep loading with the same outputs."""

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
