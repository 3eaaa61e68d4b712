"""Action timelines of long videos: a clip window slid over the whole file, class probabilities per window.

`video_timeline(predictor, path, window_stride=1.0)` streams the frames with
OpenCV (each frame read once and, when large, shrunk to the pre-crop size as
it is read, as the evaluator's decoder does), keeps only one window's span of
frames, and classifies a window every `window_stride` seconds through a
`keras_r21d.inference.Predictor` (`.keras`, SavedModel or `.tflite`). Memory
is bounded by one window's frames and a batch of clips, whatever the video's
length. A window is one clip (the model's clip length and frame stride, the
evaluator's preprocessing and `test_crops` views, their softmax averaged).
"""

import collections
import csv
import json
import os

import numpy as np

from keras_r21d.data.video import VideoDecodeError, stream_frames
from keras_r21d.inference import CLIP_BATCH


class Timeline:
    """Per-window class probabilities of one video.

    Attributes:
        video: the file.
        fps: its frame rate (25 when the container gives none).
        frames: frames read.
        class_names: the model's classes.
        starts, ends: `(W,)` each window's first and one-past-last frame, in seconds.
        probabilities: `(W, C)` each window's class probabilities.
        window_frames: frames a window spans (`(clip_len - 1) x frame_stride + 1`).
        stride_frames: frames between window starts.
    """

    def __init__(self, video, fps, frames, class_names, starts, ends, probabilities, window_frames, stride_frames):
        self.video = video
        self.fps = float(fps)
        self.frames = int(frames)
        self.class_names = list(class_names)
        self.starts = np.asarray(starts, np.float64)
        self.ends = np.asarray(ends, np.float64)
        self.probabilities = np.asarray(probabilities, np.float64).reshape(len(self.starts), len(self.class_names))
        self.window_frames = int(window_frames)
        self.stride_frames = int(stride_frames)

    @property
    def duration(self):
        return self.frames / self.fps

    @property
    def centers(self):
        return (self.starts + self.ends) / 2

    def segments(self):
        """Runs of consecutive windows led by the same class: `[{"class", "index", "start", "end", "score",
        "windows"}]`. A window's time is its center, plus or minus half the window stride (clipped to the
        video), so that consecutive segments meet; `score` is the leader's mean probability over the run."""
        if not len(self.starts):
            return []
        leaders = self.probabilities.argmax(axis=1)
        half = self.stride_frames / self.fps / 2
        bounds = np.clip(np.stack([self.centers - half, self.centers + half], axis=1), 0.0, self.duration)
        bounds[0, 0], bounds[-1, 1] = 0.0, self.duration
        out = []
        first = 0
        for i in range(1, len(leaders) + 1):
            if i == len(leaders) or leaders[i] != leaders[first]:
                index = int(leaders[first])
                out.append({"class": self.class_names[index], "index": index, "start": float(bounds[first, 0]),
                            "end": float(bounds[i - 1, 1]),
                            "score": float(self.probabilities[first:i, index].mean()), "windows": i - first})
                first = i
        return out

    def to_dict(self):
        return {"video": self.video, "fps": self.fps, "frames": self.frames, "duration": self.duration,
                "window_frames": self.window_frames, "window_seconds": self.window_frames / self.fps,
                "stride_seconds": self.stride_frames / self.fps, "class_names": self.class_names,
                "windows": [{"start": float(s), "end": float(e), "probabilities": p.tolist()}
                            for s, e, p in zip(self.starts, self.ends, self.probabilities)],
                "segments": self.segments()}

    def write(self, out_prefix, top=5):
        """Writes `PREFIX.csv`, `PREFIX.json` and `PREFIX.png`; refuses to replace an existing file."""
        paths = {ext: f"{out_prefix}.{ext}" for ext in ("csv", "json", "png")}
        existing = [p for p in paths.values() if os.path.exists(p)]
        if existing:
            raise FileExistsError(f"{existing[0]} exists: choose another output folder (nothing was written)")
        os.makedirs(os.path.dirname(os.path.abspath(out_prefix)), exist_ok=True)
        with open(paths["csv"], "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["start", "end", "top_class", "top_score", *self.class_names])
            for s, e, p in zip(self.starts, self.ends, self.probabilities):
                writer.writerow([f"{s:.3f}", f"{e:.3f}", self.class_names[int(p.argmax())], f"{p.max():.6f}",
                                 *(f"{v:.6f}" for v in p)])
        with open(paths["json"], "w") as f:
            json.dump(self.to_dict(), f, indent=1)
        self.plot(paths["png"], top)
        return paths

    def plot(self, path, top=5):
        """A PNG: the `top` classes' probabilities over time (those with the highest peak), and the segments."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        order = np.argsort(-self.probabilities.max(axis=0), kind="stable")[:top] if len(self.starts) else []
        fig, (ax, bar) = plt.subplots(2, 1, figsize=(10, 4), sharex=True, gridspec_kw={"height_ratios": [4, 1]})
        colors = {}
        for index in order:
            line, = ax.plot(self.centers, self.probabilities[:, index], label=self.class_names[index])
            colors[int(index)] = line.get_color()
        ax.set_ylabel("probability")
        ax.set_ylim(0, 1)
        if len(order):
            ax.legend(loc="upper right", fontsize="small")
        ax.set_title(os.path.basename(self.video))
        for segment in self.segments():
            bar.axvspan(segment["start"], segment["end"], color=colors.get(segment["index"], "lightgray"))
        bar.set_yticks([])
        bar.set_xlabel("seconds")
        bar.set_xlim(0, self.duration)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


def video_timeline(predictor, path, window_stride=1.0, batch=CLIP_BATCH, progress=None):
    """Slides the predictor's clip over the whole video, one window every `window_stride` seconds.

    Returns a `Timeline`. A video shorter than one window gives one window,
    its frames looped (the evaluator's short-video policy). Raises
    `VideoDecodeError` for a file with no decodable frame.
    """
    if not window_stride > 0:
        raise ValueError(f"`window_stride` must be > 0 seconds. Received: {window_stride!r}")
    config = predictor.config
    span = (config.clip_len - 1) * config.frame_stride + 1
    frames = stream_frames(path, config.resize)
    fps = next(frames)
    step = max(1, int(round(window_stride * fps)))
    ring = collections.deque(maxlen=span)
    starts, pending, probabilities = [], [], []

    def flush():
        if not pending:
            return
        clips = np.stack(pending)
        views = predictor.config.preprocessor.views(clips, config.test_crops)
        probs = np.asarray(predictor._clip_probabilities(views))  # noqa: SLF001 - the predictors' own forward
        probabilities.extend(probs.reshape(len(pending), config.test_crops, -1).mean(axis=1))
        pending.clear()

    count = 0
    for count, frame in enumerate(frames, start=1):
        ring.append(frame)
        start = count - span
        if start >= 0 and start % step == 0:
            pending.append(np.stack(list(ring)[::config.frame_stride]))
            starts.append(start)
            if len(pending) >= batch:
                flush()
                if progress:
                    progress(count)
    if count == 0:
        raise VideoDecodeError(path, "no decodable frames")
    if not starts:  # shorter than one window: its frames looped
        indices = np.arange(config.clip_len) * config.frame_stride % count
        pending.append(np.stack([ring[i] for i in indices]))
        starts.append(0)
    flush()
    starts = np.asarray(starts)
    ends = np.minimum(starts + span, count)
    return Timeline(path, fps, count, predictor.class_names, starts / fps, ends / fps, probabilities, span, step)

