"""Decoding only the frames a clip needs, with OpenCV.

Every function here opens its own `cv2.VideoCapture` and releases it on every
path (errors included); none trusts the container's frame count blindly.
Frames come back as RGB `uint8` arrays of shape `(n, H, W, 3)`, grayscale
files included.
"""

import functools
import os
import tempfile
import threading
import time

# FFmpeg's and OpenCV's own log lines (e.g. "Your platform doesn't support hardware accelerated AV1
# decoding", several per file) say nothing a caller is not told by the `VideoDecodeError` reasons here:
# silenced unless the environment asks for them (`keras-r21d --verbose` does).
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

if os.environ["OPENCV_LOG_LEVEL"] == "ERROR":  # also when cv2 was imported (and read the variable) before us
    if hasattr(cv2.utils, "logging"):  # OpenCV 4.13 and 5.x
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    else:  # 4.12 and earlier: the same level (ERROR = 2) through the top-level function
        cv2.setLogLevel(2)

# Below this many frames between two needed frames we grab() through instead
# of seeking (a seek decodes from the previous keyframe anyway).
_GRAB_GAP = 8
# cv2's own threads fight with tf.data's parallel calls on a small machine.
cv2.setNumThreads(1)
# Limits checked before memory is allocated (a video's header or a hostile file can claim anything).
# One decoded frame: 8192 x 8192 pixels (8K UHD is 7680 x 4320).
MAX_FRAME_PIXELS = 8192 * 8192
# Every frame decoded for one call (frames x height x width): 2^30 pixels, 3 GiB of uint8 RGB. A Full HD
# video's 10 test clips of 16 frames are 332 M pixels; the same at 4K (1.3 G pixels) needs a larger limit
# or `decode_size`.
MAX_DECODE_PIXELS = 2**30
# Frames with more than this many times the pre-crop size's pixels are shrunk to it as they are decoded.
SHRINK_ABOVE = 4


# Codecs that some builds of the FFmpeg inside opencv-python(-headless) cannot decode in software (they open
# the file and then decode no frame): FOURCC -> name. opencv-python(-headless) up to 5.0 has no AV1 decoder,
# 5.1 has one; `build_decodes` asks the build itself. Checked by tests/test_video.py's codec table.
UNSUPPORTED_CODECS = {"AV01": "AV1", "av01": "AV1"}
CODEC_NAMES = {"avc1": "H.264", "h264": "H.264", "H264": "H.264", "hev1": "HEVC", "hvc1": "HEVC", "hevc": "HEVC",
               "VP90": "VP9", "vp09": "VP9", "VP80": "VP8", "mp4v": "MPEG-4", "FMP4": "MPEG-4", "XVID": "MPEG-4",
               "MJPG": "MJPEG", "ffv1": "FFV1", **UNSUPPORTED_CODECS}
# One 16x16 gray frame of each such codec, as small as its encoder writes it (AV1: libaom, `ffmpeg -f lavfi -i
# color=c=gray:size=16x16 -frames:v 1 -c:v libaom-av1 -cpu-used 8 probe.ivf`, 71 bytes of IVF).
_PROBES = {"AV1": (".ivf", bytes.fromhex(
    "444b4946000020004156303110001000190000000100000001000000000000001b000000000000000000000012000a0a000000019ff9b5"
    "f20080320b1000c0000002800000009c"))}

_DECODED_SINCE = {"AV1": "; opencv-python(-headless) decodes it from 5.1"}


@functools.cache
def build_decodes(codec):
    """Whether this OpenCV/FFmpeg build decodes `codec` (a name of `UNSUPPORTED_CODECS`), by decoding a frame.

    Decodes a tiny embedded file once per process; codecs every build decodes are True without a probe.
    """
    if codec not in _PROBES:
        return codec not in UNSUPPORTED_CODECS.values()
    suffix, data = _PROBES[codec]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe" + suffix)
        with open(path, "wb") as file:
            file.write(data)
        cap = cv2.VideoCapture(path)
        try:
            ok, frame = cap.read()
        finally:
            cap.release()
    return bool(ok) and frame is not None


def codec_of(cap):
    """The video codec of an open capture, as a name (`"H.264"`, `"AV1"`, ...) or its FOURCC."""
    code = int(cap.get(cv2.CAP_PROP_FOURCC)) & 0xFFFFFFFF
    fourcc = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00 ")
    if not fourcc.isprintable():
        return "an unknown codec"
    return CODEC_NAMES.get(fourcc, fourcc or "an unknown codec")


def _no_frames_reason(cap):
    """Why a file that opened decodes no frame: the codec when this build lacks it, else the plain fact."""
    codec = codec_of(cap)
    if not build_decodes(codec):
        return (f"{codec}: not supported by this OpenCV/FFmpeg build (its FFmpeg has no {codec} decoder"
                f"{_DECODED_SINCE.get(codec, '')}); re-encode to H.264, e.g. "
                "ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4")
    return f"no decodable frames ({codec})"


class VideoDecodeError(Exception):
    """A video that cannot be decoded; `reason` says why, `path` which file."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class _Capture:
    """`cv2.VideoCapture` as a context manager that always releases."""

    def __init__(self, path):
        self.path = str(path)
        self.cap = None

    def __enter__(self):
        if not os.path.exists(self.path):
            raise VideoDecodeError(self.path, "file not found")
        if os.path.isdir(self.path):
            raise VideoDecodeError(self.path, "is a directory")
        if os.path.isfile(self.path) and os.path.getsize(self.path) == 0:
            raise VideoDecodeError(self.path, "empty file (0 bytes)")
        self.cap = cv2.VideoCapture(self.path, cv2.CAP_FFMPEG)
        if not self.cap.isOpened():
            raise VideoDecodeError(self.path, "cannot open: not a video, or an unsupported codec")
        return self.cap

    def __exit__(self, *exc):
        if self.cap is not None:
            self.cap.release()
        return False


def _to_rgb_into(frame, out, interpolation=cv2.INTER_AREA):
    """Converts a decoded BGR, BGRA or grayscale frame to RGB in `out` (resizing if its size differs)."""
    if frame.ndim == 2:
        code = cv2.COLOR_GRAY2RGB
    elif frame.shape[2] == 4:
        code = cv2.COLOR_BGRA2RGB
    else:
        code = cv2.COLOR_BGR2RGB
    if frame.shape[:2] == out.shape[:2]:
        cv2.cvtColor(frame, code, dst=out)
    else:
        # Resize first (3 channels either way for colour input), so the colour conversion runs on the small frame.
        small = cv2.resize(frame, (out.shape[1], out.shape[0]), interpolation=interpolation)
        cv2.cvtColor(small, code, dst=out)


def _target_size(height, width, size):
    """`(height, width)` frames of `height x width` are stored at: `size` as `(h, w)`, or an int short side."""
    if isinstance(size, (int, np.integer)):
        scale = int(size) / min(height, width)
        return int(round(height * scale)), int(round(width * scale))
    return int(size[0]), int(size[1])


def shrunk_size(height, width, target):
    """The size frames of `height x width` are decoded at to be resized to `target` later.

    `target` is `(height, width)` or an int short side (as `ClipConfig.resize`).
    Frames with more than `SHRINK_ABOVE` times the target's pixels come out
    at the target (bilinear, as the graph's own resize, which then has
    nothing left to do), so that decoded clips take at most that many times
    the memory of the clip geometry, whatever the video's resolution. Other
    frames keep their size and the graph resizes them, exactly as the serving
    graph does: the paper's 320x240 UCF101/HMDB51 frames (3.5x the 128x171
    pre-crop size) decode bit for bit as before.
    """
    if target is None or height * width == 0:
        return height, width
    target = _target_size(height, width, target)
    return target if target[0] * target[1] * SHRINK_ABOVE < height * width else (height, width)


def _count_by_grabbing(cap, limit=1_000_000):
    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
    count = 0
    while count < limit and cap.grab():
        count += 1
    return count


def probe(path):
    """Returns `{"frames", "fps", "width", "height"}` of a video.

    The frame count comes from the container when it is plausible, and from
    grabbing every frame when the header says 0 or less; `read_frames`
    corrects it further when the header overstates it.
    """
    with _Capture(path) as cap:
        frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if frames <= 0:
            frames = _count_by_grabbing(cap)
        return {
            "frames": frames,
            "fps": float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
            "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        }


def _check_pixels(path, indices, height, width, max_pixels):
    """Refuses, before decoding, a frame above `MAX_FRAME_PIXELS` or a decode above `max_pixels` pixels.

    `indices` are the frame indices to decode (repeats and `-1` padding
    included: the output holds one frame per index); `None` checks one frame.
    """
    if height * width > MAX_FRAME_PIXELS:
        raise VideoDecodeError(path, f"frames of {width}x{height} exceed the limit of {MAX_FRAME_PIXELS} pixels "
                                     "per frame")
    count = 1 if indices is None else len(indices)
    if max_pixels is not None and count * height * width > max_pixels:
        distinct = 1 if indices is None else len({int(i) for i in indices if i >= 0})
        frames = f"{count} frames" if distinct == count else (
            f"{count} clip frames ({distinct} distinct frames of the video)")
        raise VideoDecodeError(path, f"{frames} of {width}x{height} exceed the limit of {max_pixels} pixels "
                                     "(frames x height x width, at the size they are decoded at)")


def _decoded_size(path, frame, size=None, shrink_to=None):
    """`(height, width)` frames come out at, from the first decoded `frame` (the real one, whatever the header
    said, checked against `MAX_FRAME_PIXELS`): `size`, else `shrunk_size(..., shrink_to)`."""
    _check_pixels(path, None, *frame.shape[:2], None)
    return size or shrunk_size(*frame.shape[:2], shrink_to)


def stream_frames(path, shrink_to=None):
    """Every frame of a video once, in order, as RGB uint8 arrays: a generator that holds one frame.

    The first item is the frame rate (25 when the container gives none).
    Frames of more than `SHRINK_ABOVE` times the pre-crop size `shrink_to`
    are shrunk to it as they are read, bilinear, as `decode_clip` does.
    Raises `VideoDecodeError` naming the file.
    """
    with _Capture(path) as cap:
        yield float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or 25.0
        buffer, size = None, None
        while True:
            ok, buffer = cap.read(buffer)
            if not ok or buffer is None:
                return
            size = size or _decoded_size(path, buffer, shrink_to=shrink_to)
            out = np.empty((*size, 3), np.uint8)
            _to_rgb_into(buffer, out, interpolation=cv2.INTER_LINEAR)
            yield out


def _read_into(cap, indices, size, deadline, path, max_pixels=None, shrink_to=None):
    """Decodes `indices` (`-1`: a black frame) from an open capture into one array.

    Frames are decoded in increasing order, each once, straight into the
    output (no per-frame copies); a frame whose size differs from the first
    one's is resized to it. With `shrink_to`, frames of more than
    `SHRINK_ABOVE` times its pixels are resized to it as they are decoded
    (`shrunk_size`). Returns `None` if the file ends first.
    """
    slots = {}
    for position, index in enumerate(indices):
        if index >= 0:
            slots.setdefault(int(index), []).append(position)
    out, buffer, position = None, None, None
    for index in sorted(slots):
        if position is None or index < position or index - position > _GRAB_GAP:
            cap.set(cv2.CAP_PROP_POS_FRAMES, index)
            position = index
        while position < index:
            if not cap.grab():
                return None
            position += 1
        ok, buffer = cap.read(buffer)
        if not ok or buffer is None:
            return None
        if out is None:
            height, width = _decoded_size(path, buffer, size, shrink_to)
            _check_pixels(path, indices, height, width, max_pixels)
            out = np.zeros((len(indices), height, width, 3), np.uint8)
            interpolation = cv2.INTER_AREA if size else cv2.INTER_LINEAR
        first, *repeats = slots[index]
        _to_rgb_into(buffer, out[first], interpolation)
        for k in repeats:
            out[k] = out[first]
        position = index + 1
        if deadline is not None and time.monotonic() > deadline:
            raise VideoDecodeError(path, "decoding timed out")
    return out


def decode_clip(path, choose_indices, size=None, deadline=None, max_pixels=MAX_DECODE_PIXELS, shrink_to=None):
    """Opens a video once, picks frame indices for its real length, decodes them.

    Args:
        path: the video file.
        choose_indices: `f(num_frames, fps) -> int array`; `-1` entries are
            padding (black frames). It may raise `VideoDecodeError` (e.g. a
            video too short for the `skip` policy).
        size: optional `(height, width)` to resize frames to on decode
            (area interpolation).
        shrink_to: optional pre-crop size (`(height, width)` or an int short
            side, as `ClipConfig.resize`): frames with more than
            `SHRINK_ABOVE` times its pixels are resized to it as they are
            decoded, bilinear as the graph's resize, so
            that memory follows the clip geometry, not the video's resolution.
        deadline: optional `time.monotonic()` value; past it decoding stops
            with a `VideoDecodeError`.
        max_pixels: refuse (before decoding) to return more than this many
            pixels (`len(indices) x H x W`); `None`: no limit. Frames above
            `MAX_FRAME_PIXELS` are always refused.

    Returns:
        `(frames, indices, num_frames)`: `uint8` frames `(len(indices), H, W, 3)`
        in RGB, the indices used, and the frame count the decoder reached or
        the container announced.

    Raises:
        VideoDecodeError: naming the file and the reason.
    """
    with _Capture(path) as cap:
        num_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        header_size = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        _check_pixels(path, None, *header_size, None)
        if num_frames <= 0:
            num_frames = _count_by_grabbing(cap)
        for _ in range(3):
            if num_frames <= 0:
                raise VideoDecodeError(path, _no_frames_reason(cap))
            indices = np.asarray(choose_indices(num_frames, fps), dtype=np.int64)
            if not (indices >= 0).any():
                raise VideoDecodeError(path, "no frame index was requested")
            _check_pixels(path, indices, *(size or shrunk_size(*header_size, shrink_to)), max_pixels)
            frames = _read_into(cap, indices, size, deadline, path, max_pixels, shrink_to)
            if frames is not None:
                break
            # The header overstated the length: count the frames that really decode.
            num_frames = _count_by_grabbing(cap)
        else:
            raise VideoDecodeError(path, "the frame count keeps changing while decoding")
    return frames, indices, num_frames


def read_frames(path, indices, size=None):
    """Decodes the frames at `indices` (any order, repeats allowed).

    Raises `VideoDecodeError` if an index is past the real end of the file.
    """
    indices = np.asarray(indices, dtype=np.int64)

    def choose(num_frames, fps):
        if indices.size and indices.max() >= num_frames:
            raise VideoDecodeError(path, f"frame {int(indices.max())} requested, the video has {num_frames}")
        return indices

    return decode_clip(path, choose, size=size)[0]


def read_video(path, max_pixels=MAX_DECODE_PIXELS):
    """Decodes every frame of a video: uint8 RGB `(frames, height, width, 3)`.

    A video of more than `max_pixels` frames x height x width (`None`: no
    limit) is refused with a `VideoDecodeError` before it is decoded.
    """
    return decode_clip(path, lambda num_frames, fps: np.arange(num_frames), max_pixels=max_pixels)[0]


def _to_bgr(frame, size):
    """A decoded BGR, BGRA or grayscale frame as 3-channel BGR of `size` = `(height, width)` (bilinear)."""
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    elif frame.shape[2] == 4:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if frame.shape[:2] != tuple(size):
        frame = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return frame


def write_jpeg_frames(path, out_path, size, quality=90, fps=None, max_frames=1_000_000, deadline=None):
    """Streams every frame of a video, resized and JPEG-encoded, into `out_path`; memory stays one frame.

    Frames are resized to `size` (`(height, width)` or an int short side)
    bilinearly, as the decoding path's shrink and the graph's resize do, then
    encoded at JPEG `quality` (RGB, 4:2:0). With `fps`, the video is
    resampled to that rate (frame `k` is the source frame nearest `k / fps`
    seconds). `out_path` receives each frame as a 4-byte little-endian length
    and the JPEG bytes.

    Returns:
        `{"frames", "fps", "source_fps", "height", "width", "source_height",
        "source_width", "codec"}`.

    Raises:
        VideoDecodeError: naming the file and the reason (no frames, unknown
        frame rate for `fps`, past `deadline`, ...).
    """
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    with _Capture(path) as cap:
        source_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if fps and not source_fps > 0:
            raise VideoDecodeError(path, f"unknown frame rate: cannot resample to {fps:g} fps")
        codec = codec_of(cap)
        written, index, buffer, out_size = 0, 0, None, None
        with open(out_path, "wb") as out:
            while written < max_frames:
                ok, buffer = cap.read(buffer)
                if not ok or buffer is None:
                    break
                if out_size is None:
                    _check_pixels(path, None, *buffer.shape[:2], None)
                    source_size = buffer.shape[:2]
                    out_size = _target_size(*source_size, size)
                # Frames this source frame stands for: all of them at the source rate, else those nearest in time.
                copies = 1 if not fps else 0
                while fps and written + copies < max_frames and round((written + copies) * source_fps / fps) <= index:
                    copies += 1
                if copies:
                    ok, data = cv2.imencode(".jpg", _to_bgr(buffer, out_size), params)
                    if not ok:
                        raise VideoDecodeError(path, f"JPEG encoding failed at frame {index}")
                    for _ in range(copies):
                        out.write(len(data).to_bytes(4, "little"))
                        out.write(data.tobytes())
                    written += copies
                index += 1
                if deadline is not None and time.monotonic() > deadline:
                    raise VideoDecodeError(path, "decoding timed out")
        if written == 0:
            raise VideoDecodeError(path, _no_frames_reason(cap) if index == 0 else "no frame at the asked rate")
    return {"frames": written, "fps": float(fps) if fps else source_fps, "source_fps": source_fps,
            "height": out_size[0], "width": out_size[1], "source_height": int(source_size[0]),
            "source_width": int(source_size[1]), "codec": codec}


def read_jpeg_frames(path):
    """The JPEG byte strings `write_jpeg_frames` wrote into `path`, in order."""
    frames = []
    with open(path, "rb") as f:
        data = f.read()
    position = 0
    while position < len(data):
        length = int.from_bytes(data[position:position + 4], "little")
        frames.append(data[position + 4:position + 4 + length])
        position += 4 + length
    return frames


def run_with_timeout(function, timeout, path):
    """Runs `function()` in a daemon thread and waits at most `timeout` seconds.

    A decode that hangs inside native code cannot be interrupted from Python:
    its thread is abandoned (it ends when the call returns) and the file is
    reported as timed out, so the pipeline moves on.
    """
    if timeout is None:
        return function()
    box = {}

    def target():
        try:
            box["value"] = function()
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True, name="keras_r21d-decode")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise VideoDecodeError(path, f"decoding timed out after {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]
