import numpy as np
import pytest

from keras_r21d.data import load_dataset, make_synthetic_dataset, read_frames
from keras_r21d.data.synthetic import MOTIONS, render_video


@pytest.mark.parametrize("pair", [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)])
def test_twins_are_time_reversed(pair):
    (_, kind_a, dir_a), (_, kind_b, dir_b) = MOTIONS[pair[0]], MOTIONS[pair[1]]
    assert kind_a == kind_b and dir_a == -dir_b
    a = render_video(kind_a, dir_a, np.random.default_rng(5), 20, 48, 64)
    b = render_video(kind_b, dir_b, np.random.default_rng(5), 20, 48, 64)
    np.testing.assert_array_equal(a, b[::-1])
    # ... so any orderless statistic of the frames is the same for both classes,
    assert np.array_equal(np.sort(a.reshape(20, -1), axis=0), np.sort(b.reshape(20, -1), axis=0))
    # while the video does move.
    changed = np.abs(a[0].astype(int) - a[-1].astype(int)).max(axis=-1) > 30
    assert changed.mean() > 0.02


def test_dataset_layout_and_determinism(tmp_path):
    spec = make_synthetic_dataset(str(tmp_path / "a"), classes=4, videos_per_class=4, frames=(10, 14),
                                  size=(64, 48), seed=3)
    assert spec == f"ucf101:{tmp_path / 'a'}"
    train, test = load_dataset(spec), load_dataset(spec, subset="test")
    assert len(train) == 12 and len(test) == 4
    assert train.class_names == ["MoveLeft", "MoveRight", "RotateClockwise", "RotateCounterClockwise"]
    assert sorted(set(train.labels)) == [0, 1, 2, 3]
    for split in (2, 3):
        assert len(load_dataset(spec + f":split={split}", subset="test")) == 4
    again = make_synthetic_dataset(str(tmp_path / "b"), classes=4, videos_per_class=4, frames=(10, 14),
                                   size=(64, 48), seed=3)
    other = load_dataset(again)
    first = read_frames(train.paths[5], [0, 5])
    np.testing.assert_array_equal(first, read_frames(other.paths[5], [0, 5]))
    assert first.shape == (2, 48, 64, 3)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="classes=13"):
        make_synthetic_dataset(str(tmp_path), classes=13)
    with pytest.raises(ValueError, match="frames"):
        make_synthetic_dataset(str(tmp_path), frames=(10, 5))
    with pytest.raises(ValueError, match="distinct motion kinds"):
        make_synthetic_dataset(str(tmp_path), kinds=("horizontal", "sideways"))
    with pytest.raises(ValueError, match="distinct motion kinds"):
        make_synthetic_dataset(str(tmp_path), kinds=("vertical", "vertical"))


def test_kinds_choose_twin_pairs(tmp_path):
    spec = make_synthetic_dataset(str(tmp_path / "k"), videos_per_class=4, frames=(10, 12), size=(48, 32),
                                  kinds=("vertical", "horizontal"))
    train, test = load_dataset(spec, "train"), load_dataset(spec, "test")
    assert train.class_names == ["MoveUp", "MoveDown", "MoveLeft", "MoveRight"]
    assert len(train) == 12 and len(test) == 4 and sorted(set(train.labels)) == [0, 1, 2, 3]
    assert all(f"/{test.class_names[label]}/" in path for path, label in zip(test.paths, test.labels))
