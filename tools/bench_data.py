"""Benchmark: video decoding and input-pipeline throughput, in clips/s.

Writes 320x240 H.264 videos (300 frames, a keyframe every 100) with Debian's
ffmpeg (MPEG-4 part 2 through OpenCV when ffmpeg is missing), then measures
in one run:

- sequential full decode of the same files (frames/s, one thread);
- random 16-frame clips with `decode_clip` (open, seek, read; one thread);
- the training pipeline (`train_dataset`: jitter, resize 128x171, random crop
  112, flip, normalize) on 1 core and on all cores.

    python tools/bench_data.py [--videos 24] [--clips 200] [--codec h264|mp4v]
"""

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_r21d.data import ClipConfig, VideoDataset, decode_clip, train_dataset  # noqa: E402
from keras_r21d.data.synthetic import render_video, write_video  # noqa: E402


def write_h264(path, frames):
    height, width = frames.shape[1:3]
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
         "-r", "25", "-i", "-", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "100", str(path)],
        input=frames.tobytes(), check=True,
    )


def make_videos(folder, count, codec_name="h264"):
    h264 = codec_name == "h264" and shutil.which("ffmpeg") is not None
    codec = "H.264 (libx264, keyframe every 100 frames)" if h264 else "MPEG-4 part 2 (mp4v, OpenCV's writer)"
    paths = []
    for i in range(count):
        frames = render_video("horizontal", 1, np.random.default_rng(i), 300, 240, 320)
        # Add texture noise so the encoder has real work.
        frames = np.clip(frames + np.random.default_rng(i).integers(-12, 12, frames.shape), 0, 255).astype(np.uint8)
        path = os.path.join(folder, f"v{i}.mp4" if h264 else f"v{i}.avi")
        write_h264(path, frames) if h264 else write_video(path, frames)
        paths.append(path)
    return paths, codec


def sequential_fps(paths):
    frames, start = 0, time.perf_counter()
    for path in paths:
        cap = cv2.VideoCapture(path)
        while cap.read()[0]:
            frames += 1
        cap.release()
    return frames / (time.perf_counter() - start)


def random_clips_per_s(paths, clips, clip_len=16):
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for i in range(clips):
        def choose(n, fps):
            first = int(rng.integers(0, n - clip_len + 1))
            return np.arange(first, first + clip_len)
        decode_clip(paths[i % len(paths)], choose)
    return clips / (time.perf_counter() - start)


def pyav_clips_per_s(paths, clips, clip_len=16):
    """The same random clips with PyAV (seek to the previous keyframe, decode forward), if installed."""
    try:
        import av
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for i in range(clips):
        with av.open(paths[i % len(paths)]) as container:
            stream = container.streams.video[0]
            n = stream.frames
            first = int(rng.integers(0, n - clip_len + 1))
            rate = stream.average_rate
            container.seek(int(first / rate / stream.time_base), stream=stream, backward=True)
            frames = []
            for frame in container.decode(stream):
                index = round(frame.pts * stream.time_base * rate)
                if index >= first:
                    frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) == clip_len:
                    break
    return clips / (time.perf_counter() - start)


def pipeline_clips_per_s(paths, clips, threads):
    dataset = VideoDataset("bench", paths, [0] * len(paths), ["a"])
    ds = train_dataset(dataset, 8, ClipConfig(clip_len=16), seed=0, repeat=True)
    if threads:
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        ds = ds.with_options(options)
    iterator = iter(ds)
    for _ in range(3):  # warm-up
        next(iterator)
    batches = max(1, clips // 8)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * 8 / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--codec", choices=["h264", "mp4v"], default="h264")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        paths, codec = make_videos(folder, args.videos, args.codec)
        seq = sequential_fps(paths[:4])
        clips1 = random_clips_per_s(paths, args.clips)
        pyav = pyav_clips_per_s(paths, args.clips)
        pipe1 = pipeline_clips_per_s(paths, args.clips, threads=1)
        pipe_all = pipeline_clips_per_s(paths, args.clips, threads=None)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; OpenCV {cv2.__version__}, "
          f"TensorFlow {tf.__version__}, Python {sys.version.split()[0]}")
    print(f"videos: {args.videos} x 300 frames, 320x240, {codec}")
    print("| measurement | result |")
    print("|---|---:|")
    print(f"| sequential full decode, 1 thread | {seq:.0f} frames/s |")
    print(f"| random 16-frame clips, OpenCV `decode_clip` (the default), 1 thread | {clips1:.1f} clips/s |")
    if pyav is not None:
        print(f"| random 16-frame clips, PyAV seek + decode, 1 thread | {pyav:.1f} clips/s |")
    print(f"| training pipeline 16x112x112, 1 core | {pipe1:.1f} clips/s |")
    print(f"| training pipeline 16x112x112, {os.cpu_count()} cores | {pipe_all:.1f} clips/s |")


if __name__ == "__main__":
    main()
