"""Label smoothing, mixup and cutmix for clip batches, as TensorFlow graph ops.

They run in the `tf.data` pipeline, after batching, so they work on every
Keras backend (the pipeline feeds JAX and torch too) and with tf.data service
(on the trainer, after the service's batches arrive: the workers still send
uint8 clips). Off by default: the paper's recipe uses none of them.

- **Label smoothing** `eps`: the one-hot target becomes `(1 - eps) * onehot +
  eps / classes`.
- **Mixup** (Zhang et al., 2018) `alpha`: `lam ~ Beta(alpha, alpha)` per
  batch; every clip is mixed with the clip at the mirrored position of the
  batch (the batch reversed, as timm and PyTorchVideo pair them):
  `lam * x + (1 - lam) * x_pair`, targets likewise.
- **Cutmix** (Yun et al., 2019) `alpha`: a box of area `(1 - lam)` of the
  frame, at a uniform center and clipped to the frame, is pasted from the
  paired clip, the same box through all frames of the clip; the targets mix
  by the box's actual area.
- Both mixup and cutmix: each batch takes one of them with probability 1/2
  (timm's `switch_prob`, PyTorchVideo's `MixVideo`).
"""

import dataclasses

from keras_r21d._tensorflow import tf


@dataclasses.dataclass(frozen=True)
class LabelMixing:
    """Soft targets for a batch of clips: label smoothing, mixup, cutmix.

    Attributes:
        num_classes: the model's outputs.
        label_smoothing: in `[0, 1)`; 0 is off.
        mixup: the Beta distribution's alpha; 0 is off.
        cutmix: the Beta distribution's alpha; 0 is off.

    Example:

    >>> mixing = LabelMixing(num_classes=3, label_smoothing=0.3)
    >>> _, targets = mixing(np.zeros((2, 4, 8, 8, 3), "float32"), np.array([0, 2]), seed=[1, 2])
    >>> np.round(targets.numpy().astype("float64"), 2).tolist()
    [[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]]
    """

    num_classes: int
    label_smoothing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0

    def __post_init__(self):
        check_soft_targets(self.label_smoothing, self.mixup, self.cutmix)
        if int(self.num_classes) < 1:
            raise ValueError(f"`num_classes` must be positive. Received: {self.num_classes!r}")

    @property
    def active(self):
        """Whether any of the three is on (the training then needs one-hot targets)."""
        return bool(self.label_smoothing or self.mixup or self.cutmix)

    def targets(self, labels):
        """One-hot float32 targets of integer `labels`, smoothed."""
        onehot = tf.one_hot(tf.cast(labels, tf.int32), int(self.num_classes), dtype=tf.float32)
        if self.label_smoothing:
            onehot = onehot * (1.0 - self.label_smoothing) + self.label_smoothing / int(self.num_classes)
        return onehot

    def __call__(self, clips, labels, seed):
        """`(clips, targets)` of a batch: `clips` `(B, T, H, W, C)` float, `labels` `(B,)` ints, `seed` a
        stateless seed `(2,)`. The same seed gives the same mix."""
        clips = tf.convert_to_tensor(clips)
        targets = self.targets(labels)
        if not (self.mixup or self.cutmix):
            return clips, targets
        seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
        if self.mixup and self.cutmix:
            use_cutmix = tf.random.stateless_uniform((), seed + [0, 7]) < 0.5
            return tf.cond(use_cutmix, lambda: self._cutmix(clips, targets, seed),
                           lambda: self._mixup(clips, targets, seed))
        if self.mixup:
            return self._mixup(clips, targets, seed)
        return self._cutmix(clips, targets, seed)

    def _mixup(self, clips, targets, seed):
        lam = beta_sample(self.mixup, seed + [0, 1])
        mixed = lam * clips + (1.0 - lam) * tf.cast(tf.reverse(clips, [0]), clips.dtype)
        return mixed, lam * targets + (1.0 - lam) * tf.reverse(targets, [0])

    def _cutmix(self, clips, targets, seed):
        lam = beta_sample(self.cutmix, seed + [0, 3])
        shape = tf.shape(clips)
        mask, kept = cutmix_box(shape[2], shape[3], lam, seed + [0, 5])
        mask = tf.cast(mask, clips.dtype)[None, None, :, :, None]  # the same box in every frame of every clip
        mixed = clips * (1 - mask) + tf.reverse(clips, [0]) * mask
        return mixed, kept * targets + (1.0 - kept) * tf.reverse(targets, [0])


def check_soft_targets(label_smoothing=0.0, mixup=0.0, cutmix=0.0, flags=False):
    """Raises `ValueError` naming the setting (and its command-line flag with `flags=True`) unless
    `label_smoothing` is in [0, 1) and the `mixup` and `cutmix` alphas are >= 0."""

    def name(setting):
        return f"`{setting}` (--{setting.replace('_', '-')})" if flags else f"`{setting}`"

    if not 0.0 <= float(label_smoothing) < 1.0:
        raise ValueError(f"{name('label_smoothing')} must be in [0, 1). Received: {label_smoothing!r}")
    for setting, alpha in (("mixup", mixup), ("cutmix", cutmix)):
        if not float(alpha) >= 0.0:
            raise ValueError(f"{name(setting)}, the Beta distribution's alpha, must be >= 0 (0: off). "
                             f"Received: {alpha!r}")


def beta_sample(alpha, seed):
    """One `Beta(alpha, alpha)` float32 draw from a stateless seed (two Gamma draws)."""
    gammas = tf.random.stateless_gamma((2,), seed, alpha=float(alpha), dtype=tf.float32)
    return gammas[0] / tf.maximum(gammas[0] + gammas[1], 1e-12)


def cutmix_box(height, width, lam, seed):
    """`(mask (H, W) bool, kept)`: cutmix's box of `(1 - lam)` of the area, centered uniformly and clipped to
    the frame, and the fraction of the frame it leaves (what the first target keeps)."""
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    ratio = tf.sqrt(1.0 - lam)
    center = tf.random.stateless_uniform((2,), seed) * tf.stack([h, w])
    top = tf.cast(tf.clip_by_value(tf.round(center[0] - ratio * h / 2), 0, h), tf.int32)
    bottom = tf.cast(tf.clip_by_value(tf.round(center[0] + ratio * h / 2), 0, h), tf.int32)
    left = tf.cast(tf.clip_by_value(tf.round(center[1] - ratio * w / 2), 0, w), tf.int32)
    right = tf.cast(tf.clip_by_value(tf.round(center[1] + ratio * w / 2), 0, w), tf.int32)
    rows = tf.range(height)
    cols = tf.range(width)
    mask = ((rows >= top) & (rows < bottom))[:, None] & ((cols >= left) & (cols < right))[None, :]
    kept = 1.0 - tf.cast((bottom - top) * (right - left), tf.float32) / (h * w)
    return mask, kept


def mix_batches(ds, mixing, seed=None):
    """`ds` of `(clips, labels)` batches with `mixing` applied: `(clips, targets)`, a stateless seed per batch
    from `seed`. `ds` unchanged when mixing is off."""
    if mixing is None or not mixing.active:
        return ds
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    mixed = tf.data.Dataset.zip(ds, seeds).map(lambda batch, pair: mixing(batch[0], batch[1], pair),
                                               num_parallel_calls=tf.data.AUTOTUNE)
    return mixed.prefetch(tf.data.AUTOTUNE)


def one_hot_batches(ds, num_classes):
    """`ds` of `(clips, labels)` batches with one-hot float32 labels (validation when training on soft
    targets: its loss is then the plain cross-entropy)."""
    return ds.map(lambda clips, labels: (clips, tf.one_hot(tf.cast(labels, tf.int32), num_classes)),
                  num_parallel_calls=tf.data.AUTOTUNE)
