"""BatchNorm folding: the inference form of a trained network.

At inference a BatchNormalization is a per-channel affine map,
`gamma * (y - mean) / sqrt(var + eps) + beta`, so after a bias-free
convolution it folds into the convolution's kernel and a bias. The folded
network computes the same function (to float rounding) with no BatchNorm and
no separate ReLU pass over the activations: every conv's bias and the ReLU
that follows it run on the 2D convolution's output, where TensorFlow fuses
them into the convolution (`_FusedConv2D`), and a TFLite export has no
`MUL`/`ADD` after each convolution.
"""

import keras
import numpy as np

from keras_r21d.layers.blocks import BasicBlock, BottleneckBlock
from keras_r21d.layers.conv2plus1d import Conv2Plus1D
from keras_r21d.layers.video_conv import VideoConv

_CONVS = (VideoConv, Conv2Plus1D)


@keras.saving.register_keras_serializable(package="keras_r21d")
class FoldedAway(keras.layers.Layer):
    """The identity: the place of a BatchNorm or ReLU that `fold_batchnorm` folded into a conv."""

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape
_BLOCKS = (BasicBlock, BottleneckBlock)


def fold_into_conv(kernel, bias, bn):
    """`(kernel, bias)` of a conv whose output then goes through the inference-mode BatchNorm `bn`.

    `kernel` has the output channels last; `bias` may be `None` (no bias).
    """
    gamma = bn.gamma.numpy() if bn.scale else 1.0
    beta = bn.beta.numpy() if bn.center else 0.0
    scale = gamma / np.sqrt(bn.moving_variance.numpy().astype(np.float64) + bn.epsilon)
    bias = 0.0 if bias is None else np.asarray(bias, np.float64)
    new_bias = (bias - bn.moving_mean.numpy()) * scale + beta
    new_kernel = np.asarray(kernel, np.float64) * scale
    return new_kernel.astype(np.float32), np.broadcast_to(new_bias, scale.shape).astype(np.float32)


def _conv_weights(conv):
    return conv.kernel.numpy(), (conv.bias.numpy() if conv.bias is not None else None)


def _set_conv(target, kernel, bias):
    target.kernel.assign(kernel)
    if target.bias is not None:
        target.bias.assign(np.zeros(target.filters, np.float32) if bias is None else bias)
    elif bias is not None:
        raise ValueError(f"{target.name}: a folded conv needs a bias")


def _fold_conv(source, target, bn):
    """Copies `source` (a `VideoConv` or `Conv2Plus1D`) into its folded `target`, folding `bn` (or none)."""
    if isinstance(source, Conv2Plus1D):
        kernel, bias = _conv_weights(source.spatial)
        if source.bn is not None:
            kernel, bias = fold_into_conv(kernel, bias, source.bn)
        _set_conv(target.spatial, kernel, bias)
        source, target = source.temporal, target.temporal
    kernel, bias = _conv_weights(source)
    if bn is not None:
        kernel, bias = fold_into_conv(kernel, bias, bn)
    _set_conv(target, kernel, bias)


def _graph(model):
    """`(producer, consumers)`: the layer feeding each layer and the layers each one feeds, in `model`."""
    nodes = [node for depth_nodes in model._nodes_by_depth.values() for node in depth_nodes]
    producer, consumers = {}, {}
    for node in nodes:
        for parent in node.parent_nodes:
            consumers.setdefault(parent.operation.name, []).append(node.operation)
        if len(node.parent_nodes) == 1:
            producer[node.operation.name] = node.parent_nodes[0].operation
    return producer, consumers


def _plain_relu(layer):
    config = layer.get_config()
    return (isinstance(layer, keras.layers.ReLU) and config.get("max_value") is None
            and not config.get("negative_slope") and not config.get("threshold"))


def as_float32(model):
    """`model` computing in float32: a mixed-precision model's serving form, or the model itself if it is one.

    The copy has the same layers, names and weights (a mixed-precision
    model keeps float32 variables), every layer with the `float32` dtype
    policy, so its outputs are the float32 network's on the same weights.
    """
    layers = model._flatten_layers(include_self=False, recursive=True)
    if all(layer.dtype_policy.name == "float32" for layer in layers):
        return model
    copy = keras.models.clone_model(
        model, clone_function=lambda layer: layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})
    )
    copy.set_weights(model.get_weights())
    return copy


def fold_batchnorm(model):
    """An inference copy of `model` with every BatchNorm folded into the convolution before it.

    Works on the networks this package builds (any variant, depth, width,
    lowering): the stem's conv/BatchNorm/ReLU, every residual block and
    every `Conv2Plus1D` (whose inner BatchNorm folds into its spatial
    conv). The copy has the same inputs, outputs and layer names (a folded
    BatchNorm or ReLU becomes a `FoldedAway` identity layer) and gives the same
    outputs as `model(x, training=False)` to float rounding; it has no
    BatchNorm statistics, so train the original, not the copy. The original
    is not modified. The copy computes in float32 whatever the original's
    dtype policy: a mixed-precision model's inference and serving form.

    Example:

    >>> model = keras_r21d.R2Plus1D(10, input_shape=(8, 64, 64, 3), classes=5, width_multiplier=0.25)
    >>> clips = np.random.default_rng(0).normal(size=(2, 8, 64, 64, 3)).astype("float32")
    >>> folded = keras_r21d.fold_batchnorm(model)
    >>> bool(np.allclose(folded(clips), model(clips, training=False), atol=1e-4))
    True
    """
    if not isinstance(model, keras.Model) or not hasattr(model, "_nodes_by_depth"):
        raise ValueError(f"fold_batchnorm needs a functional keras.Model, got {type(model).__name__}")
    producer, consumers = _graph(model)
    folded_bn, fused_relu = {}, {}  # conv name -> its BatchNorm; conv name -> the absorbed ReLU
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        conv = producer.get(layer.name)
        if not isinstance(conv, _CONVS) or len(consumers.get(conv.name, [])) != 1:
            continue
        if conv.activation is not keras.activations.linear:
            continue  # a BatchNorm after a nonlinearity is not an affine map of the conv's output
        if layer.axis not in (-1, 4):
            continue  # not a per-channel BatchNorm of a channels-last clip
        folded_bn[conv.name] = layer
        after = consumers.get(layer.name, [])
        if len(after) == 1 and _plain_relu(after[0]):
            fused_relu[conv.name] = after[0]
    absorbed = {bn.name for bn in folded_bn.values()} | {relu.name for relu in fused_relu.values()}

    def clone(layer):
        if layer.name in absorbed:
            return FoldedAway(name=layer.name, dtype="float32")
        config = {**layer.get_config(), "dtype": "float32"}
        if isinstance(layer, _BLOCKS):
            config["batchnorm"] = False
        elif isinstance(layer, _CONVS) and layer.name in folded_bn:
            config["use_bias"] = True
            config["activation"] = "relu" if layer.name in fused_relu else None
            if isinstance(layer, Conv2Plus1D):
                config["inner_batchnorm"] = False
        elif isinstance(layer, Conv2Plus1D):
            config["inner_batchnorm"] = False
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        target = copy.get_layer(layer.name)
        if layer.name in absorbed:
            continue
        if isinstance(layer, _BLOCKS):
            for (conv, bn), (new_conv, _) in zip(layer.conv_bn_pairs(), target.conv_bn_pairs()):
                _fold_conv(conv, new_conv, bn)
        elif isinstance(layer, _CONVS):
            _fold_conv(layer, target, folded_bn.get(layer.name))
        elif layer.weights:
            target.set_weights(layer.get_weights())
    return copy
