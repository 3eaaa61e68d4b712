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


@pytest.mark.skipif(not videos.ffmpeg_available(), reason="ffmpeg is not installed (make test installs it)")
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
    path = videos.write_opencv(tmp_path / "cut.avi", videos.moving_frames(60), "MJPG")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    result = check_video(path, clip_len=8)
    # Either the decodable half is found, or the file is refused with a reason.
    if result["ok"]:
        assert 0 < result["frames"] < 60
        frames, _, real = decode_clip(path, lambda n, fps: list(range(n)))
        assert len(frames) == real == result["frames"]
    else:
        assert result["reason"]


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
    with pytest.raises(VideoDecodeError, match=r"30 frames of 64x48 exceed the limit of 50000 pixels"):
        decode_clip(path, lambda n, fps: np.arange(30) % n, max_pixels=50_000)
    frames, _, _ = decode_clip(path, lambda n, fps: np.arange(30) % n, size=(24, 32), max_pixels=50_000)
    assert frames.shape == (30, 24, 32, 3)


@pytest.mark.skipif(not videos.ffmpeg_available(), reason="needs ffmpeg (installed by make test)")
def test_a_frame_above_8192x8192_is_refused(tmp_path):
    import subprocess

    path = str(tmp_path / "huge.avi")
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "color=c=gray:size=8200x8200:rate=1",
                    "-frames:v", "1", "-c:v", "mjpeg", path], check=True, timeout=120)
    with pytest.raises(VideoDecodeError, match="frames of 8200x8200 exceed the limit of 67108864 pixels per frame"):
        decode_clip(path, lambda n, fps: [0], size=(112, 112))
