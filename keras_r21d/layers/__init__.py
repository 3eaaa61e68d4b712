"""Keras layers of keras_r21d: `VideoConv`, `Conv2Plus1D`, the residual blocks and `BatchNormalization`.

`autotune_lowering` measures the fastest lowering of each full 3D kernel on this machine (`implementation="auto"`);
`kernel_gradient_choices` lists how the 2D kernels' gradients were measured to run best here in training
(`keras_r21d.layers.kernel_gradient`).
"""

from keras_r21d.layers.autotune import autotune_lowering
from keras_r21d.layers.batchnorm import BatchNormalization
from keras_r21d.layers.blocks import CONV_TYPES, BasicBlock, BottleneckBlock
from keras_r21d.layers.conv2plus1d import Conv2Plus1D
from keras_r21d.layers.kernel_gradient import clear_kernel_gradients, kernel_gradient_choices
from keras_r21d.layers.lowering import LoweringError, LoweringTable, clear_lowering
from keras_r21d.layers.utils import paper_midplanes
from keras_r21d.layers.video_conv import VideoConv

__all__ = ["CONV_TYPES", "BasicBlock", "BatchNormalization", "BottleneckBlock", "Conv2Plus1D", "LoweringError",
           "LoweringTable", "VideoConv", "autotune_lowering", "clear_kernel_gradients", "clear_lowering",
           "kernel_gradient_choices", "paper_midplanes"]
