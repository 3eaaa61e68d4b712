"""SavedModel (TF Serving layout), TFLite and the serving client, on real exports and real videos."""

import os
import shutil
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_r21d
from keras_r21d.data.datasets import VideoDataset
from keras_r21d.data.pipeline import ClipConfig
from keras_r21d.data.video import read_video
from keras_r21d.export import export_saved_model, export_tflite, read_warmup_records, tflite_ops
from keras_r21d.export.graph import feature_model, probabilities_fn
from keras_r21d.export.tflite import interpreter, run_tflite
from keras_r21d.serving.client import Client, ServingError, Unavailable
from keras_r21d.training.evaluation import evaluate_model, video_predictions
from tests.serving_standin import GrpcStandIn, RestStandIn
from tests.test_case import free_port, with_batchnorm_statistics
from tests.videos import moving_frames, write_opencv

CLASSES = ["walk", "run", "jump", "wave"]
# Clips of 8 frames every 2nd frame, 4 per video, frames resized to 48x64 and cropped to 48.
CONFIG = ClipConfig(clip_len=8, frame_stride=2, test_clips=4, resize=(48, 64), crop=48)


def _model(arch="r2plus1d", frames=None):
    model = keras_r21d.get_model(f"{arch}_10", input_shape=(frames, None, None, 3), classes=len(CLASSES),
                                 width_multiplier=0.25)
    return with_batchnorm_statistics(model, np.random.default_rng(1))


def _clips(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, CONFIG.clip_len, CONFIG.crop, CONFIG.crop, 3)).astype("float32")


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("serving") / "r21d")
    report = export_saved_model(model, base, class_names=CLASSES, clip_config=CONFIG, top_k=3, model_name="r21d")
    return base, report


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(exported[1]["path"])


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export_videos")
    return {
        # 50 frames: room for 4 uniform clips of span 15.
        "long": write_opencv(folder / "long.avi", moving_frames(50, 60, 80, seed=1)),
        # 9 frames: shorter than one clip's span, looped.
        "short": write_opencv(folder / "short.avi", moving_frames(9, 48, 64, seed=2)),
    }


def test_tf_serving_layout(exported):
    base, report = exported
    version = os.path.join(base, "1")
    assert report["path"] == os.path.abspath(version) and report["version"] == 1
    assert sorted(os.listdir(base)) == ["1"]  # no staging directory left behind
    for name in ("saved_model.pb", "variables", "assets/class_names.txt", "assets.extra/tf_serving_warmup_requests"):
        assert os.path.exists(os.path.join(version, name)), name
    with open(os.path.join(version, "assets", "class_names.txt")) as f:
        assert f.read().split("\n")[:-1] == CLASSES


def test_warmup_records_are_valid_prediction_logs(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(exported[1]["path"], "assets.extra", "tf_serving_warmup_requests")
    raw = [record.numpy() for record in tf.data.TFRecordDataset(path)]
    official = [prediction_log_pb2.PredictionLog.FromString(r) for r in raw]
    assert [log.predict_log.request.model_spec.signature_name for log in official] == [
        "serving_default", "classify_video"]
    assert {log.predict_log.request.model_spec.name for log in official} == {"r21d"}
    clips = tf.make_ndarray(official[0].predict_log.request.inputs["clips"])
    frames = tf.make_ndarray(official[1].predict_log.request.inputs["frames"])
    assert clips.shape == (1, 8, 48, 48, 3) and clips.dtype == np.float32
    assert frames.shape == (8, 48, 64, 3) and frames.dtype == np.uint8
    # The package's own message definitions read the same records.
    assert [log.SerializeToString() for log in read_warmup_records(path)] == raw


def test_versions_are_numbered_and_never_overwritten_silently(model, tmp_path):
    base = str(tmp_path / "m")
    assert export_saved_model(model, base, clip_config=CONFIG, check=False)["version"] == 1
    assert export_saved_model(model, base, clip_config=CONFIG, check=False)["version"] == 2
    with pytest.raises(ValueError, match="already exists"):
        export_saved_model(model, base, version=2, clip_config=CONFIG, check=False)
    assert export_saved_model(model, base, version=2, clip_config=CONFIG, check=False, overwrite=True)["version"] == 2
    assert sorted(os.listdir(base)) == ["1", "2"]


def test_signatures_names_dtypes_and_shapes(loaded):
    signatures = loaded.signatures
    assert set(signatures) == {"serving_default", "classify_video", "extract_features"}
    (clips,) = signatures["serving_default"].structured_input_signature[1].values()
    assert clips.dtype == tf.float32 and clips.shape.as_list() == [None, None, None, None, 3]
    (frames,) = signatures["classify_video"].structured_input_signature[1].values()
    assert frames.dtype == tf.uint8 and frames.shape.as_list() == [None, None, None, 3]
    outputs = signatures["serving_default"].structured_outputs
    assert {k: (v.dtype, v.shape.as_list()) for k, v in outputs.items()} == {
        "probabilities": (tf.float32, [None, 4]), "top_k_indices": (tf.int32, [None, 3]),
        "top_k_classes": (tf.string, [None, 3]), "top_k_scores": (tf.float32, [None, 3])}
    outputs = signatures["classify_video"].structured_outputs
    assert {k: v.shape.as_list() for k, v in outputs.items()} == {
        "probabilities": [4], "top_k_indices": [3], "top_k_classes": [3], "top_k_scores": [3],
        "clip_probabilities": [4, 4]}
    assert signatures["extract_features"].structured_outputs["features"].shape.as_list() == [None, 128]


def test_serving_default_matches_keras(model, loaded, exported):
    clips = _clips(3)
    expected = model(clips, training=False).numpy()
    served = loaded.signatures["serving_default"](clips=tf.constant(clips))
    assert np.abs(served["probabilities"].numpy() - expected).max() <= 1e-4
    assert exported[1]["max_abs_diff"] <= 1e-4
    # The export is the BatchNorm-folded network: no moving statistics among its variables.
    assert exported[1]["batchnorm_folded"]
    names = [v.path if hasattr(v, "path") else v.name for v in loaded.variables]
    assert names and not [n for n in names if "moving_" in n]
    top = np.argsort(-expected, axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(served["top_k_indices"].numpy(), top)
    names = served["top_k_classes"].numpy().astype(str)
    assert names.tolist() == [[CLASSES[i] for i in row] for row in top]
    np.testing.assert_allclose(served["top_k_scores"].numpy(), np.take_along_axis(expected, top, 1), atol=1e-4)


@pytest.mark.parametrize("which", ["long", "short"])
def test_classify_video_equals_the_evaluator(model, loaded, videos, which, tmp_path):
    path = videos[which]
    dataset = VideoDataset("one", [path], [0], CLASSES)
    evaluate_model(model, dataset, CONFIG, batch_size=3, out_dir=str(tmp_path))
    saved = np.load(tmp_path / "clip_predictions.npz")
    video_probs, _, _ = video_predictions(saved["probabilities"], saved["labels"], saved["video_ids"])
    served = loaded.signatures["classify_video"](frames=tf.constant(read_video(path)))
    assert np.abs(served["clip_probabilities"].numpy() - saved["probabilities"]).max() <= 1e-5
    assert np.abs(served["probabilities"].numpy() - video_probs[0]).max() <= 1e-5
    assert served["top_k_classes"].numpy()[0].decode() == CLASSES[int(video_probs[0].argmax())]


def test_a_three_crop_export_classifies_as_the_three_crop_evaluator(model, videos, tmp_path):
    """`clip_config.test_crops=3` at export: `classify_video` averages the evaluator's 4 clips x 3 crops, the
    export records it, and the predictor follows the export (another crop count is refused by name)."""
    import dataclasses

    from keras_r21d.inference import load_predictor

    config = dataclasses.replace(CONFIG, test_crops=3)
    report = export_saved_model(model, str(tmp_path / "serving"), class_names=CLASSES, clip_config=config)
    assert report["clip_config"]["test_crops"] == 3
    dataset = VideoDataset("one", [videos["long"]], [0], CLASSES)
    evaluate_model(model, dataset, config, batch_size=4, out_dir=str(tmp_path / "eval"))
    saved = np.load(tmp_path / "eval" / "clip_predictions.npz")
    served = tf.saved_model.load(report["path"]).signatures["classify_video"](
        frames=tf.constant(read_video(videos["long"])))
    assert served["clip_probabilities"].shape == (12, len(CLASSES))
    assert np.abs(served["clip_probabilities"].numpy() - saved["probabilities"]).max() <= 1e-5
    assert np.abs(served["probabilities"].numpy() - saved["probabilities"].mean(0)).max() <= 1e-5
    predictor = load_predictor(report["path"])
    assert predictor.config.test_crops == 3
    np.testing.assert_allclose(predictor.classify(videos["long"])["probabilities"], saved["probabilities"].mean(0),
                               atol=1e-5)
    with pytest.raises(ValueError, match="3 crop"):
        load_predictor(report["path"], crops=1)


def test_extract_features_are_the_pooled_backbone(model, loaded):
    clips = _clips(2, seed=3)
    expected = feature_model(model)(clips, training=False).numpy()
    served = loaded.signatures["extract_features"](clips=tf.constant(clips))["features"].numpy()
    assert served.shape == (2, 128)
    assert np.abs(served - expected).max() <= 1e-4


def test_bad_inputs_give_clear_errors(model, loaded, tmp_path):
    classify = loaded.signatures["classify_video"]
    cases = [
        (np.zeros((0, 32, 32, 3), np.uint8), "the video has no frames"),
        (np.zeros((4, 32, 32, 4), np.uint8), r"not compatible with expected shape \[\?,\?,\?,3\]"),
        (np.zeros((32, 32, 3), np.uint8), r"not compatible with expected shape \[\?,\?,\?,3\]"),
        (np.zeros((4, 0, 32, 3), np.uint8), "the frames have no pixels"),
    ]
    for frames, message in cases:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            classify(frames=tf.constant(frames))
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a uint8 tensor but is a float tensor"):
        classify(frames=tf.constant(np.zeros((4, 32, 32, 3), np.float32)))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"not compatible with expected shape"):
        loaded.signatures["serving_default"](clips=tf.constant(np.zeros((1, 8, 48, 48, 4), np.float32)))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"not compatible with expected shape"):
        loaded.signatures["extract_features"](clips=tf.constant(np.zeros((8, 48, 48, 3), np.float32)))
    # A video larger than the export's limit is refused in the graph.
    small = export_saved_model(model, str(tmp_path / "small"), clip_config=CONFIG, max_video_pixels=10 * 32 * 32,
                               check=False)
    limited = tf.saved_model.load(small["path"]).signatures["classify_video"]
    limited(frames=tf.constant(np.zeros((10, 32, 32, 3), np.uint8)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="larger than the limit of 10240 pixels"):
        limited(frames=tf.constant(np.zeros((11, 32, 32, 3), np.uint8)))


def test_export_rejects_bad_arguments(model, tmp_path):
    with pytest.raises(ValueError, match="3 class names for a model with 4 classes"):
        export_saved_model(model, str(tmp_path / "a"), class_names=CLASSES[:3], clip_config=CONFIG)
    with pytest.raises(ValueError, match="single lines"):
        export_saved_model(model, str(tmp_path / "a"), class_names=["a", "b\nc", "d", "e"], clip_config=CONFIG)
    with pytest.raises(ValueError, match="quantization"):
        export_tflite(model, str(tmp_path / "m.tflite"), quantization="int4", clip_config=CONFIG)
    with pytest.raises(ValueError, match="representative_data"):
        export_tflite(model, str(tmp_path / "m.tflite"), quantization="int8", clip_config=CONFIG)


# -- TFLite ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tflite_r21d(model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tflite") / "r21d.tflite")
    return path, export_tflite(model, path, clip_config=CONFIG, class_names=CLASSES, check_data=_clips(3))


def test_tflite_r21d_has_no_conv3d_and_no_flex_op(tflite_r21d):
    path, report = tflite_r21d
    ops = tflite_ops(path)
    assert ops == report["ops"]
    assert "CONV_2D" in ops and ops["CONV_2D"] >= 20
    assert "CONV_3D" not in ops and not report["has_conv3d"]
    assert not [name for name in ops if name.startswith("Flex") or name == "CUSTOM"]
    assert report["input_shape"] == [1, 8, 48, 48, 3] and report["notes"] == []
    assert os.path.isfile(path + ".json")


def test_litert_interpreter_reproduces_keras(model, tflite_r21d):
    path, report = tflite_r21d
    clips = _clips(3, seed=5)
    expected = probabilities_fn(model)(clips).numpy()
    for delegates in (True, False):  # with XNNPACK and with the plain builtin kernels
        served = run_tflite(interpreter(path, delegates=delegates), clips)
        assert np.abs(served - expected).max() <= 1e-4
    assert report["max_abs_diff"] <= 1e-4 and report["top1_agreement"] == 1.0


def test_tflite_folds_batchnorm_into_the_convolutions(model, tflite_r21d, tmp_path):
    folded = tflite_r21d[1]
    kept = export_tflite(model, str(tmp_path / "kept.tflite"), clip_config=CONFIG, check_data=_clips(3),
                         fold_batchnorm=False)
    assert folded["batchnorm_folded"] and not kept["batchnorm_folded"]
    # Each BatchNorm after a reshaped 2D convolution stays a MUL and an ADD unless folded; folded, the
    # only ADDs left are the residual sums (4 blocks at depth 10) and no MUL is left at all.
    assert kept["ops"].get("MUL", 0) >= 20 and kept["ops"].get("ADD", 0) >= 20
    assert "MUL" not in folded["ops"] and folded["ops"].get("ADD", 0) == 4
    assert folded["ops"]["CONV_2D"] == kept["ops"]["CONV_2D"]
    # Both are the Keras model's function (the check compares with the unfolded model).
    assert folded["max_abs_diff"] <= 1e-4 and kept["max_abs_diff"] <= 1e-4


def test_a_mixed_precision_model_exports_its_float32_network(tmp_path):
    """Trained under `mixed_bfloat16`, exported as the float32 network on the same weights (TFLite, SavedModel)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = _model()
    finally:
        keras.config.set_dtype_policy(previous)
    reference = _model()  # float32
    reference.set_weights(mixed.get_weights())
    clips = _clips(2, seed=7)
    expected = probabilities_fn(reference)(clips).numpy()
    # bfloat16 is not float32: compared on the pooled features, which a saturated softmax cannot hide (random
    # weights can put a class at probability 1 - 1e-10 in both, whichever the test order leaves the seed at).
    features = [np.asarray(feature_model(model)(clips, training=False), "float32") for model in (mixed, reference)]
    assert np.abs(features[0] - features[1]).max() > 1e-3 * np.abs(features[1]).max()

    path = str(tmp_path / "mixed.tflite")
    report = export_tflite(mixed, path, clip_config=CONFIG, check_data=clips)
    assert report["max_abs_diff"] <= 1e-4
    assert np.abs(run_tflite(interpreter(path), clips) - expected).max() <= 1e-4
    types = {np.dtype(t["dtype"]).name for t in interpreter(path).get_tensor_details()}
    assert "float32" in types and not types & {"float16", "bfloat16"}, types

    saved = export_saved_model(mixed, str(tmp_path / "serving"), class_names=CLASSES, clip_config=CONFIG)
    assert saved["max_abs_diff"] <= 1e-4
    served = tf.saved_model.load(saved["path"]).signatures["serving_default"](clips=tf.constant(clips))
    assert np.abs(served["probabilities"].numpy() - expected).max() <= 1e-4


def test_tflite_r3d_lowering(tmp_path):
    r3d = _model("r3d")
    two_d = export_tflite(r3d, str(tmp_path / "r3d.tflite"), clip_config=CONFIG)
    assert "CONV_3D" not in two_d["ops"] and "CONCATENATION" in two_d["ops"]
    three_d = export_tflite(r3d, str(tmp_path / "r3d_3d.tflite"), clip_config=CONFIG, implementation="auto")
    assert three_d["has_conv3d"] and "CONV_3D" in three_d["notes"][0]
    assert two_d["max_abs_diff"] <= 1e-4 and three_d["max_abs_diff"] <= 1e-4


def test_tflite_auto_keeps_temporal_kernels_2d_where_tensorflow_runs_them_as_conv3d(model, tmp_path, monkeypatch):
    """With oneDNN, TensorFlow's inference runs `"auto"` temporal kernels as `Conv3D`; TFLite has no oneDNN, so an
    `"auto"` export of R(2+1)D still has no `CONV_3D` (and the flag is back after the export)."""
    from keras_r21d.layers import video_conv

    monkeypatch.setattr(video_conv, "TEMPORAL_CONV3D", True)
    temporal = [layer for layer in model._flatten_layers() if isinstance(layer, keras_r21d.layers.VideoConv)
                and layer.kernel_size[1:] == (1, 1) and layer.kernel_size[0] > 1]
    assert temporal and all(layer.lowering == "conv3d" for layer in temporal)
    report = export_tflite(model, str(tmp_path / "auto.tflite"), clip_config=CONFIG, implementation="auto",
                           check_data=_clips(2))
    assert "CONV_3D" not in report["ops"] and report["ops"]["CONV_2D"] >= 20 and report["max_abs_diff"] <= 1e-4
    assert video_conv.TEMPORAL_CONV3D is True


def _weight_dtypes(path):
    """The dtypes of the 4-D tensors of a .tflite file (convolution kernels and the activations between the
    reshaped 2D convolutions), with their counts."""
    counts = {}
    for tensor in interpreter(path, delegates=False).get_tensor_details():
        if len(tensor["shape"]) == 4:
            name = np.dtype(tensor["dtype"]).name
            counts[name] = counts.get(name, 0) + 1
    return counts


def test_tflite_quantized_exports_run(model, tflite_r21d, tmp_path):
    data = _clips(8, seed=7)
    expected = probabilities_fn(model)(data).numpy()
    sizes = {"float32": tflite_r21d[1]["size_bytes"]}
    weights = {"float32": _weight_dtypes(tflite_r21d[0])}
    for quantization in ("int8", "float16", "dynamic"):
        path = str(tmp_path / f"{quantization}.tflite")
        report = export_tflite(model, path, quantization=quantization, representative_data=data, clip_config=CONFIG)
        assert report["quantization"] == quantization and "CONV_3D" not in report["ops"]
        assert report["checked_clips"] == 8
        served = run_tflite(interpreter(path), data)
        assert served.shape == expected.shape and np.allclose(served.sum(axis=1), 1.0, atol=1e-2)
        assert report["top1_agreement"] == float((served.argmax(1) == expected.argmax(1)).mean())
        assert report["max_abs_diff"] == pytest.approx(float(np.abs(served - expected).max()), abs=1e-6)
        assert np.abs(served - expected).max() < 0.1
        sizes[quantization] = os.path.getsize(path)
        weights[quantization] = _weight_dtypes(path)
    ops = {name: tflite_ops(str(tmp_path / f"{name}.tflite")) for name in ("int8", "dynamic")}
    # int8: activations too (QUANTIZE at the float input); dynamic range: int8 kernels, float activations.
    assert "QUANTIZE" in ops["int8"] and "QUANTIZE" not in ops["dynamic"]
    assert set(weights["float32"]) == {"float32"}
    assert weights["int8"].get("int8", 0) >= 20 and "float32" not in weights["int8"]
    assert weights["dynamic"].get("int8", 0) >= 20 and weights["dynamic"].get("float32", 0) >= 20
    assert weights["float16"].get("float16", 0) >= 20
    assert sizes["int8"] < 0.35 * sizes["float32"] and sizes["dynamic"] < 0.35 * sizes["float32"]
    assert sizes["float16"] < 0.6 * sizes["float32"]


def _broken_fold(monkeypatch):
    """Makes the exported (folded) function differ from the Keras model: a kernel scaled as a bad fold would."""
    from keras_r21d.export import graph

    fold = graph.folded

    def broken(model):
        folded = fold(model)
        kernel = next(v for v in folded.weights if v.path.endswith("kernel") and "predictions" in v.path)
        kernel.assign(kernel * 3.0)
        return folded

    monkeypatch.setattr(graph, "folded", broken)


def test_an_export_beyond_the_tolerance_is_an_export_error_and_writes_nothing(model, tmp_path, monkeypatch):
    from keras_r21d.export import ExportError

    _broken_fold(monkeypatch)
    path = tmp_path / "bad.tflite"
    with pytest.raises(ExportError, match=r"TFLite outputs differ from Keras' by .* \(tolerance 0.0001\)"):
        export_tflite(model, str(path), clip_config=CONFIG, check_data=_clips(3))
    assert not path.exists() and not (tmp_path / "bad.tflite.json").exists()
    base = tmp_path / "serving"
    with pytest.raises(ExportError, match=r"SavedModel outputs differ from Keras' by .* \(tolerance 0.0001\)"):
        export_saved_model(model, str(base), class_names=CLASSES, clip_config=CONFIG)
    assert os.listdir(base) == []  # no version directory, no staging left behind


# -- the serving client ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rest_format", ["inputs", "instances"])
def test_rest_client_against_the_standin(exported, loaded, videos, rest_format):
    frames = read_video(videos["long"])
    clips = _clips(2, seed=9)
    expected = loaded.signatures["serving_default"](clips=tf.constant(clips))
    expected_video = loaded.signatures["classify_video"](frames=tf.constant(frames))
    with RestStandIn(exported[1]["path"], "r21d") as server:
        client = Client(server.url, model_name="r21d", rest_format=rest_format, max_message_bytes=64 << 20)
        answer = client.predict(clips)
        np.testing.assert_allclose(answer["probabilities"], expected["probabilities"].numpy(), atol=1e-6)
        assert answer["top_k_classes"].tolist() == expected["top_k_classes"].numpy().astype(str).tolist()
        video = client.classify_video(frames)
        np.testing.assert_allclose(video["probabilities"], expected_video["probabilities"].numpy(), atol=1e-6)
        assert video["top_k_classes"].tolist() == expected_video["top_k_classes"].numpy().astype(str).tolist()
        features = client.extract_features(clips)["features"]
        assert features.shape == (2, 128)
        pinned = Client(server.url, model_name="r21d", version=1, rest_format=rest_format)
        np.testing.assert_allclose(pinned.predict(clips)["probabilities"], answer["probabilities"])
        with pytest.raises(ServingError, match="HTTP 404"):
            Client(server.url, model_name="other").predict(clips)
        message = r"HTTP 400: Shape of tensor frames \[2,8,8,4\] is not compatible with expected shape \[\?,\?,\?,3\]"
        with pytest.raises(ServingError, match=message):
            client.call("classify_video", np.zeros((2, 8, 8, 4), np.uint8))


def test_rest_client_retries_unavailable_then_gives_up(exported):
    clips = _clips(1)
    with RestStandIn(exported[1]["path"], "r21d") as server:
        server.model.unavailable = 2
        client = Client(server.url, model_name="r21d", retries=3, backoff=0.01)
        assert client.predict(clips)["probabilities"].shape == (1, 4)
        assert server.model.requests == 3
        server.model.unavailable = 10
        with pytest.raises(Unavailable, match="after 2 attempts"):
            Client(server.url, model_name="r21d", retries=1, backoff=0.01).predict(clips)
    start = time.monotonic()
    with pytest.raises(Unavailable, match="after 3 attempts"):
        Client(f"http://127.0.0.1:{free_port()}", retries=2, backoff=0.05, timeout=2).predict(clips)
    assert time.monotonic() - start < 10


class StallingServer:
    """Accepts TCP connections on 127.0.0.1 and never answers (a hung server or proxy); counts connections."""

    def __init__(self):
        import socket
        import threading

        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.connections = []
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self):
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.connections.append(connection)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.socket.close()
        for connection in self.connections:
            connection.close()


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_client_times_out_on_a_server_that_accepts_and_stalls(protocol):
    clips = _clips(1)
    with StallingServer() as server:
        target = f"http://127.0.0.1:{server.port}" if protocol == "rest" else f"127.0.0.1:{server.port}"
        with Client(target, model_name="r21d", timeout=1.5, retries=3, backoff=0.01) as client:
            with pytest.raises(ServingError, match=rf"serving_default: no answer from {target} within 1.5 s") as info:
                client.predict(clips)
        # A server that answers nothing in time is not "unavailable": the call is not retried.
        assert not isinstance(info.value, Unavailable)
        assert len(server.connections) == 1


def test_rest_client_refuses_a_request_above_its_size_limit_before_sending(exported):
    long_video = np.zeros((16, 120, 160, 3), np.uint8)  # 0.9 M values: about 1.8 MiB of JSON
    with RestStandIn(exported[1]["path"], "r21d") as server:
        client = Client(server.url, model_name="r21d", max_message_bytes=1 << 20)
        with pytest.raises(ServingError, match=r"the classify_video request is .* MiB, above max_message_bytes="
                                               r"1048576 .*resize=\(128, 171\)"):
            client.classify_video(long_video)
        with pytest.raises(ServingError, match=r"the serving_default request is .* Send fewer clips"):
            client.predict(_clips(4))
        assert server.model.requests == 0  # nothing was sent
        assert client.classify_video(long_video[:20], resize=(48, 64))["probabilities"].shape == (4,)
        assert server.model.requests == 1


def test_grpc_client_against_the_standin(exported, loaded, videos):
    frames = read_video(videos["long"])
    clips = _clips(2, seed=11)
    expected = loaded.signatures["serving_default"](clips=tf.constant(clips))
    expected_video = loaded.signatures["classify_video"](frames=tf.constant(frames))
    with GrpcStandIn(exported[1]["path"], "r21d") as server:
        with Client(server.target, model_name="r21d") as client:
            answer = client.predict(clips)
            np.testing.assert_allclose(answer["probabilities"], expected["probabilities"].numpy(), atol=1e-6)
            assert answer["top_k_classes"].tolist() == expected["top_k_classes"].numpy().astype(str).tolist()
            video = client.classify_video(frames)
            np.testing.assert_allclose(video["probabilities"], expected_video["probabilities"].numpy(), atol=1e-6)
            assert client.extract_features(clips)["features"].shape == (2, 128)
            with pytest.raises(ServingError, match="INVALID_ARGUMENT.*the video has no frames"):
                client.classify_video(np.zeros((0, 8, 8, 3), np.uint8))
            server.model.unavailable = 1
            assert client.predict(clips)["probabilities"].shape == (2, 4)
        # A long video over gRPC's default 4 MiB is refused before sending, with the ways out.
        long_video = np.zeros((300, 240, 320, 3), np.uint8)
        with Client(server.target, model_name="r21d") as client:
            with pytest.raises(ServingError, match=r"65\.9 MiB, above max_message_bytes.*resize=\(128, 171\)"):
                client.classify_video(long_video)
            small = client.classify_video(long_video[:60], resize=(48, 64))
            assert small["probabilities"].shape == (4,)
        # If the client allows more than the server, the server's refusal is explained too.
        with Client(server.target, model_name="r21d", max_message_bytes=64 << 20) as client:
            with pytest.raises(ServingError, match="message too large"):
                client.classify_video(long_video[:100])
    with pytest.raises(Unavailable, match="after 2 attempts"):
        Client(f"127.0.0.1:{free_port()}", retries=1, backoff=0.01, timeout=2).predict(clips)


def test_client_messages_are_wire_compatible_with_tensorflow_serving_api():
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    from keras_r21d.serving import protos

    ours = protos.PredictionLog()
    request = ours.predict_log.request
    request.model_spec.name = "m"
    request.model_spec.signature_name = "classify_video"
    request.model_spec.version.value = 7
    request.inputs["frames"].CopyFrom(tf.make_tensor_proto(np.arange(24, dtype=np.uint8).reshape(1, 2, 4, 3)))
    request.output_filter.append("probabilities")
    official = prediction_log_pb2.PredictionLog.FromString(ours.SerializeToString())
    assert official.predict_log.request.model_spec.version.value == 7
    assert official.SerializeToString() == ours.SerializeToString()
    response = predict_pb2.PredictResponse()
    response.outputs["scores"].CopyFrom(tf.make_tensor_proto(np.ones((2,), np.float32)))
    response.model_spec.name = "m"
    mine = protos.PredictResponse.FromString(response.SerializeToString())
    assert tf.make_ndarray(mine.outputs["scores"]).tolist() == [1.0, 1.0] and mine.model_spec.name == "m"


@pytest.mark.skipif(shutil.which("tensorflow_model_server") is None,
                    reason="tensorflow_model_server is not on the PATH (TF Serving ships as a Docker image, "
                           "Google's apt repository or a Bazel build)")
def test_live_tf_serving(exported, tmp_path):
    base = os.path.dirname(exported[1]["path"])
    grpc_port, rest_port = free_port(), free_port()
    server = subprocess.Popen(["tensorflow_model_server", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                               "--model_name=r21d", f"--model_base_path={base}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        clips = _clips(1)
        for target in (f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{rest_port}"):
            client = Client(target, model_name="r21d", retries=20, backoff=0.5)
            assert client.predict(clips)["probabilities"].shape == (1, 4)
    finally:
        server.kill()
        server.wait(30)


# -- the command line ------------------------------------------------------------------------------------


def _cli(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "keras_r21d", *args], capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A training run's directory as `keras-r21d train` leaves it: the model and its `run.json`."""
    import json

    folder = tmp_path_factory.mktemp("run")
    _model().save(folder / "model.keras")
    record = {"config": {"frames": 8, "size": 48, "frame_stride": 2, "resize_to": [48, 64]}, "class_names": CLASSES}
    (folder / "run.json").write_text(json.dumps(record))
    return folder


@pytest.mark.slow
def test_cli_export_then_predict_with_every_format(run_dir, videos, tmp_path):
    import json

    model = str(run_dir / "model.keras")
    out = _cli("export", "--model", model, "--out", str(tmp_path / "serving"), "--clips", "4", "--json")
    saved = json.loads(out.stdout)
    assert saved["version"] == 1 and saved["class_names"] == CLASSES and saved["clip_config"]["frame_stride"] == 2
    out = _cli("export", "--model", model, "--format", "tflite", "--out", str(tmp_path / "m.tflite"),
               "--clips", "4")
    assert "ops: " in out.stdout and "CONV_3D" not in out.stdout and "max |TFLite - Keras|" in out.stdout
    answers = {}
    for form in (model, str(tmp_path / "serving"), str(tmp_path / "m.tflite")):
        out = _cli("predict", "--model", form, videos["long"], videos["short"], "--clips", "4", "--json")
        answers[form] = json.loads(out.stdout)
    reference = answers.pop(model)
    assert [len(r["top"]) for r in reference] == [4, 4]
    assert {e["class"] for e in reference[0]["top"]} == set(CLASSES)
    for answer in answers.values():
        for mine, theirs in zip(answer, reference):
            assert [e["class"] for e in mine["top"]] == [e["class"] for e in theirs["top"]]
            assert max(abs(a["score"] - b["score"]) for a, b in zip(mine["top"], theirs["top"])) <= 1e-4
    text = _cli("predict", "--model", model, videos["long"]).stdout
    assert text.splitlines()[0] == videos["long"] and reference[0]["top"][0]["class"] in text.splitlines()[1]


@pytest.mark.slow
def test_cli_predict_reports_a_bad_video_and_a_bad_model(run_dir, videos, tmp_path):
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"not a video" * 100)
    result = _cli("predict", "--model", str(run_dir / "model.keras"), str(bad), videos["short"], check=False)
    assert result.returncode == 1
    assert f"skipped {bad}" in result.stderr and videos["short"] in result.stdout
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"PK not a zip")
    result = _cli("predict", "--model", str(junk), videos["short"], check=False)
    assert result.returncode == 2 and f"{junk}: not a .keras file" in result.stderr
    result = _cli("export", "--model", str(run_dir / "model.keras"), "--format", "tflite",
                  "--out", str(tmp_path / "x.tflite"), "--quantization", "int8", check=False)
    assert result.returncode == 2 and "needs --calibration-data" in result.stderr


@pytest.mark.slow
def test_cli_predict_refuses_videos_above_the_pixel_limit(run_dir, videos, tmp_path):
    import json

    model = str(run_dir / "model.keras")
    # .keras / .tflite decode the test clips' frames: 4 clips x 8 frames of 80x60 (long) = 153,600 pixels,
    # of 64x48 (short) = 98,304.
    result = _cli("predict", "--model", model, videos["long"], videos["short"], "--clips", "4",
                  "--max-pixels", "100000", "--json", check=False)
    assert result.returncode == 1
    assert f"skipped {videos['long']}: 32 clip frames (28 distinct frames of the video) of 80x60 exceed the " \
        "limit of 100000 pixels" in result.stderr
    answers = json.loads(result.stdout)
    assert "error" in answers[0] and answers[1]["top"]
    # A SavedModel's predictor decodes the same test clips (not the whole video), under the same limit.
    _cli("export", "--model", model, "--out", str(tmp_path / "serving"), "--clips", "4")
    result = _cli("predict", "--model", str(tmp_path / "serving"), videos["long"], videos["short"],
                  "--max-pixels", "100000", check=False)
    assert result.returncode == 1
    assert "32 clip frames (28 distinct frames of the video) of 80x60 exceed the limit of 100000 pixels" \
        in result.stderr
    assert videos["short"] in result.stdout


def test_cli_int8_export_calibrates_on_videos(run_dir, videos, tmp_path):
    root = tmp_path / "data"
    for name, path in videos.items():
        os.makedirs(root / name)
        shutil.copy(path, root / name / "v.avi")
    out = _cli("export", "--model", str(run_dir / "model.keras"), "--format", "tflite", "--quantization", "int8",
               "--calibration-data", f"folder:{root}", "--out", str(tmp_path / "q.tflite"), "--json")
    import json

    report = json.loads(out.stdout)
    assert report["quantization"] == "int8" and report["checked_clips"] == 20  # 2 videos x 10 clips
    assert "CONV_3D" not in report["ops"]


def test_cli_extract_writes_features_per_video(run_dir, videos, tmp_path):
    root = tmp_path / "data"
    for name, path in videos.items():
        os.makedirs(root / name)
        shutil.copy(path, root / name / "v.avi")
    (root / "short" / "broken.avi").write_bytes(b"\0" * 500)
    out = _cli("extract", "--model", str(run_dir / "model.keras"), "--data", f"folder:{root}",
               "--out", str(tmp_path / "features"))
    assert "2 feature files" in out.stdout and "1 videos skipped" in out.stdout
    features = np.load(tmp_path / "features" / "long" / "v.avi.npy")
    assert features.shape == (10, 128) and features.dtype == np.float32
    assert (tmp_path / "features" / "short" / "v.avi.npy").is_file()
    assert not (tmp_path / "features" / "short" / "broken.avi.npy").exists()
