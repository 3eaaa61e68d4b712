"""Fine-tuning: start from a saved model, a run or a preset; new head; freezing by stage.

Keras convention for frozen layers: a layer with `trainable=False` is not
updated and a frozen `BatchNormalization` runs in inference mode (it
normalizes with its moving statistics and does not update them), so frozen
layers, their BatchNorm statistics included, stay bit-identical.
"""

import os

from keras_r21d.classes import same_classes
from keras_r21d.models.backbone import STAGES as BACKBONE_STAGES
from keras_r21d.models.classifier import VideoClassifier
from keras_r21d.models.legacy import as_task
from keras_r21d.models.network import stage_layer_names
from keras_r21d.models.specs import stem_spans_clip

# Stages in network order: the stem, the four residual stages, the head.
STAGES = (*BACKBONE_STAGES, "head")


def set_trainable(model, trainable_from):
    """Freezes every stage before `trainable_from` (`"conv1"`..`"conv5"`, `"head"`); the rest trains.

    The stages are the backbone's (`VideoResNetBackbone.stage_layer_names`)
    and the head. `trainable_from=None` or `"conv1"` makes the whole model
    trainable. Returns the names of the frozen layers that have weights.
    """
    if trainable_from is not None and trainable_from not in STAGES:
        raise ValueError(f"`trainable_from` must be one of {STAGES}. Received: {trainable_from!r}")
    first = STAGES.index(trainable_from or "conv1")
    frozen = []
    for stage, names in stage_layer_names(model).items():
        trainable = STAGES.index(stage) >= first
        for name in names:
            layer = model.get_layer(name)
            layer.trainable = trainable
            if not trainable and layer.weights:
                frozen.append(name)
    return frozen


def load_source(init, arch=None, depth=None):
    """The model to start from: a `.keras` file, a run directory (its `model.keras`) or a preset name.

    Returns `(model, description, class_names)`: `class_names` are the
    source's recorded classes (its run's `run.json`, its `MODEL.keras.json`,
    the preset's labels), or `None` when it records none.
    """
    from keras_r21d.training.evaluation import load_model, recorded_class_names
    from keras_r21d.weights import is_preset

    if is_preset(init):
        from keras_r21d.models.registry import get_model
        from keras_r21d.weights.presets import class_names, resolve_preset

        preset = resolve_preset(init, arch, depth)
        arch, depth = preset.variant, preset.depth  # a handle names its network
        shape = None if stem_spans_clip(arch) else (None, None, None, 3)  # R2D: the preset's clip length
        model = get_model(f"{arch}_{depth}", weights=init, **({"input_shape": shape} if shape else {}))
        return model, f"preset {init!r} of {arch}_{depth}", class_names(preset.labels)
    if os.path.isdir(init):
        path = os.path.join(init, "model.keras")
        if not os.path.isfile(path):
            raise ValueError(f"--init {init}: a run directory without model.keras (an unfinished run? "
                             "pass a checkpoint file from its checkpoints/ folder instead)")
        return load_model(path), path, recorded_class_names(path)
    if init.endswith(".keras"):
        return load_model(init), init, recorded_class_names(init)
    raise ValueError(f"--init must be a .keras file, a run directory or a preset name. Received: {init!r}")


def keeps_head(source_names, source_outputs, data_names):
    """Whether fine-tuning keeps the source's classifier for a dataset's classes.

    By name when the source records its classes: kept when the data has
    exactly the source's classes, in any order (the labels are then mapped to
    the source's outputs by name); replaced by a head for the data's classes
    otherwise, also when they are only some of the source's. A source without
    names keeps it when the counts match (the classes are then paired by
    position, with a warning).
    """
    if source_names is not None:
        return same_classes(data_names, source_names) and len(source_names) == source_outputs
    return source_outputs == len(data_names)


def init_model(source, num_classes, frames, description="the source model", keep_head=None):
    """A model for `num_classes` with `source`'s architecture and weights, for clips of `frames` frames.

    The classifier is kept when `keep_head` (default: when the class count
    matches; see `keeps_head` for the by-name rule `train` uses) and replaced
    (newly initialized, `num_classes` outputs) otherwise. The clip length and
    frame size may change for every variant but R2D, whose stem convolves the
    whole clip at once.

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
    task = as_task(source)
    if not isinstance(task, VideoClassifier):
        raise ValueError(f"{description} has no classifier to replace (it was built without include_top)")
    kept_head = task.num_classes == num_classes if keep_head is None else bool(keep_head)
    config = task.get_config()
    config["num_classes"] = num_classes
    config["backbone"]["config"]["dtype"] = None  # the run's dtype policy
    model = VideoClassifier.from_config(config)
    model.backbone.set_weights(task.backbone.get_weights())
    if kept_head:
        for name in task.stage_layer_names()["head"]:
            model.get_layer(name).set_weights(task.get_layer(name).get_weights())
    return model, kept_head
