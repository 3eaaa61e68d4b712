import os

import numpy as np
import pytest
import tensorflow as tf
import videos

from keras_r21d.data import BadVideoLog, ClipConfig, VideoDataset, eval_dataset, load_dataset, train_dataset
from keras_r21d.data.transforms import MEAN, STD

CONFIG = ClipConfig(clip_len=8, resize=(40, 54), crop=32, test_clips=3)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("set")
    paths, labels = [], []
    for i in range(6):
        paths.append(videos.write_opencv(folder / f"v{i}.avi", videos.moving_frames(20 + 4 * i, seed=i), "mp4v"))
        labels.append(i % 3)
    return VideoDataset("test", paths, labels, ["a", "b", "c"])


def _collect(ds):
    return [tuple(np.asarray(t) for t in batch) for batch in ds]


def test_train_batches(small_set):
    batches = _collect(train_dataset(small_set, 4, CONFIG, seed=0))
    clips = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    assert [b[0].shape for b in batches] == [(4, 8, 32, 32, 3), (2, 8, 32, 32, 3)]
    assert clips.dtype == np.float32 and labels.dtype == np.int32
    assert sorted(labels.tolist()) == sorted(small_set.labels)
    # Normalized with the VMZ mean/std: values span the transformed 0..255 range.
    low = (0 - np.array(MEAN)) / np.array(STD)
    high = (1 - np.array(MEAN)) / np.array(STD)
    assert (clips >= low.min() - 1e-4).all() and (clips <= high.max() + 1e-4).all()


def test_train_is_deterministic_for_a_seed(small_set):
    first = _collect(train_dataset(small_set, 3, CONFIG, seed=7, deterministic=True))
    second = _collect(train_dataset(small_set, 3, CONFIG, seed=7, deterministic=True))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    other = _collect(train_dataset(small_set, 3, CONFIG, seed=8, deterministic=True))
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other))


def test_epochs_differ(small_set):
    ds = train_dataset(small_set, 6, CONFIG, seed=3, shuffle=False, deterministic=True)
    epoch1, epoch2 = _collect(ds), _collect(ds)
    assert not np.array_equal(epoch1[0][0], epoch2[0][0])  # new jitter and crops each epoch


def test_eval_clips_and_video_ids(small_set):
    batches = _collect(eval_dataset(small_set, 4, CONFIG))
    clips = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    ids = np.concatenate([b[2] for b in batches])
    assert clips.shape == (18, 8, 32, 32, 3)
    assert ids.tolist() == [i for i in range(6) for _ in range(3)]
    assert labels.tolist() == [small_set.labels[i] for i in ids]
    again = _collect(eval_dataset(small_set, 4, CONFIG))
    np.testing.assert_array_equal(np.concatenate([b[0] for b in again]), clips)


def test_eval_without_video_id_fits_model_fit(small_set):
    element = next(iter(eval_dataset(small_set, 2, CONFIG, with_video_id=False)))
    assert len(element) == 2


def test_eval_clips_are_the_uniform_frames(tmp_path):
    """The first clip of a 40-frame video starts at frame 0, the last ends at frame 39."""
    reference = videos.moving_frames(40, height=32, width=32)
    path = videos.write_opencv(tmp_path / "v.avi", reference, "MJPG")
    config = ClipConfig(clip_len=4, resize=(32, 32), crop=32, test_clips=2)
    clips = np.concatenate([b[0] for b in _collect(eval_dataset(VideoDataset("x", [path], [0], ["a"]), 2, config))])
    raw = (clips * np.array(STD) + np.array(MEAN)) * 255
    expected = [[0, 1, 2, 3], [36, 37, 38, 39]]
    for clip, indices in zip(raw, expected):
        for frame, index in zip(clip, indices):
            assert np.abs(frame - reference[index]).mean() < 12


def test_bad_videos_are_skipped_and_reported(tmp_path, small_set):
    bad = videos.make_bad_files(tmp_path)
    one_frame = videos.write_opencv(tmp_path / "one.avi", videos.moving_frames(1), "MJPG")
    gray = videos.write_opencv(tmp_path / "gray.avi", videos.moving_frames(12, gray=True), "MJPG")
    odd = videos.write_opencv(tmp_path / "odd.avi", videos.moving_frames(12, height=73, width=97), "MJPG")
    paths = small_set.paths[:2] + list(bad.values()) + [one_frame, gray, odd, str(tmp_path / "missing.avi")]
    dataset = VideoDataset("mixed", paths, [0] * len(paths), ["a"])
    log = BadVideoLog()
    batches = _collect(train_dataset(dataset, 4, ClipConfig(clip_len=8, resize=(40, 54), crop=32, short_policy="skip"),
                                     seed=0, bad_videos=log))
    assert sum(len(b[1]) for b in batches) == 4  # two clean, gray, odd
    assert set(log.failures) == set(bad.values()) | {one_frame, str(tmp_path / "missing.avi")}
    assert log.failures[bad["zero_bytes"]] == "empty file (0 bytes)"
    assert log.failures[one_frame].startswith("too short: 1 frames")
    assert log.failures[str(tmp_path / "missing.avi")] == "file not found"
    # With the default 'loop' policy, the one-frame video gives a clip.
    log = BadVideoLog()
    _collect(train_dataset(dataset, 4, CONFIG, seed=0, bad_videos=log))
    assert one_frame not in log.failures


def test_too_many_failures_in_a_row_stop_with_a_clear_error(tmp_path):
    bad = videos.make_bad_files(tmp_path)
    paths = [bad["random_bytes"]] * 5
    dataset = VideoDataset("bad", paths, [0] * 5, ["a"])
    config = ClipConfig(clip_len=8, resize=(40, 54), crop=32, max_consecutive_failures=3)
    with pytest.raises(tf.errors.OpError, match="at least 3 videos in a row could not be decoded"):
        _collect(train_dataset(dataset, 2, config, shuffle=False, deterministic=True))


def test_cache_on_disk(small_set, tmp_path):
    cache = str(tmp_path / "cache")
    ds = eval_dataset(small_set, 6, CONFIG, cache=cache)
    first = _collect(ds)
    assert any(name.startswith("cache") for name in os.listdir(tmp_path))
    second = _collect(ds)
    np.testing.assert_array_equal(first[0][0], second[0][0])


def test_works_under_a_distribution_strategy(small_set):
    strategy = tf.distribute.get_strategy()
    dist = strategy.experimental_distribute_dataset(train_dataset(small_set, 2, CONFIG, seed=0))
    assert sum(1 for _ in dist) == 3


def test_real_layout_end_to_end(tmp_path):
    from keras_r21d.data import make_synthetic_dataset

    spec = make_synthetic_dataset(str(tmp_path / "syn"), classes=2, videos_per_class=4, frames=(12, 16),
                                  size=(48, 32))
    train = load_dataset(spec)
    assert len(train) == 6
    batch = next(iter(train_dataset(train, 6, CONFIG, seed=0)))
    assert batch[0].shape == (6, 8, 32, 32, 3)
