"""Model builders, the registry and model statistics."""

from keras_r21d.models.fold import fold_batchnorm
from keras_r21d.models.registry import get_model, list_models, parse_model_name
from keras_r21d.models.stats import model_stats
from keras_r21d.models.video_resnet import (
    BUILDERS,
    FR2D,
    MC2,
    MC3,
    MC4,
    MC5,
    R2D,
    R3D,
    RMC2,
    RMC3,
    RMC4,
    RMC5,
    R2Plus1D,
    VideoResNet,
)

__all__ = [
    "BUILDERS", "FR2D", "MC2", "MC3", "MC4", "MC5", "R2D", "R3D", "RMC2", "RMC3", "RMC4", "RMC5",
    "R2Plus1D", "VideoResNet", "fold_batchnorm", "get_model", "list_models", "model_stats", "parse_model_name",
]
