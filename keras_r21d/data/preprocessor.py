"""`ClipPreprocessor`: the one owner of clip preprocessing (resize, crop, flip, normalization).

The tf.data pipelines, the exported serving graph, prediction and feature
extraction all preprocess through it, so a served or predicted clip is what
the evaluator saw. Its values are a `ClipConfig`'s (`config.preprocessor`)
or a preset's (`Preset.preprocessor()`); the graph ops are `transforms`'.
"""

import dataclasses

from keras_r21d._tensorflow import tf
from keras_r21d.data import transforms
from keras_r21d.data.defaults import CROP, MEAN, RESIZE, STD


@dataclasses.dataclass(frozen=True)
class ClipPreprocessor:
    """Preprocessing of uint8 frames `(..., T, H, W, 3)` into the network's float32 clips.

    Attributes:
        resize: `(height, width)` the frames are resized to, or an int short side.
        crop: the square crop's side.
        mean, std: RGB normalization on the 0..1 scale.
        flip: random horizontal flips in training.
        scale_jitter: optional `(low, high)` short-side range in training.

    Example:

    >>> preprocessor = ClipPreprocessor(resize=(64, 86), crop=56)
    >>> clips = np.zeros((2, 8, 120, 160, 3), "uint8")
    >>> tuple(preprocessor(clips).shape)
    (2, 8, 56, 56, 3)
    >>> tuple(preprocessor(clips[0], training=True, seed=[1, 2]).shape)
    (8, 56, 56, 3)
    """

    resize: tuple = RESIZE
    crop: int = CROP
    mean: tuple = MEAN
    std: tuple = STD
    flip: bool = True
    scale_jitter: tuple = None

    def __post_init__(self):
        if not isinstance(self.crop, int) or self.crop < 1:
            raise ValueError(f"`crop` must be a positive integer. Received: crop={self.crop!r}")
        if len(tuple(self.mean)) != 3 or len(tuple(self.std)) != 3 or min(self.std) <= 0:
            raise ValueError(f"`mean` and `std` must be 3 values (RGB), std > 0. Received: mean={self.mean!r}, "
                             f"std={self.std!r}")

    @classmethod
    def from_clip_config(cls, config):
        """The preprocessing of a `ClipConfig`."""
        return cls(resize=config.resize, crop=config.crop, mean=tuple(config.mean), std=tuple(config.std),
                   flip=config.flip, scale_jitter=config.scale_jitter)

    def __call__(self, frames, training=False, seed=None):
        """Test time: resize, center crop, normalize (any leading axes). Training (one clip `(T, H, W, 3)`,
        a stateless `seed` of shape (2,)): resize, optional scale jitter, random crop, optional flip, normalize."""
        return self.normalize(self.geometry(frames, training, seed))

    def geometry(self, frames, training=False, seed=None):
        """What `__call__` does before normalizing: float32 clips on the 0..255 scale (whole numbers when no
        resize is needed, e.g. frame shards stored at the pre-crop size, so a `uint8` cast is exact)."""
        if not training:
            return transforms.eval_geometry(frames, self.resize, self.crop)
        if seed is None:
            raise ValueError("training preprocessing needs a stateless `seed` (2 integers)")
        seed = tf.convert_to_tensor(seed, tf.int64)
        return transforms.train_geometry(frames, seed, self.resize, self.crop, self.flip, self.scale_jitter)

    def views(self, clips, crops=1):
        """Test time with `crops` spatial views per clip: `(N, T, H, W, 3)` uint8 clips to `(N * crops, T, crop,
        crop, 3)` normalized views, each clip's in a row (`transforms.view_offsets`: 3 crops along the long side,
        MMAction2's and PySlowFast's convention). One view is `__call__`'s center crop, the same values."""
        return self.normalize(self.view_geometry(clips, crops))

    def view_geometry(self, clips, crops=1):
        """What `views` does before normalizing (float32, 0..255)."""
        return transforms.eval_views_geometry(clips, self.resize, self.crop, crops)

    def normalize(self, clips):
        """0..255 RGB to the network's input: `(x / 255 - mean) / std`, float32."""
        return transforms.normalize(clips, self.mean, self.std)

    def get_config(self):
        """Plain values (JSON), as recorded beside a model; `ClipPreprocessor(**config)` rebuilds it."""
        values = dataclasses.asdict(self)
        return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}

    @classmethod
    def from_config(cls, config):
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in config.items()})
