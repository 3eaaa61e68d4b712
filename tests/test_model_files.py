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
    # A layer entry (name, inbound nodes) whose class is a function of an arbitrary module.
    system["config"]["layers"][1].update(module="os", class_name="system", registered_name="system",
                                         config=f"touch {marker}")
    unsafe = json.loads(json.dumps(config))
    unsafe["config"]["layers"][1].update(module="keras.config", class_name="enable_unsafe_deserialization",
                                         registered_name="enable_unsafe_deserialization", config={})
    bomb = folder / "bomb.keras"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", b"\0" * (64 * 1024**2))  # 64 MB of zeros in a few KB
    files = {
        "lambda": (_lambda_model(folder / "lambda.keras", marker), "Lambda"),
        "os.system": (_rewrite(genuine, folder / "system.keras", system), None),
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


@pytest.mark.parametrize("command", [
    ["predict", "--model", "{model}", "{video}"],
    ["evaluate", "--model", "{model}", "--data", "{data}"],
    ["export", "--model", "{model}", "--out", "{out}"],
    ["extract", "--model", "{model}", "--data", "{data}", "--out", "{out}"],
    ["train", "--data", "{data}", "--out", "{out}", "--init", "{model}", "--epochs", "1"],
])
@pytest.mark.slow
def test_every_command_refuses_hostile_files(genuine, tmp_path, command):
    from tests.videos import moving_frames, write_opencv

    files, marker = _hostile_files(tmp_path, genuine)
    data_root = tmp_path / "data"
    video = write_opencv(data_root / "a" / "v.avi", moving_frames(20, 32, 32))
    write_opencv(data_root / "b" / "v.avi", moving_frames(20, 32, 32, seed=1))
    for kind, (path, _) in files.items():
        args = [a.format(model=path, video=video, data=f"folder:{data_root}", out=tmp_path / "out") for a in command]
        result = subprocess.run([sys.executable, "-m", "keras_r21d", *args], capture_output=True, text=True,
                                env=ENV, timeout=300)
        assert result.returncode == 2, (kind, result.stderr[-1500:])
        assert str(path) in result.stderr, (kind, result.stderr[-1500:])
        assert "Traceback" not in result.stderr, (kind, result.stderr[-1500:])
    assert not os.path.exists(marker)
    assert not os.path.exists(tmp_path / "out")
    assert not os.path.exists(tmp_path.parent / "escaped.txt")


def test_no_switch_turns_safe_mode_off():
    from keras_r21d.cli import build_parser

    help_texts = []
    for action in build_parser()._subparsers._group_actions[0].choices.values():
        help_texts += [option for a in action._actions for option in a.option_strings]
    assert not [option for option in help_texts if "safe" in option or "unsafe" in option]
