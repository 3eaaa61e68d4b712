"""Action timelines: a window slid over a real encoded video whose motion switches half-way, classified by a
motion-energy network with hand-set weights (plain Keras layers: it saves, exports and reloads like any model)."""

import json

import keras
import numpy as np
import pytest

from keras_r21d.inference import load_predictor
from keras_r21d.timeline import video_timeline
from tests.test_case import write_run_dir
from tests.videos import write_opencv

CLASSES = ["moving left", "moving right"]
FPS = 10.0
SWITCH = 80  # the frame where the motion turns
GEOMETRY = {"frames": 4, "size": 32, "frame_stride": 1, "resize_to": [48, 64]}  # run.json's clip geometry


def _texture(height, width, seed=0):
    """A smooth random texture (what a video codec keeps well)."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 4, width // 4 + 40), dtype=np.uint8)
    return cv2.resize(small, (width + 160, height), interpolation=cv2.INTER_CUBIC)


def switching_video(path, frames=160, height=48, width=64):
    """A texture moving 1 pixel per frame to the left for `SWITCH` frames, then to the right."""
    texture = _texture(height, width)
    out, x = [], 80
    for i in range(frames):
        x += 1 if i < SWITCH else -1  # the view onto the texture moves right: the content moves left
        gray = texture[:, x:x + width]
        out.append(np.repeat(gray[..., None], 3, axis=-1))
    return write_opencv(path, np.stack(out), "MJPG", fps=FPS)


def motion_model(frames=4):
    """Keras layers with hand-set weights: residuals of `x[t+1] - shift(x[t])` for a shift of 1 pixel left and
    right (Conv3D), their absolute values (two ReLUs), averaged; the smaller residual names the direction."""
    inputs = keras.Input((frames, None, None, 3))
    conv = keras.layers.Conv3D(4, (2, 1, 3), use_bias=False, name="residuals")
    gap = keras.layers.GlobalAveragePooling3D()
    head = keras.layers.Dense(2, name="direction")
    outputs = keras.layers.Softmax()(head(gap(keras.layers.ReLU()(conv(inputs)))))
    model = keras.Model(inputs, outputs)
    kernel = np.zeros((2, 1, 3, 3, 4), np.float32)
    for channel in range(3):
        # Content moving left by 1: x[t+1](i) = x[t](i+1). Residual for "left": x[t+1](i) - x[t](i+1).
        kernel[1, 0, 1, channel, 0] = 1 / 3
        kernel[0, 0, 2, channel, 0] = -1 / 3
        # Moving right: x[t+1](i) = x[t](i-1).
        kernel[1, 0, 1, channel, 2] = 1 / 3
        kernel[0, 0, 0, channel, 2] = -1 / 3
    kernel[..., 1] = -kernel[..., 0]  # ReLU(a) + ReLU(-a) = |a|
    kernel[..., 3] = -kernel[..., 2]
    conv.set_weights([kernel])
    # A small "left" residual means left: the logit of left is the right residual minus the left one.
    scale = 20.0
    weights = np.array([[-1, 1], [-1, 1], [1, -1], [1, -1]], np.float32) * scale
    head.set_weights([weights, np.zeros(2, np.float32)])
    return model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return write_run_dir(tmp_path_factory.mktemp("timeline"), motion_model(), GEOMETRY, CLASSES)


def test_the_timeline_finds_the_switch_within_one_window(run_dir, tmp_path):
    video = switching_video(tmp_path / "switch.avi")
    predictor = load_predictor(str(run_dir / "model.keras"))
    timeline = video_timeline(predictor, video, window_stride=1.0)
    assert timeline.fps == FPS and timeline.frames == 160
    assert len(timeline.starts) == 16 and timeline.window_frames == 4 and timeline.stride_frames == 10
    np.testing.assert_allclose(timeline.starts, np.arange(16) * 1.0)
    segments = timeline.segments()
    assert [s["class"] for s in segments] == CLASSES, segments
    switch = SWITCH / FPS
    assert abs(segments[0]["end"] - switch) <= timeline.stride_frames / FPS  # within one window stride
    assert segments[0]["start"] == 0.0 and segments[-1]["end"] == timeline.duration
    leaders = timeline.probabilities.argmax(1)
    clear = np.abs(timeline.centers - switch) > timeline.window_frames / FPS
    assert (leaders[clear] == (timeline.centers[clear] > switch)).all()
    paths = timeline.write(str(tmp_path / "out" / "switch"))
    written = json.loads(open(paths["json"]).read())
    assert written["segments"] == segments and len(written["windows"]) == 16
    with open(paths["csv"]) as f:
        rows = f.read().splitlines()
    assert rows[0].split(",")[:4] == ["start", "end", "top_class", "top_score"] and len(rows) == 17
    assert open(paths["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileExistsError, match="switch.csv"):
        timeline.write(str(tmp_path / "out" / "switch"))


def test_the_same_timeline_from_a_saved_model_and_tflite_and_through_the_cli(tmp_path):
    """A package network (the exports need its backbone for `extract_features`): the SavedModel's and the
    `.tflite` file's timelines are the `.keras` file's; `predict --timeline` writes them."""
    import subprocess
    import sys

    import keras_r21d
    from tests.test_case import with_batchnorm_statistics

    model = keras_r21d.get_model("r2plus1d_10", input_shape=(4, None, None, 3), classes=2, width_multiplier=0.125)
    run_dir = write_run_dir(tmp_path / "run", with_batchnorm_statistics(model, np.random.default_rng(0)), GEOMETRY,
                            CLASSES)
    video = switching_video(tmp_path / "switch.avi")
    reference = video_timeline(load_predictor(str(run_dir / "model.keras")), video, window_stride=2.0)
    for fmt, out in (("savedmodel", tmp_path / "serving"), ("tflite", tmp_path / "model.tflite")):
        result = subprocess.run([sys.executable, "-m", "keras_r21d", "export", "--model", str(run_dir / "model.keras"),
                                 "--format", fmt, "--out", str(out)], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        other = video_timeline(load_predictor(str(out)), video, window_stride=2.0)
        np.testing.assert_allclose(other.starts, reference.starts)
        np.testing.assert_allclose(other.probabilities, reference.probabilities, atol=1e-4)
    result = subprocess.run([sys.executable, "-m", "keras_r21d", "predict", "--model", str(tmp_path / "model.tflite"),
                             video, "--timeline", str(tmp_path / "timelines"), "--window-stride", "2", "--json"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    [answer] = json.loads(result.stdout)
    assert answer["windows"] == 8
    for mine, theirs in zip(answer["segments"], reference.segments(), strict=True):
        assert {k: v for k, v in mine.items() if k != "score"} == {k: v for k, v in theirs.items() if k != "score"}
        assert mine["score"] == pytest.approx(theirs["score"], abs=1e-4)
    assert (tmp_path / "timelines" / "switch.timeline.png").stat().st_size > 1000


MEMORY_CHILD = """
import json, sys
sys.path.insert(0, {root!r})
from keras_r21d.inference import load_predictor
from keras_r21d.timeline import video_timeline
timeline = video_timeline(load_predictor({model!r}), sys.argv[1], window_stride=1.0)
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({{"windows": len(timeline.starts), "peak_kb": peak}}))
"""


@pytest.mark.slow
def test_memory_does_not_grow_with_the_videos_length(run_dir, tmp_path):
    """A 3000-frame 320x240 video (690 MB of decoded frames) takes no more memory than a 300-frame one: the frames
    are streamed through one window's buffer. Each in a fresh process; peak resident memory (`VmHWM`)."""
    import os
    import subprocess
    import sys

    import cv2

    texture = cv2.resize(np.random.default_rng(0).integers(0, 256, (60, 200, 3), dtype=np.uint8), (800, 240))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = MEMORY_CHILD.format(root=root, model=str(run_dir / "model.keras"))
    peaks = {}
    for frames in (300, 3000):
        path = str(tmp_path / f"{frames}.avi")
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (320, 240))
        for i in range(frames):
            writer.write(np.ascontiguousarray(texture[:, (2 * i) % 480:(2 * i) % 480 + 320]))
        writer.release()
        result = subprocess.run([sys.executable, "-c", script, path], capture_output=True, text=True, timeout=600,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        assert result.returncode == 0, result.stderr[-3000:]
        answer = json.loads(result.stdout.strip().splitlines()[-1])
        assert answer["windows"] == (frames - 4) // 25 + 1
        peaks[frames] = answer["peak_kb"] / 1024
    assert peaks[3000] - peaks[300] < 60, peaks  # the long video's frames alone would be 690 MB
