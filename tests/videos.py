"""Real encoded test videos, written by OpenCV (and ffmpeg when installed)."""

import os
import shutil
import struct
import subprocess

import cv2
import numpy as np
import pytest


def moving_frames(n, height=48, width=64, seed=0, gray=False):
    """Frames whose content identifies the frame index (a bar at x = index)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    frames = np.repeat(base[None], n, axis=0)
    for i in range(n):
        frames[i, :, (i * 3) % width] = 255
        frames[i, : height // 2, : width // 2] = (i * 7) % 256
    if gray:
        return frames.mean(axis=-1).astype(np.uint8)
    return frames


def write_opencv(path, frames, fourcc="mp4v", fps=25.0):
    frames = np.asarray(frames)
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    height, width = frames.shape[1:3]
    color = frames.ndim == 4
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height), color)
    assert writer.isOpened(), f"cannot write {path} with {fourcc}"
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) if color else frame)
    writer.release()
    return str(path)


def ffmpeg_available():
    return shutil.which("ffmpeg") is not None


# The one rule for tests that write videos with Debian's ffmpeg: they skip with this reason where it is missing
# (`make test` installs it; the session header says whether it was found: see conftest.py).
needs_ffmpeg = pytest.mark.skipif(not ffmpeg_available(), reason="ffmpeg is not installed (make test installs it)")


def write_ffmpeg(path, frames, fps=25, gop=100, codec="libx264"):
    """A video through Debian's ffmpeg: H.264 (keyframe every `gop` frames) by default, or e.g. "ffv1"."""
    frames = np.asarray(frames)
    height, width = frames.shape[1:3]
    pix_fmt = ["-pix_fmt", "yuv420p"] if codec == "libx264" else []
    command = [
        "ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
        "-r", str(fps), "-i", "-", "-c:v", codec, *pix_fmt, "-g", str(gop), str(path),
    ]
    subprocess.run(command, input=frames.tobytes(), check=True, timeout=120)
    return str(path)


def write_lying_avi(path, frames, claimed):
    """An AVI whose headers claim `claimed` frames (dwTotalFrames and the stream's dwLength)."""
    write_opencv(path, frames, fourcc="MJPG")
    data = bytearray(open(path, "rb").read())
    avih = data.find(b"avih")
    struct.pack_into("<I", data, avih + 8 + 16, claimed)
    strh = data.find(b"strh")
    struct.pack_into("<I", data, strh + 8 + 32, claimed)
    open(path, "wb").write(bytes(data))
    return str(path)


def make_bad_files(folder):
    """The bad inputs of the data issue; returns {name: path}."""
    os.makedirs(folder, exist_ok=True)
    bad = {}
    bad["zero_bytes"] = os.path.join(folder, "zero_bytes.mp4")
    open(bad["zero_bytes"], "wb").close()
    bad["random_bytes"] = os.path.join(folder, "random_bytes.avi")
    open(bad["random_bytes"], "wb").write(np.random.default_rng(0).bytes(20000))
    bad["text_file"] = os.path.join(folder, "notes.mp4")
    open(bad["text_file"], "w").write("this is not a video\n" * 100)
    return bad
