"""`VideoResNetBackbone`: the family's network from the stem to conv5, its stage tables as arguments.

After keras-hub's backbones: a functional `keras.Model` subclass whose
constructor arguments are exactly what it builds (`get_config` returns them)
and whose stage outputs `conv1`..`conv5` are exposed, so that feature
extraction and fine-tuning find the network's structure by stage, not by
layer-name patterns. The named builders (`keras_r21d.R2Plus1D(34)`, ...) make
one from `keras_r21d.models.specs`; the layer names are those of 0.1.0, so
its `.keras` and `.weights.h5` files keep loading.
"""

import keras

from keras_r21d.layers.batchnorm import BatchNormalization
from keras_r21d.layers.blocks import CONV_TYPES, MIDPLANES, BasicBlock, BottleneckBlock
from keras_r21d.layers.video_conv import VideoConv, check_implementation
from keras_r21d.models.specs import BN_EPSILON, BN_MOMENTUM, DEFAULT_INPUT_SHAPE, stem_spans_clip

STEM_TYPES = ("clip", "2d", "3d", "2plus1d")
BLOCK_TYPES = {"basic": BasicBlock, "bottleneck": BottleneckBlock}
STAGES = ("conv1", "conv2", "conv3", "conv4", "conv5")


def _is_positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _stage_ints(name, values):
    values = tuple(values)
    if len(values) != 4 or not all(_is_positive_int(v) for v in values):
        raise ValueError(f"`{name}` must be 4 positive integers (conv2..conv5). Received: {name}={values!r}")
    return values


def clip_input(clip_shape, input_tensor, stem_type):
    """`(inputs, source)`: the model's input for clips of `clip_shape`, or for `input_tensor` (Keras applications'
    convention: a Keras tensor of another graph, whose source inputs become the model's, or a backend tensor)."""
    if clip_shape is None:
        if input_tensor is not None and getattr(input_tensor, "shape", None) is not None:
            clip_shape = tuple(input_tensor.shape[1:])
        else:
            clip_shape = DEFAULT_INPUT_SHAPE
    clip_shape = tuple(clip_shape)
    if len(clip_shape) != 4 or clip_shape[-1] != 3:
        raise ValueError(
            "`input_shape` must be (frames, height, width, 3), channels last. "
            f"Received: input_shape={clip_shape!r}"
        )
    if stem_spans_clip(stem_type=stem_type) and clip_shape[0] is None:
        raise ValueError(
            "R2D's stem spans the whole clip (its frames are stacked as 3L channels), so its clip length "
            "must be fixed at build time: pass e.g. input_shape=(16, 112, 112, 3). "
            f"Received: input_shape={clip_shape!r}"
        )
    if input_tensor is None:
        return keras.Input(shape=clip_shape, name="clip"), None
    if keras.backend.is_keras_tensor(input_tensor):
        return input_tensor, input_tensor
    return keras.Input(tensor=input_tensor, shape=clip_shape, name="clip"), input_tensor


def frozen_layers(model, layers):
    """The names of `layers` that are frozen (`trainable=False`) while `model` is not: state a config keeps, as
    a functional model's layer configs do, so that a frozen stage stays frozen in a saved file."""
    return [layer.name for layer in layers if not layer.trainable and model.trainable]


def freeze(model, names):
    """`model` with the layers `names` frozen (a config's `frozen_layers`)."""
    for name in names:
        model.get_layer(name).trainable = False
    return model


@keras.saving.register_keras_serializable(package="keras_r21d")
class VideoResNetBackbone(keras.Model):
    """The paper's ResNet from its tables: the stem (conv1) and four residual stages (conv2..conv5).

    Maps clips `(batch, frames, height, width, 3)` to conv5 features
    `(batch, t, h, w, channels)`. `stage_outputs` holds the output of each
    stage (`"conv1"`..`"conv5"`) and `stage_layer_names` the names of the
    layers each stage is made of.

    Args:
        stem_type: `"3d"` (3x7x7), `"2d"` (1x7x7), `"2plus1d"` (1x7x7 to
            `stem_midplanes` channels, then 3x1x1) or `"clip"` (R2D: an
            Lx7x7 convolution over the whole clip; the clip length is fixed).
        stage_conv_types: 4 conv types (`"3d"`, `"2d"`, `"2plus1d"`) for
            conv2_x..conv5_x.
        stage_blocks: 4 ints, residual blocks per stage (paper Table 1).
        stage_filters: 4 ints, each stage's width (a bottleneck block's inner
            width; its output is 4x).
        block_type: `"basic"` or `"bottleneck"`.
        stem_filters: int, the stem's output width.
        stem_midplanes: int, the (2+1)D stem's intermediate width (45 in VMZ
            and torchvision); unused by the other stems.
        midplanes: `"paper"` (per-conv intermediate width, as VMZ) or
            `"torchvision"` (per block) for the (2+1)D convolutions.
        bn_epsilon: float, BatchNorm epsilon (1e-3 in VMZ, 1e-5 in torchvision).
        implementation: lowering of the convolutions (see `VideoConv`).
        kernel_regularizer: optional regularizer for every block's conv kernels.
        clip_shape: `(frames, height, width, 3)`; `None` entries accept any
            size (not the frames of a `"clip"` stem).
        input_tensor: optional tensor to use as the input (not part of the
            config: a backbone rebuilt from its config takes a new input).
        dtype: dtype policy of every layer (`None`: the global policy, recorded
            in the config as the policy it was).
        **kwargs: `name`, `trainable`.

    Example:

    >>> backbone = VideoResNetBackbone("2plus1d", ("2plus1d",) * 4, (1, 1, 1, 1), (16, 32, 64, 128),
    ...                                stem_filters=16, stem_midplanes=12, clip_shape=(8, 64, 64, 3))
    >>> backbone.output_shape
    (None, 1, 4, 4, 128)
    >>> backbone.stage_outputs["conv3"].shape
    (None, 4, 16, 16, 32)
    """

    def __init__(
        self,
        stem_type="2plus1d",
        stage_conv_types=("2plus1d",) * 4,
        stage_blocks=(2, 2, 2, 2),
        stage_filters=(64, 128, 256, 512),
        block_type="basic",
        stem_filters=64,
        stem_midplanes=45,
        midplanes="paper",
        bn_epsilon=BN_EPSILON["paper"],
        implementation="auto",
        kernel_regularizer=None,
        clip_shape=DEFAULT_INPUT_SHAPE,
        input_tensor=None,
        dtype=None,
        **kwargs,
    ):
        stage_conv_types = tuple(stage_conv_types)
        if stem_type not in STEM_TYPES:
            raise ValueError(f"`stem_type` must be one of {STEM_TYPES}. Received: stem_type={stem_type!r}")
        if len(stage_conv_types) != 4 or any(c not in CONV_TYPES for c in stage_conv_types):
            raise ValueError(
                f"`stage_conv_types` must be 4 entries from {CONV_TYPES} (conv2..conv5). "
                f"Received: stage_conv_types={stage_conv_types!r}"
            )
        stage_blocks = _stage_ints("stage_blocks", stage_blocks)
        stage_filters = _stage_ints("stage_filters", stage_filters)
        for name, value in (("stem_filters", stem_filters), ("stem_midplanes", stem_midplanes)):
            if not _is_positive_int(value):
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
        if block_type not in BLOCK_TYPES:
            raise ValueError(f"`block_type` must be one of {tuple(BLOCK_TYPES)}. Received: {block_type!r}")
        if midplanes not in MIDPLANES:
            raise ValueError(f"`midplanes` must be one of {MIDPLANES}. Received: midplanes={midplanes!r}")
        check_implementation(implementation)
        # The policy in force (the global one when `dtype` is None) is recorded: a network built under
        # mixed_bfloat16 reloads as one, as a functional model's layer configs did.
        policy = keras.dtype_policies.get(dtype) if dtype is not None else keras.config.dtype_policy()
        inputs, source = clip_input(clip_shape, input_tensor, stem_type)
        stage_outputs, stage_layer_names = {}, {}

        def conv(filters, kernel, strides, name, padding=None):
            return VideoConv(filters, kernel, strides=strides, padding=padding, implementation=implementation,
                             name=name, dtype=policy)

        def norm_relu(x, name):
            x = BatchNormalization(epsilon=bn_epsilon, momentum=BN_MOMENTUM, name=f"{name}_bn", dtype=policy)(x)
            return keras.layers.ReLU(name=f"{name}_relu", dtype=policy)(x)

        # conv1: the stem of Table 1 in its type, then BatchNorm and ReLU.
        if stem_type == "2plus1d":
            x = conv(stem_midplanes, (1, 7, 7), (1, 2, 2), "conv1_spatial")(inputs)
            x = norm_relu(x, "conv1_spatial")
            x = conv(stem_filters, (3, 1, 1), (1, 1, 1), "conv1_temporal")(x)
            names = ["conv1_spatial", "conv1_spatial_bn", "conv1_spatial_relu", "conv1_temporal"]
        elif stem_type == "clip":
            x = conv(stem_filters, (inputs.shape[1], 7, 7), (1, 2, 2), "conv1_conv", padding=(0, 3, 3))(inputs)
            names = ["conv1_conv"]
        else:
            x = conv(stem_filters, (3, 7, 7) if stem_type == "3d" else (1, 7, 7), (1, 2, 2), "conv1_conv")(inputs)
            names = ["conv1_conv"]
        stage_outputs["conv1"] = x = norm_relu(x, "conv1")
        stage_layer_names["conv1"] = (*names, "conv1_bn", "conv1_relu")
        for stage, conv_type, blocks, filters in zip(STAGES[1:], stage_conv_types, stage_blocks, stage_filters):
            names = [f"{stage}_block{index + 1}" for index in range(blocks)]
            for index, name in enumerate(names):
                x = BLOCK_TYPES[block_type](
                    filters,
                    conv_type=conv_type,
                    stride=2 if stage != "conv2" and index == 0 else 1,
                    midplanes=midplanes,
                    implementation=implementation,
                    bn_epsilon=bn_epsilon,
                    bn_momentum=BN_MOMENTUM,
                    kernel_regularizer=kernel_regularizer,
                    name=name,
                    dtype=policy,
                )(x)
            stage_outputs[stage] = x
            stage_layer_names[stage] = tuple(names)
        model_inputs = keras.utils.get_source_inputs(source) if source is not None else [inputs]
        model_inputs = model_inputs[0] if len(model_inputs) == 1 else model_inputs
        super().__init__(inputs=model_inputs, outputs=x, **kwargs)
        self.stem_type = stem_type
        self.stage_conv_types = stage_conv_types
        self.stage_blocks = stage_blocks
        self.stage_filters = stage_filters
        self.block_type = block_type
        self.stem_filters = stem_filters
        self.stem_midplanes = stem_midplanes
        self.midplanes = midplanes
        self.bn_epsilon = bn_epsilon
        self.implementation = implementation
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.clip_shape = tuple(inputs.shape[1:])
        self.dtype_arg = policy.name
        self.stage_outputs = stage_outputs
        self.stage_layer_names = stage_layer_names

    @property
    def features(self):
        """The width of the conv5 features."""
        return int(self.output.shape[-1])

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "stem_type": self.stem_type,
            "stage_conv_types": list(self.stage_conv_types),
            "stage_blocks": list(self.stage_blocks),
            "stage_filters": list(self.stage_filters),
            "block_type": self.block_type,
            "stem_filters": self.stem_filters,
            "stem_midplanes": self.stem_midplanes,
            "midplanes": self.midplanes,
            "bn_epsilon": self.bn_epsilon,
            "implementation": self.implementation,
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "clip_shape": list(self.clip_shape),
            "dtype": self.dtype_arg,
            "frozen_layers": frozen_layers(self, self.layers),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        frozen = config.pop("frozen_layers", ())
        if config.get("kernel_regularizer") is not None:
            config["kernel_regularizer"] = keras.regularizers.deserialize(config["kernel_regularizer"])
        return freeze(cls(**config), frozen)
