"""Clip- and video-level accuracy, the paper's way: Video@1 averages the softmax of each video's clips."""

import json
import os

import numpy as np

from keras_r21d.data.pipeline import BadVideoLog, ClipConfig, eval_dataset, view_protocol
from keras_r21d.data.service import STALL_TIMEOUT
from keras_r21d.data.transforms import resize_for_crop
from keras_r21d.training.backend import model_function
from keras_r21d.training.io import atomic_write_text


def _as_probabilities(outputs):
    outputs = np.asarray(outputs, np.float64)
    if (outputs >= 0).all() and np.allclose(outputs.sum(axis=-1), 1.0, atol=1e-3):
        return outputs
    shifted = np.exp(outputs - outputs.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def predict_clips(model, dataset, config=None, batch_size=8, bad_videos=None):
    """Runs the model on every test clip of a `VideoDataset`.

    Returns `(probabilities, labels, video_ids)`: one row per clip.
    """
    config = config or ClipConfig()
    forward = model_function(lambda clips: model(clips, training=False))
    probabilities, labels, videos = [], [], []
    for clips, label, video in eval_dataset(dataset, batch_size, config, bad_videos=bad_videos):
        probabilities.append(_as_probabilities(forward(clips)))
        labels.append(label.numpy())
        videos.append(video.numpy())
    if not probabilities:
        raise ValueError(f"no test clip could be decoded from dataset {dataset.name!r}")
    return np.concatenate(probabilities), np.concatenate(labels), np.concatenate(videos)


def _topk_hits(probabilities, labels, k):
    k = min(k, probabilities.shape[1])
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return (top == labels[:, None]).any(axis=1)


def video_predictions(probabilities, labels, video_ids):
    """Averages clip probabilities per video: `(video_probabilities, video_labels, video_ids)`."""
    ids, inverse = np.unique(video_ids, return_inverse=True)
    sums = np.zeros((len(ids), probabilities.shape[1]))
    np.add.at(sums, inverse, probabilities)
    counts = np.bincount(inverse, minlength=len(ids))[:, None]
    video_labels = np.zeros(len(ids), labels.dtype)
    video_labels[inverse] = labels
    return sums / counts, video_labels, ids


def compute_metrics(probabilities, labels, video_ids, class_names, report_classes=None, crops=1):
    """Clip@1, Clip@5, Video@1, Video@5, per-class video accuracy and the video confusion matrix.

    `class_names` name the model's outputs (the columns of `probabilities`;
    `labels` index them). `report_classes` (default all of them) are the
    classes whose per-class accuracy is reported: the dataset's, when it holds
    only some of the model's classes. Each row of `probabilities` is one
    view: `crops` spatial crops of each temporal clip (1: the clip itself).
    Clip@k are single views' accuracies; Video@k average all of a video's
    views' softmaxes. `protocol` says how many ("10 clips x 3 crops").
    """
    num_classes = len(class_names)
    if probabilities.shape[1] != num_classes:
        raise ValueError(f"{probabilities.shape[1]} model outputs for {num_classes} class names")
    video_probs, video_labels, ids = video_predictions(probabilities, labels, video_ids)
    predicted = video_probs.argmax(axis=1)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (video_labels, predicted), 1)
    per_class = {}
    wanted = None if report_classes is None else set(report_classes)
    for index, name in enumerate(class_names):
        if wanted is not None and name not in wanted:
            continue
        total = confusion[index].sum()
        per_class[name] = None if total == 0 else float(confusion[index, index] / total)
    return {
        "clip_top1": float(_topk_hits(probabilities, labels, 1).mean()),
        "clip_top5": float(_topk_hits(probabilities, labels, 5).mean()),
        "video_top1": float((predicted == video_labels).mean()),
        "video_top5": float(_topk_hits(video_probs, video_labels, 5).mean()),
        "clips": int(len(labels) // crops),
        "videos": int(len(ids)),
        "clips_per_video": float(len(labels) / crops / max(len(ids), 1)),
        "crops": int(crops),
        "views": int(len(labels)),
        "protocol": view_protocol(round(len(labels) / crops / max(len(ids), 1)), crops),
        "per_class_video_top1": per_class,
        "confusion_matrix": confusion.tolist(),
        "class_names": list(class_names),
    }


def evaluate_model(model, dataset, config=None, batch_size=8, out_dir=None, bad_videos=None):
    """Evaluates a model on a `VideoDataset` at clip and video level.

    Args:
        model: a Keras model.
        dataset: a `VideoDataset` (its test subset).
        config: a `ClipConfig` (`test_clips` clips per video, the paper uses
            10; `test_crops` views of each, 1 or 3).
        batch_size: clips per batch.
        out_dir: if set, writes `report.json`, `confusion_matrix.png` and
            `clip_predictions.npz` there.
        bad_videos: a `BadVideoLog` shared with other passes over the data
            (a training run's), so that each bad video is reported once.

    Returns:
        The metrics dict of `compute_metrics`, plus `skipped_videos` (this
        dataset's videos that could not be decoded).
    """
    log = bad_videos if bad_videos is not None else BadVideoLog((config or ClipConfig()).max_consecutive_failures)
    probabilities, labels, videos = predict_clips(model, dataset, config, batch_size, bad_videos=log)
    metrics = compute_metrics(probabilities, labels, videos, dataset.class_names,
                              getattr(dataset, "evaluated_classes", None), (config or ClipConfig()).test_crops)
    mine = set(dataset.paths)
    metrics["skipped_videos"] = {path: reason for path, reason in log.failures.items() if path in mine}
    metrics["dataset"] = dataset.name
    if out_dir:
        from keras_r21d.training.plots import plot_confusion_matrix

        os.makedirs(out_dir, exist_ok=True)
        np.savez(os.path.join(out_dir, "clip_predictions.npz"), probabilities=probabilities, labels=labels,
                 video_ids=videos, paths=np.asarray(dataset.paths))
        atomic_write_text(os.path.join(out_dir, "report.json"), json.dumps(metrics, indent=2))
        plot_confusion_matrix(np.asarray(metrics["confusion_matrix"]), dataset.class_names,
                              os.path.join(out_dir, "confusion_matrix.png"))
    return metrics


def run_record(model_path):
    """The record of how a model file was made, or `None`.

    `MODEL.keras.json` beside the file (written by `keras-r21d convert`), else
    the `run.json` of the training run it belongs to.
    """
    folder = os.path.dirname(os.path.abspath(model_path))
    candidates = [model_path + ".json"] + [os.path.join(c, "run.json") for c in (folder, os.path.dirname(folder))]
    for path in candidates:
        if os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as f:
                    return json.load(f)
            except (OSError, ValueError):
                return None
    return None


def recorded_class_names(model_path):
    """The class names recorded for a `.keras` file (its `MODEL.keras.json` or run's `run.json`), or `None`."""
    names = (run_record(model_path) or {}).get("class_names")
    return [str(n) for n in names] if isinstance(names, list) else None


def test_clip_config(model, record=None, clips=10, frames=None, size=None, crops=1):
    """The evaluator's `ClipConfig` for a model: explicit values, else the model's input shape, else its run.

    The clip length, crop, frame stride and pre-crop resize follow the
    training run's `run.json` when there is one (`record`), so that
    evaluation, export and prediction see clips as training did.
    """
    shape = model.input_shape[1:]
    trained = (record or {}).get("config", {})
    frames = frames or shape[0] or trained.get("frames") or 16
    size = size or shape[1] or trained.get("size") or 112
    resize = trained.get("resize_to") if size == trained.get("size") else None
    return ClipConfig(
        clip_len=int(frames),
        frame_stride=int(trained.get("frame_stride") or 1),
        resize=tuple(resize) if resize else resize_for_crop(size),
        crop=int(size),
        test_clips=int(clips),
        test_crops=int(crops),
    )


def load_model(path):
    """Loads a `.keras` model with Keras' `safe_mode` on, after archive checks; errors name the file."""
    from keras_r21d.model_files import load_keras_model

    return load_keras_model(path)


def evaluate(model, data, clips=10, frames=None, size=None, batch_size=8, out_dir=None, class_names=None,
             data_service=None, data_service_timeout=STALL_TIMEOUT, crops=1):
    """Evaluates a model (or a `.keras` path) on a dataset's test subset at clip and video level.

    Args:
        model: a `keras.Model` or the path of a `.keras` file.
        data: a dataset spec (`ucf101:ROOT`, ...) or a `VideoDataset`.
        clips: uniformly spaced clips per video (the paper: 10).
        crops: spatial views of each clip: 1, the center crop (the paper's
            protocol), or 3 along the frames' long side (MMAction2's and
            PySlowFast's "10 clips x 3 crops"); all views' softmaxes are
            averaged per video.
        frames, size: clip length and crop size; default the model's input
            shape, else the run's `run.json`, else 16 and 112.
        batch_size: clips per batch.
        out_dir: where to write `report.json` and `confusion_matrix.png`.
        class_names: the model's class names in output order; default those
            recorded beside a `.keras` file (`run.json`, `MODEL.keras.json`).
            The dataset's classes are paired with them by name, whatever
            order either lists them in; a dataset class the model does not
            know raises `ClassMismatchError` before any video is decoded. A
            model with no names is paired by position, with a warning.
        data_service: `HOST:PORT` of a tf.data service dispatcher: the test
            clips are read by its workers (frame shards only).
        data_service_timeout: seconds without a batch from the service
            before the process stops with an error (`service.StallWatchdog`).

    Returns:
        The metrics dict (`clip_top1`, `clip_top5`, `video_top1`, `video_top5`,
        `per_class_video_top1`, `confusion_matrix`, ...).
    """
    from keras_r21d.classes import align_to_model
    from keras_r21d.data.datasets import load_dataset

    record, label = None, "the model"
    if isinstance(model, str):
        label = model
        record = run_record(model)
        if class_names is None:
            class_names = recorded_class_names(model)
        model = load_model(model)
    dataset = load_dataset(data, "test") if isinstance(data, str) else data
    if data_service:
        from keras_r21d.data.service import through_service

        dataset = through_service(dataset, data_service, data if isinstance(data, str) else None)
    dataset = align_to_model(dataset, class_names, int(model.output_shape[-1]), label)
    config = test_clip_config(model, record, clips, frames, size, crops)
    if not data_service:
        return evaluate_model(model, dataset, config, batch_size, out_dir)
    from keras_r21d.data.service import StallWatchdog

    with StallWatchdog(data_service_timeout, data_service):
        return evaluate_model(model, dataset, config, batch_size, out_dir)
