"""Keras layers of keras_r21d: `VideoConv`, `Conv2Plus1D` and the residual blocks."""

from keras_r21d.layers.blocks import CONV_TYPES, BasicBlock, BottleneckBlock
from keras_r21d.layers.conv2plus1d import Conv2Plus1D
from keras_r21d.layers.utils import paper_midplanes
from keras_r21d.layers.video_conv import VideoConv

__all__ = ["CONV_TYPES", "BasicBlock", "BottleneckBlock", "Conv2Plus1D", "VideoConv", "paper_midplanes"]
