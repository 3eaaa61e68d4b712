"""One generic, table-driven builder for the whole family of the paper."""

import os

import keras

from keras_r21d.layers.blocks import CONV_TYPES, MIDPLANES, BasicBlock, BottleneckBlock
from keras_r21d.layers.video_conv import VideoConv, check_implementation
from keras_r21d.models.specs import (
    BN_EPSILON,
    BN_MOMENTUM,
    DEFAULT_INPUT_SHAPE,
    DEPTHS,
    GROUP_WIDTHS,
    STEM_2PLUS1D_MIDPLANES,
    STEM_WIDTH,
    VARIANTS,
    stem_spans_clip,
)

STEM_TYPES = ("clip", "2d", "3d", "2plus1d")
POOLINGS = (None, "avg", "max")


def _scaled(width, multiplier):
    return max(1, int(round(width * multiplier)))


def _check_args(depth, stem_type, stage_conv_types, midplanes, implementation, include_top, pooling, classes,
                width_multiplier, weights):
    if depth not in DEPTHS:
        raise ValueError(f"`depth` must be one of {sorted(DEPTHS)}. Received: depth={depth!r}")
    if stem_type not in STEM_TYPES:
        raise ValueError(f"`stem_type` must be one of {STEM_TYPES}. Received: stem_type={stem_type!r}")
    if len(stage_conv_types) != 4 or any(c not in CONV_TYPES for c in stage_conv_types):
        raise ValueError(
            f"`stage_conv_types` must be 4 entries from {CONV_TYPES} (conv2..conv5). "
            f"Received: stage_conv_types={stage_conv_types!r}"
        )
    if midplanes not in MIDPLANES:
        raise ValueError(f"`midplanes` must be one of {MIDPLANES}. Received: midplanes={midplanes!r}")
    check_implementation(implementation)
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of {POOLINGS}. Received: pooling={pooling!r}")
    if include_top and (not isinstance(classes, int) or classes < 1):
        raise ValueError(f"`classes` must be a positive integer with include_top=True. Received: classes={classes!r}")
    if not width_multiplier > 0:
        raise ValueError(f"`width_multiplier` must be > 0. Received: width_multiplier={width_multiplier!r}")
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"`weights` must be None, a preset name or a file path or URL. Received: {weights!r}")


def _resolve_input(input_shape, input_tensor, stem_type):
    if input_shape is None:
        if input_tensor is not None and getattr(input_tensor, "shape", None) is not None:
            input_shape = tuple(input_tensor.shape[1:])
        else:
            input_shape = DEFAULT_INPUT_SHAPE
    input_shape = tuple(input_shape)
    if len(input_shape) != 4 or input_shape[-1] != 3:
        raise ValueError(
            "`input_shape` must be (frames, height, width, 3), channels last. "
            f"Received: input_shape={input_shape!r}"
        )
    if stem_spans_clip(stem_type=stem_type) and input_shape[0] is None:
        raise ValueError(
            "R2D's stem spans the whole clip (its frames are stacked as 3L channels), so its clip length "
            "must be fixed at build time: pass e.g. input_shape=(16, 112, 112, 3). "
            f"Received: input_shape={input_shape!r}"
        )
    if input_tensor is None:
        return keras.Input(shape=input_shape, name="clip"), None
    if keras.backend.is_keras_tensor(input_tensor):
        return input_tensor, input_tensor
    return keras.Input(tensor=input_tensor, shape=input_shape, name="clip"), input_tensor


def _stem(x, stem_type, frames, width_multiplier, epsilon, implementation):
    """conv1: the stem of Table 1 in the variant's type, then BatchNorm and ReLU."""

    def conv(filters, kernel, strides, name, padding=None):
        return VideoConv(filters, kernel, strides=strides, padding=padding, implementation=implementation,
                         name=name)

    width = _scaled(STEM_WIDTH, width_multiplier)
    norm = dict(epsilon=epsilon, momentum=BN_MOMENTUM)
    if stem_type == "2plus1d":
        mid = _scaled(STEM_2PLUS1D_MIDPLANES, width_multiplier)
        x = conv(mid, (1, 7, 7), (1, 2, 2), "conv1_spatial")(x)
        x = keras.layers.BatchNormalization(name="conv1_spatial_bn", **norm)(x)
        x = keras.layers.ReLU(name="conv1_spatial_relu")(x)
        x = conv(width, (3, 1, 1), (1, 1, 1), "conv1_temporal")(x)
    elif stem_type == "clip":
        x = conv(width, (frames, 7, 7), (1, 2, 2), "conv1_conv", padding=(0, 3, 3))(x)
    else:
        kernel = (3, 7, 7) if stem_type == "3d" else (1, 7, 7)
        x = conv(width, kernel, (1, 2, 2), "conv1_conv")(x)
    x = keras.layers.BatchNormalization(name="conv1_bn", **norm)(x)
    return keras.layers.ReLU(name="conv1_relu")(x)


def VideoResNet(
    depth=18,
    stem_type="2plus1d",
    stage_conv_types=("2plus1d",) * 4,
    *,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=400,
    classifier_activation="softmax",
    midplanes="paper",
    width_multiplier=1.0,
    implementation="auto",
    dropout=0.0,
    kernel_regularizer=None,
    name=None,
):
    """Builds any network of the paper's family from its stem and stage conv types.

    The named builders (`R2Plus1D`, `R3D`, `MC3`, ...) call this with a row of
    `keras_r21d.models.specs.VARIANTS`; call it directly for a custom mix of
    per-stage convolution types (e.g. for architecture search).

    Args:
        depth: int, one of 10, 16, 18, 26, 34 (basic blocks), 50, 101, 152
            (bottleneck blocks).
        stem_type: `"3d"` (3x7x7), `"2d"` (1x7x7), `"2plus1d"` (1x7x7 to 45
            channels, then 3x1x1) or `"clip"` (R2D: an Lx7x7 conv over the
            whole clip, so the clip length is fixed).
        stage_conv_types: 4 conv types (`"3d"`, `"2d"`, `"2plus1d"`) for
            conv2_x..conv5_x.
        include_top: bool, whether to add the pooling and the classifier.
        weights: `None` (random initialization), or a `.weights.h5` or
            PyTorch `.pth` file (torchvision's `VideoResNet` layout) or a URL
            of one. Preset names (`"kinetics400"`, ...) go through the named
            builders (`R2Plus1D(18, weights="kinetics400")`).
        input_tensor: optional Keras tensor to use as the model's input.
        input_shape: `(frames, height, width, 3)`; default `(16, 112, 112, 3)`.
            `None` entries make the size variable (not the frames of R2D).
        pooling: with `include_top=False`: `None` (5-D conv5 features),
            `"avg"` or `"max"` (global pooling over T, H, W).
        classes: int, number of classes with `include_top=True`.
        classifier_activation: activation of the classifier (`None` for logits).
        midplanes: `"paper"` (per-conv M, BatchNorm epsilon 1e-3, as VMZ) or
            `"torchvision"` (per-block M, epsilon 1e-5, to load torchvision
            weights).
        width_multiplier: float, scales every width (1.0 is the paper's).
        implementation: lowering of the convolutions (see `VideoConv`).
        dropout: float, dropout rate before the classifier (0 in the paper).
        kernel_regularizer: optional regularizer for every conv kernel.
        name: model name.

    Returns:
        A functional `keras.Model`.

    Example:

    >>> model = VideoResNet(10, "3d", ("3d", "2d", "2d", "2plus1d"), classes=8,
    ...                     input_shape=(8, 64, 64, 3), width_multiplier=0.25)
    >>> model.output_shape
    (None, 8)

    Reference:
        Tran et al., "A Closer Look at Spatiotemporal Convolutions for Action
        Recognition", CVPR 2018.
    """
    stage_conv_types = tuple(stage_conv_types)
    _check_args(depth, stem_type, stage_conv_types, midplanes, implementation, include_top, pooling, classes,
                width_multiplier, weights)
    inputs, source = _resolve_input(input_shape, input_tensor, stem_type)
    block_type, blocks_per_group = DEPTHS[depth]
    block_cls = BasicBlock if block_type == "basic" else BottleneckBlock
    epsilon = BN_EPSILON[midplanes]
    x = _stem(inputs, stem_type, inputs.shape[1], width_multiplier, epsilon, implementation)
    for group, (conv_type, blocks, width) in enumerate(zip(stage_conv_types, blocks_per_group, GROUP_WIDTHS)):
        for index in range(blocks):
            x = block_cls(
                _scaled(width, width_multiplier),
                conv_type=conv_type,
                stride=2 if group > 0 and index == 0 else 1,
                midplanes=midplanes,
                implementation=implementation,
                bn_epsilon=epsilon,
                bn_momentum=BN_MOMENTUM,
                kernel_regularizer=kernel_regularizer,
                name=f"conv{group + 2}_block{index + 1}",
            )(x)
    if include_top:
        x = keras.layers.GlobalAveragePooling3D(name="avg_pool")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name="dropout")(x)
        mixed = keras.config.dtype_policy().name.startswith("mixed")
        x = keras.layers.Dense(
            classes,
            activation=classifier_activation,
            name="predictions",
            dtype="float32" if mixed else None,
        )(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling3D(name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling3D(name="max_pool")(x)
    model_inputs = keras.utils.get_source_inputs(source) if source is not None else inputs
    model = keras.Model(model_inputs, x, name=name or f"video_resnet{depth}")
    if weights is not None:
        from keras_r21d.weights import load_weights

        load_weights(model, os.fspath(weights))
    return model


def _variant_builder(variant):
    display, stem_type, stage_conv_types = VARIANTS[variant]

    def builder(
        depth=18,
        *,
        include_top=True,
        weights=None,
        input_tensor=None,
        input_shape=None,
        pooling=None,
        classes=None,
        classifier_activation="softmax",
        midplanes=None,
        name=None,
        **kwargs,
    ):
        from keras_r21d.weights import is_preset, preset_for_builder

        preset = None
        if is_preset(weights):
            preset, input_shape, classes, midplanes = preset_for_builder(
                variant, depth, weights, input_shape, input_tensor, include_top, classes, midplanes, kwargs
            )
        model = VideoResNet(
            depth,
            stem_type,
            stage_conv_types,
            include_top=include_top,
            weights=None if preset else weights,
            input_tensor=input_tensor,
            input_shape=input_shape,
            pooling=pooling,
            classes=400 if classes is None else classes,
            classifier_activation=classifier_activation,
            midplanes=midplanes or "paper",
            name=name or f"{variant}_{depth}",
            **kwargs,
        )
        if preset:
            from keras_r21d.weights import load_preset

            load_preset(model, preset)
        return model

    stages = ", ".join(f"conv{i + 2}: {c}" for i, c in enumerate(stage_conv_types))
    builder.__doc__ = f"""Builds {display}-`depth` (Tran et al. 2018): stem {stem_type}; {stages}.

    Args:
        depth: int, one of {sorted(DEPTHS)}.
        include_top: bool, whether to add the pooling and the classifier.
        weights: `None` (random initialization), a preset name (see
            `keras_r21d.weights.PRESETS`; e.g. `"kinetics400"` for depth 18 of
            R3D, MC3 and R(2+1)D, `"ig65m_kinetics400"` and `"ig65m"` for
            R(2+1)D-34), or a `.weights.h5` / `.pth` file or URL.
        input_tensor: optional Keras tensor to use as the model's input.
        input_shape: `(frames, height, width, 3)`; default `{DEFAULT_INPUT_SHAPE}`.
        pooling: with `include_top=False`: `None`, `"avg"` or `"max"`.
        classes: int, number of classes (default 400, or the preset's).
        classifier_activation: activation of the classifier, `None` for logits.
        midplanes: `"paper"` (default) or `"torchvision"` (see `VideoResNet`);
            a preset sets the reading its checkpoint needs.
        name: model name, default `"{variant}_<depth>"`.
        **kwargs: `width_multiplier`, `implementation`, `dropout`,
            `kernel_regularizer` (see `VideoResNet`).

    Returns:
        A functional `keras.Model`.

    Example:

    >>> model = keras_r21d.{_BUILDER_NAMES[variant]}(18, classes=101)

    Reference:
        Tran et al., "A Closer Look at Spatiotemporal Convolutions for Action
        Recognition", CVPR 2018.
    """
    builder.__name__ = builder.__qualname__ = _BUILDER_NAMES[variant]
    return builder


_BUILDER_NAMES = {
    "r2d": "R2D",
    "fr2d": "FR2D",
    "r3d": "R3D",
    "mc2": "MC2",
    "mc3": "MC3",
    "mc4": "MC4",
    "mc5": "MC5",
    "rmc2": "RMC2",
    "rmc3": "RMC3",
    "rmc4": "RMC4",
    "rmc5": "RMC5",
    "r2plus1d": "R2Plus1D",
}

BUILDERS = {variant: _variant_builder(variant) for variant in VARIANTS}
R2D = BUILDERS["r2d"]
FR2D = BUILDERS["fr2d"]
R3D = BUILDERS["r3d"]
MC2 = BUILDERS["mc2"]
MC3 = BUILDERS["mc3"]
MC4 = BUILDERS["mc4"]
MC5 = BUILDERS["mc5"]
RMC2 = BUILDERS["rmc2"]
RMC3 = BUILDERS["rmc3"]
RMC4 = BUILDERS["rmc4"]
RMC5 = BUILDERS["rmc5"]
R2Plus1D = BUILDERS["r2plus1d"]
