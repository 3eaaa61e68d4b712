"""Soak: `predict` over 1,000 small videos and 30 export/load cycles in one process keep RSS bounded.

Each soak runs in a child process (tests/workers/soak.py) that reports its
resident memory as it goes; the bound is on the growth after a warm-up, so a
leak of a few hundred kB per video or a few MB per cycle fails the test.
"""

import json
import os
import subprocess
import sys

import pytest
import videos

import keras_r21d

pytestmark = pytest.mark.slow  # subprocess trainings and long loops: make test, not make test-fast

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "workers", "soak.py")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("soak") / "tiny.keras")
    model = keras_r21d.get_model("r2plus1d_10", classes=2, input_shape=(None, None, None, 3), width_multiplier=0.25)
    model.save(path)
    return path


def _soak(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, WORKER, *args], capture_output=True, text=True, env=env, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    return {r["step"]: r["rss_mb"] for r in map(json.loads, result.stdout.splitlines())}


def test_predict_over_1000_videos_keeps_memory_bounded(tiny_model, tmp_path):
    folder = tmp_path / "videos"
    for i in range(1000):  # 1,000 distinct real files (MJPEG, 12 frames of 32x24)
        videos.write_opencv(folder / f"v{i:04d}.avi", videos.moving_frames(12, 24, 32, seed=i), "MJPG")
    rss = _soak("predict", tiny_model, str(folder))
    assert sorted(rss) == list(range(100, 1001, 100))
    growth = rss[1000] - rss[200]
    assert growth < 40, f"RSS grew by {growth:.0f} MB over 800 videos: {rss}"


def test_30_export_and_load_cycles_keep_memory_bounded(tiny_model, tmp_path):
    video = videos.write_opencv(tmp_path / "v.avi", videos.moving_frames(12, 24, 32), "MJPG")
    rss = _soak("export", tiny_model, str(tmp_path / "out"), "30", video)
    assert sorted(rss) == list(range(1, 31))
    # Peak-to-peak, cycles 21-30 against 1-10: TensorFlow's allocator breathes by ~100 MB, a leak only grows
    # (50 cycles until the frame-shard tests needed the time; a leak of 7.5 MB per cycle still fails).
    late, early = max(rss[c] for c in range(21, 31)), max(rss[c] for c in range(1, 11))
    assert late - early < 150, f"RSS grew from {early:.0f} to {late:.0f} MB over 30 cycles: {rss}"
