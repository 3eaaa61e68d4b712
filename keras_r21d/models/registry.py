"""Named configurations: `get_model("r2plus1d_34")`, `list_models()`."""

from keras_r21d.models.specs import DEPTHS, VARIANTS
from keras_r21d.models.video_resnet import BUILDERS


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
