"""Spatial preprocessing as graph ops: resize, crops, flip, normalization.

Shared by the input pipeline and the exported serving graph, so that a served
model sees exactly what the evaluator sees.
"""

from keras_r21d._tensorflow import tf
from keras_r21d.data.defaults import CROP, MEAN, RESIZE, STD, resize_for_crop  # noqa: F401 - transforms' names


def resize_frames(frames, size=RESIZE):
    """Resizes `(..., H, W, 3)` frames to `size` = `(height, width)`, or short side `size` if an int.

    Bilinear without antialiasing (torchvision's video preset); returns
    float32 on the 0..255 scale.
    """
    frames = tf.convert_to_tensor(frames)
    shape = tf.shape(frames)
    size = _target_size(shape, size)
    # Frames already at the size (frame shards store the pre-crop size): bilinear at scale 1 is the identity.
    return tf.cond(_at_size(shape, size), lambda: tf.cast(frames, tf.float32), lambda: _resize(frames, shape, size))


def _resize(frames, shape, size):
    """Bilinear resize of `(..., H, W, 3)` frames of `shape` to `size`, float32."""
    flat = tf.reshape(tf.cast(frames, tf.float32), tf.concat([[-1], shape[-3:]], axis=0))
    resized = tf.image.resize(flat, size, method="bilinear", antialias=False)
    return tf.reshape(resized, tf.concat([shape[:-3], tf.shape(resized)[1:]], axis=0))


def _target_size(shape, size):
    """`(height, width)` that `resize_frames` gives frames of `shape` (`size`: a pair, or an int short side)."""
    if not isinstance(size, int):
        return size
    h = tf.cast(shape[-3], tf.float32)
    w = tf.cast(shape[-2], tf.float32)
    scale = size / tf.minimum(h, w)
    return (tf.cast(tf.round(h * scale), tf.int32), tf.cast(tf.round(w * scale), tf.int32))


def _at_size(shape, size):
    """Whether frames of `shape` are already at `_target_size` `size`."""
    return tf.logical_and(tf.equal(shape[-3], size[0]), tf.equal(shape[-2], size[1]))


def _crop_first(frames, resize, crop_fn):
    """`crop_fn(resize_frames(frames))`, cropping before the float32 cast when no resize is needed (frame
    shards stored at the pre-crop size): the same values, a fraction of the pixels converted."""
    frames = tf.convert_to_tensor(frames)
    shape = tf.shape(frames)
    size = _target_size(shape, resize)
    return tf.cond(_at_size(shape, size), lambda: tf.cast(crop_fn(frames), tf.float32),
                   lambda: crop_fn(_resize(frames, shape, size)))


def center_crop(frames, crop=CROP):
    """The central `crop x crop` window of `(..., H, W, C)` frames."""
    crop = (crop, crop) if isinstance(crop, int) else tuple(crop)
    shape = tf.shape(frames)
    top = (shape[-3] - crop[0]) // 2
    left = (shape[-2] - crop[1]) // 2
    return frames[..., top : top + crop[0], left : left + crop[1], :]


def view_offsets(height, width, crop, crops):
    """`(top, left)` of each test view's `crop` window (int pair) in `height x width` frames.

    One view is the center crop (`center_crop`'s offsets). Three views are
    the convention of MMAction2's `ThreeCrop` and PySlowFast's
    `uniform_crop`: along the long side (the width when the frames are
    square) the start, the center and the end; centered on the short side.
    Works on Python ints and on scalar tensors.
    """
    top, left = (height - crop[0]) // 2, (width - crop[1]) // 2
    if crops == 1:
        return [(top, left)]
    if crops != 3:
        raise ValueError(f"`crops` must be 1 or 3. Received: crops={crops!r}")
    tall = height > width
    pick = (lambda a, b: a if tall else b) if isinstance(tall, bool) else (lambda a, b: tf.where(tall, a, b))
    return [(pick(0, top), pick(left, 0)), (top, left), (pick(height - crop[0], top), pick(left, width - crop[1]))]


def test_views(frames, crop=CROP, crops=1):
    """The test views of `(N, T, H, W, C)` clips: `(N * crops, T, crop, crop, C)`, each clip's views in a row
    (`view_offsets`' order). One view is `center_crop`."""
    if crops == 1:
        return center_crop(frames, crop)
    crop = (crop, crop) if isinstance(crop, int) else tuple(crop)
    shape = tf.shape(frames)
    views = [frames[:, :, top : top + crop[0], left : left + crop[1], :]
             for top, left in view_offsets(shape[2], shape[3], crop, crops)]
    stacked = tf.stack(views, axis=1)  # (N, crops, T, crop, crop, C)
    out = tf.reshape(stacked, tf.concat([[-1], tf.shape(stacked)[2:]], axis=0))
    return tf.ensure_shape(out, (None, frames.shape[1], crop[0], crop[1], frames.shape[-1]))


def random_crop(frames, crop, seed):
    """The same random `crop x crop` window in every frame of a `(T, H, W, C)` clip."""
    crop = (crop, crop) if isinstance(crop, int) else tuple(crop)
    shape = tf.shape(frames)
    top = tf.random.stateless_uniform((), seed, 0, shape[1] - crop[0] + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform((), seed + [0, 1], 0, shape[2] - crop[1] + 1, dtype=tf.int32)
    return frames[:, top : top + crop[0], left : left + crop[1], :]


def random_flip(frames, seed):
    """Flips a whole `(T, H, W, C)` clip left-right with probability 1/2."""
    flip = tf.random.stateless_uniform((), seed + [0, 2]) < 0.5
    return tf.cond(flip, lambda: _reverse_width(frames), lambda: frames)


def _reverse_width(frames):
    """`tf.reverse(frames, axis=[2])` of a `(T, H, W, C)` clip, on its `(T * H, W, C)` view: the same values,
    about 3x faster on TensorFlow's CPU kernel (BENCHMARKS.md, "Frame shards")."""
    shape = tf.shape(frames)
    flat = tf.reshape(frames, tf.stack([-1, shape[2], shape[3]]))
    out = tf.reshape(tf.reverse(flat, axis=[1]), shape)
    out.set_shape(frames.shape)
    return out


def scale_jitter(frames, short_side_range, seed):
    """Resizes a clip so that its short side is uniform in `short_side_range`."""
    low, high = short_side_range
    side = tf.random.stateless_uniform((), seed + [0, 3], low, high + 1, dtype=tf.int32)
    shape = tf.shape(frames)
    h = tf.cast(shape[1], tf.float32)
    w = tf.cast(shape[2], tf.float32)
    scale = tf.cast(side, tf.float32) / tf.minimum(h, w)
    size = (tf.cast(tf.round(h * scale), tf.int32), tf.cast(tf.round(w * scale), tf.int32))
    return tf.image.resize(frames, size, method="bilinear", antialias=False)


def normalize(frames, mean=MEAN, std=STD):
    """0..255 RGB `(..., W, 3)` to `(x / 255 - mean) / std`, float32.

    Computed on the `(..., W * 3)` view with the mean and std tiled along it:
    the same operations, bit for bit, without broadcasting over a last axis
    of 3, which TensorFlow's CPU kernels run about 6x slower (BENCHMARKS.md,
    "Frame shards").
    """
    frames = tf.convert_to_tensor(frames)
    shape = tf.shape(frames)
    flat = tf.reshape(tf.cast(frames, tf.float32), tf.concat([shape[:-2], [-1]], axis=0)) / 255.0
    width = shape[-2:-1]
    flat = (flat - tf.tile(tf.constant(mean, tf.float32), width)) / tf.tile(tf.constant(std, tf.float32), width)
    out = tf.reshape(flat, shape)
    out.set_shape(frames.shape)  # the static shape the callers (serving signatures, TFLite) rely on
    return out


def eval_geometry(frames, resize=RESIZE, crop=CROP):
    """Test-time geometry of uint8 frames: resize, center crop (float32, 0..255)."""
    return _crop_first(frames, resize, lambda frames: center_crop(frames, crop))


def eval_views_geometry(frames, resize=RESIZE, crop=CROP, crops=1):
    """Test-time geometry of `(N, T, H, W, 3)` uint8 clips with `crops` views each (`test_views`): resize, crop
    (float32, 0..255; `eval_geometry` for one view)."""
    if crops == 1:
        return eval_geometry(frames, resize, crop)
    return _crop_first(frames, resize, lambda frames: test_views(frames, crop, crops))


def eval_transform(frames, resize=RESIZE, crop=CROP, mean=MEAN, std=STD):
    """Test-time preprocessing of uint8 frames: resize, center crop, normalize."""
    return normalize(eval_geometry(frames, resize, crop), mean, std)


def train_geometry(frames, seed, resize=RESIZE, crop=CROP, flip=True, jitter=None):
    """Training geometry of a uint8 clip: resize, optional scale jitter, random crop, flip (float32, 0..255)."""

    def crop_flip(clip):
        clip = random_crop(clip, crop, seed)
        return random_flip(clip, seed) if flip else clip

    if jitter is None:
        return _crop_first(frames, resize, crop_flip)
    return crop_flip(scale_jitter(resize_frames(frames, resize), jitter, seed))


def train_transform(frames, seed, resize=RESIZE, crop=CROP, flip=True, jitter=None, mean=MEAN, std=STD):
    """Training preprocessing of a uint8 clip: resize, optional scale jitter, random crop, flip, normalize."""
    return normalize(train_geometry(frames, seed, resize, crop, flip, jitter), mean, std)
