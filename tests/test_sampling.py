import numpy as np
import pytest

from keras_r21d.data import sampling


def test_uniform_clip_starts_exact():
    assert np.asarray(sampling.uniform_clip_starts(100, 16, 10)).tolist() == [0, 9, 19, 28, 37, 47, 56, 65, 75, 84]
    assert np.asarray(sampling.uniform_clip_starts(100, 16, 10, stride=2)).tolist() == [
        0, 8, 15, 23, 31, 38, 46, 54, 61, 69]
    assert np.asarray(sampling.uniform_clip_starts(100, 16, 1)).tolist() == [42]
    assert np.asarray(sampling.uniform_clip_starts(16, 16, 3)).tolist() == [0, 0, 0]
    assert np.asarray(sampling.uniform_clip_starts(5, 16, 3)).tolist() == [0, 0, 0]


def test_clips_cover_the_video_ends():
    idx = np.asarray(sampling.clip_indices(sampling.uniform_clip_starts(300, 16, 10), 300, 16))
    assert idx.shape == (10, 16)
    assert idx[0, 0] == 0 and idx[-1, -1] == 299
    assert (np.diff(idx, axis=1) == 1).all()


@pytest.mark.parametrize(
    "policy,expected",
    [
        ("loop", [0, 1, 2, 3, 4, 0, 1, 2]),
        ("repeat_last", [0, 1, 2, 3, 4, 4, 4, 4]),
        ("pad", [0, 1, 2, 3, 4, -1, -1, -1]),
    ],
)
def test_short_video_policies(policy, expected):
    assert np.asarray(sampling.clip_indices([0], 5, 8, 1, policy)).tolist() == [expected]


def test_strided_clip_and_loop():
    assert np.asarray(sampling.clip_indices([1], 6, 4, 2, "loop")).tolist() == [[1, 3, 5, 1]]


def test_stride_for_target_fps():
    assert sampling.stride_for(30.0, 1, 15) == 2
    assert sampling.stride_for(25.0, 1, 30) == 1
    assert sampling.stride_for(0.0, 3, 15) == 3  # unknown fps: keep the fixed stride
    assert sampling.stride_for(30.0, 3, None) == 3


def test_random_start_is_in_range_and_seeded():
    rng = np.random.default_rng(0)
    starts = [sampling.random_clip_start(40, 16, 1, rng) for _ in range(500)]
    assert min(starts) == 0 and max(starts) == 24
    again = np.random.default_rng(0)
    assert starts == [sampling.random_clip_start(40, 16, 1, again) for _ in range(500)]
    assert sampling.random_clip_start(10, 16, 1, rng) == 0


def test_bad_policy():
    with pytest.raises(ValueError, match="'bounce'"):
        sampling.clip_indices([0], 5, 8, 1, "bounce")
