"""Every Keras object this package writes into a file, registered with Keras on import.

`import keras_r21d` imports this module, so that any `.keras` file the
package wrote (a run's `model.keras` and checkpoints with their compiled
optimizer and learning-rate schedule, a folded model, a converted one)
loads with plain `keras.models.load_model(path)`, `safe_mode` on.
"""

from keras_r21d.layers.blocks import BasicBlock, BottleneckBlock
from keras_r21d.layers.conv2plus1d import Conv2Plus1D
from keras_r21d.layers.video_conv import VideoConv
from keras_r21d.models.backbone import VideoResNetBackbone
from keras_r21d.models.classifier import VideoClassifier, VideoFeatureExtractor
from keras_r21d.models.fold import FoldedAway
from keras_r21d.schedules import WarmupSchedule

__all__ = ["BasicBlock", "BottleneckBlock", "Conv2Plus1D", "FoldedAway", "VideoClassifier", "VideoConv",
           "VideoFeatureExtractor", "VideoResNetBackbone", "WarmupSchedule"]
