"""Models written before the backbone and task classes: a plain functional model becomes a task again.

keras_r21d 0.1.0 wrote its networks as plain functional `keras.Model`s
(class `Functional` in their `.keras` files). They keep loading as such, with
their outputs; `as_task(model)` gives the same network as a `VideoClassifier`
(or `VideoFeatureExtractor`, or `VideoResNetBackbone`) with the same layer
names and the same weights, read from the model's own layers: the stem's
convolutions, each residual block's configuration, the head. This is the one
place that reads a network's structure from its layers.
"""

import re

import keras

from keras_r21d.layers.blocks import BasicBlock, BottleneckBlock
from keras_r21d.models.backbone import STAGES, VideoResNetBackbone
from keras_r21d.models.classifier import VideoClassifier, VideoFeatureExtractor, _VideoTask

_BLOCK_NAME = re.compile(r"(conv[2-5])_block(\d+)")


def _not_ours(model, why):
    return ValueError(f"model {model.name!r} is not a network keras_r21d built ({why}), so it has no backbone")


def _stem(model, layers):
    if "conv1_spatial" in layers:
        return dict(stem_type="2plus1d", stem_midplanes=layers["conv1_spatial"].filters,
                    stem_filters=layers["conv1_temporal"].filters)
    if "conv1_conv" not in layers:
        raise _not_ours(model, "no conv1_conv or conv1_spatial stem")
    conv = layers["conv1_conv"]
    time_padding = (conv.get_config()["padding"] or (None,))[0]
    if conv.kernel_size[0] == 1:
        stem_type = "2d"
    elif time_padding == 0:
        stem_type = "clip"  # R2D: L x 7 x 7 over the whole clip, no temporal padding
    else:
        stem_type = "3d"
    return dict(stem_type=stem_type, stem_filters=conv.filters)


def backbone_config(model):
    """The `VideoResNetBackbone` arguments of a plain functional model of the family (0.1.0's layout)."""
    layers = {layer.name: layer for layer in model.layers}
    stages = {stage: [] for stage in STAGES[1:]}
    for name, layer in layers.items():
        match = _BLOCK_NAME.fullmatch(name)
        if match and isinstance(layer, (BasicBlock, BottleneckBlock)):
            stages[match.group(1)].append((int(match.group(2)), layer))
    if not all(stages.values()):
        raise _not_ours(model, "residual blocks conv2_block1..conv5_block1 not found")
    firsts = [min(blocks, key=lambda pair: pair[0])[1] for blocks in stages.values()]
    block = firsts[0]
    return dict(
        **_stem(model, layers),
        stage_conv_types=tuple(first.conv_type for first in firsts),
        stage_blocks=tuple(len(blocks) for blocks in stages.values()),
        stage_filters=tuple(first.filters for first in firsts),
        block_type="bottleneck" if isinstance(block, BottleneckBlock) else "basic",
        midplanes=block.midplanes,
        bn_epsilon=layers["conv1_bn"].epsilon,
        implementation=block.implementation,
        kernel_regularizer=block.kernel_regularizer,
        clip_shape=tuple(model.input_shape[1:]),
        dtype=block.dtype_policy.name,
    )


def _pooling_layer(names):
    """0.1.0's global pooling layer among `names` (`avg_pool` or `max_pool`), or `None`."""
    return next((name for name in ("avg_pool", "max_pool") if name in names), None)


def upgrade(model):
    """The task (or backbone) a plain functional model of the family is, with its weights.

    Raises a `ValueError` for a model whose layers are not this package's
    network (another architecture, a renamed layer).
    """
    names = {layer.name for layer in model.layers}
    pooled = _pooling_layer(names)
    pooling = "max" if pooled == "max_pool" else "avg"
    backbone = VideoResNetBackbone(**backbone_config(model), name=f"{model.name}_backbone" if pooled else model.name)
    if "predictions" in names:
        head = model.get_layer("predictions")
        dropout = model.get_layer("dropout").rate if "dropout" in names else 0.0
        task = VideoClassifier(backbone, head.units, pooling=pooling, dropout=dropout,
                               activation=keras.activations.serialize(head.activation), name=model.name)
    elif pooled:
        task = VideoFeatureExtractor(backbone, pooling=pooling, name=model.name)
    else:
        task = backbone
    for layer in task.layers:
        if layer.name not in names:
            raise _not_ours(model, f"no layer {layer.name!r}")
        source = model.get_layer(layer.name)
        layer.set_weights(source.get_weights())
        layer.trainable = source.trainable
    return task


def pooling_layer_name(model):
    """The name of the global pooling layer of a plain functional model of the family (without building its
    task), or `None` when it ends in conv5 feature maps."""
    backbone_config(model)  # a network of the family, or the error that says it is not
    return _pooling_layer({layer.name for layer in model.layers})


def as_task(model):
    """`model` itself if it is a keras_r21d task or backbone, else `upgrade(model)`."""
    if isinstance(model, (_VideoTask, VideoResNetBackbone)):
        return model
    return upgrade(model)
