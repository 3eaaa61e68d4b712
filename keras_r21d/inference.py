"""Prediction and feature extraction from any saved form: `.keras`, SavedModel, `.tflite`.

`load_predictor(path)` picks the backend from the path. Every backend gives
the evaluator's video-level answer: `test_clips` uniformly spaced clips,
center-cropped, softmax averaged. Every backend decodes only the frames those
clips need, shrunk to the pre-crop size as they are decoded, so memory
follows the clip geometry, not the video's resolution or length; a
SavedModel then runs its `serving_default` signature on the clips (its
`classify_video` signature, which takes a whole decoded video, is for TF
Serving clients).
"""

import dataclasses
import functools
import os

import numpy as np

from keras_r21d._tensorflow import tf
from keras_r21d.data import transforms
from keras_r21d.data.pipeline import ClipConfig, read_test_clips
from keras_r21d.data.video import MAX_DECODE_PIXELS
from keras_r21d.training.backend import model_function


def _clip_config(values, clips=None, crops=None):
    """A `ClipConfig` from an export's recorded dict (tuples restored; `test_crops` 1 where an older export has
    none)."""
    values = dict(values)
    for key in ("resize", "mean", "std", "scale_jitter", "decode_size"):
        if isinstance(values.get(key), list):
            values[key] = tuple(values[key])
    if clips:
        values["test_clips"] = int(clips)
    if crops:
        values["test_crops"] = int(crops)
    return ClipConfig(**values)


def _top(probabilities, class_names, k):
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [{"class": class_names[i], "index": int(i), "score": float(probabilities[i])} for i in order]


def _saved_model_dir(path):
    """A SavedModel directory, or the highest numbered version under a TF Serving base directory."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = sorted((int(n) for n in os.listdir(path) if n.isdecimal()), reverse=True) if os.path.isdir(path) else []
    for version in versions:
        candidate = os.path.join(path, str(version))
        if os.path.isfile(os.path.join(candidate, "saved_model.pb")):
            return candidate
    raise ValueError(f"{path}: not a SavedModel directory (no saved_model.pb, no numbered version inside)")


# Test clips per forward pass: a video's 10 clips at once would hold 10 clips' activations (about 0.5 GB for
# R(2+1)D-18 at 16x112x112); 2 at a time is as fast per clip on a CPU (BENCHMARKS.md: batch 1 vs 8).
CLIP_BATCH = 2


def _batched(function, clips, batch=CLIP_BATCH):
    """`function` over `clips` in chunks of `batch`, outputs concatenated (NumPy)."""
    return np.concatenate([np.asarray(function(clips[i:i + batch])) for i in range(0, int(clips.shape[0]), batch)])


class Predictor:
    """Video classification and clip features from a saved model.

    Attributes:
        kind: `"keras"`, `"saved_model"` or `"tflite"`.
        class_names: the model's class names.
        config: the `ClipConfig` of the test clips.
    """

    kind = None

    def __init__(self, path, config, class_names):
        self.path = path
        self.config = config
        self.class_names = list(class_names)

    def video_probabilities(self, video):
        """`(clip_probabilities (N, C), video_probabilities (C,))` for one video file."""
        clip_probs = self._clip_probabilities(self._clips(video))
        return clip_probs, clip_probs.mean(axis=0)

    def _clip_probabilities(self, clips):
        """Class probabilities `(N, C)` of normalized clips `(N, T, H, W, 3)`, as NumPy."""
        raise NotImplementedError

    def classify(self, video, top=5):
        """The top classes of one video file: `{"video", "top": [{"class", "index", "score"}], "probabilities"}`."""
        _, probabilities = self.video_probabilities(video)
        return {"video": video, "top": _top(probabilities, self.class_names, top),
                "probabilities": probabilities.tolist()}

    def clip_features(self, video):
        """Pooled backbone features of the video's test views: `(test_clips x test_crops, D)`."""
        return self.features(self._clips(video))

    def features(self, clips):
        """Pooled backbone features `(N, D)` of normalized clips `(N, T, H, W, 3)`, as NumPy."""
        raise ValueError(f"{self.path}: a {self.kind} model has no feature output; use a .keras file or a SavedModel")

    def _clips(self, video):
        return self.config.preprocessor.views(read_test_clips(video, self.config), self.config.test_crops)


class KerasPredictor(Predictor):
    kind = "keras"

    def __init__(self, path, clips=None, frames=None, size=None, max_pixels=MAX_DECODE_PIXELS, crops=None):
        from keras_r21d.export.graph import feature_model, folded, pooling_layer_name, probabilities_fn
        from keras_r21d.training.evaluation import load_model, run_record, test_clip_config

        model = load_model(path)
        record = run_record(path) or {}
        config = dataclasses.replace(test_clip_config(model, record, clips or 10, frames, size, crops or 1),
                                     max_pixels=max_pixels)
        names = record.get("class_names") or [f"class_{i}" for i in range(model.output_shape[-1])]
        super().__init__(path, config, names)
        try:
            pooling, self._no_features = pooling_layer_name(model), None
        except ValueError as error:
            pooling, self._no_features = None, error
        model = folded(model)  # the same function, faster: BatchNorms folded into the convolutions
        self.model = model
        self._probabilities = model_function(probabilities_fn(model))
        self._features = None
        self._feature_model = functools.partial(feature_model, pooling=pooling)

    def _clip_probabilities(self, clips):
        return _batched(self._probabilities, clips)

    def features(self, clips):
        if self._no_features is not None:
            raise ValueError(f"{self.path}: {self._no_features}")
        if self._features is None:
            features = self._feature_model(self.model)
            self._features = model_function(lambda c: features(c, training=False))
        return _batched(self._features, clips)


class SavedModelPredictor(Predictor):
    kind = "saved_model"

    def __init__(self, path, clips=None, max_pixels=MAX_DECODE_PIXELS, crops=None):
        from keras_r21d.export.saved_model import load_metadata

        directory = _saved_model_dir(path)
        metadata = load_metadata(directory)
        if clips and metadata and clips != metadata["clip_config"]["test_clips"]:
            raise ValueError(f"{path}: the export samples {metadata['clip_config']['test_clips']} clips per video; "
                             "re-export with another --clips to change it")
        exported_crops = int(metadata["clip_config"].get("test_crops", 1)) if metadata else 1
        if crops and crops != exported_crops:
            raise ValueError(f"{path}: the export takes {exported_crops} crop(s) per clip; re-export with --crops "
                             f"{crops} to change it")
        self.loaded = tf.saved_model.load(directory)
        missing = {"classify_video", "extract_features"} - set(self.loaded.signatures)
        if missing:
            raise ValueError(f"{path}: not a keras_r21d export (missing signatures {sorted(missing)})")
        config = _clip_config(metadata["clip_config"]) if metadata else ClipConfig()
        config = dataclasses.replace(config, max_pixels=max_pixels)
        classes = int(self.loaded.signatures["classify_video"].structured_outputs["probabilities"].shape[-1])
        super().__init__(directory, config, metadata.get("class_names") or [f"class_{i}" for i in range(classes)])

    def _clip_probabilities(self, clips):
        serve = self.loaded.signatures["serving_default"]
        return _batched(lambda batch: serve(clips=batch)["probabilities"], clips)

    def features(self, clips):
        extract = self.loaded.signatures["extract_features"]
        return _batched(lambda batch: extract(clips=batch)["features"], clips)


class TFLitePredictor(Predictor):
    kind = "tflite"

    def __init__(self, path, clips=None, num_threads=None, max_pixels=MAX_DECODE_PIXELS, crops=None):
        from keras_r21d.export.tflite import interpreter, load_report

        report = load_report(path)
        self.runner = interpreter(path, num_threads=num_threads)
        shape = self.runner.get_input_details()[0]["shape"]
        classes = int(self.runner.get_output_details()[0]["shape"][-1])
        if report.get("clip_config"):
            config = _clip_config(report["clip_config"], clips, crops)
        else:
            config = ClipConfig(clip_len=int(shape[1]), crop=int(shape[2]), resize=transforms.resize_for_crop(
                int(shape[2])), test_clips=clips or 10, test_crops=crops or 1)
        config = dataclasses.replace(config, max_pixels=max_pixels)
        super().__init__(path, config, report.get("class_names") or [f"class_{i}" for i in range(classes)])

    def _clip_probabilities(self, clips):
        from keras_r21d.export.tflite import run_tflite

        return run_tflite(self.runner, clips.numpy())


def load_predictor(path, clips=None, frames=None, size=None, max_pixels=None, crops=None):
    """A `Predictor` for a `.keras` file, a SavedModel (or TF Serving base) directory or a `.tflite` file.

    `clips` uniform clips per video (default the export's, else 10), `crops`
    spatial views of each (1 or 3; default the export's, else 1): their
    softmaxes are averaged. A SavedModel's `classify_video` samples what it
    was exported with: another `clips` or `crops` raises `ValueError`.

    `.keras` files load with Keras' `safe_mode` on. SavedModels are programs:
    load only those you trust.

    `max_pixels` bounds the memory one video may take: a predictor refuses a
    video whose test-clip frames, at the size they are decoded at (the
    pre-crop size, or the video's own when smaller), exceed it (clip frames x
    height x width; default `MAX_DECODE_PIXELS`, 2^30). A refused video
    raises `VideoDecodeError` naming the file and the numbers, before
    decoding.
    """
    limit = MAX_DECODE_PIXELS if max_pixels is None else max_pixels
    if os.path.isdir(path):
        return SavedModelPredictor(path, clips, max_pixels=limit, crops=crops)
    if not os.path.isfile(path):
        raise ValueError(f"model not found: {path}")
    if path.endswith(".tflite"):
        return TFLitePredictor(path, clips, max_pixels=limit, crops=crops)
    if path.endswith(".keras"):
        return KerasPredictor(path, clips, frames, size, max_pixels=limit, crops=crops)
    raise ValueError(f"{path}: expected a .keras file, a SavedModel directory or a .tflite file")


def extract_features(predictor, dataset, out_dir, progress=None, root=None):
    """Writes `(test_clips x test_crops, D)` features of every video to `out_dir/<video path>.npy`.

    Paths mirror the videos' paths relative to their common folder (or to
    `root`). Videos
    that cannot be decoded are skipped and returned as `{path: reason}`. A
    `ShardDataset` (`shards:DIR`) is read from its shards, with the
    predictor's test clips: its source videos need not be on this machine.
    """
    from keras_r21d.data.shards import ShardDataset
    from keras_r21d.data.video import VideoDecodeError

    root = root or os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in dataset.paths])
    skipped = {}
    written = []

    def save(video, features):
        target = os.path.join(out_dir, os.path.relpath(os.path.abspath(video), root) + ".npy")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        np.save(target, features.astype(np.float32))
        written.append(target)
        if progress:
            progress(len(written) + len(skipped), len(dataset.paths))

    if isinstance(dataset, ShardDataset):
        from keras_r21d.data.pipeline import BadVideoLog, eval_dataset

        log = BadVideoLog()
        clips_per_video = predictor.config.test_views
        for clips, _, ids in eval_dataset(dataset, clips_per_video, predictor.config, bad_videos=log):
            save(dataset.paths[int(ids[0])], predictor.features(clips))
        skipped.update(log.failures)  # the videos prepare could not write, and too-short ones under `skip`
        return written, skipped
    for video in dataset.paths:
        try:
            features = predictor.clip_features(video)
        except VideoDecodeError as error:
            skipped[video] = error.reason
            if progress:
                progress(len(written) + len(skipped), len(dataset.paths))
        else:
            save(video, features)
    return written, skipped
