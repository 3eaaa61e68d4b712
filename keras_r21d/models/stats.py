"""Parameter and FLOP counts in the paper's convention."""

import keras

from keras_r21d.models.network import variant_network
from keras_r21d.models.specs import VARIANTS


def _size(variable):
    size = 1
    for d in variable.shape:
        size *= int(d)
    return size


def _layer_macs(layer, shape):
    """Multiply-adds of one layer for one sample of `shape` (no batch axis)."""
    if hasattr(layer, "count_macs"):
        return layer.count_macs(shape)
    kernel = getattr(layer, "kernel", None)
    if kernel is None:
        return 0
    if isinstance(layer, keras.layers.Dense):
        return int(kernel.shape[0] * kernel.shape[1])
    out = layer.compute_output_shape((1, *shape))
    positions = 1
    for d in out[1:-1]:
        positions *= d
    return positions * _size(kernel)


def model_stats(model, input_shape=None):
    """Counts a model's parameters and multiply-adds as the paper does.

    Paper-convention parameters are conv kernels and the classifier's weight
    matrix only (no BatchNorm, no biases); FLOPs are multiply-adds of the
    convolutions and the classifier for one clip. The model must be a chain of
    layers, as every keras_r21d model is.

    Args:
        model: a `keras.Model` built by keras_r21d.
        input_shape: `(frames, height, width, 3)` to count FLOPs at; default
            the model's input shape (which must then be fully known).

    Returns:
        A dict with `paper_params`, `keras_params` (Keras' total, BatchNorm
        included), `trainable_params`, `macs` (multiply-adds for one clip),
        `gflops` (`macs / 1e9`, the paper's "GFLOPs") and `input_shape`.

    Example:

    >>> stats = model_stats(keras_r21d.R3D(18), input_shape=(8, 112, 112, 3))
    >>> stats["paper_params"]
    33361472
    """
    shape = tuple(input_shape) if input_shape is not None else tuple(model.input_shape[1:])
    if any(d is None for d in shape):
        raise ValueError(
            f"Cannot count FLOPs for a variable input shape {shape}: pass input_shape=(frames, height, width, 3)."
        )
    macs = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        macs += _layer_macs(layer, shape)
        shape = tuple(layer.compute_output_shape((1, *shape))[1:])
    paper = sum(_size(w) for w in model.weights if w.name == "kernel")
    trainable = sum(_size(w) for w in model.trainable_weights)
    return {
        "paper_params": paper,
        "keras_params": int(model.count_params()),
        "trainable_params": trainable,
        "macs": int(macs),
        "gflops": macs / 1e9,
        "input_shape": list(shape if input_shape is None else input_shape),
    }


def models_table(depth=18, frames=8, size=112, classes=400, width_multiplier=1.0, variants=None):
    """Parameters and FLOPs of every variant at one depth and input size (`keras-r21d models`).

    Returns one dict per variant, in the paper's order: `name`, `variant`
    (display name), `paper_params`, `keras_params`, `macs`, `gflops`
    (rounded to 3 decimals) and `input_shape`.
    """
    rows = []
    for variant in variants or VARIANTS:
        shape = (frames, size, size, 3)
        model = variant_network(variant, depth, input_shape=shape, classes=classes, width_multiplier=width_multiplier)
        stats = model_stats(model)
        rows.append({"name": f"{variant}_{depth}", "variant": VARIANTS[variant][0],
                     "paper_params": stats["paper_params"], "keras_params": stats["keras_params"],
                     "macs": stats["macs"], "gflops": round(stats["gflops"], 3), "input_shape": list(shape)})
    return rows


def format_params(count):
    """`33361472` -> `"33.4M"`; two decimals below 10M (`"0.91M"`) so small networks stay distinguishable."""
    return f"{count / 1e6:.1f}M" if count >= 1e7 else f"{count / 1e6:.2f}M"


def format_gflops(gflops):
    """GFLOPs with one decimal from 10 on, three below (`"0.081"`)."""
    return f"{gflops:.1f}" if gflops >= 10 else f"{gflops:.3f}"
