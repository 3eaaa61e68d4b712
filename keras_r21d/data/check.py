"""Scanning a dataset for videos that cannot be used."""

from keras_r21d.data import sampling
from keras_r21d.data.isolated import IsolatedDecoder
from keras_r21d.data.video import VideoDecodeError, decode_clip, run_with_timeout


def check_video(path, clip_len=16, frame_stride=1, timeout=60.0):
    """Checks one video: it opens, its first and last frames decode, it is long enough.

    Returns a dict `{"path", "ok", "frames", "reason"}`; `frames` is the real
    frame count (corrected when the container's header lies) or `None`.
    """
    try:
        _, _, frames = run_with_timeout(lambda: decode_clip(path, lambda n, fps: [0, n - 1]), timeout, path)
    except VideoDecodeError as error:
        return {"path": str(path), "ok": False, "frames": None, "reason": error.reason}
    except Exception as error:  # noqa: BLE001 - OpenCV raises cv2.error and others
        return {"path": str(path), "ok": False, "frames": None, "reason": f"{type(error).__name__}: {error}"}
    return judge(path, frames, clip_len, frame_stride)


def judge(path, frames, clip_len, frame_stride):
    """The check result of a video of `frames` frames: ok, or too short for a clip."""
    if sampling.too_short(frames, clip_len, frame_stride):
        span = sampling.clip_span(clip_len, frame_stride)
        return {"path": str(path), "ok": False, "frames": frames,
                "reason": f"too short: {frames} frames, a clip needs {span}"}
    return {"path": str(path), "ok": True, "frames": frames, "reason": None}


def check_videos(dataset, clip_len=16, frame_stride=1, timeout=60.0, progress=None, isolate=False):
    """Checks every video of a `VideoDataset`; `progress(done, total)` is called after each.

    With `isolate=True` each file is decoded in a worker process
    (`IsolatedDecoder`): a file that crashes or hangs the native decoder is
    reported ("decoder crashed (signal ...)", "decoding timed out") and the
    scan goes on; a hung decode is killed instead of abandoned in a thread.

    Returns a list of `check_video` results, in dataset order.
    """
    results = []
    decoder = IsolatedDecoder(timeout) if isolate else None
    try:
        for i, path in enumerate(dataset.paths):
            if decoder is None:
                results.append(check_video(path, clip_len, frame_stride, timeout))
            else:
                answer = decoder.decode(path)
                results.append(judge(path, answer["frames"], clip_len, frame_stride) if answer["ok"] else
                               {"path": str(path), "ok": False, "frames": None, "reason": answer["reason"]})
            if progress is not None:
                progress(i + 1, len(dataset.paths))
    finally:
        if decoder is not None:
            decoder.close()
    return results
