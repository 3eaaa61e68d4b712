"""A new user's first-week mistakes: none gives a wrong number, loses a file or exhausts memory.

Class names are the contract between a model and a dataset; `folder:` and
`csv:` data without a split hold out a stratified share; `--resume` refuses
other settings; `--out` never overwrites a user's files; Ctrl-C leaves a
resumable run; the command line is quiet and rejects out-of-range values.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import videos

from keras_r21d.classes import ClassMismatchError
from keras_r21d.data import make_synthetic_dataset
from keras_r21d.training import ResumeError, TrainConfig, evaluate, train

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CI": "1"}
ENV.pop("OPENCV_FFMPEG_LOGLEVEL", None)
CLASSES = ["MoveLeft", "MoveRight", "RotateClockwise", "RotateCounterClockwise"]
TINY = dict(arch="r2plus1d", depth=10, frames=4, size=32, batch_size=4, epochs=1, width_multiplier=0.125,
            test_clips=2, flip=False, tensorboard=False)
TRAIN_ARGS = ["--arch", "r2plus1d", "--depth", "10", "--frames", "4", "--size", "32", "--batch-size", "4",
              "--width-multiplier", "0.125", "--test-clips", "2", "--no-tensorboard", "--no-flip"]


def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "keras_r21d", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """4 motion classes in the UCF101 layout, 8 videos each (6 train, 2 test per class)."""
    root = tmp_path_factory.mktemp("mistakes") / "syn"
    make_synthetic_dataset(str(root), classes=4, videos_per_class=8, frames=(12, 16), size=(48, 32), seed=0)
    return root


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    """A run of one epoch: what it learned does not matter, how its outputs are paired does."""
    out = tmp_path_factory.mktemp("trained") / "run"
    train(TrainConfig(data=f"ucf101:{data_root}", out=str(out), **TINY))
    return out


def _relisted(source, target, classes):
    """The same videos in the UCF101 layout with `classes` (a subset, in any order) as classInd.txt."""
    shutil.copytree(source, target)
    (target / "classInd.txt").write_text("".join(f"{i} {name}\n" for i, name in enumerate(classes, 1)))
    for name in ("trainlist01.txt", "testlist01.txt"):
        lines = []
        for line in (source / name).read_text().splitlines():
            video = line.split()[0]
            if video.split("/")[0] in classes:
                label = classes.index(video.split("/")[0]) + 1
                lines.append(f"{video} {label}" if name.startswith("train") else video)
        (target / name).write_text("\n".join(lines) + "\n")
    return f"ucf101:{target}"


def _predictions(folder):
    saved = np.load(os.path.join(folder, "clip_predictions.npz"))
    return {str(path): (saved["probabilities"][saved["video_ids"] == index], saved["labels"][saved["video_ids"] ==
                                                                                               index])
            for index, path in enumerate(saved["paths"])}


def test_cli_evaluate_on_a_good_model(trained, data_root, tmp_path):
    """`keras-r21d evaluate` prints and writes the report the clips' probabilities give, one line per class."""
    out = tmp_path / "eval"
    result = _cli("evaluate", "--model", trained / "model.keras", "--data", f"ucf101:{data_root}", "--clips", "2",
                  "--out", out)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    report = json.loads((out / "report.json").read_text())
    assert (out / "confusion_matrix.png").stat().st_size > 1000
    # The report from the saved clip probabilities: video = mean of its clips, Video@1 = argmax vs label.
    saved = np.load(out / "clip_predictions.npz")
    assert len(saved["paths"]) == 8 and len(saved["labels"]) == 16  # 2 test videos per class, 2 clips each
    video_hits = []
    for index in range(len(saved["paths"])):
        mine = saved["video_ids"] == index
        video_hits.append(saved["probabilities"][mine].mean(axis=0).argmax() == saved["labels"][mine][0])
    clip_top1 = float((saved["probabilities"].argmax(1) == saved["labels"]).mean())
    assert report["video_top1"] == pytest.approx(float(np.mean(video_hits)))
    assert report["clip_top1"] == pytest.approx(clip_top1) and report["videos"] == 8 and report["clips"] == 16
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"Clip@1 {100 * clip_top1:.2f}  Clip@5 ")
    assert f"Video@1 {100 * report['video_top1']:.2f}" in lines[0] and "(8 videos, 16 clips, 2 per video)" in lines[0]
    assert [line.split()[0] for line in lines[1:5]] == CLASSES
    assert lines[-1] == f"report: {out / 'report.json'}"
    # --json prints the same report.
    again = _cli("evaluate", "--model", trained / "model.keras", "--data", f"ucf101:{data_root}", "--clips", "2",
                 "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["video_top1"] == report["video_top1"]


def test_evaluate_pairs_classes_by_name_in_any_order(trained, data_root, tmp_path):
    model = str(trained / "model.keras")
    reference = evaluate(model, f"ucf101:{data_root}", clips=2, out_dir=str(tmp_path / "a"))
    reordered = evaluate(model, _relisted(data_root, tmp_path / "reversed", CLASSES[::-1]), clips=2,
                         out_dir=str(tmp_path / "b"))
    # The same videos scored the same way: labels index the model's outputs, whatever classInd.txt says.
    assert reordered["per_class_video_top1"] == reference["per_class_video_top1"]
    assert (reordered["video_top1"], reordered["clip_top1"]) == (reference["video_top1"], reference["clip_top1"])
    first, second = _predictions(tmp_path / "a"), _predictions(tmp_path / "b")
    for path, (probabilities, labels) in first.items():
        moved = path.replace(str(data_root), str(tmp_path / "reversed"))
        np.testing.assert_allclose(second[moved][0], probabilities, atol=1e-6)
        assert (second[moved][1] == labels).all()


def test_a_subset_of_the_classes_is_evaluated_over_all_outputs(trained, data_root, tmp_path):
    model = str(trained / "model.keras")
    full = evaluate(model, f"ucf101:{data_root}", clips=2, out_dir=str(tmp_path / "all"))
    subset = evaluate(model, _relisted(data_root, tmp_path / "three", ["RotateClockwise", "MoveLeft", "MoveRight"]),
                      clips=2, out_dir=str(tmp_path / "three_eval"))
    assert sorted(subset["per_class_video_top1"]) == ["MoveLeft", "MoveRight", "RotateClockwise"]
    for name, accuracy in subset["per_class_video_top1"].items():
        assert accuracy == full["per_class_video_top1"][name]
    assert subset["videos"] == 6 and np.asarray(subset["confusion_matrix"]).shape == (4, 4)
    kept = [full["per_class_video_top1"][name] for name in ("RotateClockwise", "MoveLeft", "MoveRight")]
    assert subset["video_top1"] == pytest.approx(sum(kept) / 3)
    probabilities = np.load(tmp_path / "three_eval" / "clip_predictions.npz")["probabilities"]
    assert probabilities.shape[1] == 4  # the model still predicts over all of its classes


def test_an_unknown_class_is_an_error_before_decoding(trained, data_root, tmp_path):
    root = tmp_path / "other"
    for subset in ("train", "test"):
        for name in ("MoveLeft", "Jump", "Wave"):
            os.makedirs(root / subset / name)
            # Not videos: had anything been decoded, the error would be about them.
            (root / subset / name / "clip.avi").write_bytes(b"not a video")
    with pytest.raises(ClassMismatchError) as error:
        evaluate(str(trained / "model.keras"), f"folder:{root}")
    message = str(error.value)
    assert "2 class(es)" in message and "'Jump', 'Wave'" in message and "MoveLeft', 'MoveRight'" in message
    result = _cli("evaluate", "--model", trained / "model.keras", "--data", f"folder:{root}")
    assert result.returncode == 2 and "are not classes of" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_model_without_names_pairs_by_position_with_a_warning(trained, data_root, tmp_path):
    lone = tmp_path / "lone.keras"
    shutil.copy(trained / "model.keras", lone)
    with pytest.warns(UserWarning, match="no recorded class names: the 4 classes of .* are paired with its outputs "
                                         "by position"):
        report = evaluate(str(lone), f"ucf101:{data_root}", clips=2)
    assert report["videos"] == 8
    # The command line shows the package's own warnings (and only them), one line each.
    result = _cli("evaluate", "--model", lone, "--data", f"ucf101:{data_root}", "--clips", "2", "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("keras-r21d evaluate: warning: ") and "no recorded class names" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.slow
def test_finetuning_keeps_the_head_by_name_and_replaces_it_for_new_classes(trained, data_root, tmp_path):
    spec = _relisted(data_root, tmp_path / "reversed", CLASSES[::-1])
    kept = train(TrainConfig(data=spec, out=str(tmp_path / "kept"), init=str(trained), **{**TINY, "epochs": 1}))
    record = json.loads((tmp_path / "kept" / "run.json").read_text())
    assert record["init"]["kept_head"] is True
    assert record["class_names"] == CLASSES  # the source's outputs, not the data's order
    assert kept["model"].output_shape[-1] == 4
    # The same number of classes under other names is a new dataset: a new head.
    root = tmp_path / "renamed"
    for subset, listing in (("train", "trainlist01.txt"), ("test", "testlist01.txt")):
        for line in (data_root / listing).read_text().split("\n"):
            if line.strip():
                video = line.split()[0]
                cls, name = video.split("/")
                os.makedirs(root / subset / f"New{cls}", exist_ok=True)
                shutil.copy(data_root / video, root / subset / f"New{cls}" / name)
    train(TrainConfig(data=f"folder:{root}", out=str(tmp_path / "new"), init=str(trained), **TINY))
    record = json.loads((tmp_path / "new" / "run.json").read_text())
    assert record["init"]["kept_head"] is False
    assert record["class_names"] == sorted(f"New{c}" for c in CLASSES)


@pytest.mark.slow
def test_validation_data_may_list_the_classes_in_another_order(data_root, tmp_path):
    """As the tuner's --val-data does: validation classes pair with the training classes by name."""
    val = _relisted(data_root, tmp_path / "reversed", CLASSES[::-1])
    result = train(TrainConfig(data=f"ucf101:{data_root}", val_data=val, out=str(tmp_path / "run"), **TINY))
    reference = evaluate(result["model"], f"ucf101:{data_root}", clips=2, frames=4, size=32, class_names=CLASSES)
    assert result["report"]["per_class_video_top1"] == reference["per_class_video_top1"]
    assert result["report"]["video_top1"] == reference["video_top1"]
    with pytest.raises(ClassMismatchError, match="'Jump'"):
        bad = _relisted(data_root, tmp_path / "jump", CLASSES)
        (tmp_path / "jump" / "classInd.txt").write_text("1 Jump\n2 MoveLeft\n3 MoveRight\n4 RotateClockwise\n")
        (tmp_path / "jump" / "testlist01.txt").write_text("MoveLeft/v_MoveLeft_g01_c01.avi\n")
        train(TrainConfig(data=f"ucf101:{data_root}", val_data=bad, out=str(tmp_path / "bad"), **TINY))


def test_folder_data_without_a_split_never_validates_on_training_videos(data_root, tmp_path):
    root = tmp_path / "flat"
    for cls in CLASSES:
        shutil.copytree(data_root / cls, root / cls)
    result = train(TrainConfig(data=f"folder:{root}", out=str(tmp_path / "run"), **TINY))
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["split"] == {"kind": "holdout", "fraction": 0.2, "seed": 0}
    assert record["train_videos"] == 24 and record["val_videos"] == 8 and record["val_overlaps_train"] == 0
    assert record["train_files"].startswith("24 videos, sha256 ")
    assert record["val_files"].startswith("8 videos, sha256 ")
    assert result["report"]["videos"] == 8


@pytest.mark.slow
def test_resume_refuses_other_settings_and_keeps_the_record(trained, data_root, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "run.json").write_text((run / "run.json").read_text().replace(str(trained), str(run)))
    before = (run / "run.json").read_bytes()
    with pytest.raises(ResumeError) as error:
        train(TrainConfig(data=f"ucf101:{data_root}", out=str(run), **{**TINY, "arch": "r3d", "depth": 18,
                                                                       "epochs": 2}), resume=True)
    assert "arch: run 'r2plus1d', now 'r3d'" in str(error.value) and "depth: run 10, now 18" in str(error.value)
    assert (run / "run.json").read_bytes() == before
    result = _cli("train", "--data", f"ucf101:{data_root}", "--out", run, "--epochs", "2", "--resume",
                  *TRAIN_ARGS[:-1])  # flips on: a recipe change
    assert result.returncode == 2 and "flip: run False, now True" in result.stderr
    assert (run / "run.json").read_bytes() == before
    # What may change on resume (more epochs) does.
    train(TrainConfig(data=f"ucf101:{data_root}", out=str(run), **{**TINY, "epochs": 2}), resume=True)
    record = json.loads((run / "run.json").read_text())
    assert record["config"]["arch"] == "r2plus1d" and record["config"]["epochs"] == 2
    assert record["status"] == "done" and record["resumed_from_epoch"] == 1 and len(record["resumes"]) == 1


def test_a_run_killed_in_its_first_epoch_starts_again_with_resume(trained, data_root, tmp_path):
    """As the tuner and the study do with a trial or run killed before its first checkpoint."""
    run = tmp_path / "run"
    run.mkdir()
    record = json.loads((trained / "run.json").read_text())
    record.update(status="running", config={**record["config"], "out": str(run)})
    for key in ("results", "model", "plots", "train_seconds"):
        record.pop(key, None)
    (run / "run.json").write_text(json.dumps(record))
    config = TrainConfig(data=f"ucf101:{data_root}", out=str(run), **TINY)
    with pytest.raises(ResumeError, match="holds a run that finished no epoch: pass resume=True"):
        train(config)
    train(config, resume=True)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "done" and record["resumed_from_epoch"] == 0


def test_a_batch_larger_than_the_data_trains_and_scales_what_it_trains(data_root, tmp_path):
    with pytest.warns(UserWarning, match="batch size 64 exceeds the 24 training videos: training with batches of "
                                         "24, the learning rate scaled for 24"):
        result = train(TrainConfig(data=f"ucf101:{data_root}", out=str(tmp_path / "run"),
                                   **{**TINY, "batch_size": 64}))
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["batch_size"] == 24 and record["config"]["batch_size"] == 64
    assert record["phases"][0]["learning_rate"] == pytest.approx(0.01 * 24 / 32)
    assert result["batch_size"] == 24


LOAD_EVERY_FILE = """
import sys
{imports}
from keras_r21d import fold_batchnorm
for path in sys.argv[1:]:
    for compile in (True, False):
        model = keras.models.load_model(path, safe_mode=True, compile=compile)
    if path.endswith("model.keras"):
        folded = sys.argv[1] + ".folded.keras"
        fold_batchnorm(model).save(folded)
        keras.models.load_model(folded, safe_mode=True)
print("loaded", len(sys.argv) - 1)
"""


@pytest.mark.slow
@pytest.mark.parametrize("imports", ["import keras_r21d\nimport keras", "import keras\nimport keras_r21d"])
def test_every_file_a_run_writes_loads_with_plain_keras(trained, tmp_path, imports):
    files = [trained / "model.keras", trained / "checkpoints" / "best.keras"]
    files += sorted((trained / "checkpoints").glob("epoch-*.keras"))
    copies = []
    for path in files:  # away from the run's folder, so nothing but the file itself is read
        copies.append(tmp_path / f"{len(copies)}-{path.name}")
        shutil.copy(path, copies[-1])
    script = LOAD_EVERY_FILE.format(imports=imports)
    result = subprocess.run([sys.executable, "-c", script, *map(str, copies)], capture_output=True, text=True,
                            env=ENV, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"loaded {len(copies)}" in result.stdout


@pytest.mark.slow
def test_out_must_be_new_empty_or_a_run(data_root, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.keras").write_bytes(b"the user's model")
    (mine / "history.csv").write_text("the user's history\n")
    result = _cli("train", "--data", f"ucf101:{data_root}", "--out", mine, "--epochs", "1", *TRAIN_ARGS)
    assert result.returncode == 2, result.stderr
    assert "is a folder that is not a run of keras_r21d and is not empty (history.csv, model.keras)" in result.stderr
    assert (mine / "model.keras").read_bytes() == b"the user's model" and sorted(os.listdir(mine)) == [
        "history.csv", "model.keras"]
    a_file = tmp_path / "notes.txt"
    a_file.write_text("notes")
    for out, expected in ((a_file, "is a file"), (a_file / "run", "is a file, not a folder")):
        result = _cli("train", "--data", f"ucf101:{data_root}", "--out", out, *TRAIN_ARGS)
        assert result.returncode == 2 and expected in result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert a_file.read_text() == "notes"


def test_export_under_a_file_is_one_line(trained, tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("notes")
    result = _cli("export", "--model", trained / "model.keras", "--out", a_file / "serving")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and str(a_file) in result.stderr


@pytest.mark.slow
def test_ctrl_c_leaves_an_interrupted_run_that_resumes(data_root, tmp_path):
    out = tmp_path / "run"
    state = out / "checkpoints" / "state.json"
    process = subprocess.Popen([sys.executable, "-m", "keras_r21d", "train", "--data", f"ucf101:{data_root}",
                                "--out", str(out), "--epochs", "20", *TRAIN_ARGS], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=ENV,
                               # A terminal's Ctrl-C, also when this suite runs in the background (where a shell
                               # starts commands with SIGINT ignored, and Python keeps it so).
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    record = json.loads((out / "run.json").read_text())
    done = record["epochs_done"]
    assert record["status"] == "interrupted" and 1 <= done < 20
    assert f"keras-r21d train: interrupted after epoch {done} of 20; resume with the same command and --resume" \
        in stderr
    assert json.loads(state.read_text())["epoch"] == done
    result = _cli("train", "--data", f"ucf101:{data_root}", "--out", out, "--epochs", str(done + 1), "--resume",
                  *TRAIN_ARGS)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "run.json").read_text())["status"] == "done"


@pytest.mark.slow
def test_a_bad_video_is_reported_once_per_run_and_counted(data_root, tmp_path):
    root = tmp_path / "flat"
    for cls in CLASSES:
        shutil.copytree(data_root / cls, root / cls)
    bad = root / "MoveLeft" / "broken.avi"
    bad.write_bytes(b"\0" * 500)
    result = _cli("train", "--data", f"folder:{root}:holdout=0", "--out", tmp_path / "run", "--epochs", "2",
                  *TRAIN_ARGS)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert output.count(f"skipping video {bad}") == 1, output  # training, validation and the report met it
    assert "1 video(s) could not be decoded during the run" in result.stdout
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert list(record["skipped_videos"]) == [str(bad)] and record["val_overlaps_train"] == 33
    # Quiet: no TensorFlow start-up lines, no "ran out of data" from Keras.
    for noise in ("absl::InitializeLog", "cpu_feature_guard", "ran out of data", "oneDNN custom operations"):
        assert noise not in output, noise


def test_help_and_version_import_no_tensorflow():
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "keras_r21d", "train", "--help"],
                            capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "keras_r21d.cli" in imported
    assert not {name for name in imported if name.split(".")[0] in ("tensorflow", "keras", "torch")}
    assert "--frames FRAMES       clip length (default: 16)" in result.stdout
    assert "(default: 45, or 10 when fine-tuning with --init)" in result.stdout
    version = _cli("--version")
    assert version.returncode == 0 and version.stdout.strip().startswith("keras-r21d 0.")


def test_a_command_is_quiet(tmp_path):
    result = _cli("models", "--depth", "10", "--frames", "4", "--size", "32", "--classes", "3")
    assert result.returncode == 0 and result.stderr == "", result.stderr


@pytest.mark.parametrize("args, flag", [
    (["predict", "--model", "m.keras", "--top", "-2", "v.mp4"], "--top"),
    (["predict", "--model", "m.keras", "--top", "0", "v.mp4"], "--top"),
    (["predict", "--model", "m.keras", "--clips", "0", "v.mp4"], "--clips"),
    (["train", "--data", "folder:x", "--out", "y", "--epochs", "0"], "--epochs"),
    (["train", "--data", "folder:x", "--out", "y", "--batch-size", "0"], "--batch-size"),
    (["evaluate", "--model", "m.keras", "--data", "folder:x", "--clips", "-1"], "--clips"),
])
def test_out_of_range_values_name_the_flag(args, flag):
    result = _cli(*args)
    assert result.returncode == 2
    assert f"argument {flag}: must be >= 1" in result.stderr


def test_freeze_epochs_message_names_what_was_passed(data_root, tmp_path):
    with pytest.raises(ValueError, match=r"`epochs` must be >= 1. Received: epochs=0"):
        TrainConfig(data="x", epochs=0)
    with pytest.raises(ValueError, match="--freeze-backbone-epochs"):
        TrainConfig(data="x", init="m.keras", epochs=2, freeze_backbone_epochs=2)
    TrainConfig(data="x", epochs=1)  # no fine-tuning flag: nothing about it


MEASURE = """
import resource, sys
from keras_r21d.cli import main
code = main(sys.argv[1:])
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print("PEAK_KB", int(status["VmHWM"].split()[0]))
sys.exit(code)
"""


def _peak_mb(*args):
    result = subprocess.run([sys.executable, "-c", MEASURE, *map(str, args)], capture_output=True, text=True,
                            env=ENV, timeout=600)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.rsplit("PEAK_KB", 1)[1].split()[0]) / 1024


@pytest.mark.slow
@videos.needs_ffmpeg
def test_memory_follows_the_clip_not_the_video(trained, tmp_path):
    """`predict` on a 1080p video peaks where it does on a 240p one: frames are shrunk as they are decoded."""
    made = {}
    for name, size in (("small", "320x240"), ("hd", "1920x1080")):
        made[name] = str(tmp_path / f"{name}.mp4")
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25",
                        "-frames:v", "75", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                        made[name]], check=True, timeout=300)
    model = trained / "model.keras"
    small = _peak_mb("predict", "--model", model, made["small"], "--clips", "10")
    hd = _peak_mb("predict", "--model", model, made["hd"], "--clips", "10")
    # Decoded at full size, 10 clips x 4 frames of 1920x1080 would add 250 MB of uint8 and 1 GB as float32.
    assert hd - small < 120, (small, hd)
