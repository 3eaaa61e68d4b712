"""`Conv2Plus1D`: the factorized (2+1)D convolution of Tran et al. (2018)."""

import keras

from keras_r21d.layers.batchnorm import BatchNormalization
from keras_r21d.layers.recompute import bn_relu_conv, recomputes
from keras_r21d.layers.utils import conv_output_length, freeze_built_sublayers, normalize_triple, paper_midplanes
from keras_r21d.layers.video_conv import VideoConv, check_implementation


@keras.saving.register_keras_serializable(package="keras_r21d")
class Conv2Plus1D(keras.layers.Layer):
    """A `t x d x d` convolution factorized into a spatial and a temporal one.

    Computes `temporal(relu(bn(spatial(x))))`: a `1 x d x d` convolution to
    `midplanes` channels with stride `(1, s, s)`, BatchNormalization, ReLU,
    then a `t x 1 x 1` convolution to `filters` channels with stride
    `(s_t, 1, 1)`. The outer BatchNormalization and ReLU belong to the block
    that uses this layer, as in the paper and torchvision.

    With `implementation="conv2d"` or `"shifted"` (the same here: a
    factorized conv has no full 3D kernel) no 5-D convolution runs: the
    spatial part is a `Conv2D` over `(N*T, H, W, C)` and the temporal part a
    `Conv2D` with a `(t, 1)` kernel over `(N, T, H*W, C)`. `"auto"` is the
    same, except that the temporal part's inference call is one 5-D
    `Conv3D` on TensorFlow with its oneDNN CPU kernels on, where that ran
    faster (`VideoConv`'s `"auto"`). `"conv3d"` runs the same weights as two
    5-D convolutions (the reference lowering).

    Training on TensorFlow (float32), `relu(bn(spatial(x)))` is computed
    again in the backward pass instead of being kept from the forward one
    (`keras_r21d.layers.recompute`; the residual blocks do the same between
    their convolutions): the same values and gradients, and an R(2+1)D-18
    step at batch 8 peaked about 1 GB lower (BENCHMARKS.md).

    Args:
        filters: int, output channels `N_out`.
        kernel_size: int or tuple `(t, d, d)` of the 3D conv being factorized.
        strides: int or tuple `(s_t, s, s)`.
        midplanes: int or `None`. `None` uses the paper's formula
            `floor(t d^2 N_in N_out / (d^2 N_in + t N_out))`, which gives the
            factorized conv (almost) the parameters of the 3D one.
        implementation: `"auto"`, `"conv2d"`, `"shifted"` or `"conv3d"` (see above).
        bn_epsilon: float, epsilon of the inner BatchNormalization.
        bn_momentum: float, momentum of the inner BatchNormalization.
        inner_batchnorm: bool. `False` (what `fold_batchnorm` builds for
            inference) replaces the inner BatchNormalization with a bias of
            the spatial conv: `temporal(relu(spatial(x) + b))`.
        use_bias: bool, a bias on the temporal conv (`False` in the paper:
            a BatchNorm follows).
        activation: `None` or an activation after the temporal conv.
        kernel_initializer: initializer of both kernels.
        kernel_regularizer: optional regularizer of both kernels.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Example:

    >>> layer = Conv2Plus1D(128, strides=2)
    >>> tuple(layer(keras.ops.zeros((1, 8, 56, 56, 64))).shape)
    (1, 4, 28, 28, 128)
    >>> layer.midplanes_
    230

    Reference:
        Tran et al., "A Closer Look at Spatiotemporal Convolutions for Action
        Recognition", CVPR 2018, section 3.5.
    """

    def __init__(
        self,
        filters,
        kernel_size=(3, 3, 3),
        strides=(1, 1, 1),
        midplanes=None,
        implementation="auto",
        bn_epsilon=1e-3,
        bn_momentum=0.9,
        kernel_initializer="he_normal",
        kernel_regularizer=None,
        inner_batchnorm=True,
        use_bias=False,
        activation=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if midplanes is not None and int(midplanes) <= 0:
            raise ValueError(f"`midplanes` must be a positive integer or None. Received: midplanes={midplanes}")
        check_implementation(implementation)
        self.filters = int(filters)
        self.kernel_size = normalize_triple(kernel_size, "kernel_size")
        self.strides = normalize_triple(strides, "strides")
        self.midplanes = None if midplanes is None else int(midplanes)
        self.implementation = implementation
        self.bn_epsilon = bn_epsilon
        self.bn_momentum = bn_momentum
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.input_spec = keras.layers.InputSpec(ndim=5)
        self.inner_batchnorm = bool(inner_batchnorm)
        self.use_bias = bool(use_bias)
        self.activation = keras.activations.get(activation)
        self.bn = self.relu = None
        if self.inner_batchnorm:
            self.bn = BatchNormalization(
                epsilon=bn_epsilon, momentum=bn_momentum, name=f"{self.name}_bn", dtype=self.dtype_policy
            )
            self.relu = keras.layers.ReLU(name=f"{self.name}_relu", dtype=self.dtype_policy)
        t = self.kernel_size[0]
        inner = implementation if implementation in ("conv3d", "auto") else "conv2d"
        self.temporal = VideoConv(
            self.filters,
            (t, 1, 1),
            strides=(self.strides[0], 1, 1),
            implementation=inner,
            use_bias=self.use_bias,
            activation=activation,
            kernel_initializer=kernel_initializer,
            kernel_regularizer=kernel_regularizer,
            name=f"{self.name}_temporal",
            dtype=self.dtype_policy,
        )
        self.spatial = None
        self.midplanes_ = self.midplanes

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels is None:
            raise ValueError(f"{self.name}: the channel axis of the input must be known. Received: {input_shape}")
        if self.midplanes is None:
            self.midplanes_ = paper_midplanes(in_channels, self.filters, self.kernel_size)
        _, h, w = self.kernel_size
        self.spatial = VideoConv(
            self.midplanes_,
            (1, h, w),
            strides=(1, self.strides[1], self.strides[2]),
            implementation="conv3d" if self.implementation == "conv3d" else "conv2d",
            use_bias=not self.inner_batchnorm,
            activation=None if self.inner_batchnorm else "relu",
            kernel_initializer=self.kernel_initializer,
            kernel_regularizer=self.kernel_regularizer,
            name=f"{self.name}_spatial",
            dtype=self.dtype_policy,
        )
        self.spatial.build(input_shape)
        mid_shape = self.spatial.compute_output_shape(input_shape)
        if self.bn is not None:
            self.bn.build(mid_shape)
        self.temporal.build(mid_shape)
        freeze_built_sublayers(self)

    def call(self, inputs, training=None):
        return self._after_spatial(self.spatial(inputs), training)

    def _after_spatial(self, x, training):
        """`temporal(relu(bn(x)))`; in training on TensorFlow without keeping `relu(bn(x))` (`bn_relu_conv`)."""
        if recomputes(self.bn, x, self.temporal, training):
            return bn_relu_conv(self.bn, x, self.temporal)
        if self.bn is not None:
            x = self.relu(self.bn(x, training=training))
        return self.temporal(x)

    def compute_output_shape(self, input_shape):
        _, h, w = self.kernel_size
        mid = (
            *input_shape[:2],
            conv_output_length(input_shape[2], h, self.strides[1], h // 2),
            conv_output_length(input_shape[3], w, self.strides[2], w // 2),
            self.midplanes_,
        )
        return self.temporal.compute_output_shape(mid)

    def count_macs(self, input_shape):
        """Multiply-adds for one sample of `input_shape` `(T, H, W, C)` (no batch axis)."""
        mid = self.spatial.compute_output_shape((1, *input_shape))[1:]
        return self.spatial.count_macs(input_shape) + self.temporal.count_macs(mid)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "midplanes": self.midplanes,
                "implementation": self.implementation,
                "bn_epsilon": self.bn_epsilon,
                "bn_momentum": self.bn_momentum,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "inner_batchnorm": self.inner_batchnorm,
                "use_bias": self.use_bias,
                "activation": keras.activations.serialize(self.activation),
            }
        )
        return config
