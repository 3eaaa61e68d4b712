"""Residual blocks whose convolution type ("3d", "2d", "2plus1d") is data."""

import keras

from keras_r21d.layers.batchnorm import BatchNormalization
from keras_r21d.layers.conv2plus1d import Conv2Plus1D
from keras_r21d.layers.recompute import bn_relu_conv, recomputes
from keras_r21d.layers.utils import freeze_built_sublayers, paper_midplanes
from keras_r21d.layers.video_conv import VideoConv, check_implementation

CONV_TYPES = ("3d", "2d", "2plus1d")
MIDPLANES = ("paper", "torchvision")


def block_strides(conv_type, stride):
    """The `(t, h, w)` stride of a block: time is only strided by 3D and (2+1)D blocks."""
    return (1 if conv_type == "2d" else stride, stride, stride)


def _check(conv_type, midplanes, implementation, stride):
    if conv_type not in CONV_TYPES:
        raise ValueError(f"`conv_type` must be one of {CONV_TYPES}. Received: conv_type={conv_type!r}")
    if midplanes not in MIDPLANES:
        raise ValueError(f"`midplanes` must be one of {MIDPLANES}. Received: midplanes={midplanes!r}")
    check_implementation(implementation)
    if stride not in (1, 2):
        raise ValueError(f"`stride` must be 1 or 2. Received: stride={stride!r}")


class _ResidualBlock(keras.layers.Layer):
    """Shared machinery: conv factory, projection shortcut, MAC counting, config."""

    expansion = 1

    def __init__(
        self,
        filters,
        conv_type="3d",
        stride=1,
        midplanes="paper",
        implementation="auto",
        bn_epsilon=1e-3,
        bn_momentum=0.9,
        kernel_initializer="he_normal",
        kernel_regularizer=None,
        batchnorm=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check(conv_type, midplanes, implementation, stride)
        self.batchnorm = bool(batchnorm)
        self.filters = int(filters)
        self.conv_type = conv_type
        self.stride = stride
        self.midplanes = midplanes
        self.implementation = implementation
        self.bn_epsilon = bn_epsilon
        self.bn_momentum = bn_momentum
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.input_spec = keras.layers.InputSpec(ndim=5)
        self.out_channels = self.filters * self.expansion
        self.shortcut_conv = None
        self.shortcut_bn = None
        self.out_relu = keras.layers.ReLU(name=f"{self.name}_out", dtype=self.dtype_policy)

    def _bn(self, suffix):
        """A BatchNormalization, or `None` in the folded inference form (`batchnorm=False`)."""
        if not self.batchnorm:
            return None
        return BatchNormalization(
            epsilon=self.bn_epsilon,
            momentum=self.bn_momentum,
            name=f"{self.name}_{suffix}",
            dtype=self.dtype_policy,
        )

    def _relu(self, suffix):
        return keras.layers.ReLU(name=f"{self.name}_{suffix}", dtype=self.dtype_policy) if self.batchnorm else None

    def _folded(self, relu):
        """The conv arguments of the folded form: a bias (the BatchNorm's), and the ReLU fused in."""
        if self.batchnorm:
            return {}
        return {"use_bias": True, "activation": "relu" if relu else None}

    def _pointwise(self, filters, strides, suffix, relu=False):
        return VideoConv(
            filters,
            (1, 1, 1),
            strides=strides,
            implementation=self.implementation,
            **self._folded(relu),
            kernel_initializer=self.kernel_initializer,
            kernel_regularizer=self.kernel_regularizer,
            name=f"{self.name}_{suffix}",
            dtype=self.dtype_policy,
        )

    def _typed_conv(self, filters, stride, suffix, midplanes=None, relu=False):
        """The block's 3x3x3-class conv in the stage's conv type."""
        strides = block_strides(self.conv_type, stride)
        common = dict(
            strides=strides,
            implementation=self.implementation,
            **self._folded(relu),
            kernel_initializer=self.kernel_initializer,
            kernel_regularizer=self.kernel_regularizer,
            name=f"{self.name}_{suffix}",
            dtype=self.dtype_policy,
        )
        if self.conv_type == "2plus1d":
            return Conv2Plus1D(
                filters,
                (3, 3, 3),
                midplanes=midplanes,
                bn_epsilon=self.bn_epsilon,
                bn_momentum=self.bn_momentum,
                inner_batchnorm=self.batchnorm,
                **common,
            )
        kernel = (1, 3, 3) if self.conv_type == "2d" else (3, 3, 3)
        return VideoConv(filters, kernel, **common)

    def _torchvision_midplanes(self, in_channels):
        if self.conv_type == "2plus1d" and self.midplanes == "torchvision":
            return paper_midplanes(in_channels, self.filters)
        return None

    def _build_shortcut(self, input_shape):
        if self.stride != 1 or input_shape[-1] != self.out_channels:
            self.shortcut_conv = self._pointwise(
                self.out_channels, block_strides(self.conv_type, self.stride), "shortcut_conv"
            )
            self.shortcut_conv.build(input_shape)
            self.shortcut_bn = self._bn("shortcut_bn")
            if self.shortcut_bn is not None:
                self.shortcut_bn.build(self.shortcut_conv.compute_output_shape(input_shape))

    def _shortcut(self, inputs, training):
        if self.shortcut_conv is None:
            return inputs
        return self._norm(self.shortcut_bn, self.shortcut_conv(inputs), training)

    @staticmethod
    def _norm(bn, x, training, relu=None):
        """`relu(bn(x))`, skipping what the folded form has fused into the conv."""
        if bn is not None:
            x = bn(x, training=training)
        return relu(x) if relu is not None else x

    @staticmethod
    def _bn_relu_conv(bn, relu, x, conv, training):
        """`conv(relu(bn(x)))`; in training on TensorFlow without keeping `relu(bn(x))` (`bn_relu_conv`), for a
        `Conv2Plus1D` up to its spatial convolution."""
        first = conv.spatial if isinstance(conv, Conv2Plus1D) else conv
        if recomputes(bn, x, first, training):
            y = bn_relu_conv(bn, x, first)
            return conv._after_spatial(y, training) if first is not conv else y
        return conv(_ResidualBlock._norm(bn, x, training, relu), training=training)

    def conv_bn_pairs(self):
        """`[(conv, bn or None)]`: every conv of the block with the BatchNorm that follows it."""
        pairs = list(zip(self._convs(), self._bns()))
        if self.shortcut_conv is not None:
            pairs.append((self.shortcut_conv, self.shortcut_bn))
        return pairs

    def _build_chain(self, layers, input_shape):
        """Builds `(layer, bn)` pairs in order and returns the final shape."""
        shape = input_shape
        for conv, bn in layers:
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            if bn is not None:
                bn.build(shape)
        return shape

    def compute_output_shape(self, input_shape):
        t_stride, s, _ = block_strides(self.conv_type, self.stride)

        def down(length, stride):
            return None if length is None else (length - 1) // stride + 1

        return (
            input_shape[0],
            down(input_shape[1], t_stride),
            down(input_shape[2], s),
            down(input_shape[3], s),
            self.out_channels,
        )

    def count_macs(self, input_shape):
        """Multiply-adds for one sample of `input_shape` `(T, H, W, C)` (no batch axis)."""
        total = 0
        shape = (1, *input_shape)
        for conv in self._convs():
            total += conv.count_macs(shape[1:])
            shape = conv.compute_output_shape(shape)
        if self.shortcut_conv is not None:
            total += self.shortcut_conv.count_macs(input_shape)
        return total

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "conv_type": self.conv_type,
                "stride": self.stride,
                "midplanes": self.midplanes,
                "implementation": self.implementation,
                "bn_epsilon": self.bn_epsilon,
                "bn_momentum": self.bn_momentum,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "batchnorm": self.batchnorm,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_r21d")
class BasicBlock(_ResidualBlock):
    """The basic residual block: two 3x3x3-class convs, each followed by BatchNorm.

    `conv -> BN -> ReLU -> conv -> BN -> (+ shortcut) -> ReLU`, where each conv
    is a `3x3x3` conv (`conv_type="3d"`), a `1x3x3` conv (`"2d"`) or a
    `Conv2Plus1D` (`"2plus1d"`). The first conv carries the stride: `2x2x2`
    for 3D and (2+1)D blocks, `1x2x2` for 2D blocks. The shortcut is the
    identity, or a `1x1x1` conv with the same stride plus BatchNorm when the
    width or the stride changes. Training on TensorFlow, `relu(bn(x))`
    between the convolutions is computed again in the backward pass rather
    than kept (`keras_r21d.layers.recompute`).

    Args:
        filters: int, the block's output channels.
        conv_type: `"3d"`, `"2d"` or `"2plus1d"`.
        stride: 1, or 2 to downsample.
        midplanes: `"paper"` (one `M` per (2+1)D conv, from its own input and
            output widths) or `"torchvision"` (one `M` per block, from the
            block's input and output widths, reused by both convs).
        implementation: lowering of the convs, see `VideoConv`.
        bn_epsilon: float. 1e-3 in VMZ, 1e-5 in torchvision.
        bn_momentum: float (Keras' convention: weight of the old average).
        kernel_initializer: initializer of every conv kernel.
        kernel_regularizer: optional regularizer of every conv kernel.
        batchnorm: bool. `False` is the folded inference form that
            `keras_r21d.fold_batchnorm` builds: no BatchNorm, every conv has
            a bias and the inner ReLUs run inside the convs.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Example:

    >>> block = BasicBlock(128, conv_type="2plus1d", stride=2)
    >>> tuple(block(keras.ops.zeros((1, 8, 56, 56, 64))).shape)
    (1, 4, 28, 28, 128)

    Reference:
        Tran et al., "A Closer Look at Spatiotemporal Convolutions for Action
        Recognition", CVPR 2018, Table 1.
    """

    expansion = 1

    def __init__(self, filters, conv_type="3d", stride=1, **kwargs):
        super().__init__(filters, conv_type=conv_type, stride=stride, **kwargs)
        self.bn1 = self._bn("bn1")
        self.relu1 = self._relu("relu1")
        self.bn2 = self._bn("bn2")
        self.conv1 = None
        self.conv2 = None

    def _convs(self):
        return [self.conv1, self.conv2]

    def _bns(self):
        return [self.bn1, self.bn2]

    def build(self, input_shape):
        mid = self._torchvision_midplanes(input_shape[-1])
        self.conv1 = self._typed_conv(self.filters, self.stride, "conv1", midplanes=mid, relu=True)
        self.conv2 = self._typed_conv(self.filters, 1, "conv2", midplanes=mid)
        self._build_chain([(self.conv1, self.bn1), (self.conv2, self.bn2)], input_shape)
        self._build_shortcut(input_shape)
        freeze_built_sublayers(self)

    def call(self, inputs, training=None):
        x = self._bn_relu_conv(self.bn1, self.relu1, self.conv1(inputs, training=training), self.conv2, training)
        x = self._norm(self.bn2, x, training)
        return self.out_relu(x + self._shortcut(inputs, training))


@keras.saving.register_keras_serializable(package="keras_r21d")
class BottleneckBlock(_ResidualBlock):
    """The bottleneck residual block: `1x1x1 -> 3x3x3-class -> 1x1x1`.

    Only the middle conv takes the stage's conv type (and the stride); the
    block's output has `4 * filters` channels.

    Args:
        filters: int, the inner width (the output has `4 * filters` channels).
        conv_type: `"3d"`, `"2d"` or `"2plus1d"` (middle conv only).
        stride: 1, or 2 to downsample.
        **kwargs: as `BasicBlock`.

    Example:

    >>> block = BottleneckBlock(64, conv_type="2d")
    >>> tuple(block(keras.ops.zeros((1, 4, 28, 28, 64))).shape)
    (1, 4, 28, 28, 256)

    Reference:
        Tran et al., "A Closer Look at Spatiotemporal Convolutions for Action
        Recognition", CVPR 2018, Table 1.
    """

    expansion = 4

    def __init__(self, filters, conv_type="3d", stride=1, **kwargs):
        super().__init__(filters, conv_type=conv_type, stride=stride, **kwargs)
        self.conv1 = self._pointwise(self.filters, (1, 1, 1), "conv1", relu=True)
        self.bn1 = self._bn("bn1")
        self.relu1 = self._relu("relu1")
        self.bn2 = self._bn("bn2")
        self.relu2 = self._relu("relu2")
        self.conv3 = self._pointwise(self.out_channels, (1, 1, 1), "conv3")
        self.bn3 = self._bn("bn3")
        self.conv2 = None

    def _convs(self):
        return [self.conv1, self.conv2, self.conv3]

    def _bns(self):
        return [self.bn1, self.bn2, self.bn3]

    def build(self, input_shape):
        mid = self._torchvision_midplanes(input_shape[-1])
        self.conv2 = self._typed_conv(self.filters, self.stride, "conv2", midplanes=mid, relu=True)
        self._build_chain(
            [(self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)], input_shape
        )
        self._build_shortcut(input_shape)
        freeze_built_sublayers(self)

    def call(self, inputs, training=None):
        x = self._bn_relu_conv(self.bn1, self.relu1, self.conv1(inputs), self.conv2, training)
        x = self._bn_relu_conv(self.bn2, self.relu2, x, self.conv3, training)
        x = self._norm(self.bn3, x, training)
        return self.out_relu(x + self._shortcut(inputs, training))
