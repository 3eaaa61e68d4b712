"""Hostile `.keras` files: refused with the file's name, no payload runs, nothing lands outside."""

import json
import os
import subprocess
import sys
import zipfile

import keras
import pytest

import keras_r21d
from keras_r21d.model_files import UnsafeModelFile, check_keras_archive, load_keras_model

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1")


@pytest.fixture(scope="module")
def genuine(tmp_path_factory):
    path = tmp_path_factory.mktemp("genuine") / "model.keras"
    keras_r21d.R2Plus1D(10, input_shape=(4, 32, 32, 3), classes=3, width_multiplier=0.125).save(path)
    return path


def _rewrite(source, target, config=None, extra=()):
    """A copy of a `.keras` archive with another `config.json` and extra members."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for item in original.infolist():
            data = original.read(item.filename)
            if item.filename == "config.json" and config is not None:
                data = json.dumps(config).encode()
            copy.writestr(item.filename, data)
        for name, data in extra:
            copy.writestr(name, data)
    return target


def _lambda_model(path, marker):
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda x: (open(marker, "w").write("ran"), x)[1])(inputs)
    keras.Model(inputs, outputs).save(path)
    os.remove(marker)  # building the model ran the payload once, here; loading must not run it again
    return path


def _hostile_files(folder, genuine):
    marker = str(folder / "payload_ran")
    config = json.loads(zipfile.ZipFile(genuine).read("config.json"))
    system = json.loads(json.dumps(config))
    # The classifier's backbone entry, whose class is a function of an arbitrary module.
    system["config"]["backbone"].update(module="os", class_name="system", registered_name="system",
                                        config=f"touch {marker}")
    unsafe = json.loads(json.dumps(config))
    unsafe["config"]["backbone"].update(module="keras.config", class_name="enable_unsafe_deserialization",
                                        registered_name="enable_unsafe_deserialization", config={})
    # The same in a layer entry (name, inbound nodes) of 0.1.0's plain functional layout.
    old = os.path.join(os.path.dirname(__file__), "data", "v0_1_0", "models", "r2plus1d.keras")
    layer = json.loads(zipfile.ZipFile(old).read("config.json"))
    layer["config"]["layers"][1].update(module="os", class_name="system", registered_name="system",
                                        config=f"touch {marker}")
    bomb = folder / "bomb.keras"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", b"\0" * (64 * 1024**2))  # 64 MB of zeros in a few KB
    files = {
        "lambda": (_lambda_model(folder / "lambda.keras", marker), "Lambda"),
        "os.system": (_rewrite(genuine, folder / "system.keras", system), None),
        "os.system in a layer": (_rewrite(old, folder / "layer.keras", layer), None),
        "unsafe switch": (_rewrite(genuine, folder / "unsafe.keras", unsafe), "disallowed"),
        "../ member": (_rewrite(genuine, folder / "traversal.keras", extra=[("../escaped.txt", b"x")]),
                       "points outside the archive"),
        "zip bomb": (bomb, "zip bomb"),
    }
    return files, marker


def test_every_hostile_file_is_refused_by_the_loader(genuine, tmp_path):
    files, marker = _hostile_files(tmp_path, genuine)
    for kind, (path, message) in files.items():
        with pytest.raises(ValueError) as error:
            load_keras_model(str(path))
        assert str(path) in str(error.value), kind
        if message:
            assert message in str(error.value), (kind, str(error.value))
    assert not os.path.exists(marker)
    assert not os.path.exists(tmp_path.parent / "escaped.txt")
    from keras.src.saving import serialization_lib

    assert serialization_lib.in_safe_mode() is not False  # nothing switched safe mode off in this process
    assert isinstance(load_keras_model(str(genuine)), keras.Model)  # a genuine file still loads


def test_archive_checks(tmp_path, genuine):
    check_keras_archive(str(genuine))
    plain = tmp_path / "plain.keras"
    plain.write_bytes(b"not a zip")
    with pytest.raises(UnsafeModelFile, match="not a zip archive"):
        check_keras_archive(str(plain))
    empty = tmp_path / "empty.keras"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("readme.txt", "hi")
    with pytest.raises(UnsafeModelFile, match="no config.json"):
        check_keras_archive(str(empty))
    absolute = _rewrite(genuine, tmp_path / "abs.keras", extra=[("/etc/evil", b"x")])
    with pytest.raises(UnsafeModelFile, match="points outside"):
        check_keras_archive(str(absolute))


COMMANDS = [
    ["predict", "--model", "{model}", "{video}"],
    ["evaluate", "--model", "{model}", "--data", "{data}"],
    ["export", "--model", "{model}", "--out", "{out}"],
    ["extract", "--model", "{model}", "--data", "{data}", "--out", "{out}"],
    ["train", "--data", "{data}", "--out", "{out}", "--init", "{model}", "--epochs", "1"],
]


@pytest.mark.slow
def test_every_command_refuses_hostile_files(genuine, tmp_path):
    """Every command that reads a model, with every hostile file: exit 2 naming the file, one line, no payload.

    The 30 command lines run through the CLI's `main` in one child process (tests/workers/cli_calls.py):
    TensorFlow starts once, and a file that switched safe mode off would show in the calls after it."""
    from tests.videos import moving_frames, write_opencv

    files, marker = _hostile_files(tmp_path, genuine)
    data_root = tmp_path / "data"
    video = write_opencv(data_root / "a" / "v.avi", moving_frames(20, 32, 32))
    write_opencv(data_root / "b" / "v.avi", moving_frames(20, 32, 32, seed=1))
    calls, labels = [], []
    for command in COMMANDS:
        for kind, (path, _) in files.items():
            calls.append([a.format(model=path, video=video, data=f"folder:{data_root}", out=tmp_path / "out")
                          for a in command])
            labels.append((command[0], kind, str(path)))
    calls_file = tmp_path / "calls.json"
    calls_file.write_text(json.dumps(calls))
    worker = os.path.join(os.path.dirname(__file__), "workers", "cli_calls.py")
    result = subprocess.run([sys.executable, worker, str(calls_file)], capture_output=True, text=True, env=ENV,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(answers) == len(calls) == 30
    for (command, kind, path), answer in zip(labels, answers):
        what = (command, kind, answer["stderr"][-1500:])
        assert answer["code"] == 2, what
        assert "Traceback" not in answer["stderr"], what
        errors = [line for line in answer["stderr"].splitlines() if line.startswith(f"keras-r21d {command}: error: ")]
        assert len(errors) == 1 and path in errors[0], what
        assert answer["safe_mode"] is not False, what
    # And once through the real console entry point, in its own process.
    lambda_file = str(files["lambda"][0])
    real = subprocess.run([sys.executable, "-m", "keras_r21d", "predict", "--model", lambda_file, video],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert real.returncode == 2 and real.stderr.startswith("keras-r21d predict: error: "), real.stderr
    assert lambda_file in real.stderr.splitlines()[0] and "Traceback" not in real.stderr
    assert not os.path.exists(marker)
    assert not os.path.exists(tmp_path / "out")
    assert not os.path.exists(tmp_path.parent / "escaped.txt")


def test_no_switch_turns_safe_mode_off():
    from keras_r21d.cli import build_parser

    help_texts = []
    for action in build_parser()._subparsers._group_actions[0].choices.values():
        help_texts += [option for a in action._actions for option in a.option_strings]
    assert not [option for option in help_texts if "safe" in option or "unsafe" in option]
