"""Training (`model.fit` under `tf.distribute`) and clip/video-level evaluation."""

from keras_r21d.training.callbacks import ResumableCheckpoint, ResumeError, VideoAccuracy, load_checkpoint
from keras_r21d.training.evaluation import compute_metrics, evaluate, evaluate_model, load_model, predict_clips
from keras_r21d.training.recipe import WarmupSchedule, make_optimizer, scaled_learning_rate
from keras_r21d.training.strategy import is_chief, make_strategy, run_or_exit
from keras_r21d.training.train import TrainConfig, TrainingInterrupted, train

__all__ = [
    "ResumableCheckpoint", "ResumeError", "TrainConfig", "TrainingInterrupted", "VideoAccuracy", "WarmupSchedule",
    "compute_metrics",
    "evaluate", "evaluate_model", "is_chief", "load_checkpoint", "load_model", "make_optimizer", "make_strategy",
    "predict_clips", "run_or_exit", "scaled_learning_rate", "train",
]
