import os
import threading
import time

import numpy as np
import pytest
import videos

from keras_r21d.data import VideoDecodeError, check_video, decode_clip, probe, read_frames
from keras_r21d.data.video import run_with_timeout


@pytest.fixture(scope="module")
def clean_video(tmp_path_factory):
    folder = tmp_path_factory.mktemp("video")
    frames = videos.moving_frames(40)
    return videos.write_opencv(folder / "clean.avi", frames, "MJPG"), frames


def _matches(decoded, reference, tolerance=12):
    return np.abs(decoded.astype(int) - reference.astype(int)).mean() < tolerance


def test_probe(clean_video):
    path, _ = clean_video
    info = probe(path)
    assert info == {"frames": 40, "fps": 25.0, "width": 64, "height": 48}


def test_seek_returns_the_requested_frames(clean_video):
    path, reference = clean_video
    indices = [30, 2, 2, 17, 39, 0]
    frames = read_frames(path, indices)
    assert frames.shape == (6, 48, 64, 3) and frames.dtype == np.uint8
    for frame, index in zip(frames, indices):
        assert _matches(frame, reference[index]), index
        # ... and not any other frame: the bar position identifies it.
        assert np.argmax(frame[-1, :, 0]) == (index * 3) % 64


def test_resize_on_decode(clean_video):
    path, _ = clean_video
    assert read_frames(path, [0, 1], size=(30, 41)).shape == (2, 30, 41, 3)


def test_index_past_the_end(clean_video):
    path, _ = clean_video
    with pytest.raises(VideoDecodeError, match="frame 40 requested, the video has 40"):
        read_frames(path, [40])


@pytest.mark.parametrize("fourcc,ext", [("mp4v", "avi"), ("MJPG", "avi"), ("mp4v", "mp4"), ("MJPG", "mkv")])
def test_containers_and_codecs(tmp_path, fourcc, ext):
    reference = videos.moving_frames(20, seed=3)
    path = videos.write_opencv(tmp_path / f"v.{ext}", reference, fourcc)
    frames = read_frames(path, [0, 10, 19])
    assert frames.shape == (3, 48, 64, 3)
    assert all(_matches(f, reference[i], 20) for f, i in zip(frames, [0, 10, 19]))


@videos.needs_ffmpeg
def test_h264_seek_matches_sequential(tmp_path):
    reference = videos.moving_frames(90, seed=4)
    path = videos.write_ffmpeg(tmp_path / "h264.mp4", reference, gop=30)
    sequential = read_frames(path, list(range(90)))
    for index in [0, 29, 30, 31, 75, 89]:
        np.testing.assert_array_equal(read_frames(path, [index])[0], sequential[index])


def test_grayscale_decodes_to_rgb(tmp_path):
    path = videos.write_opencv(tmp_path / "gray.avi", videos.moving_frames(10, gray=True), "MJPG")
    frames = read_frames(path, [0, 5])
    assert frames.shape == (2, 48, 64, 3)
    np.testing.assert_array_equal(frames[..., 0], frames[..., 1])


def test_odd_size(tmp_path):
    frames = videos.moving_frames(12, height=73, width=97)
    if videos.ffmpeg_available():
        path = videos.write_ffmpeg(tmp_path / "odd.mkv", frames, codec="ffv1")
        expected = (73, 97)
    else:  # OpenCV's writer rounds sizes down to even numbers.
        path = videos.write_opencv(tmp_path / "odd.avi", frames, "MJPG")
        expected = (72, 96)
    info = probe(path)
    assert (info["height"], info["width"]) == expected
    assert read_frames(path, [0, 11]).shape == (2, *expected, 3)


def test_header_that_lies_about_its_length(tmp_path):
    path = videos.write_lying_avi(tmp_path / "liar.avi", videos.moving_frames(20), claimed=60)
    assert probe(path)["frames"] == 60  # the container's claim
    frames, indices, real = decode_clip(path, lambda n, fps: [n - 1, n - 2])
    assert real == 20
    assert indices.tolist() == [19, 18]
    assert check_video(path, clip_len=16) == {"path": path, "ok": True, "frames": 20, "reason": None}


def test_truncated_file(tmp_path):
    """A file cut in half gives its decodable first half, frame for frame; one cut inside the header is refused."""
    reference = videos.moving_frames(60)
    path = videos.write_opencv(tmp_path / "cut.avi", reference, "MJPG")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    result = check_video(path, clip_len=8)
    assert result["ok"] and 20 <= result["frames"] <= 32, result  # about half of the 60 frames the header claims
    frames, _, real = decode_clip(path, lambda n, fps: list(range(n)))
    assert len(frames) == real == result["frames"]
    for index, frame in enumerate(frames):  # each decoded frame is the original at its index (the bar moves)
        distances = [np.abs(frame.astype(np.float32) - other).mean() for other in reference]
        assert int(np.argmin(distances)) == index
    header_only = videos.write_opencv(tmp_path / "header.avi", reference, "MJPG")
    with open(header_only, "r+b") as f:
        f.truncate(5000)
    result = check_video(header_only, clip_len=8)
    assert not result["ok"] and result["reason"].startswith("cannot open"), result
    with pytest.raises(VideoDecodeError, match="cannot open"):
        read_frames(header_only, [0])


@pytest.mark.parametrize("name,reason", [
    ("zero_bytes", "empty file"), ("random_bytes", "cannot open"), ("text_file", "cannot open"),
])
def test_bad_files_raise_with_reason(tmp_path, name, reason):
    path = videos.make_bad_files(tmp_path)[name]
    with pytest.raises(VideoDecodeError, match=reason) as info:
        read_frames(path, [0])
    assert info.value.path == path
    assert check_video(path)["reason"].startswith(reason)


def test_missing_file():
    with pytest.raises(VideoDecodeError, match="file not found"):
        read_frames("/nonexistent/video.mp4", [0])


def test_one_frame_video(tmp_path):
    path = videos.write_opencv(tmp_path / "one.avi", videos.moving_frames(1), "MJPG")
    frames, _, real = decode_clip(path, lambda n, fps: [0] * 8)
    assert real == 1 and frames.shape == (8, 48, 64, 3)
    assert check_video(path, clip_len=8)["reason"] == "too short: 1 frames, a clip needs 8"


def test_timeout_on_a_file_that_hangs(tmp_path):
    """Opening a FIFO with no writer blocks inside OpenCV: the timeout moves on."""
    fifo = str(tmp_path / "hang.mp4")
    os.mkfifo(fifo)
    start = time.monotonic()
    try:
        with pytest.raises(VideoDecodeError, match="timed out after 1 s"):
            run_with_timeout(lambda: read_frames(fifo, [0]), 1.0, fifo)
        assert time.monotonic() - start < 10
    finally:
        # Release the abandoned decoder thread.
        writer = threading.Thread(target=lambda: open(fifo, "wb").close(), daemon=True)
        writer.start()
        writer.join(5)


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_memory_stays_bounded_over_300_videos(tmp_path):
    paths = [videos.write_opencv(tmp_path / f"v{i}.avi", videos.moving_frames(24, seed=i), "mp4v")
             for i in range(10)]
    for path in paths * 3:  # warm-up
        read_frames(path, [0, 12, 23])
    before = _rss_mb()
    for i in range(300):
        read_frames(paths[i % len(paths)], [i % 24, (i * 7) % 24])
    growth = _rss_mb() - before
    assert growth < 25, f"RSS grew by {growth:.1f} MB over 300 videos"


def test_decoded_pixels_are_limited_before_decoding(tmp_path):
    from keras_r21d.data.video import read_video

    path = videos.write_opencv(tmp_path / "v.avi", videos.moving_frames(20), "MJPG")  # 20 frames of 64x48
    with pytest.raises(VideoDecodeError, match=r"20 frames of 64x48 exceed the limit of 60000 pixels"):
        read_video(path, max_pixels=60_000)
    assert read_video(path, max_pixels=20 * 64 * 48).shape == (20, 48, 64, 3)
    # Clips: the frames asked for count (repeats included), at the decode size when one is given.
    with pytest.raises(VideoDecodeError, match=r"30 clip frames \(20 distinct frames of the video\) of 64x48 exceed "
                                               "the limit of 50000 pixels"):
        decode_clip(path, lambda n, fps: np.arange(30) % n, max_pixels=50_000)
    frames, _, _ = decode_clip(path, lambda n, fps: np.arange(30) % n, size=(24, 32), max_pixels=50_000)
    assert frames.shape == (30, 24, 32, 3)


@videos.needs_ffmpeg
def test_a_frame_above_8192x8192_is_refused(tmp_path):
    import subprocess

    path = str(tmp_path / "huge.avi")
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "color=c=gray:size=8200x8200:rate=1",
                    "-frames:v", "1", "-c:v", "mjpeg", path], check=True, timeout=120)
    with pytest.raises(VideoDecodeError, match="frames of 8200x8200 exceed the limit of 67108864 pixels per frame"):
        decode_clip(path, lambda n, fps: [0], size=(112, 112))


# The codec table docs/data.md documents: what decodes with opencv-python-headless's FFmpeg, and how what does
# not is reported. (name, ffmpeg output options, file name, expected decoded (height, width)). AV1 decodes only
# where the build has a decoder (opencv-python-headless 5.1 does, 4.x does not): test_the_av1_probe_... checks
# that `build_decodes` says which against a plain cv2 decode, and the table expects the frames or the reason.
CODECS = [
    ("H.264", ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "h264.mp4", (64, 96)),
    ("10-bit H.264", ["-c:v", "libx264", "-pix_fmt", "yuv420p10le"], "h264_10bit.mp4", (64, 96)),
    ("HEVC", ["-c:v", "libx265", "-x265-params", "log-level=error"], "hevc.mp4", (64, 96)),
    ("VP9", ["-c:v", "libvpx-vp9"], "vp9.webm", (64, 96)),
    ("MPEG-4", ["-c:v", "mpeg4"], "mpeg4.avi", (64, 96)),
    ("MJPEG", ["-c:v", "mjpeg"], "mjpeg.avi", (64, 96)),
    ("FFV1", ["-c:v", "ffv1"], "ffv1.mkv", (64, 96)),
    ("AV1", ["-c:v", "libaom-av1", "-cpu-used", "8"], "av1.mp4", (64, 96)),
]


def _encode(path, options, frames=30):
    import subprocess

    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=96x64:rate=25",
                    "-frames:v", str(frames), *options, str(path)], check=True, timeout=300)
    return str(path)


def _frames_cv2_decodes(path):
    """Frames a bare cv2.VideoCapture reads from `path` (no keras_r21d code in between)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    count = 0
    try:
        while cap.read()[0]:
            count += 1
    finally:
        cap.release()
    return count


@videos.needs_ffmpeg
def test_the_av1_probe_agrees_with_decoding_a_real_file(tmp_path):
    from keras_r21d.data.video import build_decodes

    path = _encode(tmp_path / "av1.mp4", ["-c:v", "libaom-av1", "-cpu-used", "8"])
    assert build_decodes("AV1") == (_frames_cv2_decodes(path) == 30)
    assert build_decodes("H.264") and build_decodes("MPEG-4")  # no probe: every build decodes them


@videos.needs_ffmpeg
@pytest.mark.parametrize("name, options, filename, shape", CODECS, ids=[c[0] for c in CODECS])
def test_codec_table(name, options, filename, shape, tmp_path):
    from keras_r21d.data.video import build_decodes, read_video

    path = _encode(tmp_path / filename, options)
    if not build_decodes(name):
        with pytest.raises(VideoDecodeError, match=f"{name}: not supported by this OpenCV/FFmpeg build .*re-encode "
                                                   "to H.264"):
            read_video(path)
        return
    frames = read_video(path)
    assert frames.shape == (30, *shape, 3) and frames.dtype == np.uint8
    assert frames.std() > 10  # a test pattern, not a black frame


@videos.needs_ffmpeg
def test_rotated_phone_video_comes_out_as_a_player_shows_it(tmp_path):
    import subprocess

    from keras_r21d.data.video import read_video

    plain = _encode(tmp_path / "plain.mp4", ["-c:v", "libx264", "-pix_fmt", "yuv420p"])
    rotated = str(tmp_path / "rotated.mp4")  # a display matrix of 90 degrees, as phones write
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", plain, "-c", "copy", "-metadata:s:v:0", "rotate=90",
                    rotated], check=True, timeout=120)
    assert read_video(plain).shape == (30, 64, 96, 3)
    assert read_video(rotated).shape == (30, 96, 64, 3)


@videos.needs_ffmpeg
def test_ffmpeg_log_lines_stay_quiet(tmp_path):
    """FFmpeg's own messages (several per damaged file) do not reach stderr; the reason is in the error.

    The same run with FFmpeg's log level raised shows them: the file does make FFmpeg talk."""
    import subprocess
    import sys

    data = bytearray(open(_encode(tmp_path / "h264.mp4", ["-c:v", "libx264", "-pix_fmt", "yuv420p"]), "rb").read())
    for i in range(len(data) // 3, 2 * len(data) // 3, 7):  # the stream's middle, not the container's index
        data[i] ^= 0xFF
    path = tmp_path / "damaged.mp4"
    path.write_bytes(bytes(data))
    script = ("import sys\nfrom keras_r21d.data.video import VideoDecodeError, read_video\n"
              "try:\n    read_video(sys.argv[1])\nexcept VideoDecodeError as e:\n    print(e.reason)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    quiet, loud = (subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                                  timeout=120, env={**env, "TF_CPP_MIN_LOG_LEVEL": "2", **level})
                   for level in ({}, {"OPENCV_FFMPEG_LOGLEVEL": "24"}))
    assert quiet.stdout == "no decodable frames (H.264)\n", quiet.stdout + quiet.stderr
    assert loud.stdout.endswith(quiet.stdout)
    ffmpeg_lines = ("PPS", "no frame!", "NALU")  # OpenCV 4.x writes them to stderr, 5.1 to stdout
    assert any(line in loud.stdout + loud.stderr for line in ffmpeg_lines), loud.stdout + loud.stderr
    assert not any(line in quiet.stderr for line in ffmpeg_lines), quiet.stderr


def test_frames_are_shrunk_to_the_pre_crop_size_as_they_are_decoded(tmp_path):
    """Memory follows the clip geometry: a large video's frames come out at the pre-crop size, and the clips the
    graph then makes are those of the full-size frames (both bilinear), up to uint8 rounding."""
    from keras_r21d.data import ClipConfig, transforms
    from keras_r21d.data.pipeline import read_test_clips
    from keras_r21d.data.video import read_frames

    large = videos.write_opencv(tmp_path / "large.avi", videos.moving_frames(24, height=240, width=320), "MJPG")
    config = ClipConfig(clip_len=4, test_clips=3, resize=(48, 64), crop=40)
    clips = read_test_clips(large, config)
    assert clips.shape == (3, 4, 48, 64, 3)
    full = read_frames(large, np.arange(24))
    starts = [0, 10, 20]
    reference = np.stack([full[s:s + 4] for s in starts])
    expected = transforms.eval_transform(reference, config.resize, config.crop).numpy()
    got = transforms.eval_transform(clips, config.resize, config.crop).numpy()
    assert np.abs(got - expected).max() < 2.5 / 255 / 0.2  # at most ~2 grey levels, normalized
    # Smaller videos keep their size: the graph upsamples them exactly as before.
    small = videos.write_opencv(tmp_path / "small.avi", videos.moving_frames(24, height=24, width=32), "MJPG")
    assert read_test_clips(small, config).shape == (3, 4, 24, 32, 3)
    # A short side (int) works too.
    short = ClipConfig(clip_len=4, test_clips=3, resize=60, crop=40)
    assert read_test_clips(large, short).shape == (3, 4, 60, 80, 3)
