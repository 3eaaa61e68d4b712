"""Video data: datasets, decoding, clip sampling, preprocessing and tf.data pipelines (imported on first use).

Knows nothing of models.
"""

from keras_r21d._lazy import lazy_exports

_EXPORTS = {
    "check_video": "check", "check_videos": "check",
    "DatasetFormatError": "datasets", "VideoDataset": "datasets", "load_dataset": "datasets", "parse_spec": "datasets",
    "BadVideoLog": "pipeline", "ClipConfig": "pipeline", "TooManyBadVideos": "pipeline", "eval_dataset": "pipeline",
    "train_dataset": "pipeline",
    "LabelMixing": "mixing", "mix_batches": "mixing",
    "make_synthetic_dataset": "synthetic",
    "VideoDecodeError": "video", "decode_clip": "video", "probe": "video", "read_frames": "video",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
