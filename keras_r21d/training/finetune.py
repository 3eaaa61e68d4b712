"""Fine-tuning: start from a saved model, a run or a preset; new head; freezing by stage.

Keras convention for frozen layers: a layer with `trainable=False` is not
updated and a frozen `BatchNormalization` runs in inference mode (it
normalizes with its moving statistics and does not update them), so frozen
layers, their BatchNorm statistics included, stay bit-identical.
"""

import os
import re

import keras

# Stages in network order: the stem, the four residual stages, the head.
STAGES = ("conv1", "conv2", "conv3", "conv4", "conv5", "head")


def stage_of(layer_name):
    """The stage a layer belongs to: `"conv1"` (stem) .. `"conv5"`, or `"head"` (pooling, dropout, classifier)."""
    match = re.match(r"(conv\d)_", layer_name)
    if match and match.group(1) in STAGES:
        return match.group(1)
    return "head"


def set_trainable(model, trainable_from):
    """Freezes every layer before stage `trainable_from` (`"conv1"`..`"conv5"`, `"head"`); the rest trains.

    `trainable_from=None` or `"conv1"` makes the whole model trainable.
    Returns the names of the frozen layers that have weights.
    """
    if trainable_from is not None and trainable_from not in STAGES:
        raise ValueError(f"`trainable_from` must be one of {STAGES}. Received: {trainable_from!r}")
    first = STAGES.index(trainable_from or "conv1")
    frozen = []
    for layer in model.layers:
        trainable = STAGES.index(stage_of(layer.name)) >= first
        layer.trainable = trainable
        if not trainable and layer.weights:
            frozen.append(layer.name)
    return frozen


def load_source(init, arch=None, depth=None):
    """The model to start from: a `.keras` file, a run directory (its `model.keras`) or a preset name.

    Returns `(model, description)`.
    """
    from keras_r21d.training.evaluation import load_model
    from keras_r21d.weights import is_preset

    if is_preset(init):
        from keras_r21d.models.registry import get_model

        shape = None if arch == "r2d" else (None, None, None, 3)
        model = get_model(f"{arch}_{depth}", weights=init, **({"input_shape": shape} if shape else {}))
        return model, f"preset {init!r} of {arch}_{depth}"
    if os.path.isdir(init):
        path = os.path.join(init, "model.keras")
        if not os.path.isfile(path):
            raise ValueError(f"--init {init}: a run directory without model.keras (an unfinished run? "
                             "pass a checkpoint file from its checkpoints/ folder instead)")
        return load_model(path), path
    if init.endswith(".keras"):
        return load_model(init), init
    raise ValueError(f"--init must be a .keras file, a run directory or a preset name. Received: {init!r}")


def init_model(source, num_classes, frames, description="the source model"):
    """A model for `num_classes` with `source`'s architecture and weights, for clips of `frames` frames.

    The classifier is kept when the class count matches and replaced (newly
    initialized) otherwise. The clip length and frame size may change for
    every variant but R2D, whose stem convolves the whole clip at once.

    Returns `(model, kept_head)`.
    """
    source_frames = source.input_shape[1]
    if source_frames is not None and source_frames != frames:
        raise ValueError(
            f"{description} takes clips of exactly {source_frames} frames (R2D: its stem is one "
            f"{source_frames}x7x7 convolution over the whole clip), so it cannot be fine-tuned on {frames}-frame "
            f"clips: use --frames {source_frames}, or a variant that convolves in time (f-R2D, R3D, MCx, rMCx, "
            "R(2+1)D)"
        )
    config = source.get_config()
    names = [layer["config"]["name"] for layer in config["layers"]]
    if "predictions" not in names:
        raise ValueError(f"{description} has no `predictions` classifier to replace")
    head = config["layers"][names.index("predictions")]["config"]
    kept_head = head["units"] == num_classes
    head["units"] = num_classes
    model = keras.Model.from_config(config)
    for layer in model.layers:
        if layer.weights and (layer.name != "predictions" or kept_head):
            layer.set_weights(source.get_layer(layer.name).get_weights())
    return model, kept_head
