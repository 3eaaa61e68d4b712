"""Videos fuzzed: real encoded files (H.264 via ffmpeg, MPEG-4 and MJPEG via OpenCV) mutated by bit flips,
truncation at every 10% and inserted garbage.

Every mutated file is decoded or skipped with a reason within a per-file time
limit, in the isolated decoder (a worker process, so a native crash would be
caught and named) and through the training pipeline in this process; memory
stays bounded.
"""

import os
import signal
import threading

import numpy as np
import pytest
import videos

from keras_r21d.data import BadVideoLog, ClipConfig, VideoDataset, eval_dataset
from keras_r21d.data.isolated import IsolatedDecoder

FRAMES, HEIGHT, WIDTH = 30, 48, 64
PER_FILE_SECONDS = 30


def _bases(folder):
    frames = videos.moving_frames(FRAMES, HEIGHT, WIDTH, seed=3)
    bases = {
        "mpeg4.avi": videos.write_opencv(os.path.join(folder, "mpeg4.avi"), frames, "mp4v"),
        "mpeg4.mp4": videos.write_opencv(os.path.join(folder, "mpeg4.mp4"), frames, "mp4v"),
        "mjpeg.avi": videos.write_opencv(os.path.join(folder, "mjpeg.avi"), frames, "MJPG"),
    }
    bases["h264.mp4"] = videos.write_ffmpeg(os.path.join(folder, "h264.mp4"), frames, gop=10)
    return bases


def _mutations(data, rng):
    """`{name: bytes}`: truncation at every 10%, bit flips, garbage inserted or overwritten, a zeroed header."""
    out = {}
    for tenth in range(1, 10):
        out[f"cut{tenth * 10}"] = data[: len(data) * tenth // 10]
    for k in range(40):
        flipped = bytearray(data)
        for position in rng.integers(0, len(data), size=int(rng.choice([1, 4, 32, 256]))):
            flipped[position] ^= 1 << int(rng.integers(0, 8))
        out[f"flip{k}"] = bytes(flipped)
    for k in range(8):
        at = int(rng.integers(0, len(data)))
        garbage = rng.integers(0, 256, size=int(rng.choice([16, 512, 4096])), dtype=np.uint8).tobytes()
        out[f"insert{k}"] = data[:at] + garbage + data[at:]
        out[f"overwrite{k}"] = data[:at] + garbage + data[at + len(garbage):]
    out["zero_header"] = bytes(512) + data[512:]
    out["zero_middle"] = data[: len(data) // 3] + bytes(len(data) // 3) + data[2 * len(data) // 3:]
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("fuzz"))
    rng = np.random.default_rng(2026)
    files = []
    for name, path in _bases(folder).items():
        with open(path, "rb") as f:
            data = f.read()
        stem, ext = os.path.splitext(name)
        for mutation, content in _mutations(data, rng).items():
            mutated = os.path.join(folder, "mutated", f"{stem}_{mutation}{ext}")
            os.makedirs(os.path.dirname(mutated), exist_ok=True)
            with open(mutated, "wb") as f:
                f.write(content)
            files.append(mutated)
    return files


@videos.needs_ffmpeg
def test_every_mutated_video_is_decoded_or_skipped_with_a_reason(corpus):
    assert len(corpus) >= 250
    answers, rss = {}, []
    with IsolatedDecoder(timeout=PER_FILE_SECONDS, max_pixels=10 * FRAMES * HEIGHT * WIDTH) as decoder:
        for path in corpus:
            answers[path] = decoder.decode(path, mode="all")
            if "peak_rss_kb" in answers[path]:
                rss.append(answers[path]["peak_rss_kb"])
    crashed = {p: a["reason"] for p, a in answers.items() if "crashed" in (a["reason"] or "")}
    assert not crashed, f"the decoder crashed on {crashed}"  # caught and named, but none is expected
    decoded = 0
    for path, answer in answers.items():
        if answer["ok"]:
            count, height, width, channels = answer["shape"]
            assert 1 <= count <= 10 * FRAMES and channels == 3 and answer["dtype"] == "uint8", (path, answer)
            assert height * width * count <= 10 * FRAMES * HEIGHT * WIDTH, (path, answer)
            decoded += 1
        else:
            assert answer["reason"], path
    # Most mutations still decode (damaged frames) and some cannot: both paths are exercised.
    assert 0 < decoded < len(corpus)
    # Bounded memory: one worker decoded the whole corpus (no restart), its peak stays small and
    # hardly grows after the first files.
    assert decoder.restarts == 0
    assert rss[-1] < 300_000 and rss[-1] - rss[20] < 30_000, (rss[20], rss[-1])  # kB


@videos.needs_ffmpeg
def test_mutated_videos_through_the_pipeline_in_process(corpus):
    """The training/evaluation path: bad files are skipped and reported once, the good clips come out."""
    sample = corpus[::4]
    dataset = VideoDataset("fuzz", sample, [0] * len(sample), ["x"])
    log = BadVideoLog(max_consecutive=len(sample) + 1)
    config = ClipConfig(clip_len=8, resize=(48, 64), crop=32, test_clips=2, decode_timeout=PER_FILE_SECONDS)
    seen = set()
    for clips, _, video_ids in eval_dataset(dataset, 8, config, bad_videos=log):
        assert clips.shape[1:] == (8, 32, 32, 3)
        assert np.isfinite(clips.numpy()).all()
        seen.update(int(v) for v in video_ids.numpy())
    skipped = {sample.index(path) for path in log.failures}
    assert seen | skipped == set(range(len(sample)))
    assert not seen & skipped
    assert all(reason for reason in log.failures.values())


def test_a_crashing_or_hanging_decoder_costs_one_file(tmp_path):
    fifo = str(tmp_path / "hang.mp4")
    os.mkfifo(fifo)  # opening it blocks inside the worker
    good = videos.write_opencv(tmp_path / "good.avi", videos.moving_frames(12), "MJPG")
    with IsolatedDecoder(timeout=1.0) as decoder:
        answer = decoder.decode(fifo)
        assert answer == {"ok": False, "frames": None, "reason": "decoding timed out after 1 s"}
        assert decoder.decode(good)["frames"] == 12  # a fresh worker

        timer = threading.Timer(0.5, lambda: os.kill(decoder.proc.pid, signal.SIGSEGV))
        decoder.timeout = 30
        timer.start()
        answer = decoder.decode(fifo)
        timer.join()
        assert answer == {"ok": False, "frames": None, "reason": "decoder crashed (signal SIGSEGV)"}
        assert decoder.decode(good)["ok"]
        assert decoder.restarts == 2
