import json
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
    """`model.fit` takes the two-entry eval dataset as validation data (a third entry would be sample weights)."""
    import keras

    import keras_r21d

    element = next(iter(eval_dataset(small_set, 2, CONFIG, with_video_id=False)))
    assert len(element) == 2
    model = keras_r21d.R2Plus1D(10, input_shape=(8, 32, 32, 3), classes=3, width_multiplier=0.125)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(train_dataset(small_set, 3, CONFIG, seed=0), epochs=1, verbose=0,
                        validation_data=eval_dataset(small_set, 4, CONFIG, with_video_id=False))
    # 6 videos x 3 test clips were evaluated: the validation metrics are the model's on those 18 clips.
    clips = np.concatenate([b[0] for b in _collect(eval_dataset(small_set, 4, CONFIG))])
    labels = np.repeat(small_set.labels, CONFIG.test_clips)
    accuracy = float((model.predict(clips, verbose=0).argmax(1) == labels).mean())
    assert history.history["val_accuracy"][0] == pytest.approx(accuracy)


def test_training_clips_are_flipped_horizontally_at_random(tmp_path):
    """With `flip=True` a training clip is the frame or its mirror image, both occur; `flip=False` never mirrors."""
    frame = np.zeros((32, 32, 3), np.uint8)
    frame[:, :12] = 230  # a bright band on the left: the mirror image has it on the right
    frame[4:10, 20:28] = (30, 200, 90)
    path = videos.write_opencv(tmp_path / "still.avi", np.repeat(frame[None], 10, axis=0), "MJPG")
    dataset = VideoDataset("still", [path] * 8, [0] * 8, ["a"])

    def orientations(flip):
        config = ClipConfig(clip_len=4, resize=(32, 32), crop=32, flip=flip)
        clips = np.concatenate([b[0] for b in _collect(train_dataset(dataset, 8, config, seed=1))])
        raw = (clips * np.array(STD) + np.array(MEAN)) * 255
        kinds = []
        for clip in raw:
            same, mirrored = (np.abs(clip - reference).mean() for reference in (frame, frame[:, ::-1]))
            assert min(same, mirrored) < 8 < max(same, mirrored)
            kinds.append("mirrored" if mirrored < same else "same")
        return kinds

    assert set(orientations(True)) == {"same", "mirrored"}
    assert set(orientations(False)) == {"same"}


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
    """The second pass reads the cache: it gives the same clips with the videos deleted."""
    import shutil

    copies = []
    for path in small_set.paths:
        copies.append(shutil.copy(path, tmp_path / os.path.basename(path)))
    dataset = VideoDataset("copies", copies, small_set.labels, small_set.class_names)
    cache = str(tmp_path / "cache")
    ds = eval_dataset(dataset, 6, CONFIG, cache=cache)
    first = _collect(ds)
    assert any(name.startswith("cache") for name in os.listdir(tmp_path))
    for path in copies:
        os.remove(path)
    log = BadVideoLog()
    second = _collect(eval_dataset(dataset, 6, CONFIG, cache=cache, bad_videos=log))
    assert not log.failures and len(second) == len(first)
    for a, b in zip(first, second):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    # Without the cache the same deleted videos are all reported missing.
    assert _collect(eval_dataset(dataset, 6, CONFIG, bad_videos=log)) == []
    assert set(log.failures) == set(copies)


DISTRIBUTED = """
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from keras_r21d.data import ClipConfig, VideoDataset, train_dataset
paths, labels = json.loads(sys.argv[1])
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
config = ClipConfig(clip_len=8, resize=(40, 54), crop=32)
dist = strategy.experimental_distribute_dataset(
    train_dataset(VideoDataset("x", paths, labels, ["a", "b", "c"]), 4, config, seed=0))
steps = []
for clips, batch_labels in dist:
    steps.append([[list(c.shape), b.numpy().tolist()] for c, b in zip(strategy.experimental_local_results(clips),
                                                                        strategy.experimental_local_results(batch_labels))])
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "steps": steps}))
"""


def test_works_under_a_mirrored_strategy_over_two_devices(small_set):
    """A global batch of 4 is split 2 + 2 over two logical CPUs; every video is seen once per epoch."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", DISTRIBUTED, json.dumps([small_set.paths, small_set.labels])],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1"})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    shapes = [[shape for shape, _ in step] for step in result["steps"]]
    assert shapes == [[[2, 8, 32, 32, 3]] * 2, [[1, 8, 32, 32, 3]] * 2]  # the last batch of 2: one per replica
    seen = [label for step in result["steps"] for _, labels in step for label in labels]
    assert sorted(seen) == sorted(small_set.labels)


def test_real_layout_end_to_end(tmp_path):
    from keras_r21d.data import make_synthetic_dataset

    spec = make_synthetic_dataset(str(tmp_path / "syn"), classes=2, videos_per_class=4, frames=(12, 16),
                                  size=(48, 32))
    train = load_dataset(spec)
    assert len(train) == 6
    batch = next(iter(train_dataset(train, 6, CONFIG, seed=0)))
    assert batch[0].shape == (6, 8, 32, 32, 3)


def test_one_preprocessor_for_training_evaluation_and_serving():
    """`ClipConfig.preprocessor` owns the preprocessing: the test-time path is resize, center crop, normalize
    (the serving graph's `video_clips` runs the same object), the training path a random crop of the same resize,
    its config round-trips, and bad values are refused by name."""
    import dataclasses

    from keras_r21d.data import ClipConfig
    from keras_r21d.data.preprocessor import ClipPreprocessor
    from keras_r21d.export.graph import video_clips

    config = ClipConfig(clip_len=4, test_clips=2, resize=(40, 53), crop=32, flip=False, mean=(0.5, 0.4, 0.3),
                        std=(0.2, 0.25, 0.3))
    preprocessor = config.preprocessor
    assert preprocessor == ClipPreprocessor((40, 53), 32, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), flip=False)
    assert ClipPreprocessor.from_config(json.loads(json.dumps(preprocessor.get_config()))) == preprocessor
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (8, 60, 80, 3), dtype=np.uint8)
    resized = tf.image.resize(video.astype("float32"), (40, 53), method="bilinear", antialias=False).numpy()
    expected = (resized[:4, 4:36, 10:42] / 255.0 - np.array([0.5, 0.4, 0.3])) / np.array([0.2, 0.25, 0.3])
    np.testing.assert_allclose(preprocessor(video[:4]).numpy(), expected, atol=1e-4)
    served = video_clips(video, config).numpy()  # clips start at frames 0 and 4
    np.testing.assert_allclose(served[0], expected, atol=1e-4)
    trained = preprocessor(video[:4], training=True, seed=tf.constant([3, 4], tf.int64)).numpy()
    windows = [(top, left) for top in range(9) for left in range(22)
               if np.allclose(trained, (resized[:4, top:top + 32, left:left + 32] / 255.0 - (0.5, 0.4, 0.3))
                              / (0.2, 0.25, 0.3), atol=1e-4)]
    assert len(windows) == 1  # one random window of the same resized frames, no flip
    with pytest.raises(ValueError, match="crop"):
        dataclasses.replace(preprocessor, crop=0)
    with pytest.raises(ValueError, match="seed"):
        preprocessor(video[:4], training=True)


@pytest.mark.parametrize("shape", [(16, 12, 10, 3), (2, 4, 7, 9, 3), (5, 3)])
def test_normalize_is_the_formula_bit_for_bit(shape):
    """`normalize` works on the (..., W * 3) view for speed: the floats are those of (x / 255 - mean) / std."""
    from keras_r21d.data.transforms import normalize

    frames = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    formula = (frames.astype(np.float32) / np.float32(255.0) - np.asarray(MEAN, np.float32)) / np.asarray(
        STD, np.float32)
    np.testing.assert_array_equal(normalize(frames).numpy(), formula)
    traced = tf.function(normalize).get_concrete_function(tf.TensorSpec((None, *shape[1:]), tf.uint8))
    assert traced.structured_outputs.shape.as_list() == [None, *shape[1:]]  # the static shape is kept


@pytest.mark.parametrize("size", [(24, 30), (40, 54), 24])
def test_geometry_crops_before_the_cast_with_the_same_values(size):
    """Frames already at the resize size (frame shards) are cropped and flipped as uint8, then cast: the values
    of the reference order (resize to float32, crop, `tf.reverse` flip) for every seed, and for frames that need
    a resize (40x54 to 24x30, or to a short side of 24) the reference too."""
    from keras_r21d.data import transforms

    rng = np.random.default_rng(1)
    for shape in ((5, 24, 30, 3), (5, 40, 54, 3)):
        frames = rng.integers(0, 256, shape, dtype=np.uint8)
        resized = transforms.resize_frames(frames, size)
        top, left = (resized.shape[1] - 16) // 2, (resized.shape[2] - 16) // 2
        center = resized[:, top:top + 16, left:left + 16]
        np.testing.assert_array_equal(transforms.eval_geometry(frames, size, 16).numpy(), center.numpy())
        flips = set()
        for s in range(12):
            seed = tf.constant([s, 7], tf.int64)
            reference = transforms.random_crop(resized, 16, seed)
            flipped = tf.random.stateless_uniform((), seed + [0, 2]) < 0.5
            flips.add(bool(flipped))
            reference = tf.reverse(reference, axis=[2]) if flipped else reference
            out = transforms.train_geometry(frames, seed, size, 16)
            assert out.dtype == tf.float32
            np.testing.assert_array_equal(out.numpy(), reference.numpy())
        assert flips == {True, False}


def test_shard_frames_decode_the_same_with_or_without_the_loop(monkeypatch):
    """A training clip's frames are decoded by unrolled ops, test clips' in a loop over the distinct frames:
    the same frames, black for `-1` (the 'pad' policy), repeats for 'loop'."""
    from keras_r21d.data import shard_pipeline

    rng = np.random.default_rng(2)
    jpegs = tf.stack([tf.io.encode_jpeg(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)) for _ in range(6)])
    decoded = np.stack([tf.io.decode_jpeg(j, dct_method="INTEGER_ACCURATE").numpy() for j in jpegs])
    indices = np.array([4, 5, 0, 1, 5, -1, -1, 2])
    expected = np.where((indices >= 0)[:, None, None, None], decoded[np.maximum(indices, 0)], 0)
    unrolled = shard_pipeline.decode_frames(jpegs, tf.constant(indices))  # static length 8 <= UNROLL
    dynamic = tf.function(shard_pipeline.decode_frames, input_signature=[
        tf.TensorSpec((None,), tf.string), tf.TensorSpec((None,), tf.int64)])(jpegs, tf.constant(indices))
    monkeypatch.setattr(shard_pipeline, "UNROLL", 4)  # 8 static indices: the loop
    looped = shard_pipeline.decode_frames(jpegs, tf.constant(indices))
    for out in (unrolled, dynamic, looped):
        np.testing.assert_array_equal(out.numpy(), expected)
