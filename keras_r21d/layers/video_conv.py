"""`VideoConv`: a `t x h x w` convolution over `(N, T, H, W, C)` clips."""

import contextlib

import keras
from keras import ops

from keras_r21d.layers import kernel_gradient
from keras_r21d.layers.lowering import measured_lowering
from keras_r21d.layers.utils import conv_output_length, normalize_triple, pad_again, same_padding

IMPLEMENTATIONS = ("auto", "conv2d", "conv3d", "shifted")

# Whether a padded strided convolution pads its input again in the backward
# pass on TensorFlow instead of keeping the padded copy (`_padded_conv`).
# Off only to measure the difference (`tools/bench_settings.py`'s `keep_pad`).
RECOMPUTE_PAD = True

# Whether the torch backend convolves through `_torch_conv` (no copies) instead of Keras' `ops.conv`.
# Off only to measure the difference (`tools/bench_settings.py`'s `torch_keras_ops`).
DIRECT_TORCH_CONV = True

# Whether 2D convolutions' kernel gradients are one MatMul per tap on TensorFlow and JAX (`_tap_gradient_conv`):
# None = on a CPU, on TensorFlow with oneDNN's kernels for the shapes where they measured faster on this machine
# (`keras_r21d.layers.kernel_gradient`), on JAX over 32 or more channels (`_tap_kernel_gradient`); True or False
# forces it for every 2D kernel of more than one tap (`tools/bench_settings.py`'s `tap_grad`, `conv_grad`).
TAP_KERNEL_GRADIENT = None

# Whether a temporal `t x 1 x 1` kernel with `implementation="auto"` runs as one 5-D `Conv3D` in inference
# on TensorFlow (`_temporal_as_conv3d`): None = where it measured faster (float32, oneDNN's kernels on);
# True or False forces it (`tools/bench_settings.py`'s `temporal_conv3d`, `temporal_conv2d`;
# `keras_r21d.export.tflite` sets False: TFLite has no oneDNN).
TEMPORAL_CONV3D = None


def check_implementation(implementation):
    """Raises a `ValueError` naming the choices unless `implementation` is one of `IMPLEMENTATIONS`."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"`implementation` must be one of {IMPLEMENTATIONS}. Received: implementation={implementation!r}"
        )


@keras.saving.register_keras_serializable(package="keras_r21d")
class VideoConv(keras.layers.Layer):
    """A 3D convolution over channels-last clips, lowered to 2D where possible.

    The kernel is always stored as `(t, h, w, in_channels, filters)` (the
    layout of `keras.layers.Conv3D` and of a transposed PyTorch `Conv3d`
    weight), whatever the lowering, so weights move freely between
    implementations. Padding is explicit and symmetric, as in PyTorch: a
    strided convolution lines up with torchvision's, which TensorFlow's
    `"same"` padding does not.

    Lowerings (`implementation`):

    - `"conv2d"`: a spatial kernel (`t == 1`) runs as `Conv2D` on
      `(N*T, H, W, C)`; a temporal kernel (`h == w == 1`) as `Conv2D` with a
      `(t, 1)` kernel on `(N, T, H*W, C)`; a full kernel as `Conv2D` on the
      channel concatenation of the `t` frames each output frame sees
      (temporal im2col). No 5-D convolution appears in the graph, so a TFLite
      export has no `CONV_3D` op.
    - `"shifted"`: as `"conv2d"`, but a full kernel runs as the sum of `t`
      `Conv2D`s, tap `k`'s 2D kernel over the frames shifted by `k`: no
      channel concatenation, oneDNN's 2D kernels forward and backward.
    - `"conv3d"`: one 5-D convolution.
    - `"auto"` (default): `"conv2d"` for spatial-only and temporal-only
      kernels, except that a temporal kernel's inference call on TensorFlow
      with its oneDNN CPU kernels on (float32) is one 5-D `Conv3D`, faster
      there (`TEMPORAL_CONV3D`); for full kernels the lowering
      `autotune_lowering` measured fastest for this layer's shape on this
      machine (training and inference apart), else `"conv3d"` (see
      BENCHMARKS.md: which is faster depends on the CPU, not only on the
      shape).

    Training on a CPU in float32, the kernel gradient of a 2D kernel over
    32 or more channels may run as one MatMul per kernel tap: on
    TensorFlow with its oneDNN kernels where that measured faster than
    oneDNN's `Conv2DBackpropFilter` for the shape on this machine, timed
    once per shape when a training call is first traced (1.3-8x faster on
    an AVX2 EPYC, mostly slower on AVX-512 Xeons;
    `keras_r21d.layers.kernel_gradient`); on JAX always, XLA's own being
    1.4-4x slower (the same values to float rounding;
    `TAP_KERNEL_GRADIENT`).

    Args:
        filters: int, the number of output channels.
        kernel_size: int or tuple of 3 ints `(t, h, w)`.
        strides: int or tuple of 3 ints.
        padding: `None` for symmetric `k // 2` padding, or a tuple of 3 ints
            `(pt, ph, pw)` of zeros added on both sides of each axis.
        implementation: one of `"auto"`, `"conv2d"`, `"conv3d"`, `"shifted"`.
        use_bias: bool. The paper's networks use no bias (a BatchNorm
            follows every conv); `fold_batchnorm` gives its copies one.
        activation: `None` or an activation (e.g. `"relu"`) applied after
            the bias. With the `"conv2d"` lowerings, bias and activation run
            on the 2D convolution's output before it is reshaped back to
            5-D, where TensorFlow fuses them into the convolution.
        kernel_initializer: initializer for the kernel.
        kernel_regularizer: optional regularizer for the kernel.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Example:

    >>> layer = VideoConv(64, (3, 7, 7), strides=(1, 2, 2))
    >>> tuple(layer(keras.ops.zeros((1, 8, 112, 112, 3))).shape)
    (1, 8, 56, 56, 64)

    Reference:
        Tran et al., "A Closer Look at Spatiotemporal Convolutions for Action
        Recognition", CVPR 2018.
    """

    def __init__(
        self,
        filters,
        kernel_size=(3, 3, 3),
        strides=(1, 1, 1),
        padding=None,
        implementation="auto",
        use_bias=False,
        activation=None,
        kernel_initializer="he_normal",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(filters) <= 0:
            raise ValueError(f"`filters` must be a positive integer. Received: filters={filters}")
        check_implementation(implementation)
        self.filters = int(filters)
        self.kernel_size = normalize_triple(kernel_size, "kernel_size")
        self.strides = normalize_triple(strides, "strides")
        if padding is None:
            padding = tuple(k // 2 for k in self.kernel_size)
        self.padding = normalize_triple(padding, "padding", allow_zero=True)
        self.implementation = implementation
        self.use_bias = use_bias
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.input_spec = keras.layers.InputSpec(ndim=5)

    @property
    def full_kernel(self):
        """Whether the kernel is a full 3D one (`t > 1` and `h * w > 1`), whose lowering `"auto"` may measure."""
        t, h, w = self.kernel_size
        return t > 1 and h * w > 1

    @property
    def lowering(self):
        """The lowering of an inference call: `"spatial"`, `"temporal"`, `"im2col"`, `"shifted"` or `"conv3d"`.

        A training call may use another (`lowering_for(training=True)`).
        """
        return self.lowering_for(training=False)

    def lowering_for(self, training=False, input_shape=None):
        """The lowering a call with `training` uses on inputs of `input_shape`.

        `input_shape` defaults to the last fully known shape the layer was
        built or called with (the key of `autotune_lowering`'s table).
        """
        if self.implementation == "conv3d":
            return "conv3d"
        if not self.full_kernel:
            if self.kernel_size[0] == 1:
                return "spatial"
            if self.implementation == "auto" and not training and _temporal_as_conv3d(self.compute_dtype):
                return "conv3d"
            return "temporal"
        if self.implementation == "conv2d":
            return "im2col"
        if self.implementation == "shifted":
            return "shifted"
        if input_shape is None:
            input_shape = getattr(self, "_call_shape", None)
        return measured_lowering(self, input_shape, training) or "conv3d"

    def build(self, input_shape):
        in_channels = input_shape[-1]
        self._call_shape = tuple(input_shape)
        if in_channels is None:
            raise ValueError(f"{self.name}: the channel axis of the input must be known. Received: {input_shape}")
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, in_channels, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") if self.use_bias else None
        )

    def call(self, inputs, training=None):
        shape = tuple(inputs.shape)
        if all(d is not None for d in shape[1:]):
            self._call_shape = shape  # the last fully known input shape: what autotune_lowering measures
        return self._lowered(inputs, bool(training), self.kernel)

    def _lowered(self, inputs, training, kernel):
        """The call's lowering with `kernel` (the layer's, or the value `bn_relu_conv` read for its gradient)."""
        lowering = self.lowering_for(training, tuple(inputs.shape))
        if lowering == "conv3d":
            return self._conv(inputs, kernel, self.strides, self.padding, training)
        if lowering == "spatial":
            return self._spatial(inputs, training, kernel)
        if lowering == "temporal":
            return self._temporal(inputs, training, kernel)
        if lowering == "shifted":
            return self._shifted(inputs, training, kernel)
        return self._im2col(inputs, training, kernel)

    def _bias_activation(self, y):
        """Bias and activation right after the convolution op (where TensorFlow's remapper fuses them)."""
        if self.bias is not None:
            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf

                y = tf.nn.bias_add(y, ops.cast(self.bias, y.dtype))
            else:
                y = y + self.bias
        if self.activation is not None and self.activation is not keras.activations.linear:
            y = self.activation(y)
        return y

    def _conv(self, x, kernel, strides, pad, training):
        """`_conv_only`, then the bias and activation."""
        return self._bias_activation(self._conv_only(x, kernel, strides, pad, training))

    def _spatial(self, x, training, kernel):
        _, h, w = self.kernel_size
        _, sh, sw = self.strides
        _, ph, pw = self.padding
        st = self.strides[0]
        pt = self.padding[0]
        if h == w == 1 and not (ph or pw) and (sh != 1 or sw != 1) and not pt:
            # A strided 1x1x1 kernel (a downsampling shortcut) reads one pixel in
            # st * sh * sw: one slice takes exactly those, then a stride-1 conv.
            # (Slicing the frames only, then a strided Conv2D, copied 4x more.)
            x = self._subsample(x, (st, sh, sw))
            st = sh = sw = 1
        elif st != 1 or pt:
            # A 1 x h x w kernel with temporal stride or padding: the frames
            # it reads are a strided slice of the (padded) clip.
            if pt:
                x = ops.pad(x, [[0, 0], [pt, pt], [0, 0], [0, 0], [0, 0]])
            x = x[:, ::st]
        shape = ops.shape(x)
        frames = ops.reshape(x, (-1, shape[2], shape[3], shape[4]))
        kernel = ops.reshape(kernel, (h, w, shape[4], self.filters))
        y = self._conv(frames, kernel, (sh, sw), (ph, pw), training)
        yshape = ops.shape(y)
        return ops.reshape(y, (-1, shape[1], yshape[1], yshape[2], self.filters))

    @staticmethod
    def _subsample(x, strides):
        """`x[:, ::st, ::sh, ::sw]`; where each axis divides by its stride, as a reshape and a stride-1 slice.

        TensorFlow's `StridedSlice` with strides on three axes made
        R(2+1)D-18's largest shortcut 3-4x slower in inference, and its
        forward and backward pass 1.2-1.5x slower in training, than a slice
        with unit strides of a reshaped view (BENCHMARKS.md). The view is
        `(N*T', st*H', sh, W', sw*C)`: the first `H'` of `st*H'` are frame 0
        of each `st`, index 0 of `sh` row 0 of each `sh`, the first `C` of
        `sw*C` pixel 0 of each `sw`; 5-D, as TFLite's `STRIDED_SLICE` needs.
        """
        (t, h, w, c), (st, sh, sw) = x.shape[1:], strides
        if any(d is None or d % s for d, s in zip((t, h, w), strides)):
            return x[:, ::st, ::sh, ::sw]
        t, h, w = t // st, h // sh, w // sw
        x = ops.reshape(x, (-1, st * h, sh, w, sw * c))[:, :h, 0, :, :c]
        return ops.reshape(x, (-1, t, h, w, c))

    def _temporal(self, x, training, kernel):
        t = self.kernel_size[0]
        st, sh, sw = self.strides
        pt, ph, pw = self.padding
        if ph or pw:
            x = ops.pad(x, [[0, 0], [0, 0], [ph, ph], [pw, pw], [0, 0]])
        if sh != 1 or sw != 1:
            x = x[:, :, ::sh, ::sw]
        shape = ops.shape(x)
        tubes = ops.reshape(x, (-1, shape[1], shape[2] * shape[3], shape[4]))
        kernel = ops.reshape(kernel, (t, 1, shape[4], self.filters))
        y = self._conv(tubes, kernel, (st, 1), (pt, 0), training)
        return ops.reshape(y, (-1, ops.shape(y)[1], shape[2], shape[3], self.filters))

    @staticmethod
    def _pad_time(x, pt):
        """`pt` zero frames on both sides of the time axis, by concatenation.

        Not `Pad`: on TensorFlow 2.21, a `Pad` on the time axis followed by
        the tap slices, after a padded `Conv3D` (R3D's stem), in a function
        retraced for any batch size, is rewritten by Grappler into a graph
        whose first slice keeps every padded frame (`ConcatOp: Dimension 1
        ... [4,6,..] vs. [4,4,..]`; turning off either its constant folding
        or its remapper avoids it). `tests/test_lowering.py` holds the case.
        """
        if not pt:
            return x
        zeros = ops.zeros_like(x[:, :1])
        return ops.concatenate([zeros] * pt + [x] + [zeros] * pt, axis=1)

    def _time_taps(self, x):
        """`(shape of the time-padded clip, output frames, taps)`: tap `k` holds padded frames `j * st + k`.

        Output frame `j` of a `t x h x w` kernel sees padded frames
        `j * st .. j * st + t - 1`; tap `k` is the `k`-th of them for every `j`.
        """
        t, st = self.kernel_size[0], self.strides[0]
        x = self._pad_time(x, self.padding[0])
        shape = ops.shape(x)
        out_t = (shape[1] - t) // st + 1
        return shape, out_t, [x[:, k : k + (out_t - 1) * st + 1 : st] for k in range(t)]

    def _im2col(self, x, training, kernel):
        t, h, w = self.kernel_size
        _, sh, sw = self.strides
        _, ph, pw = self.padding
        # The taps stacked on the channel axis, then one 2D convolution.
        shape, _, taps = self._time_taps(x)
        stacked = ops.concatenate(taps, axis=-1)
        sshape = ops.shape(stacked)
        frames = ops.reshape(stacked, (-1, shape[2], shape[3], t * shape[4]))
        kernel = ops.reshape(ops.transpose(kernel, (1, 2, 0, 3, 4)), (h, w, t * shape[4], self.filters))
        y = self._conv(frames, kernel, (sh, sw), (ph, pw), training)
        yshape = ops.shape(y)
        return ops.reshape(y, (-1, sshape[1], yshape[1], yshape[2], self.filters))

    def _shifted(self, x, training, kernel):
        _, sh, sw = self.strides
        _, ph, pw = self.padding
        # Output frame j is the sum over taps k of tap k's 2D kernel on padded frame j*st + k.
        shape, out_t, taps = self._time_taps(x)
        y = None
        for k, frames in enumerate(taps):
            frames = ops.reshape(frames, (-1, shape[2], shape[3], shape[4]))
            tap = self._conv_only(frames, kernel[k], (sh, sw), (ph, pw), training)
            y = tap if y is None else y + tap
        y = self._bias_activation(y)
        yshape = ops.shape(y)
        return ops.reshape(y, (-1, out_t, yshape[1], yshape[2], self.filters))

    def _conv_only(self, x, kernel, strides, pad, training):
        """A 2D or 3D convolution with symmetric padding `pad`, without the bias and activation.

        (`_shifted`'s taps call it directly: their sum takes the bias.)
        """
        if DIRECT_TORCH_CONV and keras.backend.backend() == "torch":
            return _torch_conv(x, kernel, strides, pad)
        if training and _tap_kernel_gradient(x.shape, kernel.shape, strides, pad, self.compute_dtype):
            if keras.backend.backend() == "jax":
                return _jax_tap_gradient_conv(x, kernel, strides, pad)
            return _tap_gradient_conv(x, kernel, strides, pad)
        if same_padding(kernel.shape[:-2], strides, pad):
            return ops.conv(x, kernel, strides=1, padding="same")
        if not any(pad):
            return ops.conv(x, kernel, strides=strides, padding="valid")
        if training and RECOMPUTE_PAD and keras.backend.backend() == "tensorflow":
            return _padded_conv(x, kernel, strides, pad)
        x = ops.pad(x, [[0, 0], *[[p, p] for p in pad], [0, 0]])
        return ops.conv(x, kernel, strides=strides, padding="valid")

    def compute_output_shape(self, input_shape):
        dims = [
            conv_output_length(input_shape[1 + i], self.kernel_size[i], self.strides[i], self.padding[i])
            for i in range(3)
        ]
        return (input_shape[0], *dims, self.filters)

    def count_macs(self, input_shape):
        """Multiply-adds for one sample of `input_shape` `(T, H, W, C)` (no batch axis)."""
        out = self.compute_output_shape((1, *input_shape))
        t, h, w = self.kernel_size
        return out[1] * out[2] * out[3] * t * h * w * input_shape[-1] * self.filters

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "implementation": self.implementation,
                "use_bias": self.use_bias,
                "activation": keras.activations.serialize(self.activation),
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            }
        )
        return config


def _padded_conv(x, kernel, strides, pad):
    """TensorFlow: `Pad`, then a valid 2D or 3D convolution, whose gradient pads `x` again.

    The plain graph keeps the padded copy of `x` alive from the forward
    pass to the kernel's gradient, next to `x` itself (which the layer
    before needs for its own gradient): 200-420 MB of an R(2+1)D-18
    training step's peak at batch 8, whose downsampling convolutions are
    strided and padded (BENCHMARKS.md). Here the backward pass pads `x`
    again, one `Pad` more per conv (and the step ran 10% faster). The
    forward ops are the same `Pad` and convolution, so oneDNN still fuses
    them (`_MklNativePadWithConv2D`); a convolution with explicit paddings
    instead leaves that kernel, 3x slower in bfloat16.
    """
    import tensorflow as tf

    paddings = [[0, 0], *[[p, p] for p in pad], [0, 0]]
    strides = [1, *strides, 1]
    if len(x.shape) == 4:
        conv, input_grad, kernel_grad = tf.nn.conv2d, tf.raw_ops.Conv2DBackpropInput, tf.raw_ops.Conv2DBackpropFilter
    else:
        conv, input_grad, kernel_grad = (tf.nn.conv3d, tf.raw_ops.Conv3DBackpropInputV2,
                                         tf.raw_ops.Conv3DBackpropFilterV2)

    @tf.custom_gradient
    def padded_conv(x, kernel):
        def gradient(dy):
            padded = pad_again(x, paddings, dy)
            dx = input_grad(input_sizes=tf.shape(padded), filter=kernel, out_backprop=dy, strides=strides,
                            padding="VALID")
            dx = tf.slice(dx, [0, *pad, 0], tf.shape(x))
            dkernel = kernel_grad(input=padded, filter_sizes=tf.shape(kernel), out_backprop=dy, strides=strides,
                                  padding="VALID")
            return dx, dkernel

        return conv(tf.pad(x, paddings), kernel, strides, "VALID"), gradient

    return padded_conv(x, tf.cast(kernel, x.dtype))


def _temporal_as_conv3d(dtype):
    """Whether an `"auto"` temporal kernel's inference call is a 5-D `Conv3D` (`TEMPORAL_CONV3D`).

    By default on TensorFlow in float32 with oneDNN's kernels on: there
    oneDNN's `Conv3D` ran R(2+1)D-18's `3 x 1 x 1` kernels up to 1.8x
    faster than its 2D convolution with a `(3, 1)` kernel over
    `(N, T, H*W, C)` (level on the smallest shapes), and the folded
    network's inference 1.14x faster at batch 1 and 8 (BENCHMARKS.md). With
    Eigen's kernels the two were level, and in training the 5-D step
    (`Conv3D` forward and input gradient, the same tap kernel gradients)
    was no faster, so both keep the 2D lowering.
    """
    if keras.backend.backend() != "tensorflow" or dtype != "float32":
        return False
    if TEMPORAL_CONV3D is not None:
        return TEMPORAL_CONV3D
    from keras_r21d.onednn import onednn_enabled

    return bool(onednn_enabled())


@contextlib.contextmanager
def temporal_conv2d():
    """Inside, `"auto"` temporal kernels trace as 2D convolutions whatever the kernels (`TEMPORAL_CONV3D = False`)."""
    global TEMPORAL_CONV3D
    saved = TEMPORAL_CONV3D
    TEMPORAL_CONV3D = False
    try:
        yield
    finally:
        TEMPORAL_CONV3D = saved


def _tap_kernel_gradient(x_shape, kernel_shape, strides, pad, dtype):
    """Whether a 2D convolution of `(N, H, W, C)` inputs trains through the MatMuls per tap (`TAP_KERNEL_GRADIENT`).

    By default on a CPU only (no GPU visible to TensorFlow; JAX's default
    backend the CPU), float32 only (a bfloat16 MatMul's sum over every
    position, Eigen's on a CPU without AVX-512, came 1-4% away from the
    convolution's gradient), for kernels of more than one tap over at least
    32 input channels (not the stem's 7x7 over 3). On TensorFlow with
    oneDNN's kernels, where the MatMuls measured faster than oneDNN's
    `Conv2DBackpropFilter` for this shape on this machine
    (`keras_r21d.layers.kernel_gradient`: on an AVX2 EPYC they were 1.3-8x
    faster on R(2+1)D's temporal and stride-1 spatial shapes, on AVX-512
    Xeons oneDNN's own ran the step faster). On JAX always (XLA's kernel
    gradient ran R(2+1)D's shapes 1.4-4x slower than the products, level on
    the smallest; `_jax_tap_gradient_conv`).
    """
    kh, kw, channels = kernel_shape[0], kernel_shape[1], kernel_shape[2]
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax") or dtype != "float32" or len(kernel_shape) != 4 or kh * kw == 1:
        return False
    if TAP_KERNEL_GRADIENT is not None:
        return TAP_KERNEL_GRADIENT
    if backend == "jax":
        return channels >= kernel_gradient.MIN_CHANNELS and _computes_on_cpu()
    if not kernel_gradient.kernel_gradient_measurable(kernel_shape, dtype):
        return False
    return kernel_gradient.measured_taps(tuple(x_shape), tuple(kernel_shape), tuple(strides), tuple(pad))


def _computes_on_cpu():
    """Whether the backend computes on the CPU: TensorFlow sees no GPU, JAX's default backend is the CPU."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.default_backend() == "cpu"
    import tensorflow as tf

    return not tf.config.list_logical_devices("GPU")


def _tap_gradient_conv(x, kernel, strides, pad):
    """TensorFlow: a 2D convolution with symmetric padding `pad` whose kernel gradient is one MatMul per tap.

    Forward and input gradient are TensorFlow's convolution ops; the kernel
    gradient is `keras_r21d.layers.kernel_gradient.tap_kernel_gradient`.
    On an AVX2 EPYC with oneDNN's kernels on, `Conv2DBackpropFilter` ran
    the temporal and stride-1 spatial shapes of R(2+1)D 1.3-8x slower than
    these MatMuls (an R(2+1)D-18 step at batch 4 spent 7.5 of 13 s in it;
    BENCHMARKS.md); on AVX-512 Xeons mostly not, hence the measurement. The
    backward pass pads the input again rather than keeping the forward
    pass's padded copy (as `_padded_conv`).
    """
    import tensorflow as tf

    kh, kw = kernel.shape[:2]
    sh, sw = strides
    same = same_padding((kh, kw), strides, pad)
    paddings = [[0, 0], [pad[0], pad[0]], [pad[1], pad[1]], [0, 0]]

    @tf.custom_gradient
    def conv(x, kernel):
        def gradient(dy):
            if same:
                dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=kernel, out_backprop=dy,
                                                    strides=[1, sh, sw, 1], padding="SAME")
            else:
                dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=kernel, out_backprop=dy,
                                                    strides=[1, sh, sw, 1], padding="EXPLICIT",
                                                    explicit_paddings=[value for pair in paddings for value in pair])
            return dx, kernel_gradient.tap_kernel_gradient(x, dy, kernel.shape, strides, pad)

        if same:
            return tf.nn.conv2d(x, kernel, [1, sh, sw, 1], "SAME"), gradient
        return tf.nn.conv2d(tf.pad(x, paddings), kernel, [1, sh, sw, 1], "VALID"), gradient

    return conv(x, tf.cast(kernel, x.dtype))


def _jax_tap_gradient_conv(x, kernel, strides, pad):
    """JAX: `_tap_gradient_conv`, a 2D convolution whose kernel gradient is one `dot_general` per tap.

    Forward and input gradient are XLA's convolution and its transpose. On
    a CPU, XLA's kernel gradient of the convolution ran R(2+1)D's shapes
    1.4-4x slower than these products (BENCHMARKS.md), the same weakness
    as oneDNN's `Conv2DBackpropFilter`.
    """
    import jax

    kh, kw, channels, filters = kernel.shape
    sh, sw = strides
    padding = ((pad[0], pad[0]), (pad[1], pad[1]))

    def conv(x, kernel):
        return jax.lax.conv_general_dilated(x, kernel, (sh, sw), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))

    @jax.custom_vjp
    def tap_conv(x, kernel):
        return conv(x, kernel)

    def forward(x, kernel):
        return conv(x, kernel), (x, kernel)

    def backward(residuals, dy):
        x, kernel = residuals
        dx = jax.vjp(lambda x: conv(x, kernel), x)[1](dy)[0]  # its forward convolution is dead code
        padded = jax.numpy.pad(x, ((0, 0), *padding, (0, 0))) if any(pad) else x
        n, out_h, out_w = dy.shape[:3]
        rows = dy.reshape(-1, filters)
        taps = []
        for i in range(kh):
            for j in range(kw):
                window = jax.lax.slice(padded, (0, i, j, 0), (n, i + (out_h - 1) * sh + 1, j + (out_w - 1) * sw + 1,
                                                               channels), (1, sh, sw, 1))
                taps.append(jax.lax.dot_general(window.reshape(-1, channels), rows, (((0,), (0,)), ((), ()))))
        return dx, jax.numpy.stack(taps).reshape(kernel.shape)

    tap_conv.defvjp(forward, backward)
    return tap_conv(x, ops.cast(kernel, x.dtype))


def _torch_conv(x, kernel, strides, pad):
    """torch: a 2D or 3D convolution of channels-last `x` with symmetric padding `pad`, without copies.

    Keras' `ops.conv` on torch copies its input twice per call: to
    channels-first (`permute(...).contiguous()`), then back to the
    channels-last memory format for oneDNN, and autograd copies the
    gradient back the same two ways. The channels-first view of a
    contiguous `(N, [T,] H, W, C)` tensor already has PyTorch's
    channels-last strides, which its oneDNN convolution takes as they are,
    and the output's channels-last view is again contiguous: no copy, and
    the padding is the convolution's own (no `Pad` copy either).
    """
    import torch

    x = ops.convert_to_tensor(x)
    kernel = ops.convert_to_tensor(kernel)
    spatial = x.ndim - 2
    conv = torch.nn.functional.conv2d if spatial == 2 else torch.nn.functional.conv3d
    # (..., in, out) -> (out, in, ...): the layout torch's kernels take.
    weight = kernel.to(x.dtype).permute(spatial + 1, spatial, *range(spatial))
    weight = weight.contiguous(memory_format=torch.channels_last if spatial == 2 else torch.channels_last_3d)
    y = conv(x.permute(0, spatial + 1, *range(1, spatial + 1)), weight, stride=tuple(strides), padding=tuple(pad))
    return y.permute(0, *range(2, spatial + 2), 1)
