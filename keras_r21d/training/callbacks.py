"""Callbacks: atomic resumable checkpoints, video-level validation accuracy, learning-rate logging."""

import glob
import json
import math
import os
import shutil

import keras
import numpy as np

from keras_r21d.errors import ResumeError  # noqa: F401 - raised here, exported from here too
from keras_r21d.training.backend import model_function
from keras_r21d.training.evaluation import compute_metrics, predict_clips
from keras_r21d.training.io import TMP_PREFIX, atomic_save_model, atomic_write_text

STATE_FILE = "state.json"


class ResumableCheckpoint(keras.callbacks.Callback):
    """Saves the whole model (optimizer included) after every epoch, atomically, and the best one.

    Layout in `checkpoint_dir`: `epoch-NNN.keras` (the latest only),
    `best.keras`, and `state.json` (`{"epoch", "checkpoint", "monitor",
    "best"}`), which is written last and always names a complete file: a run
    killed at any moment resumes from its last finished epoch, as Keras'
    `BackupAndRestore` does, and never finds a truncated checkpoint.

    Args:
        checkpoint_dir: where to write (a throw-away folder on non-chief workers).
        monitor: the metric that selects `best.keras` (falls back to
            `val_loss`, then `loss`, when it is absent).
        mode: `"max"` or `"min"` for `monitor`.
    """

    def __init__(self, checkpoint_dir, monitor="val_video_accuracy", mode="max"):
        super().__init__()
        self.checkpoint_dir = checkpoint_dir
        self.monitor = monitor
        self.mode = mode
        self.best = None
        os.makedirs(checkpoint_dir, exist_ok=True)
        # Temporary files of a run killed while saving are never checkpoints: remove them.
        for stale in glob.glob(os.path.join(glob.escape(checkpoint_dir), TMP_PREFIX + "*")):
            os.remove(stale)
        state_path = os.path.join(checkpoint_dir, STATE_FILE)
        if os.path.exists(state_path):
            self.best = read_state(checkpoint_dir).get("best")

    def _value(self, logs):
        for key, mode in [(self.monitor, self.mode), ("val_loss", "min"), ("loss", "min")]:
            value = logs.get(key)
            if value is not None and not math.isnan(float(value)):
                return key, mode, float(value)
        return None, None, None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        name = f"epoch-{epoch + 1:03d}.keras"
        path = os.path.join(self.checkpoint_dir, name)
        atomic_save_model(self.model, path)
        key, mode, value = self._value(logs)
        improved = value is not None and (
            self.best is None or (value > self.best if mode == "max" else value < self.best)
        )
        if improved:
            self.best = value
            tmp = os.path.join(self.checkpoint_dir, f"{TMP_PREFIX}best-{os.getpid()}.keras")
            shutil.copyfile(path, tmp)
            os.replace(tmp, os.path.join(self.checkpoint_dir, "best.keras"))
        state = {"epoch": epoch + 1, "checkpoint": name, "monitor": key, "best": self.best}
        atomic_write_text(os.path.join(self.checkpoint_dir, STATE_FILE), json.dumps(state, indent=2))
        for old in glob.glob(os.path.join(glob.escape(self.checkpoint_dir), "epoch-*.keras")):
            if os.path.basename(old) != name:
                os.remove(old)


def read_state(checkpoint_dir):
    """Reads `state.json`; raises `ResumeError` naming the file when it is unreadable."""
    path = os.path.join(checkpoint_dir, STATE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        if not isinstance(state, dict) or not isinstance(state.get("epoch"), int) or "checkpoint" not in state:
            raise ValueError("missing 'epoch' or 'checkpoint'")
        return state
    except FileNotFoundError:
        raise ResumeError(f"nothing to resume: {path} does not exist") from None
    except (ValueError, OSError) as error:
        raise ResumeError(f"cannot resume: {path} is corrupt ({error}); refusing to start from scratch") from None


def load_checkpoint(checkpoint_dir):
    """Loads the latest checkpoint (model and optimizer) for `--resume`.

    Returns `(model, epochs_done)`. Raises `ResumeError` naming the file if it
    is missing or corrupt: a damaged checkpoint never turns into a silent
    fresh start.
    """
    state = read_state(checkpoint_dir)
    path = os.path.join(checkpoint_dir, os.path.basename(state["checkpoint"]))
    if not os.path.isfile(path):
        raise ResumeError(f"cannot resume: checkpoint {path} named in {STATE_FILE} is missing")
    from keras_r21d.model_files import load_keras_model

    try:
        model = load_keras_model(path, compile=True)  # the optimizer and its state go on
    except Exception as error:  # noqa: BLE001 - zip, h5 and config errors all mean "corrupt"
        raise ResumeError(
            f"cannot resume: checkpoint {path} is corrupt or unreadable ({type(error).__name__}: {error}); "
            "refusing to start from scratch. Restore the file or start a new run in another directory."
        ) from None
    return model, state["epoch"]


class VideoAccuracy(keras.callbacks.Callback):
    """Adds `val_video_accuracy` (Video@1) and `val_video_clip_accuracy` to the epoch logs.

    Runs every `freq` epochs and at the last one, on `config.test_clips`
    uniformly spaced clips per validation video (`config.test_crops` views
    of each), averaging the softmax per video as the paper does. Other
    epochs log NaN, so that the CSV log has the columns from the first epoch
    on. `bad_videos`, a run's `BadVideoLog`,
    makes a bad video reported once per run rather than once per epoch.
    """

    def __init__(self, dataset, config, batch_size, freq=1, bad_videos=None):
        super().__init__()
        self.bad_videos = bad_videos
        self.dataset = dataset
        self.config = config
        self.batch_size = batch_size
        self.freq = max(1, int(freq))

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        last = self.params and epoch + 1 == self.params.get("epochs")
        if (epoch + 1) % self.freq and not last:
            logs["val_video_accuracy"] = logs["val_video_clip_accuracy"] = float("nan")
            return
        probabilities, labels, videos = predict_clips(self.model, self.dataset, self.config, self.batch_size,
                                                      bad_videos=self.bad_videos)
        metrics = compute_metrics(probabilities, labels, videos, self.dataset.class_names,
                                  crops=self.config.test_crops)
        logs["val_video_accuracy"] = metrics["video_top1"]
        logs["val_video_clip_accuracy"] = metrics["clip_top1"]


class ClipValidation(keras.callbacks.Callback):
    """Adds `val_loss` and `val_accuracy` over every clip of a `(clips, labels)` dataset to the epoch logs.

    What `fit(validation_data=...)` logs, for a data-parallel run on JAX,
    whose compiled steps need batches that split evenly over the devices:
    Keras' own validation would have to pad the last batch, and its loss
    tracker would count the padding. Here each batch runs as it is (an eager
    call, which accepts any batch) and the means are over the real clips.
    Must come before the callbacks that read those logs.
    """

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        forward = model_function(lambda clips: self.model(clips, training=False))
        losses, hits = [], []
        for clips, labels in self.dataset:
            probabilities = forward(clips)
            labels = labels.numpy()
            if labels.ndim == 2:  # one-hot (a run on soft targets: label smoothing, mixup, cutmix)
                losses.append(keras.ops.convert_to_numpy(keras.losses.categorical_crossentropy(labels, probabilities)))
                labels = labels.argmax(axis=-1)
            else:
                losses.append(keras.ops.convert_to_numpy(keras.losses.sparse_categorical_crossentropy(
                    labels, probabilities)))
            hits.append(probabilities.argmax(axis=-1) == labels)
        if losses:
            logs["val_loss"] = float(np.concatenate(losses).mean())
            logs["val_accuracy"] = float(np.concatenate(hits).mean())


def averaged_weights_callbacks():
    """`(swap_in, swap_out)`: callbacks that put the optimizer's moving averages of the weights (Keras'
    `use_ema`) in the model for validation and take them out again.

    `swap_in` is Keras' `SwapEMAWeights`: `fit`'s own validation runs on the
    averaged weights (its `on_test_begin`/`on_test_end`), and at the end of
    an epoch it swaps them in for the callbacks that follow it (`ClipValidation`,
    `VideoAccuracy`). `swap_out` swaps the training weights back; the
    callbacks after it (`ResumableCheckpoint`) see the training weights,
    with the averages in the optimizer's variables, so a checkpoint keeps
    both and a resumed run continues the average.
    """
    swapper = keras.callbacks.SwapEMAWeights()
    return _SwapIn(swapper), _SwapOut(swapper)


class _SwapIn(keras.callbacks.Callback):
    def __init__(self, swapper):
        super().__init__()
        self.swapper = swapper

    def set_model(self, model):
        super().set_model(model)
        self.swapper.set_model(model)

    def on_test_begin(self, logs=None):
        self.swapper.on_test_begin(logs)

    def on_test_end(self, logs=None):
        self.swapper.on_test_end(logs)

    def on_epoch_end(self, epoch, logs=None):
        self.swapper.on_test_begin(logs)  # the averaged weights in, for the validation callbacks


class _SwapOut(keras.callbacks.Callback):
    def __init__(self, swapper):
        super().__init__()
        self.swapper = swapper

    def on_epoch_end(self, epoch, logs=None):
        self.swapper.on_test_end(logs)  # the training weights back, before the checkpoint


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the optimizer's current learning rate to the epoch logs as `learning_rate`."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
