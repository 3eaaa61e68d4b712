"""Pretrained weights: torchvision / IG-65M checkpoint conversion and `weights=` presets."""

from keras_r21d.weights.convert import ConversionError, convert_state_dict, load_torch_checkpoint, torch_name
from keras_r21d.weights.presets import (
    PREPROCESSING,
    PRESETS,
    Preset,
    cache_dir,
    class_names,
    converted_weights,
    download,
    find_preset,
    get_preset,
    list_presets,
    load_file,
    load_preset,
    preset_names,
    resolve_preset,
)


def is_preset(weights):
    """Whether `weights` names a preset: a `weights=` name (`"kinetics400"`) or a handle from `list_presets()`."""
    return isinstance(weights, str) and (weights in preset_names() or weights in list_presets())


def preset_for_builder(variant, depth, name, input_shape, input_tensor, include_top, classes, midplanes, kwargs):
    """Checks a named builder's arguments against a preset: `(preset, input_shape, classes, midplanes)`."""
    frames = None
    if input_shape is not None:
        frames = input_shape[0]
    elif input_tensor is not None and getattr(input_tensor, "shape", None) is not None:
        frames = input_tensor.shape[1]
    preset = resolve_preset(name, variant, depth, frames)
    if (preset.variant, preset.depth) != (variant, depth):  # a handle names one checkpoint, of one network
        raise ValueError(f"preset {name!r} is a checkpoint of {preset.variant}_{preset.depth}, not of "
                         f"{variant}_{depth}: build it with keras_r21d.from_preset({name!r})")
    label = f"{variant}_{depth} weights={name!r}"
    if kwargs.get("width_multiplier", 1.0) != 1.0:
        raise ValueError(f"{label} needs width_multiplier=1.0. Received: {kwargs['width_multiplier']}")
    if midplanes is not None and midplanes != preset.midplanes:
        raise ValueError(f"{label} is a checkpoint of the {preset.midplanes!r} reading; "
                         f"received midplanes={midplanes!r}")
    if include_top and classes is not None and classes != preset.classes:
        raise ValueError(
            f"{label} has a {preset.classes}-class classifier; received classes={classes}. Build with "
            "include_top=False (and pooling='avg') and add your own head, or fine-tune from the preset."
        )
    if input_shape is None and input_tensor is None:
        input_shape = (preset.frames, 112, 112, 3)
    return preset, input_shape, preset.classes if include_top else classes, preset.midplanes


def load_weights(model, weights, folder=None):
    """Loads `weights` (a `.weights.h5` / `.pth` file or URL) into `model`."""
    if is_preset(weights):
        raise ValueError(f"preset {weights!r} needs a named builder, e.g. keras_r21d.R2Plus1D(18, weights={weights!r})")
    return load_file(model, weights, folder)


__all__ = [
    "PREPROCESSING", "PRESETS", "ConversionError", "Preset", "cache_dir", "class_names", "convert_state_dict",
    "converted_weights", "download", "find_preset", "get_preset", "is_preset", "list_presets",
    "load_file", "load_preset", "load_torch_checkpoint",
    "load_weights", "preset_for_builder", "preset_names", "resolve_preset", "torch_name",
]
