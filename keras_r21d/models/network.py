"""From the paper's tables to a model: depth and variant rows become a backbone and its task.

`network()` is the one place the applications' arguments (`depth`,
`width_multiplier`, `include_top`, `pooling`) are turned into a
`VideoResNetBackbone` and a `VideoClassifier` / `VideoFeatureExtractor`. It
loads no weights: the front door (`keras_r21d.models.video_resnet`) and the
presets do, on top of it.
"""

from keras_r21d.models.backbone import STEM_TYPES, VideoResNetBackbone
from keras_r21d.models.classifier import VideoClassifier, VideoFeatureExtractor, _VideoTask
from keras_r21d.models.legacy import as_task
from keras_r21d.models.specs import BN_EPSILON, DEPTHS, GROUP_WIDTHS, STEM_2PLUS1D_MIDPLANES, STEM_WIDTH, VARIANTS

POOLINGS = (None, "avg", "max")


def scaled(width, multiplier):
    """A width times the width multiplier, rounded, at least 1."""
    return max(1, int(round(width * multiplier)))


def backbone_arguments(depth, stem_type, stage_conv_types, midplanes="paper", width_multiplier=1.0):
    """The `VideoResNetBackbone` arguments of a network of the paper at `depth` (Table 1) and width."""
    if depth not in DEPTHS:
        raise ValueError(f"`depth` must be one of {sorted(DEPTHS)}. Received: depth={depth!r}")
    if stem_type not in STEM_TYPES:
        raise ValueError(f"`stem_type` must be one of {STEM_TYPES}. Received: stem_type={stem_type!r}")
    if midplanes not in BN_EPSILON:
        raise ValueError(f"`midplanes` must be one of {tuple(BN_EPSILON)}. Received: midplanes={midplanes!r}")
    if not (isinstance(width_multiplier, (int, float)) and width_multiplier > 0):
        raise ValueError(f"`width_multiplier` must be > 0. Received: width_multiplier={width_multiplier!r}")
    block_type, blocks = DEPTHS[depth]
    return dict(
        stem_type=stem_type,
        stage_conv_types=tuple(stage_conv_types),
        stage_blocks=blocks,
        stage_filters=tuple(scaled(width, width_multiplier) for width in GROUP_WIDTHS),
        block_type=block_type,
        stem_filters=scaled(STEM_WIDTH, width_multiplier),
        stem_midplanes=scaled(STEM_2PLUS1D_MIDPLANES, width_multiplier),
        midplanes=midplanes,
        bn_epsilon=BN_EPSILON[midplanes],
    )


def network(depth, stem_type, stage_conv_types, *, include_top=True, input_tensor=None, input_shape=None,
            pooling=None, classes=400, classifier_activation="softmax", midplanes="paper", width_multiplier=1.0,
            implementation="auto", dropout=0.0, kernel_regularizer=None, dtype=None, name=None):
    """A network of the family without weights: a `VideoClassifier` (`include_top`), a `VideoFeatureExtractor`
    (`pooling`) or the `VideoResNetBackbone` itself (conv5 features). Arguments as `keras_r21d.VideoResNet`."""
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of {POOLINGS}. Received: pooling={pooling!r}")
    if include_top and (not isinstance(classes, int) or classes < 1):
        raise ValueError(f"`classes` must be a positive integer with include_top=True. Received: classes={classes!r}")
    name = name or f"video_resnet{depth}"
    arguments = backbone_arguments(depth, stem_type, stage_conv_types, midplanes, width_multiplier)
    if not include_top and pooling is None:
        return VideoResNetBackbone(**arguments, implementation=implementation, kernel_regularizer=kernel_regularizer,
                                   clip_shape=input_shape, input_tensor=input_tensor, dtype=dtype, name=name)
    backbone = VideoResNetBackbone(**arguments, implementation=implementation, kernel_regularizer=kernel_regularizer,
                                   clip_shape=input_shape, input_tensor=input_tensor, dtype=dtype,
                                   name=f"{name}_backbone")
    if include_top:
        return VideoClassifier(backbone, classes, dropout=dropout, activation=classifier_activation, name=name)
    return VideoFeatureExtractor(backbone, pooling=pooling, name=name)


def variant_network(variant, depth, **kwargs):
    """`network()` for a row of `specs.VARIANTS` (`"r2plus1d"`, `"mc3"`, ...)."""
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}. Known: {sorted(VARIANTS)}")
    _, stem_type, stage_conv_types = VARIANTS[variant]
    return network(depth, stem_type, stage_conv_types, **kwargs)


def backbone_of(model):
    """The `VideoResNetBackbone` of a model of the family: a task's `.backbone`, a backbone itself, or that of a
    0.1.0 model (read from its layers, see `keras_r21d.models.legacy`)."""
    task = as_task(model)
    return task if isinstance(task, VideoResNetBackbone) else task.backbone


def stage_layer_names(model):
    """`{stage: layer names}`: `"conv1"`..`"conv5"` (the backbone's stages) and `"head"` (pooling, dropout,
    classifier); for any model of the family, 0.1.0's included."""
    task = as_task(model)
    if isinstance(task, _VideoTask):
        return task.stage_layer_names()
    return {**task.stage_layer_names, "head": ()}
