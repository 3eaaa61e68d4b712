"""How a 2D convolution's kernel gradient runs on TensorFlow on a CPU: measured per shape on the machine that trains.

A convolution's kernel gradient can run as the framework's own kernel
(oneDNN's `Conv2DBackpropFilter`) or as one MatMul per kernel tap over the
input window that tap reads (`tap_kernel_gradient`): the same sum, in
another order. Which is faster depends on the processor, not only on the
shape: on a 2-core AVX2 EPYC the MatMuls ran R(2+1)D-18's temporal and
stride-1 spatial shapes 1.3-8x faster and its training step 1.49x faster,
while on two AVX-512 Xeons oneDNN's own kernels made the whole step
1.16-1.17x faster (BENCHMARKS.md). So, as TensorFlow autotunes cuDNN's
convolutions on a GPU, the choice is measured: the first time a training
call of a `VideoConv` traces a float32 2D convolution over 32 or more
input channels (with more than one tap) on TensorFlow with oneDNN's kernels
on a CPU, both ways of computing that kernel gradient are timed once at the
traced shape (a random input and output gradient; a warm-up call, then 3
alternating calls each, median), outside the graph being traced, and the
MatMuls are kept only when at least `MARGIN` (5%) faster. The choice is
remembered for the process (`kernel_gradient_choices` lists the
measurements; `clear_kernel_gradients` forgets them). The measurement is
the kernel gradient alone, a few milliseconds to a few hundred per shape
(R(2+1)D-18 at batch 4: 21 shapes, about 8 s in all, once, in the first
step); a shape differing only in its number of rows (a last partial
batch) reuses the measurement. The outputs agree to float32 rounding
whichever runs, so a choice changes speed, never a file or a result beyond
rounding.

Not measured (the framework's own gradient runs): other backends than
TensorFlow (JAX on a CPU takes the MatMuls by rule, see
`keras_r21d.layers.video_conv`), a GPU, TensorFlow with Eigen's kernels,
bfloat16, kernels over fewer than 32 channels, a function traced for
frames of unknown height or width, and a process with
`tf.config.experimental.enable_op_determinism()` on (a timing must not
choose a run's arithmetic there).
`keras_r21d.layers.video_conv.TAP_KERNEL_GRADIENT = True` or `False` forces
one way for every shape instead.
"""

import logging
import statistics
import threading
import time

import numpy as np

from keras_r21d.layers.utils import conv_output_length, pad_again, same_padding

logger = logging.getLogger("keras_r21d")

# The MatMuls replace the framework's kernel gradient only when they measured at least this much faster: a near
# tie is timing noise, and a kernel timed alone is only a proxy for the same one inside the whole step.
MARGIN = 0.05
# Timed calls per way after the warm-up call; the median counts.
REPS = 3
# The leading dimension measured when the traced one is unknown (`None`): frames of 8 clips for a spatial kernel.
UNKNOWN_ROWS = 8
# Kernels over fewer input channels keep the framework's gradient unmeasured: a MatMul per tap over a few channels
# (the stem's 7x7 over 3) is many thin products, never the faster.
MIN_CHANNELS = 32

_MEASURED = {}  # key (see _key) -> entry dict
_LOCK = threading.Lock()


def tap_kernel_gradient(x, dy, kernel_shape, strides, pad):
    """TensorFlow ops: the kernel gradient of a 2D convolution of `x` as one MatMul per kernel tap.

    The gradient of tap `(i, j)` is `window(i, j)^T @ dy`, where
    `window(i, j)` holds the (padded) input pixels that tap read for every
    output position: a `(C, F)` MatMul over all `N * H' * W'` positions.
    A padded input is padded again once `dy` exists (`pad_again`), and
    the windows are taken one after another, so at most one is alive.
    """
    import tensorflow as tf

    kernel_shape = tuple(int(d) for d in kernel_shape)
    kh, kw, channels, filters = kernel_shape
    sh, sw = strides
    paddings = [[0, 0], [pad[0], pad[0]], [pad[1], pad[1]], [0, 0]]
    padded = pad_again(x, paddings, dy) if any(pad) else x
    out_h, out_w = tf.shape(dy)[1], tf.shape(dy)[2]
    rows = tf.reshape(dy, (-1, filters))
    taps = []
    for i in range(kh):
        for j in range(kw):
            with tf.control_dependencies(taps[-1:]):  # one window alive at a time
                window = padded[:, i : i + (out_h - 1) * sh + 1 : sh, j : j + (out_w - 1) * sw + 1 : sw]
            taps.append(tf.matmul(tf.reshape(window, (-1, channels)), rows, transpose_a=True))
    return tf.reshape(tf.stack(taps), kernel_shape)


def conv_kernel_gradient(x, dy, kernel_shape, strides, pad):
    """TensorFlow ops: the kernel gradient `VideoConv`'s plain 2D convolution runs, `Conv2DBackpropFilter`.

    `"SAME"` where the padding is TensorFlow's own, else over the input
    padded again (`_padded_conv`'s gradient) or unpadded.
    """
    import tensorflow as tf

    strides4 = [1, *strides, 1]
    if same_padding(kernel_shape[:2], strides, pad):
        return tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=kernel_shape, out_backprop=dy,
                                               strides=strides4, padding="SAME")
    if any(pad):
        x = tf.pad(x, [[0, 0], [pad[0], pad[0]], [pad[1], pad[1]], [0, 0]])
    return tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=kernel_shape, out_backprop=dy, strides=strides4,
                                           padding="VALID")


def _key(x_shape, kernel_shape, strides, pad):
    """A measurement's key: all but the number of rows `N` (both ways' work grows with it alike; a last partial
    batch is not measured again)."""
    return (tuple(int(d) for d in x_shape[1:]), tuple(int(d) for d in kernel_shape), tuple(int(s) for s in strides),
            tuple(int(p) for p in pad))


def measured_taps(x_shape, kernel_shape, strides, pad):
    """Whether the MatMuls were measured faster for this convolution on this machine (measuring it the first time).

    `x_shape` is the 2D convolution's `(N, H, W, C)` input shape, `N` the
    rows timed (`None`: `UNKNOWN_ROWS`); a shape differing only in `N`
    reuses the measurement; unknown `H`, `W` or `C` measure nothing (the
    framework's gradient runs). `kernel_shape` is `(kh, kw, C, F)`. Call only
    where `kernel_gradient_measurable` says so.
    """
    if any(d is None for d in x_shape[1:]):  # a function traced for frames of any size: nothing to time
        return False
    key = _key(x_shape, kernel_shape, strides, pad)
    with _LOCK:  # MirroredStrategy traces its replicas in threads: one measures, the others wait and reuse it
        entry = _MEASURED.get(key)
        if entry is None:
            entry = _measure(tuple(x_shape), *key[1:])
            _MEASURED[key] = entry
    return entry["choice"] == "taps"


def kernel_gradient_measurable(kernel_shape, dtype):
    """Whether a 2D convolution's kernel gradient is measured (TensorFlow on a CPU with oneDNN's kernels, float32,
    over `MIN_CHANNELS` or more input channels, more than one tap, op determinism off)."""
    import tensorflow as tf

    from keras_r21d.onednn import onednn_enabled

    kh, kw, channels = kernel_shape[0], kernel_shape[1], kernel_shape[2]
    if dtype != "float32" or kh * kw == 1 or channels < MIN_CHANNELS:
        return False
    if tf.config.list_logical_devices("GPU") or not onednn_enabled():
        return False
    from tensorflow.python.framework import config  # `is_op_determinism_enabled` has no public name in TF 2.21

    return not config.is_op_determinism_enabled()


def choose(ms):
    """`"taps"` when the MatMuls beat the framework's gradient by `MARGIN`, else `"conv"`."""
    return "taps" if ms["taps"] < (1.0 - MARGIN) * ms["conv"] else "conv"


def _measure(x_shape, kernel_shape, strides, pad):
    """Times both kernel gradients once, outside any graph being traced; returns the table entry."""
    import tensorflow as tf

    tf_logger = tf.get_logger()
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)  # not TensorFlow's warning that many small functions were traced
    try:
        with tf.init_scope():  # out of the function being traced: real tensors, real kernels
            seconds, n = _time_ways(x_shape, kernel_shape, strides, pad)
    finally:
        tf_logger.setLevel(level)
    ms = {name: round(1e3 * statistics.median(values), 3) for name, values in seconds.items()}
    entry = {"input_shape": [n, *[int(d) for d in x_shape[1:]]], "kernel": list(kernel_shape), "strides": list(strides),
             "padding": list(pad), "ms": ms, "choice": choose(ms)}
    logger.debug("kernel gradient of %s over %s, strides %s, padding %s: MatMuls per tap %.1f ms, "
                "Conv2DBackpropFilter %.1f ms: %s", tuple(kernel_shape), tuple(entry["input_shape"]), tuple(strides),
                tuple(pad), ms["taps"], ms["conv"], entry["choice"])
    return entry


def _time_ways(x_shape, kernel_shape, strides, pad):
    """`({"taps": [seconds], "conv": [seconds]}, rows timed)`: each way in its own `tf.function`, alternating."""
    import tensorflow as tf

    kh, kw, _, filters = kernel_shape
    rng = np.random.default_rng(0)
    n = int(x_shape[0] or UNKNOWN_ROWS)
    out_h = conv_output_length(x_shape[1], kh, strides[0], pad[0])
    out_w = conv_output_length(x_shape[2], kw, strides[1], pad[1])
    x = tf.constant(rng.standard_normal((n, *[int(d) for d in x_shape[1:]]), dtype=np.float32))
    dy = tf.constant(rng.standard_normal((n, out_h, out_w, filters), dtype=np.float32))
    ways = {name: tf.function(lambda x, dy, way=way: way(x, dy, kernel_shape, strides, pad))
            for name, way in (("taps", tap_kernel_gradient), ("conv", conv_kernel_gradient))}
    for way in ways.values():
        way(x, dy).numpy()  # warm-up: tracing, oneDNN's primitive caches
    seconds = {name: [] for name in ways}
    for _ in range(REPS):
        for name, way in ways.items():
            start = time.perf_counter()
            way(x, dy).numpy()
            seconds[name].append(time.perf_counter() - start)
    return seconds, n


def kernel_gradient_choices():
    """The measurements of this process: a list of dicts `input_shape` (`(N, H, W, C)` timed), `kernel`
    (`(kh, kw, C, F)`), `strides`, `padding`, `ms` (`{"taps": ..., "conv": ...}` median milliseconds) and
    `choice` (`"taps"` or `"conv"`)."""
    with _LOCK:
        return [dict(entry) for entry in _MEASURED.values()]


def clear_kernel_gradients():
    """Forgets the measurements: functions traced afterwards measure again."""
    with _LOCK:
        _MEASURED.clear()


def summary(entries=None):
    """A Markdown table of `entries` (by default `kernel_gradient_choices()`): one row per measured shape."""
    lines = ["| input (N, H, W, C) | kernel (kh, kw, C, F) | strides | padding | MatMuls per tap ms | "
             "Conv2DBackpropFilter ms | choice |", "|---|---|---|---|---:|---:|---|"]
    for e in kernel_gradient_choices() if entries is None else entries:
        lines.append(f"| {tuple(e['input_shape'])} | {tuple(e['kernel'])} | {tuple(e['strides'])} | "
                     f"{tuple(e['padding'])} | {e['ms']['taps']:.1f} | {e['ms']['conv']:.1f} | {e['choice']} |")
    return "\n".join(lines)
