"""The paper study (`examples/paper_study.py`, `keras-r21d study`) end to end at a toy size."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_r21d.study import StudyConfig, _compare, _is_synthetic, config_from_args, direction_accuracy, study_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
PNG = b"\x89PNG\r\n\x1a\n"


def _run(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=ENV, timeout=1200, cwd=ROOT)


@pytest.mark.slow
def test_toy_study_end_to_end(tmp_path):
    out = tmp_path / "study"
    toy = ["--variants", "r3d,r2plus1d", "--seeds", "0", "--epochs", "1", "--frames", "4", "--clip-lengths", "4,8",
           "--curve-depths", "10", "--motions", "horizontal", "--videos-per-class", "8", "--size", "32",
           "--batch-size", "8", "--test-clips", "2", "--out", str(out)]
    result = _run("examples/paper_study.py", *toy)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "3 trainings planned" in result.stdout  # two variants at 4 frames, plus R(2+1)D at 8 for clip lengths

    for name in ("table.md", "table.csv", "runs.csv", "summary.md", "study.json", "clip_length.json"):
        assert (out / name).stat().st_size > 0, name
    for name in ("curves.png", "clip_length.png"):
        assert (out / name).read_bytes()[:8] == PNG, name
        assert (out / name).stat().st_size > 5000, name  # axes, lines and legends, not an empty canvas

    with open(out / "table.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["model"], r["frames"]) for r in table] == [("r3d_10", "4"), ("r2plus1d_10", "4")]
    for row in table:
        for name in ("clip_top1_mean", "video_top1_mean", "direction_mean"):
            assert 0.0 <= float(row[name]) <= 1.0
        assert row["seeds"] == "1"

    # The params and GFLOPs columns are exactly `keras-r21d models` for the same networks.
    models = _run("-m", "keras_r21d", "models", "--depth", "10", "--frames", "4", "--size", "32", "--classes", "2",
                  "--width-multiplier", "0.25", "--json")
    assert models.returncode == 0, models.stderr
    expected = {row["name"]: row for row in json.loads(models.stdout)}
    for row in table:
        assert int(row["paper_params"]) == expected[row["model"]]["paper_params"]
        assert float(row["gflops"]) == expected[row["model"]]["gflops"]

    table_md = (out / "table.md").read_text()
    assert table_md.splitlines()[0].startswith("| model | params | GFLOPs 4f | Clip@1 4f | Video@1 4f | Direction@1 4f")
    assert "| R3D |" in table_md and "| R(2+1)D |" in table_md

    summary = (out / "summary.md").read_text()
    assert "Command: `python examples/paper_study.py" in summary
    assert "--variants r3d,r2plus1d" in summary
    assert "**RQ2**" in summary and "**RQ3**" in summary and "**RQ4**" in summary
    grid = [line for line in summary.splitlines() if line.startswith(("| 4 | ", "| 8 | "))]
    assert len(grid) == 2 and all(line.count("|") == 4 for line in grid)  # the clip-length grid, 2x2

    study = json.loads((out / "study.json").read_text())
    assert study["twins"] is True and study["chance"] == 0.5
    assert len(study["runs"]) == 3
    assert sorted(cell["train_test"] for cell in study["clip_length"]) == [[4, 4], [4, 8], [8, 4], [8, 8]]
    curves = study["curves"]
    assert len(curves["r3d_10"]["train_error"]) == 1 and len(curves["r2plus1d_10"]["val_error"]) == 1

    # Rerunning the same command reuses every finished run (no training, same numbers).
    again = _run("-m", "keras_r21d", "study", *toy)
    assert again.returncode == 0, again.stderr[-3000:]
    lines = again.stdout.splitlines()
    assert sum(line.startswith("reusing ") for line in lines) == 3
    assert not any(line.startswith(("training ", "resuming ")) for line in lines)
    assert json.loads((out / "study.json").read_text())["table"] == study["table"]

    # Other settings in the same folder are refused, never mixed with the old runs.
    changed = [("2" if arg == "1" and toy[i - 1] == "--epochs" else arg) for i, arg in enumerate(toy)]
    refused = _run("-m", "keras_r21d", "study", *changed)
    assert refused.returncode == 2
    assert "r3d_d10_f4_s0 was trained with other settings (epochs, val_freq differ): use another --out" \
        in refused.stderr
    # So is other data in the same folder (the synthetic videos are written once per --out).
    other = [("vertical" if arg == "horizontal" else arg) for arg in toy]
    refused = _run("-m", "keras_r21d", "study", *other)
    assert refused.returncode == 2
    assert "not the data of --motions vertical --videos-per-class 8: use another --out" in refused.stderr


def test_direction_accuracy_compares_each_class_with_its_twin():
    probabilities = np.array([[0.6, 0.3, 0.1, 0.0],   # class 0, twin 1: right
                              [0.6, 0.3, 0.1, 0.0],   # class 1, twin 0: wrong
                              [0.9, 0.0, 0.04, 0.06],  # class 3, twin 2: right although top-1 is wrong
                              [0.1, 0.1, 0.5, 0.3]])  # class 2: right
    assert direction_accuracy(probabilities, np.array([0, 1, 3, 2])) == 0.75


def test_twin_classes_are_recognized_in_any_motion_order():
    assert _is_synthetic(["MoveLeft", "MoveRight", "MoveUp", "MoveDown"])
    assert _is_synthetic(["RotateClockwise", "RotateCounterClockwise", "MoveLeft", "MoveRight"])
    assert not _is_synthetic(["MoveLeft", "MoveUp", "MoveRight", "MoveDown"])  # pairs split
    assert not _is_synthetic(["MoveLeft", "MoveRight", "MoveUp"])
    assert not _is_synthetic(["walk", "run"])


def test_findings_need_a_difference_beyond_the_seeds_spread():
    assert _compare("A", [0.9, 0.8], "B", [0.5, 0.6], "Video@1")["verdict"] == "holds"
    assert _compare("A", [0.9, 0.5], "B", [0.6, 0.7], "Video@1")["verdict"] == "is not resolved"
    assert _compare("A", [0.2, 0.3], "B", [0.8, 0.9], "Video@1")["verdict"] == "is reversed"
    assert _compare("A", [0.1], "B", [0.4], "error", higher_is_better=False)["verdict"] == "holds"


def test_study_options():
    import argparse

    from keras_r21d.study import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(parser.parse_args(["--data", "ucf101:/data/UCF101", "--paper-recipe", "--seeds", "5"]))
    assert (config.depth, config.size, config.epochs, config.seeds, config.frames) == (18, 112, 45, (5,), (8, 16))
    assert config.flip and config.nesterov and config.resize_to is None and config.lr is None
    with pytest.raises(ValueError, match="--paper-recipe needs --data"):
        config_from_args(parser.parse_args(["--paper-recipe"]))
    with pytest.raises(ValueError, match="unknown variants"):
        config_from_args(parser.parse_args(["--variants", "r3d,c3d"]))
    with pytest.raises(ValueError, match="comma-separated integers"):
        config_from_args(parser.parse_args(["--frames", "8,sixteen"]))
    with pytest.raises(ValueError, match="`motions` must be distinct motion kinds"):
        config_from_args(parser.parse_args(["--motions", "horizontal,sideways"]))
    assert config_from_args(parser.parse_args(["--motions", "rotate, zoom"])).motions == ("rotate", "zoom")
    assert study_command(StudyConfig(out="s", seeds=(0, 1, 2))) == "keras-r21d study --out s --seeds 0,1,2"
    config = config_from_args(parser.parse_args(["--test-crops", "3", "--test-clips", "4"]))
    assert (config.test_crops, config.test_clips) == (3, 4)
    assert config.train_config("r3d", 10, 8, 0, "o").clip_config().protocol == "4 clips x 3 crops"
    assert study_command(config).endswith("--test-clips 4 --test-crops 3")


def test_a_finished_run_from_before_a_new_setting_is_reused(tmp_path):
    """A run whose run.json predates a TrainConfig field (here `accumulate` and `test_crops`) was trained at
    that field's default: the study reuses it; a recorded value that differs is still refused."""
    import dataclasses

    from keras_r21d.study import _train_or_reuse

    config = StudyConfig(data="ucf101:/nowhere", out=str(tmp_path))
    key = ("r3d", 10, 8, 0)
    run_dir = tmp_path / "runs" / "r3d_d10_f8_s0"
    wanted = config.train_config(*key, str(run_dir))
    recorded = json.loads(json.dumps(dataclasses.asdict(wanted)))
    del recorded["accumulate"], recorded["test_crops"]
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"config": recorded, "status": "done"}))
    assert _train_or_reuse(config, key, str(tmp_path / "runs"), lambda _: None)["status"] == "done"
    recorded["test_clips"] = 3
    (run_dir / "run.json").write_text(json.dumps({"config": recorded, "status": "done"}))
    with pytest.raises(ValueError, match="test_clips differ"):
        _train_or_reuse(config, key, str(tmp_path / "runs"), lambda _: None)
