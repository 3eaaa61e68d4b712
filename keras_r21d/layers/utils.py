"""Small helpers shared by the layers."""


def normalize_triple(value, name, allow_zero=False):
    """Returns `value` as a tuple of 3 ints, or raises a `ValueError` naming `name`."""
    low = 0 if allow_zero else 1
    message = f"`{name}` must be an int or a tuple of 3 ints >= {low}. Received: {name}={value!r}"
    triple = (value, value, value) if isinstance(value, int) else value
    try:
        triple = tuple(int(v) for v in triple)
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if len(triple) != 3 or any(v < low for v in triple):
        raise ValueError(message)
    return triple


def conv_output_length(length, kernel, stride, pad):
    """The output length of a convolution with `pad` zeros on both sides."""
    if length is None:
        return None
    return (length + 2 * pad - kernel) // stride + 1


def same_padding(kernel, strides, pad):
    """Whether TensorFlow's `"same"` padding is the symmetric padding `pad`: stride 1, odd kernel, `k // 2`.

    Then a convolution pads by itself, without a `Pad` op (and, when
    training, its `Slice` gradient) over the whole activation.
    """
    return all(s == 1 and k % 2 == 1 and p == k // 2 for k, s, p in zip(kernel, strides, pad))


def pad_again(x, paddings, dy):
    """TensorFlow, in a backward pass: `x` padded anew, once the output gradient `dy` exists.

    The `Pad` waits for `dy`; without that dependency Grappler merges it with
    the forward pass's identical `Pad`, and that padded copy lives on from the
    forward pass to the backward one.
    """
    import tensorflow as tf

    with tf.control_dependencies([dy]):
        return tf.pad(tf.identity(x), paddings)


def paper_midplanes(in_channels, out_channels, kernel_size=(3, 3, 3)):
    """The (2+1)D intermediate width that keeps the 3D conv's parameter count.

    `M = floor(t * d^2 * N_in * N_out / (d^2 * N_in + t * N_out))`
    (Tran et al. 2018, section 3.5) for a `t x d x d` kernel.
    """
    t, h, w = kernel_size
    return (t * h * w * in_channels * out_channels) // (h * w * in_channels + t * out_channels)


def freeze_built_sublayers(layer):
    """Gives the sublayers `layer` created in `build()` its frozen state.

    A layer constructed with `trainable=False` (as Keras rebuilds a frozen
    layer from its config on loading) creates its sublayers trainable;
    Keras' `trainable` setter, which would pass the state on, is not called
    again. Left so, a loaded frozen block would update its BatchNorm
    statistics in training. Called at the end of `build()`.
    """
    if not layer.trainable:
        for sublayer in layer._flatten_layers(include_self=False):
            sublayer.trainable = False
