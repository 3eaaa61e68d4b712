"""Which frames a clip reads: temporal jitter for training, uniform clips for testing.

Written with TensorFlow ops so that the exported `classify_video` signature
runs exactly this code in its graph; the input pipeline calls the same
functions eagerly. Index `-1` stands for a padding (black) frame.
"""

from keras_r21d._tensorflow import tf

SHORT_VIDEO_POLICIES = ("loop", "repeat_last", "pad", "skip")


def check_policy(policy):
    if policy not in SHORT_VIDEO_POLICIES:
        raise ValueError(f"short-video policy must be one of {SHORT_VIDEO_POLICIES}. Received: {policy!r}")


def clip_span(clip_len, stride=1):
    """Frames covered by one clip: `(clip_len - 1) * stride + 1`."""
    return (clip_len - 1) * stride + 1


def uniform_clip_starts(num_frames, clip_len, num_clips, stride=1):
    """Start frames of `num_clips` clips spread uniformly over the video.

    The first clip starts at frame 0 and the last ends at the last frame
    (rounded to the nearest frame); one clip is centered. A video shorter than
    a clip gives starts of 0.
    """
    num_frames = tf.cast(num_frames, tf.int64)
    room = tf.maximum(num_frames - clip_span(clip_len, stride), 0)
    if num_clips == 1:
        return tf.reshape(room // 2, (1,))
    i = tf.range(num_clips, dtype=tf.int64)
    denominator = num_clips - 1
    return (2 * i * room + denominator) // (2 * denominator)


def clip_indices(starts, num_frames, clip_len, stride=1, policy="loop"):
    """Frame indices `(num_clips, clip_len)` of clips starting at `starts`.

    Frames past the end of a short video follow `policy`: `"loop"` wraps
    around to the start, `"repeat_last"` repeats the last frame, `"pad"` gives
    `-1` (a black frame). `"skip"` is decided by the caller (the video is not
    used) and here behaves as `"loop"`.
    """
    check_policy(policy)
    num_frames = tf.cast(num_frames, tf.int64)
    starts = tf.cast(tf.reshape(starts, (-1, 1)), tf.int64)
    raw = starts + tf.range(clip_len, dtype=tf.int64)[tf.newaxis] * stride
    if policy == "repeat_last":
        return tf.minimum(raw, num_frames - 1)
    if policy == "pad":
        return tf.where(raw < num_frames, raw, tf.constant(-1, tf.int64))
    return raw % num_frames


def stride_for(fps, frame_stride=1, target_fps=None):
    """The frame stride: `frame_stride`, or the one that brings `fps` nearest `target_fps`."""
    if target_fps and fps and fps > 0:
        return max(1, int(round(fps / target_fps)))
    return frame_stride


def random_clip_start(num_frames, clip_len, stride, rng):
    """A uniformly random start (temporal jitter); 0 for a short video."""
    room = num_frames - clip_span(clip_len, stride)
    return int(rng.integers(0, room + 1)) if room > 0 else 0


def too_short(num_frames, clip_len, stride):
    return num_frames < clip_span(clip_len, stride)

