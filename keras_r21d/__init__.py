"""keras_r21d: the networks of "A Closer Look at Spatiotemporal Convolutions
for Action Recognition" (Tran et al., CVPR 2018) for Keras 3.

>>> import keras_r21d
>>> model = keras_r21d.R2Plus1D(depth=18, classes=101)

`import keras_r21d` registers every Keras object the package writes into
files (`keras_r21d.saving`), so that its `.keras` files load with plain
`keras.models.load_model`. The command line (`keras-r21d`, `python -m
keras_r21d`) imports only what a command needs: `--help` imports neither
Keras nor TensorFlow.
"""

import os
import sys

from keras_r21d._lazy import lazy_exports
from keras_r21d.version import __version__

_MODEL_NAMES = ("FR2D", "MC2", "MC3", "MC4", "MC5", "R2D", "R3D", "RMC2", "RMC3", "RMC4", "RMC5", "R2Plus1D",
                "VideoResNet", "VideoResNetBackbone", "VideoClassifier", "VideoFeatureExtractor", "fold_batchnorm",
                "from_preset", "get_model", "get_preset", "list_models", "list_presets", "model_stats")
__getattr__, __dir__ = lazy_exports(__name__, {**{name: "models" for name in _MODEL_NAMES}, "layers": "layers",
                                               "saving": "saving"})


def _launched_as_cli():
    """Whether this import is the command line's own (`keras-r21d ...` or `python -m keras_r21d ...`)."""
    # While `python -m` locates its module, sys.argv[0] is "-m".
    return sys.argv[:1] == ["-m"] or os.path.basename(sys.argv[0] if sys.argv else "") == "keras-r21d"


if not _launched_as_cli():
    from keras_r21d import saving  # noqa: F401,E402 - registers the package's Keras objects


def train(*args, **kwargs):
    """Trains a model on a video dataset: see `keras_r21d.training.train`."""
    from keras_r21d.training import train as _train

    return _train(*args, **kwargs)


def evaluate(*args, **kwargs):
    """Clip- and video-level evaluation: see `keras_r21d.training.evaluate`."""
    from keras_r21d.training import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


def export_saved_model(*args, **kwargs):
    """SavedModel for TF Serving with raw-video and feature signatures: see `keras_r21d.export.export_saved_model`."""
    from keras_r21d.export import export_saved_model as _export

    return _export(*args, **kwargs)


def export_tflite(*args, **kwargs):
    """TFLite export without `CONV_3D` by default: see `keras_r21d.export.export_tflite`."""
    from keras_r21d.export import export_tflite as _export

    return _export(*args, **kwargs)


__all__ = [
    "FR2D", "MC2", "MC3", "MC4", "MC5", "R2D", "R3D", "RMC2", "RMC3", "RMC4", "RMC5", "R2Plus1D",
    "VideoClassifier", "VideoFeatureExtractor", "VideoResNet", "VideoResNetBackbone", "evaluate",
    "export_saved_model", "export_tflite", "fold_batchnorm", "from_preset", "get_model", "get_preset", "layers",
    "list_models", "list_presets", "model_stats", "train", "__version__",
]
