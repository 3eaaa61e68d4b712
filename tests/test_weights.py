"""Checkpoint conversion against the real torchvision implementation, and the preset path.

torch runs in child processes only (`tests/workers/torch_reference.py`, the
converter's reader): imported after TensorFlow in one process it crashes.
"""

import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

import keras_r21d
from keras_r21d.export.graph import feature_model
from keras_r21d.weights import ConversionError, convert_state_dict, load_torch_checkpoint, presets
from tests.videos import moving_frames, write_opencv

WORKER = os.path.join(os.path.dirname(__file__), "workers", "torch_reference.py")
# name -> (keras model name, reading, classes)
REFERENCES = {
    "r3d_18": ("r3d_18", "torchvision", 400),
    "mc3_18": ("mc3_18", "torchvision", 400),
    "r2plus1d_18": ("r2plus1d_18", "torchvision", 400),
    "ig65m_r2plus1d_34": ("r2plus1d_34", "paper", 487),
}


def _torch_available():
    probe = subprocess.run([sys.executable, "-c", "import torch, torchvision"], capture_output=True)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _torch_available(),
                                reason="torch and torchvision are not installed (make setup installs them)")


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    folder = tmp_path_factory.mktemp("torch_reference")
    subprocess.run([sys.executable, WORKER, str(folder)], check=True, timeout=900)
    return folder


def _keras_model(name, **kwargs):
    arch, midplanes, classes = REFERENCES[name]
    return keras_r21d.get_model(arch, input_shape=(None, None, None, 3), classes=classes, midplanes=midplanes,
                                classifier_activation=None, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_logits_match_torchvision(references, name):
    state = load_torch_checkpoint(str(references / f"{name}.pth"))
    assert any(key.endswith("num_batches_tracked") for key in state)
    model = convert_state_dict(state, _keras_model(name), name)
    reference = np.load(references / f"{name}.npz")
    lengths = [key.split("_")[1] for key in reference.files if key.startswith("clips_")]
    assert len(lengths) == 2  # two clip lengths per network
    for frames in lengths:
        expected = reference[f"logits_{frames}"]
        assert np.abs(expected).max() > 0.3  # logits large enough for the tolerance to mean something
        logits = model(reference[f"clips_{frames}"], training=False).numpy()
        assert np.abs(logits - expected).max() <= 1e-4, (name, frames)


def test_mismatches_are_named_and_nothing_is_loaded(references):
    state = load_torch_checkpoint(str(references / "r2plus1d_18.pth"))
    model = _keras_model("r2plus1d_18")
    before = [w.numpy().copy() for w in model.weights]
    broken = dict(state)
    del broken["layer2.0.conv1.0.3.weight"]
    broken["layer9.0.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ConversionError) as error:
        convert_state_dict(broken, model, "broken.pth")
    message = str(error.value)
    assert "missing tensor layer2.0.conv1.0.3.weight" in message
    assert "unexpected tensor layer9.0.extra.weight" in message
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights))
    # torchvision's per-block M does not fit the paper's per-conv M: shapes named.
    paper = keras_r21d.get_model("r2plus1d_18", input_shape=(None, None, None, 3), classes=400)
    with pytest.raises(ConversionError, match=r"tensor layer2\.0\.conv2\.0\.0\.weight has shape \(230, 128, 1, 3, 3\)"):
        convert_state_dict(state, paper, "r2plus1d_18.pth")


def test_unreadable_checkpoints_are_clear_errors(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x80\x04 this is not a checkpoint")
    with pytest.raises(ConversionError, match=f"cannot read PyTorch checkpoint {junk}"):
        load_torch_checkpoint(str(junk))
    with pytest.raises(ConversionError, match="checkpoint not found"):
        load_torch_checkpoint(str(tmp_path / "missing.pth"))


@pytest.mark.slow
def test_cli_convert_then_predict_with_kinetics_labels(references, tmp_path):
    out = str(tmp_path / "r21d.keras")
    result = subprocess.run([sys.executable, "-m", "keras_r21d", "convert", "--from", "torchvision", "--arch",
                             "r2plus1d_18", str(references / "r2plus1d_18.pth"), "--out", out],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "400 classes, midplanes=torchvision" in result.stdout
    record = json.loads(open(out + ".json").read())
    assert record["class_names"][:2] == ["abseiling", "air drumming"] and len(record["class_names"]) == 400
    assert record["config"] == {"arch": "r2plus1d", "frames": 16, "size": 112, "frame_stride": 1,
                                "resize_to": [128, 171]}
    import keras

    model = keras.models.load_model(out, safe_mode=True)
    reference = np.load(references / "r2plus1d_18.npz")
    logits = reference["logits_16"]
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert np.abs(model(reference["clips_16"], training=False).numpy() - expected).max() <= 1e-5
    video = write_opencv(tmp_path / "v.avi", moving_frames(40, 128, 171))
    result = subprocess.run([sys.executable, "-m", "keras_r21d", "predict", "--model", out, video, "--json",
                             "--clips", "2"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    top = json.loads(result.stdout)[0]["top"]
    assert len(top) == 5 and all(entry["class"] in record["class_names"] for entry in top)
    # The same file again is refused without --overwrite; the ig65m reading takes the paper's M.
    again = subprocess.run([sys.executable, "-m", "keras_r21d", "convert", "--arch", "r2plus1d_18",
                            str(references / "r2plus1d_18.pth"), "--out", out], capture_output=True, text=True)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    wrong = subprocess.run([sys.executable, "-m", "keras_r21d", "convert", "--from", "ig65m", "--arch", "r2plus1d_18",
                            str(references / "r2plus1d_18.pth"), "--out", str(tmp_path / "x.keras")],
                           capture_output=True, text=True, timeout=600)
    assert wrong.returncode == 2 and "does not fit model" in wrong.stderr and not os.path.exists(tmp_path / "x.keras")


class _Server:
    """Serves a folder over HTTP on 127.0.0.1 and counts the requests."""

    def __init__(self, folder):
        self.requests = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append(self.path)
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                      functools.partial(Handler, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _published(folder, source, stem):
    """Copies a checkpoint under its publisher's naming (`stem-<sha256 prefix>.pth`): `(filename, prefix)`."""
    digest = hashlib.sha256(open(source, "rb").read()).hexdigest()[:8]
    name = f"{stem}-{digest}.pth"
    shutil.copy(source, folder / name)
    return name, digest


def test_preset_download_hash_cache_and_conversion(references, tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    name, digest = _published(served, references / "r2plus1d_18.pth", "r2plus1d_18")
    server = _Server(served)
    try:
        preset = presets.Preset("kinetics400", "r2plus1d", 18, 16, server.url + name, digest, 400, "torchvision",
                                "kinetics400", 67.46)
        monkeypatch.setattr(presets, "PRESETS", [preset])
        monkeypatch.setenv("KERAS_R21D_CACHE", str(tmp_path / "cache"))
        model = keras_r21d.R2Plus1D(18, weights="kinetics400", classifier_activation=None)
        assert model.input_shape == (None, 16, 112, 112, 3)
        reference = np.load(references / "r2plus1d_18.npz")
        assert np.abs(model(reference["clips_16"], training=False).numpy() - reference["logits_16"]).max() <= 1e-4
        assert server.requests == [f"/{name}"]
        cached = [f for f in os.listdir(tmp_path / "cache") if f.endswith(".weights.h5")]
        assert cached == [f"r2plus1d18_kinetics400_16f-{digest}.weights.h5"]
        # The second time comes from the converted cache: no request, no torch.
        backbone = keras_r21d.R2Plus1D(18, weights="kinetics400", include_top=False, pooling="avg",
                                       input_shape=(8, 112, 112, 3))
        assert server.requests == [f"/{name}"]
        features = backbone(reference["clips_8"], training=False).numpy()
        full = keras_r21d.get_model("r2plus1d_18", input_shape=(None, None, None, 3), midplanes="torchvision")
        full.load_weights(str(tmp_path / "cache" / cached[0]))
        expected = feature_model(full)(reference["clips_8"], training=False).numpy()
        assert np.abs(features - expected).max() <= 1e-5
        with pytest.raises(ValueError, match="has a 400-class classifier; received classes=101"):
            keras_r21d.R2Plus1D(18, weights="kinetics400", classes=101)
        with pytest.raises(ValueError, match="reading; received midplanes='paper'"):
            keras_r21d.R2Plus1D(18, weights="kinetics400", midplanes="paper")
        with pytest.raises(ValueError, match="no pretrained weights 'kinetics400' for r2plus1d_34"):
            keras_r21d.R2Plus1D(34, weights="kinetics400")
    finally:
        server.close()


def test_preset_wrong_hash_and_truncated_file_are_refused(references, tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    name, digest = _published(served, references / "r3d_18.pth", "r3d_18")
    data = open(served / name, "rb").read()
    (served / "truncated-00000000.pth").write_bytes(data[: len(data) // 2])
    server = _Server(served)
    monkeypatch.setenv("KERAS_R21D_CACHE", str(tmp_path / "cache"))
    try:
        for filename, expected in ((name, "deadbeef"), ("truncated-00000000.pth", digest)):
            preset = presets.Preset("kinetics400", "r3d", 18, 16, server.url + filename, expected, 400, "torchvision")
            monkeypatch.setattr(presets, "PRESETS", [preset])
            with pytest.raises(ValueError, match=f"does not match the published {expected}"):
                keras_r21d.R3D(18, weights="kinetics400")
            assert not os.path.exists(tmp_path / "cache" / "downloads" / filename)  # never kept, never used
        assert not [f for f in os.listdir(tmp_path / "cache") if f.endswith(".weights.h5")]
    finally:
        server.close()


def test_weights_file_and_url(references, tmp_path, monkeypatch):
    model = keras_r21d.MC3(18, weights=str(references / "mc3_18.pth"), midplanes="torchvision",
                           classifier_activation=None, input_shape=(None, None, None, 3))
    reference = np.load(references / "mc3_18.npz")
    assert np.abs(model(reference["clips_8"], training=False).numpy() - reference["logits_8"]).max() <= 1e-4
    model.save_weights(str(tmp_path / "mc3.weights.h5"))
    again = keras_r21d.MC3(18, weights=str(tmp_path / "mc3.weights.h5"), midplanes="torchvision",
                           classifier_activation=None, input_shape=(None, None, None, 3))
    assert np.abs(again(reference["clips_8"], training=False).numpy() - reference["logits_8"]).max() <= 1e-4
    with pytest.raises(ValueError, match="weights file not found"):
        keras_r21d.MC3(18, weights=str(tmp_path / "nope.weights.h5"))
    monkeypatch.setenv("KERAS_R21D_CACHE", str(tmp_path / "cache"))
    server = _Server(tmp_path)
    try:
        remote = keras_r21d.MC3(18, weights=server.url + "mc3.weights.h5", midplanes="torchvision",
                                classifier_activation=None, input_shape=(None, None, None, 3))
    finally:
        server.close()
    assert np.abs(remote(reference["clips_8"], training=False).numpy() - reference["logits_8"]).max() <= 1e-4
