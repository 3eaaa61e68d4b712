"""Presets as a named registry: one handle per checkpoint, its metadata, `from_preset` from the local cache."""

import numpy as np
import pytest

import keras_r21d
from keras_r21d.weights import presets
from tests.workers.cli_with_preset import CACHE_FILE, PRESET


def test_one_handle_per_checkpoint():
    handles = keras_r21d.list_presets()
    assert len(handles) == len(set(handles)) == len(presets.PRESETS)
    assert "r2plus1d_18.kinetics400_16f" in handles and "r3d_18.kinetics400_16f" in handles
    # "ig65m" was two checkpoints under one name: 359 classes at 32 frames, 487 at 8. Each has its handle now.
    assert keras_r21d.get_preset("r2plus1d_34.ig65m_32f").classes == 359
    assert keras_r21d.get_preset("r2plus1d_34.ig65m_8f").classes == 487
    assert keras_r21d.list_presets("r2plus1d_34") == ["r2plus1d_34.ig65m_32f", "r2plus1d_34.ig65m_8f",
                                                      "r2plus1d_34.ig65m_kinetics400_32f",
                                                      "r2plus1d_34.ig65m_kinetics400_8f"]
    for handle in handles:
        metadata = keras_r21d.get_preset(handle).metadata()
        assert metadata["handle"] == handle and handle.startswith(metadata["model"] + ".")
        assert metadata["preprocessing"] == {"resize": [128, 171], "crop": 112, "mean": [0.43216, 0.394666, 0.37645],
                                             "std": [0.22803, 0.22145, 0.216989], "frame_stride": 1}
    assert keras_r21d.get_preset("r2plus1d_18.kinetics400_16f").metadata()["video_top1"] == 67.46
    with pytest.raises(ValueError, match=r"no preset 'r2plus1d_18.kinetics'. Available: \['mc3_18"):
        keras_r21d.get_preset("r2plus1d_18.kinetics")


@pytest.fixture()
def local_preset(tmp_path, monkeypatch):
    """The test preset (r2plus1d_10, 400 Kinetics classes, 4 frames) converted into a local cache: offline."""
    monkeypatch.setattr(presets, "PRESETS", [PRESET])
    monkeypatch.setenv("KERAS_R21D_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    reference = presets._reference_model(PRESET)
    reference.save_weights(str(tmp_path / "cache" / CACHE_FILE))
    return reference


def test_from_preset_reads_the_local_cache(local_preset):
    clips = np.random.default_rng(0).normal(size=(2, 4, 32, 32, 3)).astype("float32")
    expected = np.asarray(local_preset(clips, training=False))
    model = keras_r21d.from_preset("r2plus1d_10.kinetics400_4f", input_shape=(4, 32, 32, 3))
    assert model.output_shape == (None, 400) and model.name == "r2plus1d_10"
    np.testing.assert_allclose(np.asarray(model(clips, training=False)), expected, atol=1e-5)
    assert keras_r21d.from_preset("r2plus1d_10.kinetics400_4f").input_shape == (None, 4, 112, 112, 3)
    features = keras_r21d.from_preset("r2plus1d_10.kinetics400_4f", include_top=False, pooling="avg",
                                      input_shape=(None, None, None, 3))
    assert features.output_shape == (None, 512)
    # The builders take a handle too, for their own network only.
    same = keras_r21d.R2Plus1D(10, weights="r2plus1d_10.kinetics400_4f", input_shape=(4, 32, 32, 3))
    np.testing.assert_allclose(np.asarray(same(clips, training=False)), expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"'r2plus1d_10.kinetics400_4f' is a checkpoint of r2plus1d_10, not of "
                                         r"r3d_10: build it with keras_r21d.from_preset"):
        keras_r21d.R3D(10, weights="r2plus1d_10.kinetics400_4f")


def test_fine_tuning_starts_from_a_handle(local_preset):
    from keras_r21d.training.finetune import load_source

    model, description, names = load_source("r2plus1d_10.kinetics400_4f")  # no --arch/--depth needed
    assert description == "preset 'r2plus1d_10.kinetics400_4f' of r2plus1d_10"
    assert model.output_shape == (None, 400) and len(names) == 400 and names[0] == "abseiling"


def test_cli_lists_the_presets_and_what_is_converted_here(tmp_path):
    import json
    import os
    import subprocess
    import sys

    converted = presets.converted_weights_path(presets.get_preset("r3d_18.kinetics400_16f"), str(tmp_path))
    open(converted, "wb").close()
    env = {**os.environ, "KERAS_R21D_CACHE": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-m", "keras_r21d", "presets", "--json"], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    rows = {row["handle"]: row for row in json.loads(result.stdout)}
    assert sorted(rows) == keras_r21d.list_presets()
    assert [handle for handle, row in rows.items() if row["cached"]] == ["r3d_18.kinetics400_16f"]
    assert rows["r2plus1d_34.ig65m_8f"]["classes"] == 487 and rows["r2plus1d_34.ig65m_8f"]["frames"] == 8
    table = subprocess.run([sys.executable, "-m", "keras_r21d", "presets"], capture_output=True, text=True,
                           env=env, timeout=300).stdout.splitlines()
    assert table[2] == "| mc3_18.kinetics400_16f | 400 | 16 | kinetics400 | 63.96 | no |"
    assert "| r3d_18.kinetics400_16f | 400 | 16 | kinetics400 | 63.20 | yes |" in table
