"""The applications-style front door: `VideoResNet` and the named builders (`R2Plus1D`, `R3D`, `MC3`, ...).

They build a `VideoResNetBackbone` and its task (`keras_r21d.models.network`)
and load `weights=` (a file, or a preset by name); the layer names are 0.1.0's.
"""

import os

from keras_r21d.models.network import network
from keras_r21d.models.specs import DEFAULT_INPUT_SHAPE, DEPTHS, VARIANTS
from keras_r21d.weights import is_preset, load_preset, load_weights, preset_for_builder


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
    dtype=None,
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
        dtype: dtype policy of the network (`None`: the global policy;
            `"mixed_bfloat16"`, ...); a mixed network's classifier is float32.
        name: model name.

    Returns:
        A `keras_r21d.models.VideoClassifier` (`include_top=True`), a
        `VideoFeatureExtractor` (`pooling`) or the `VideoResNetBackbone`
        (conv5 features); each is a functional `keras.Model` and the tasks
        hold theirs as `.backbone`.

    Example:

    >>> model = VideoResNet(10, "3d", ("3d", "2d", "2d", "2plus1d"), classes=8,
    ...                     input_shape=(8, 64, 64, 3), width_multiplier=0.25)
    >>> model.output_shape
    (None, 8)

    Reference:
        Tran et al., "A Closer Look at Spatiotemporal Convolutions for Action
        Recognition", CVPR 2018.
    """
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"`weights` must be None, a preset name or a file path or URL. Received: {weights!r}")
    model = network(depth, stem_type, stage_conv_types, include_top=include_top, input_tensor=input_tensor,
                    input_shape=input_shape, pooling=pooling, classes=classes,
                    classifier_activation=classifier_activation, midplanes=midplanes,
                    width_multiplier=width_multiplier, implementation=implementation, dropout=dropout,
                    kernel_regularizer=kernel_regularizer, dtype=dtype, name=name)
    if weights is not None:
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
            `kernel_regularizer`, `dtype` (see `VideoResNet`).

    Returns:
        A `VideoClassifier`, `VideoFeatureExtractor` or `VideoResNetBackbone`
        (see `VideoResNet`).

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
