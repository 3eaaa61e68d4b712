"""Video data: datasets, decoding, clip sampling, preprocessing and tf.data pipelines.

Knows nothing of models.
"""

from keras_r21d.data.check import check_video, check_videos
from keras_r21d.data.datasets import DatasetFormatError, VideoDataset, load_dataset, parse_spec
from keras_r21d.data.pipeline import BadVideoLog, ClipConfig, TooManyBadVideos, eval_dataset, train_dataset
from keras_r21d.data.synthetic import make_synthetic_dataset
from keras_r21d.data.video import VideoDecodeError, decode_clip, probe, read_frames

__all__ = [
    "BadVideoLog", "ClipConfig", "DatasetFormatError", "TooManyBadVideos", "VideoDataset", "VideoDecodeError",
    "check_video", "check_videos", "decode_clip", "eval_dataset", "load_dataset", "make_synthetic_dataset",
    "parse_spec", "probe", "read_frames", "train_dataset",
]
