"""SavedModel export in TF Serving's layout, with the preprocessing in the graph.

`BASE_DIR/VERSION/` holds `saved_model.pb`, `variables/`, `assets/class_names.txt`
(read by the graph through a lookup table), `assets.extra/tf_serving_warmup_requests`
(`PredictionLog` records TF Serving replays before serving) and
`assets.extra/keras_r21d.json` (class names, preprocessing, parity).

Signatures:

- `serving_default`: `clips` float32 `(N, T, H, W, 3)`, already normalized ->
  `probabilities (N, C)`, `top_k_indices (N, k)`, `top_k_classes (N, k)`
  (strings), `top_k_scores (N, k)`.
- `classify_video`: `frames` uint8 `(F, H, W, 3)`, one whole video of any
  length and size -> the same outputs for the video (`probabilities (C,)`,
  ...) plus `clip_probabilities (N, C)`: the evaluator's protocol in the graph.
- `extract_features`: `clips` as for `serving_default` -> `features (N, D)`,
  the backbone's pooled features.
"""

import json
import os
import shutil
import tempfile

import keras
import numpy as np

from keras_r21d._tensorflow import tf
from keras_r21d.errors import ExportError  # noqa: F401 - raised here, exported from here too
from keras_r21d.export import graph
from keras_r21d.training.io import TMP_PREFIX

SIGNATURES = ("serving_default", "classify_video", "extract_features")
CLASS_NAMES_FILE = "class_names.txt"
WARMUP_FILE = "tf_serving_warmup_requests"
METADATA_FILE = "keras_r21d.json"


def check_class_names(class_names, num_classes):
    """The class names as strings (default `class_0`, ...): one per class, each a non-empty single line."""
    if class_names is None:
        return [f"class_{i}" for i in range(num_classes)]
    class_names = [str(name) for name in class_names]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for a model with {num_classes} classes")
    for name in class_names:
        if not name or "\n" in name or "\r" in name:
            raise ValueError(f"class names must be non-empty single lines. Received: {name!r}")
    return class_names


def _next_version(base_dir):
    versions = [int(name) for name in os.listdir(base_dir) if name.isdecimal()] if os.path.isdir(base_dir) else []
    return max(versions, default=0) + 1


def _serving_fns(model, config, class_names, top_k, max_pixels, source):
    """The three signature functions and the lookup table they need (`model`: `source`'s serving copy)."""
    probabilities = graph.probabilities_fn(model)
    shape = model.input_shape[1:]
    features = graph.feature_model(model, graph.pooling_layer_name(source))
    table = _class_table(class_names)

    def top(probs):
        scores, indices = tf.math.top_k(probs, k=top_k)
        return {
            "probabilities": probs,
            "top_k_indices": indices,
            "top_k_classes": table.lookup(tf.cast(indices, tf.int64)),
            "top_k_scores": scores,
        }

    def serve(clips):
        return top(probabilities(graph.checked_clips(clips, shape, "serving_default")))

    def classify_video(frames):
        clip_probs = probabilities(graph.video_clips(frames, config, max_pixels))
        outputs = top(tf.reduce_mean(clip_probs, axis=0))
        outputs["clip_probabilities"] = clip_probs
        return outputs

    def extract(clips):
        clips = graph.checked_clips(clips, shape, "extract_features")
        return {"features": tf.cast(features(clips, training=False), tf.float32)}

    return serve, classify_video, extract, table


def _class_table(class_names):
    # Written to a temporary file that `tf.saved_model.save` copies into `assets/`;
    # the table reads it from there when the SavedModel is loaded.
    folder = tempfile.mkdtemp(prefix="keras_r21d_classes_")
    path = os.path.join(folder, CLASS_NAMES_FILE)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(class_names) + "\n")
    initializer = tf.lookup.TextFileInitializer(
        path, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE
    )
    table = tf.lookup.StaticHashTable(initializer, default_value="")
    table._keras_r21d_tmp = folder  # removed after the export is written
    return table


def clip_spec(model, clip_len):
    """The `(None, T, H, W, 3)` float32 spec of the model's clips (T from the model, else `clip_len`)."""
    shape = list(model.input_shape[1:])  # None where the model takes any length or size (all but R2D)
    return tf.TensorSpec([None, *shape], tf.float32, name="clips")


def _warmup_records(model_name, config, num_clips=1):
    """`PredictionLog` records for both input signatures (zeros of the expected sizes)."""
    from keras_r21d.serving import protos

    height, width = config.resize if not isinstance(config.resize, int) else (config.resize, config.resize)
    inputs = {
        "serving_default": ("clips", np.zeros((num_clips, config.clip_len, config.crop, config.crop, 3), np.float32)),
        "classify_video": ("frames", np.zeros((config.clip_len, height, width, 3), np.uint8)),
    }
    records = []
    for signature, (key, value) in inputs.items():
        log = protos.PredictionLog()
        request = log.predict_log.request
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
        records.append(log.SerializeToString())
    return records


def read_warmup_records(path):
    """The `PredictionLog` messages of a warm-up file."""
    from keras_r21d.serving import protos

    return [protos.PredictionLog.FromString(record.numpy()) for record in tf.data.TFRecordDataset(path)]


def export_saved_model(model, export_dir, version=None, class_names=None, clip_config=None, top_k=5,
                       max_video_pixels=graph.MAX_VIDEO_PIXELS, model_name="model", check=True, overwrite=False,
                       fold_batchnorm=True):
    """Exports a model as a SavedModel for TF Serving, with raw-video and feature signatures.

    Args:
        model: a `keras_r21d` classification model (softmax or logits output).
        export_dir: the base directory TF Serving watches (`--model_base_path`);
            the export goes to `export_dir/VERSION/`.
        version: integer version; default one more than the highest present.
        class_names: one name per class (default `class_0`, ...).
        clip_config: the `ClipConfig` of `classify_video` (clip length, stride,
            clips per video, resize, crop, normalization); default: the
            evaluator's for this model (`training.evaluation.test_clip_config`).
        top_k: how many classes the `top_k_*` outputs hold (at most the class count).
        max_video_pixels: `classify_video` rejects larger videos (frames x height x width).
        model_name: the model name written into the warm-up requests
            (TF Serving's `--model_name`).
        check: reload the export and compare it with the Keras model
            (max abs difference of probabilities at most 1e-4, else `ExportError`).
        overwrite: replace an existing version directory.
        fold_batchnorm: export `keras_r21d.fold_batchnorm(model)`, the same
            function with every BatchNorm folded into its convolution (faster;
            the check still compares with `model` itself).

    Returns:
        A report dict: `path`, `version`, `signatures`, `max_abs_diff`, ...
    """
    from keras_r21d.training.evaluation import test_clip_config

    config = clip_config or test_clip_config(model)
    num_classes = int(model.output_shape[-1])
    class_names = check_class_names(class_names, num_classes)
    top_k = max(1, min(int(top_k), num_classes))
    os.makedirs(export_dir, exist_ok=True)
    version = _next_version(export_dir) if version is None else int(version)
    if version < 0:
        raise ValueError(f"`version` must be a non-negative integer. Received: {version}")
    final = os.path.join(export_dir, str(version))
    if os.path.exists(final) and not overwrite:
        raise ValueError(f"{final} already exists: pick another version or pass overwrite=True (--overwrite)")

    exported = graph.folded(model) if fold_batchnorm else graph.as_float32(model)
    serve, classify_video, extract, table = _serving_fns(exported, config, class_names, top_k, max_video_pixels, model)
    staging = None
    try:
        clips = clip_spec(model, config.clip_len)
        archive = keras.export.ExportArchive()
        archive.track(exported)
        archive.track(table)
        archive.add_endpoint("serving_default", serve, input_signature=[clips])
        archive.add_endpoint("classify_video", classify_video,
                             input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="frames")])
        archive.add_endpoint("extract_features", extract, input_signature=[clips])
        staging = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{version}-", dir=export_dir)
        archive.write_out(staging, verbose=False)
        extra = os.path.join(staging, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        with tf.io.TFRecordWriter(os.path.join(extra, WARMUP_FILE)) as writer:
            for record in _warmup_records(model_name, config):
                writer.write(record)
        report = {
            "path": os.path.abspath(final),
            "version": version,
            "signatures": list(SIGNATURES),
            "class_names": class_names,
            "top_k": top_k,
            "clip_config": _config_dict(config),
            "max_video_pixels": int(max_video_pixels),
            "input_shape": list(clips.shape),
            "batchnorm_folded": exported is not model,
        }
        if check:
            report["max_abs_diff"] = _check_saved_model(model, staging, config)
        with open(os.path.join(extra, METADATA_FILE), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        if os.path.exists(final):
            shutil.rmtree(final)
        # TF Serving picks up a version directory as soon as it appears: it must appear complete.
        os.replace(staging, final)
    finally:
        if staging:
            shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(table._keras_r21d_tmp, ignore_errors=True)
    return report


def _config_dict(config):
    import dataclasses

    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(config).items()}


def _check_saved_model(model, path, config, tolerance=1e-4):
    """Max abs difference of `serving_default` probabilities from Keras' (the float32 network's) on random clips."""
    loaded = tf.saved_model.load(path)
    clips = np.random.default_rng(0).normal(size=(2, *check_clip_shape(model, config))).astype("float32")
    expected = graph.probabilities_fn(graph.as_float32(model))(tf.constant(clips)).numpy()
    served = loaded.signatures["serving_default"](clips=tf.constant(clips))["probabilities"].numpy()
    diff = float(np.abs(served - expected).max())
    if not diff <= tolerance:
        raise ExportError(f"SavedModel outputs differ from Keras' by {diff:.3g} (tolerance {tolerance})")
    return diff


def check_clip_shape(model, config):
    """`(T, H, W, 3)` of the clips the parity checks use: the model's shape, else the clip config's."""
    shape = model.input_shape[1:]
    return (shape[0] or config.clip_len, shape[1] or config.crop, shape[2] or config.crop, 3)


def load_metadata(path):
    """The `assets.extra/keras_r21d.json` of an export (a version directory), or `{}`."""
    metadata = os.path.join(path, "assets.extra", METADATA_FILE)
    if not os.path.isfile(metadata):
        return {}
    with open(metadata, encoding="utf-8") as f:
        return json.load(f)
