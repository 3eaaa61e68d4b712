"""`tf.data` pipelines of clips from video files, robust to bad files, or from frame shards.

Training: one clip per video per epoch with temporal jitter, random crop and
flip. Testing: `test_clips` uniformly spaced clips per video, center-cropped,
each element carrying its video id so that predictions can be averaged per
video. Both work with `model.fit` under any `tf.distribute` strategy (batch
sizes are global). A `ShardDataset` (`shards:DIR`, written by `prepare`) is
read by `shard_pipeline` instead: the same sampling and preprocessing in
TensorFlow ops only.
"""

import dataclasses
import logging
import threading

import numpy as np

from keras_r21d._tensorflow import tf
from keras_r21d.data import sampling, transforms
from keras_r21d.data.preprocessor import ClipPreprocessor
from keras_r21d.data.video import MAX_DECODE_PIXELS, VideoDecodeError, decode_clip, run_with_timeout

logger = logging.getLogger("keras_r21d.data")


@dataclasses.dataclass
class ClipConfig:
    """How clips are sampled and preprocessed.

    Attributes:
        clip_len: frames per clip.
        frame_stride: take every `frame_stride`-th frame.
        target_fps: if set, the stride is chosen per video from its frame rate.
        test_clips: uniformly spaced clips per video at test time (the paper: 10).
        short_policy: for videos shorter than a clip: `"loop"`, `"repeat_last"`,
            `"pad"` (black frames) or `"skip"`.
        resize: `(height, width)` frames are resized to, or an int short side.
        crop: crop size (square).
        flip: random horizontal flip in training.
        scale_jitter: optional `(low, high)` short side range for training.
        decode_size: optional `(height, width)` to resize to while decoding
            (saves memory for large videos; the graph resize still follows).
        decode_timeout: seconds one video may take to decode, or `None`.
        max_pixels: a video whose decoded frames would exceed this many
            pixels (frames x height x width, at `decode_size` when set) is
            refused with a reason instead of exhausting memory; `None`: no
            limit. Default 2^30 (3 GiB of frames).
        max_consecutive_failures: stop with an error after this many bad
            videos in a row.
        mean, std: normalization (RGB, 0..1 scale).
        test_crops: spatial views per test clip: 1 (the center crop, the
            paper's protocol) or 3 (along the long side, MMAction2's and
            PySlowFast's `ThreeCrop`); a video's `test_clips x test_crops`
            softmaxes are averaged.
    """

    clip_len: int = 16
    frame_stride: int = 1
    target_fps: float = None
    test_clips: int = 10
    short_policy: str = "loop"
    resize: tuple = transforms.RESIZE
    crop: int = transforms.CROP
    flip: bool = True
    scale_jitter: tuple = None
    decode_size: tuple = None
    decode_timeout: float = 60.0
    max_pixels: int = MAX_DECODE_PIXELS
    max_consecutive_failures: int = 20
    mean: tuple = transforms.MEAN
    std: tuple = transforms.STD
    test_crops: int = 1

    def __post_init__(self):
        sampling.check_policy(self.short_policy)
        if self.test_crops not in (1, 3):
            raise ValueError(f"`test_crops` must be 1 or 3. Received: test_crops={self.test_crops!r}")
        for name in ("clip_len", "frame_stride", "test_clips", "max_consecutive_failures"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")

    @property
    def preprocessor(self):
        """The `ClipPreprocessor` of these values: what every path (training, evaluation, serving) runs."""
        return ClipPreprocessor.from_clip_config(self)

    @property
    def test_views(self):
        """Test views per video: `test_clips x test_crops`."""
        return self.test_clips * self.test_crops

    @property
    def protocol(self):
        """The test protocol in words, as reports print it: "10 clips x 1 crop"."""
        return view_protocol(self.test_clips, self.test_crops)


def view_protocol(clips, crops=1):
    """`"10 clips x 3 crops"`: how many views of a video are averaged."""
    return f"{clips} clip{'s' if clips != 1 else ''} x {crops} crop{'s' if crops != 1 else ''}"


class TooManyBadVideos(RuntimeError):
    """Raised when `max_consecutive_failures` videos in a row could not be decoded."""


class BadVideoLog:
    """Collects videos that were skipped, with the reason, each logged once.

    Thread-safe: the pipeline decodes in parallel. `failures` maps path to
    reason. After `max_consecutive` failures in a row it raises
    `TooManyBadVideos` (which stops the epoch with that message).
    """

    def __init__(self, max_consecutive=20):
        self.max_consecutive = max_consecutive
        self.failures = {}
        self.consecutive = 0
        self.decoded = 0
        self._lock = threading.Lock()

    def ok(self):
        with self._lock:
            self.consecutive = 0
            self.decoded += 1

    def _record(self, path, reason):
        """Records (and logs) a video's first failure; the caller holds the lock."""
        if path not in self.failures:
            self.failures[path] = reason
            logger.warning("skipping video %s: %s", path, reason)

    def fail(self, path, reason):
        with self._lock:
            self._record(path, reason)
            self.consecutive += 1
            if self.consecutive >= self.max_consecutive:
                recent = "; ".join(f"{p}: {r}" for p, r in list(self.failures.items())[-3:])
                raise TooManyBadVideos(
                    f"at least {self.max_consecutive} videos in a row could not be decoded (max_consecutive_failures="
                    f"{self.max_consecutive}); last: {recent}"
                )

    def note(self, path, reason):
        """Records a video left out before reading (e.g. one `prepare` could not write), without counting it
        as a decoding failure in a row."""
        with self._lock:
            self._record(path, reason)

    def summary(self):
        return f"{self.decoded} clips decoded, {len(self.failures)} videos skipped"


def _chooser(path, config, starts_for):
    """`f(num_frames, fps)` for `decode_clip`: frame indices of this video's clips."""

    def choose(num_frames, fps):
        stride = sampling.stride_for(fps, config.frame_stride, config.target_fps)
        if config.short_policy == "skip" and sampling.too_short(num_frames, config.clip_len, stride):
            span = sampling.clip_span(config.clip_len, stride)
            raise VideoDecodeError(path, f"too short: {num_frames} frames, a clip needs {span} (policy 'skip')")
        starts = starts_for(num_frames, stride)
        indices = sampling.clip_indices(starts, num_frames, config.clip_len, stride, config.short_policy)
        return np.asarray(indices).reshape(-1)

    return choose


def _test_starts(config):
    def starts_for(num_frames, stride):
        return sampling.uniform_clip_starts(num_frames, config.clip_len, config.test_clips, stride)

    return starts_for


def read_test_clips(path, config):
    """The evaluator's uint8 test clips of one video: `(test_clips, clip_len, H, W, 3)`.

    Raises `VideoDecodeError` naming the file if it cannot be decoded within
    `config.decode_timeout`.
    """
    frames = run_with_timeout(lambda: _decode_frames(path, config, _test_starts(config)), config.decode_timeout, path)
    return frames.reshape(config.test_clips, config.clip_len, *frames.shape[1:])


def _decode_frames(path, config, starts_for):
    """The uint8 frames of one video's clips: only the frames they need, large ones shrunk as they are decoded.

    Frames of more than `video.SHRINK_ABOVE` times the pre-crop size's
    pixels come out at the pre-crop size (`video.shrunk_size`), so memory
    follows the clip geometry, not the video's resolution or length;
    `config.decode_size`, when set, is the size instead.
    """
    return decode_clip(path, _chooser(path, config, starts_for), size=config.decode_size,
                       max_pixels=config.max_pixels, shrink_to=None if config.decode_size else config.resize)[0]


def _decode(path, config, log, starts_for):
    """Decodes one video's clips; on failure logs it and returns `(empty, False)`."""
    try:
        frames = run_with_timeout(lambda: _decode_frames(path, config, starts_for), config.decode_timeout, path)
    except VideoDecodeError as error:
        log.fail(path, error.reason)
        return np.zeros((0, 1, 1, 3), np.uint8), False
    except Exception as error:  # noqa: BLE001 - OpenCV raises cv2.error, MemoryError, ...
        log.fail(path, f"{type(error).__name__}: {error}")
        return np.zeros((0, 1, 1, 3), np.uint8), False
    log.ok()
    return frames, True


def _prepare(dataset, config, bad_videos):
    """Defaults and checks shared by both pipelines: `(config, log, paths, labels)`."""
    config = config or ClipConfig()
    log = bad_videos if bad_videos is not None else BadVideoLog(config.max_consecutive_failures)
    if not dataset.paths:
        raise ValueError(f"dataset {dataset.name!r} has no videos")
    return config, log, list(dataset.paths), np.asarray(dataset.labels, np.int32)


def _from_shards(dataset):
    """Whether `dataset` is a `ShardDataset` (`shards:DIR`): its clips are read by graph ops only."""
    from keras_r21d.data.shards import ShardDataset

    return isinstance(dataset, ShardDataset)


def _options(deterministic):
    options = tf.data.Options()
    # Elements come from a list of indices, not files: shard by data.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    if deterministic is not None:
        options.deterministic = deterministic
    return options


def _decoded_frames(ds, decode_py):
    ds = ds.map(
        lambda *args: tuple(tf.py_function(decode_py, list(args), [tf.uint8, tf.bool])) + tuple(args),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    ds = ds.filter(lambda frames, ok, *rest: ok)
    return ds.map(lambda frames, ok, *rest: (tf.ensure_shape(frames, (None, None, None, 3)), *rest))


def train_dataset(dataset, batch_size, config=None, shuffle=True, seed=None, deterministic=None, cache=None,
                  bad_videos=None, repeat=False, drop_remainder=False):
    """A training `tf.data.Dataset` of `(clips, labels)` batches.

    Each video gives one clip per epoch: a random start (temporal jitter),
    resize, random crop, random flip, normalization.

    Args:
        dataset: a `VideoDataset`.
        batch_size: global batch size.
        config: a `ClipConfig`.
        shuffle: shuffle the videos every epoch.
        seed: makes shuffling, jitter and augmentation deterministic.
        deterministic: `tf.data` output order (`None`: tf.data's default).
        cache: `None`, `""` (memory) or a file path: caches decoded clips
            (this freezes the temporal jitter; crops and flips stay random).
        bad_videos: a `BadVideoLog` that collects skipped videos.
        repeat: repeat forever.
        drop_remainder: drop the last incomplete batch.
    """
    config, log, paths, labels = _prepare(dataset, config, bad_videos)
    if _from_shards(dataset):
        from keras_r21d.data import shard_pipeline

        return shard_pipeline.train_dataset(dataset, batch_size, config, shuffle, seed, deterministic, cache, log,
                                            repeat, drop_remainder)

    def decode_py(index, element_seed):
        rng = np.random.default_rng(int(element_seed.numpy()) & 0x7FFFFFFFFFFFFFFF)

        def starts_for(num_frames, stride):
            return [sampling.random_clip_start(num_frames, config.clip_len, stride, rng)]

        return _decode(paths[int(index.numpy())], config, log, starts_for)

    ds = tf.data.Dataset.range(len(paths))
    if shuffle:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = _decoded_frames(tf.data.Dataset.zip(ds, seeds), decode_py)
    if cache is not None:
        ds = ds.cache(cache)

    preprocessor = config.preprocessor

    def augment(frames, index, element_seed):
        pair = tf.stack([element_seed, tf.constant(0x5EED, tf.int64)])
        clip = preprocessor(frames, training=True, seed=pair)
        clip = tf.ensure_shape(clip, (config.clip_len, config.crop, config.crop, 3))
        return clip, tf.gather(labels, index)

    ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(_options(deterministic))


def eval_dataset(dataset, batch_size, config=None, with_video_id=True, deterministic=True, cache=None,
                 bad_videos=None):
    """A test `tf.data.Dataset` of uniformly spaced, center-cropped clips (or `config.test_crops` views each).

    Each video gives `config.test_clips x config.test_crops` clips, each clip's views in a row. Elements are
    `(clips, labels, video_ids)` batches (`video_ids` index `dataset.paths`),
    or `(clips, labels)` with `with_video_id=False` (for `model.fit`'s
    validation data, which would read a third entry as sample weights).
    """
    config, log, paths, labels = _prepare(dataset, config, bad_videos)
    if _from_shards(dataset):
        from keras_r21d.data import shard_pipeline

        return shard_pipeline.eval_dataset(dataset, batch_size, config, with_video_id, deterministic, cache, log)

    def decode_py(index):
        return _decode(paths[int(index.numpy())], config, log, _test_starts(config))

    ds = _decoded_frames(tf.data.Dataset.range(len(paths)), decode_py)
    if cache is not None:
        ds = ds.cache(cache)

    preprocessor = config.preprocessor

    def to_clips(frames, index):
        shape = tf.shape(frames)
        clips = tf.reshape(frames, (config.test_clips, config.clip_len, shape[1], shape[2], 3))
        clips = preprocessor.views(clips, config.test_crops)
        clips = tf.ensure_shape(clips, (config.test_views, config.clip_len, config.crop, config.crop, 3))
        label = tf.fill((config.test_views,), tf.gather(labels, index))
        video = tf.fill((config.test_views,), tf.cast(index, tf.int32))
        if with_video_id:
            return tf.data.Dataset.from_tensor_slices((clips, label, video))
        return tf.data.Dataset.from_tensor_slices((clips, label))

    ds = ds.flat_map(to_clips) if deterministic else ds.interleave(
        to_clips, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False
    )
    ds = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(_options(deterministic))
