"""Named configurations: `get_model("r2plus1d_34")`, `list_models()`; named checkpoints: `from_preset(handle)`."""

from keras_r21d.models.specs import DEPTHS, VARIANTS
from keras_r21d.models.video_resnet import BUILDERS
from keras_r21d.weights.presets import get_preset, list_presets  # noqa: F401 - list_presets is exported here


def list_models(variant=None):
    """Returns the registered model names, e.g. `["fr2d_10", ..., "r2plus1d_18", ...]`.

    Args:
        variant: optional variant key (`"r3d"`, `"mc3"`, ...) to list only its depths.
    """
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}. Known: {sorted(VARIANTS)}")
    variants = [variant] if variant else list(VARIANTS)
    return [f"{v}_{d}" for v in variants for d in sorted(DEPTHS)]


def parse_model_name(name):
    """Splits `"r2plus1d_34"` into `("r2plus1d", 34)`, or raises a `ValueError`."""
    variant, _, depth = str(name).lower().rpartition("_")
    if variant not in VARIANTS or not depth.isdecimal() or int(depth) not in DEPTHS:
        raise ValueError(
            f"Unknown model name {name!r}: expected '<variant>_<depth>' with variant in {sorted(VARIANTS)} "
            f"and depth in {sorted(DEPTHS)}, e.g. 'r2plus1d_18'."
        )
    return variant, int(depth)


def get_model(name, **kwargs):
    """Builds a registered model by name.

    Args:
        name: `"<variant>_<depth>"`, e.g. `"r2plus1d_34"`, `"mc3_18"` (see `list_models()`).
        **kwargs: forwarded to the builder (`classes`, `input_shape`, ...).

    Example:

    >>> model = keras_r21d.get_model("r3d_18", classes=101)
    """
    variant, depth = parse_model_name(name)
    return BUILDERS[variant](depth, **kwargs)


def from_preset(handle, include_top=True, input_shape=None, pooling=None, classifier_activation="softmax",
                **kwargs):
    """The network of a preset, with its weights: `from_preset("r2plus1d_34.ig65m_kinetics400_32f")`.

    One handle names one checkpoint (`list_presets()`; `get_preset(handle).metadata()` says its classes, clip
    length, preprocessing and published accuracy).

    Args:
        handle: a handle from `list_presets()`.
        include_top: keep the preset's classifier; `False` (with `pooling`) for features or a new head.
        input_shape: `(frames, height, width, 3)`; default the preset's clip length at 112x112. `None`
            entries accept any clip length and size (not for R2D).
        pooling, classifier_activation, **kwargs: as the named builders (`implementation`, `name`, ...).

    The checkpoint is downloaded and converted on first use (which needs
    torch), then read from the local cache (`$KERAS_R21D_CACHE`, default
    `~/.keras/keras_r21d`): offline once converted.

    Example:

    >>> keras_r21d.list_presets("r2plus1d_34")[0]
    'r2plus1d_34.ig65m_32f'
    """
    preset = get_preset(handle)
    return get_model(f"{preset.variant}_{preset.depth}", weights=handle, include_top=include_top,
                     input_shape=input_shape or (preset.frames, 112, 112, 3), pooling=pooling,
                     classifier_activation=classifier_activation, **kwargs)
