import json
import os
import platform
import subprocess
import sys

import pytest

import keras_r21d
from keras_r21d.models.specs import VARIANTS

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "keras_r21d", *args], capture_output=True, text=True, env=ENV, timeout=600
    )


def test_models_json_matches_model_stats():
    result = run_cli("models", "--depth", "10", "--frames", "4", "--size", "64", "--classes", "10", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == [f"{v}_10" for v in VARIANTS]
    by_name = {row["name"]: row for row in rows}
    for name in ["r2plus1d_10", "r2d_10", "mc3_10"]:
        stats = keras_r21d.model_stats(keras_r21d.get_model(name, input_shape=(4, 64, 64, 3), classes=10))
        assert by_name[name]["paper_params"] == stats["paper_params"]
        assert by_name[name]["macs"] == stats["macs"]
        assert by_name[name]["keras_params"] == stats["keras_params"]


@pytest.mark.slow
def test_models_table_and_errors():
    result = run_cli("models", "--depth", "10", "--frames", "4", "--size", "32")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].startswith("| model |")
    assert sum(line.startswith("| ") and "_10 |" in line for line in lines) == len(VARIANTS)
    bad = run_cli("models", "--depth", "19")
    assert bad.returncode == 2
    assert "depth=19" in bad.stderr


@pytest.mark.slow
def test_make_synthetic_and_check_videos(tmp_path):
    import videos

    out = tmp_path / "syn"
    made = run_cli("make-synthetic", str(out), "--classes", "2", "--videos-per-class", "4", "--frames", "10..12",
                   "--size", "48x32", "--seed", "1")
    assert made.returncode == 0, made.stderr
    assert f"dataset spec: ucf101:{out}" in made.stdout
    assert "writing videos [" in made.stderr  # the progress bar

    # Add bad files to a folder dataset and check it.
    bad = videos.make_bad_files(tmp_path / "folder" / "class_a")
    videos.write_opencv(tmp_path / "folder" / "class_a" / "short.avi", videos.moving_frames(4), "MJPG")
    videos.write_opencv(tmp_path / "folder" / "class_b" / "good.avi", videos.moving_frames(20), "MJPG")
    checked = run_cli("check-videos", f"folder:{tmp_path / 'folder'}", "--subset", "all", "--frames", "8", "--json")
    assert checked.returncode == 1, checked.stderr  # bad videos found: non-zero, as linters do
    report = json.loads(checked.stdout)
    assert report["checked"] == 5 and report["bad"] == 4
    reasons = {os.path.basename(v["path"]): v["reason"] for v in report["videos"]}
    assert reasons["short.avi"] == "too short: 4 frames, a clip needs 8"
    assert reasons["good.avi"] is None
    assert reasons[os.path.basename(bad["zero_bytes"])] == "empty file (0 bytes)"

    text = run_cli("check-videos", f"ucf101:{out}", "--frames", "8")
    assert text.returncode == 0
    assert text.stdout.strip().splitlines()[-1] == "8 videos checked, 8 ok, 0 unreadable or too short"


def test_the_implementation_choices_are_the_layers_s():
    """The CLI spells the lowerings so that `--help` imports no Keras; they must be the ones `VideoConv` takes."""
    from keras_r21d import cli
    from keras_r21d.layers.video_conv import IMPLEMENTATIONS

    assert cli.IMPLEMENTATIONS == IMPLEMENTATIONS
    for command in ("train", "export"):
        help_text = subprocess.run([sys.executable, "-m", "keras_r21d", command, "--help"], capture_output=True,
                                   text=True, check=True).stdout
        assert "{" + ",".join(IMPLEMENTATIONS) + "}" in "".join(help_text.split()), command


def test_the_strategy_choices_are_the_training_module_s():
    """The CLI spells the strategies so that `--help` imports no TensorFlow; they must be the ones `train` takes."""
    from keras_r21d import cli
    from keras_r21d.training.strategy import STRATEGIES

    assert cli.STRATEGIES == STRATEGIES
    for command in ("train", "tune"):
        help_text = subprocess.run([sys.executable, "-m", "keras_r21d", command, "--help"], capture_output=True,
                                   text=True, check=True).stdout
        assert "data_parallel" in help_text, command


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="oneDNN's switch is x86's")
def test_commands_that_run_networks_turn_tensorflow_onednn_on_unless_the_user_chose(tmp_path):
    """`keras-r21d train` (and `tune`, `study`, `evaluate`, `predict`) runs TensorFlow's oneDNN kernels, which
    TensorFlow leaves off on AVX2 CPUs (about 2x on R3D's 3D convolutions, 1.4x on R(2+1)D-18's step with its tap
    gradients, 1.2-1.46x on inference but R(2+1)D-18's at batch 1); the training commands say so in one line, the
    inference ones keep their output as it was; a TF_ENABLE_ONEDNN_OPTS the user set wins; `export` keeps
    TensorFlow's choice. (Each run stops at its missing dataset or model, after TensorFlow started; a launcher
    named like the command line prints on exit the variable and whether TensorFlow ran oneDNN.)"""
    unset = {name: value for name, value in ENV.items() if name != "TF_ENABLE_ONEDNN_OPTS"}
    line = "TensorFlow's oneDNN CPU kernels: on (TF_ENABLE_ONEDNN_OPTS=0 to leave TensorFlow's own choice)"
    # The command line itself (its file is named keras-r21d), which says on exit what TensorFlow ran.
    launcher = tmp_path / "keras-r21d"
    launcher.write_text("import atexit, os, sys\nfrom keras_r21d.cli import main\n\n\ndef said():\n"
                        "    from keras_r21d.onednn import onednn_enabled\n"
                        "    ran = onednn_enabled() if 'tensorflow' in sys.modules else 'no TensorFlow'\n"
                        "    print('ONEDNN', os.environ.get('TF_ENABLE_ONEDNN_OPTS'), ran, file=sys.stderr)\n\n\n"
                        "atexit.register(said)\nsys.exit(main())\n")
    data = ["--data", f"folder:{tmp_path / 'nowhere'}"]
    out = ["--out", str(tmp_path / "run")]
    for command, env, said, expected in (
            (["train", "--arch", "r3d", *data, *out], unset, True, "ONEDNN 1 True"),
            (["train", "--arch", "r2plus1d", *data, *out], unset, True, "ONEDNN 1 True"),
            (["tune", *data, *out], unset, True, "ONEDNN 1 True"),
            (["train", "--arch", "r3d", *data, *out], {**unset, "TF_ENABLE_ONEDNN_OPTS": "0"}, False,
             "ONEDNN 0 False"),
            (["evaluate", "--model", "none.keras", *data, *out], unset, False, "ONEDNN 1 "),
            (["predict", "--model", "none.keras", "--json", "a.mp4"], unset, False, "ONEDNN 1 "),
            (["export", "--model", "none.keras", *out], unset, False, "ONEDNN None ")):
        result = subprocess.run([sys.executable, str(launcher), *command], capture_output=True, text=True, env=env,
                                timeout=300)
        assert result.returncode == 2 and ("nowhere" in result.stderr or "none.keras" in result.stderr), \
            (command, result.stderr[-2000:])
        assert (line in result.stdout) is said, (command, result.stdout)
        assert line not in result.stderr
        report = [text for text in result.stderr.splitlines() if text.startswith("ONEDNN ")]
        assert len(report) == 1 and report[0].startswith(expected), (command, report)
        assert "oneDNN custom operations" not in result.stderr  # TensorFlow's own start-up line stays quiet
