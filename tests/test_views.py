"""Multi-view testing: `test_crops=3` adds two crops along each clip's long side (MMAction2's `ThreeCrop`,
PySlowFast's `uniform_crop`) to the center crop, and Video@1 averages every view's softmax; one crop is the
evaluator as it was."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_r21d
from keras_r21d.data import ClipConfig, eval_dataset
from keras_r21d.data.pipeline import read_test_clips
from keras_r21d.data.preprocessor import ClipPreprocessor
from keras_r21d.data.transforms import MEAN, STD, view_offsets
from keras_r21d.training import TrainConfig
from keras_r21d.training.evaluation import compute_metrics, evaluate, evaluate_model, video_predictions
from tests.test_case import with_batchnorm_statistics, write_run_dir
from tests.videos import moving_frames, write_opencv

CLASSES = ["left", "right", "still"]
CONFIG = ClipConfig(clip_len=4, frame_stride=2, test_clips=3, resize=(48, 64), crop=32)


def _positions(height, width, clips=2, frames=3):
    """uint8 clips whose pixels name their place: red = column, green = row, blue = clip."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    frame = np.stack([cols, rows, np.zeros_like(rows)], axis=-1)
    out = np.repeat(np.repeat(frame[None, None], frames, axis=1), clips, axis=0)
    out[..., 2] = np.arange(clips)[:, None, None, None]
    return out.astype(np.uint8)


def _raw(views):
    """Normalized views back to 0..255 (whole numbers here: no resize)."""
    return np.round((np.asarray(views) * np.array(STD) + np.array(MEAN)) * 255).astype(int)


@pytest.mark.parametrize("height, width, tops, lefts", [
    (48, 64, [8, 8, 8], [0, 16, 32]),    # landscape: along the width
    (64, 48, [0, 16, 32], [8, 8, 8]),    # portrait: along the height
    (40, 40, [4, 4, 4], [0, 4, 8]),      # square: along the width, as PySlowFast
])
def test_three_crops_lie_along_the_long_side(height, width, tops, lefts):
    clips = _positions(height, width)
    preprocessor = ClipPreprocessor(resize=(height, width), crop=32, flip=False)
    views = preprocessor.views(clips, 3).numpy()
    assert views.shape == (6, 3, 32, 32, 3)
    raw = _raw(views)
    for index, view in enumerate(raw):
        clip, position = divmod(index, 3)  # each clip's three views in a row
        assert (view[..., 2] == clip).all()
        assert (view[:, 0, 0, 0] == lefts[position]).all() and (view[:, 0, 0, 1] == tops[position]).all()
        assert (view[:, -1, -1, 0] == lefts[position] + 31).all() and (view[:, -1, -1, 1] == tops[position] + 31).all()
    assert view_offsets(height, width, (32, 32), 3) == list(zip(tops, lefts))
    # The middle view is the one-crop evaluator's center crop, and one crop is that crop, bit for bit.
    center = preprocessor(clips).numpy()
    np.testing.assert_array_equal(views[1::3], center)
    np.testing.assert_array_equal(preprocessor.views(clips, 1).numpy(), center)


def test_three_crops_after_a_resize_are_crops_of_the_resized_frames():
    """Frames larger than the pre-crop size are resized first, then cropped: the views are windows of
    `__call__`'s resized frames (the same bilinear resize)."""
    import tensorflow as tf

    clips = np.random.default_rng(0).integers(0, 256, (2, 3, 90, 120, 3), dtype=np.uint8)
    preprocessor = ClipPreprocessor(resize=(45, 60), crop=32)
    resized = tf.image.resize(clips.reshape(-1, 90, 120, 3).astype("float32"), (45, 60), antialias=False)
    resized = resized.numpy().reshape(2, 3, 45, 60, 3)
    expected = np.stack([resized[:, :, top:top + 32, left:left + 32]
                         for top, left in view_offsets(45, 60, (32, 32), 3)], axis=1).reshape(6, 3, 32, 32, 3)
    np.testing.assert_allclose(preprocessor.views(clips, 3).numpy(), preprocessor.normalize(expected).numpy(),
                               atol=1e-5)


def test_bad_crop_counts_are_refused_by_name():
    with pytest.raises(ValueError, match="test_crops"):
        ClipConfig(test_crops=2)
    with pytest.raises(ValueError, match="test_crops"):
        TrainConfig(data="x", test_crops=5)
    with pytest.raises(ValueError, match="crops"):
        view_offsets(48, 64, (32, 32), 4)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A folder dataset (train/ and test/) of real encoded videos: motion left, motion right, still."""
    root = tmp_path_factory.mktemp("views")
    for split, count in (("train", 1), ("test", 2)):
        for c, name in enumerate(CLASSES):
            for i in range(count):
                frames = moving_frames(24 + 2 * i, 48, 64, seed=10 * c + i)
                frames = frames[::-1] if name == "right" else frames[:1].repeat(len(frames), 0) if c == 2 else frames
                write_opencv(root / split / name / f"{name}{i}.avi", frames)
    return str(root)


@pytest.fixture(scope="module")
def model():
    model = keras_r21d.get_model("r2plus1d_10", input_shape=(4, None, None, 3), classes=len(CLASSES),
                                 width_multiplier=0.25)
    return with_batchnorm_statistics(model, np.random.default_rng(2))


def test_three_crop_evaluation_averages_the_nine_views_of_each_video(model, data, tmp_path):
    """On real videos: the views are the crops of the decoded clips, each video's Video@1 probabilities are
    the mean of its 3 clips x 3 crops, and the center views are the one-crop evaluation's clips."""
    from keras_r21d.data import load_dataset

    test_set = load_dataset(f"folder:{data}", "test")
    three = evaluate_model(model, test_set, ClipConfig(**{**CONFIG.__dict__, "test_crops": 3}),
                           batch_size=4, out_dir=str(tmp_path / "three"))
    one = evaluate_model(model, test_set, CONFIG, batch_size=4, out_dir=str(tmp_path / "one"))
    assert (three["protocol"], three["crops"], three["clips"], three["views"]) == ("3 clips x 3 crops", 3, 18, 54)
    assert (one["protocol"], one["crops"], one["clips"], one["views"]) == ("3 clips x 1 crop", 1, 18, 18)
    assert three["clips_per_video"] == one["clips_per_video"] == 3.0
    saved = {name: np.load(tmp_path / name / "clip_predictions.npz") for name in ("three", "one")}
    np.testing.assert_array_equal(saved["three"]["video_ids"], np.repeat(saved["one"]["video_ids"], 3))
    np.testing.assert_allclose(saved["three"]["probabilities"][1::3], saved["one"]["probabilities"], atol=1e-5)

    # The views by hand: the decoder's test clips, cropped at view_offsets, through the model.
    preprocessor = CONFIG.preprocessor
    for video, path in enumerate(test_set.paths):
        clips = read_test_clips(path, CONFIG)
        crops = [clips[:, :, top:top + 32, left:left + 32] for top, left in view_offsets(48, 64, (32, 32), 3)]
        views = np.stack(crops, axis=1).reshape(9, 4, 32, 32, 3)
        expected = keras.ops.convert_to_numpy(model(preprocessor.normalize(views), training=False))
        mine = saved["three"]["probabilities"][saved["three"]["video_ids"] == video]
        np.testing.assert_allclose(mine, expected, atol=1e-5)
    video_probs, video_labels, _ = video_predictions(saved["three"]["probabilities"], saved["three"]["labels"],
                                                     saved["three"]["video_ids"])
    assert three["video_top1"] == float((video_probs.argmax(1) == video_labels).mean())

    # One crop is the evaluation as it was: compute_metrics without `crops` gives the same report.
    before = compute_metrics(saved["one"]["probabilities"], saved["one"]["labels"], saved["one"]["video_ids"],
                             CLASSES)
    assert {k: v for k, v in one.items() if k in before} == before


def test_eval_dataset_gives_each_clips_views_in_a_row(data):
    from keras_r21d.data import load_dataset

    test_set = load_dataset(f"folder:{data}", "test")
    config = ClipConfig(**{**CONFIG.__dict__, "test_crops": 3})
    ids = np.concatenate([batch[2].numpy() for batch in eval_dataset(test_set, 5, config)])
    assert ids.tolist() == [v for v in range(len(test_set)) for _ in range(9)]


@pytest.mark.slow
def test_cli_evaluate_with_three_crops(model, data, tmp_path):
    """`keras-r21d evaluate --crops 3` reports the protocol; `--crops 2` is refused by argparse."""
    write_run_dir(str(tmp_path), model, {"frames": 4, "size": 32, "frame_stride": 2, "resize_to": [48, 64]}, CLASSES)
    path = str(tmp_path / "model.keras")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "keras_r21d", "evaluate", "--model", path, "--data", f"folder:{data}",
               "--clips", "3"]
    result = subprocess.run(command + ["--crops", "3", "--json"], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    expected = evaluate(path, f"folder:{data}", clips=3, crops=3)
    assert report["protocol"] == "3 clips x 3 crops" and report["views"] == 54
    assert report["video_top1"] == expected["video_top1"] and report["confusion_matrix"] == expected["confusion_matrix"]
    text = subprocess.run(command + ["--crops", "3"], capture_output=True, text=True, env=env, timeout=600)
    assert "18 clips, 3 clips x 3 crops per video" in text.stdout
    bad = subprocess.run(command + ["--crops", "2"], capture_output=True, text=True, env=env, timeout=600)
    assert bad.returncode == 2 and "--crops" in bad.stderr and "invalid choice" in bad.stderr
