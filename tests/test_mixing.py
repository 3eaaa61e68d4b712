"""Label smoothing, mixup and cutmix (`keras_r21d.data.mixing`): their semantics on real batches, graph ops
only (tf.data service can run them), and a training run on soft targets."""

import json

import numpy as np
import pytest
import tensorflow as tf

from keras_r21d.data import ClipConfig, load_dataset, make_synthetic_dataset, train_dataset
from keras_r21d.data.mixing import LabelMixing, beta_sample, mix_batches, one_hot_batches
from keras_r21d.data.service import python_ops
from keras_r21d.training import TrainConfig, train


def _batch(size=6, frames=3, height=8, width=10, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    clips = rng.normal(size=(size, frames, height, width, 3)).astype("float32")
    return clips, np.arange(size) % classes


def test_label_smoothing_spreads_eps_over_every_class():
    clips, labels = _batch(classes=4)
    mixed, targets = LabelMixing(4, label_smoothing=0.2)(clips, labels, seed=[0, 1])
    expected = np.full((6, 4), 0.05)
    expected[np.arange(6), labels] = 0.85
    np.testing.assert_allclose(targets.numpy(), expected, atol=1e-7)
    np.testing.assert_array_equal(mixed.numpy(), clips)  # the clips untouched
    np.testing.assert_allclose(targets.numpy().sum(1), 1.0, atol=1e-6)


def _lam_of(targets, labels):
    """The weight of each clip's own label in its mixed one-hot target (labels of a pair differ here)."""
    return targets[np.arange(len(labels)), labels]


def test_mixup_mixes_each_clip_with_its_mirror_by_the_targets_weight():
    clips, labels = _batch(size=6, classes=6)
    mixing = LabelMixing(6, mixup=0.4)
    mixed, targets = (t.numpy() for t in mixing(clips, labels, seed=[3, 4]))
    lam = _lam_of(targets, labels)
    assert np.allclose(lam, lam[0]) and 0.0 < lam[0] < 1.0  # one draw per batch
    np.testing.assert_allclose(mixed, lam[0] * clips + (1 - lam[0]) * clips[::-1], atol=1e-6)
    np.testing.assert_allclose(targets[np.arange(6), labels[::-1]], 1 - lam, atol=1e-6)
    np.testing.assert_allclose(targets.sum(1), 1.0, atol=1e-6)
    again = mixing(clips, labels, seed=[3, 4])[0].numpy()
    np.testing.assert_array_equal(again, mixed)  # stateless: the seed decides


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_the_mixing_weight_is_beta_distributed(alpha):
    draws = np.array([float(beta_sample(alpha, tf.constant([i, 7], tf.int64))) for i in range(1500)])
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)); 1500 draws: the mean's sd is about 0.01.
    assert abs(draws.mean() - 0.5) < 0.04
    assert abs(draws.var() - 1 / (4 * (2 * alpha + 1))) < 0.02
    assert draws.min() >= 0.0 and draws.max() <= 1.0


def test_cutmix_pastes_one_box_through_every_frame_and_mixes_labels_by_its_area():
    clips, labels = _batch(size=4, frames=5, height=16, width=20, classes=4)
    mixing = LabelMixing(4, cutmix=1.0)
    seen_boxes = 0
    for seed in range(20):
        mixed, targets = (t.numpy() for t in mixing(clips, labels, seed=[seed, 1]))
        pasted = np.all(mixed == clips[::-1], axis=-1) & ~np.all(mixed == clips, axis=-1)
        kept = np.all(mixed == clips, axis=-1)
        assert (pasted | kept).all()  # every pixel is one clip's or the other's, not a blend
        box = pasted[0, 0]
        assert (pasted == box[None, None]).all()  # the same box in every frame of every clip
        if box.any():
            seen_boxes += 1
            rows, cols = np.nonzero(box)
            assert box[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # a rectangle
        area = box.mean()
        np.testing.assert_allclose(_lam_of(targets, labels), 1 - area, atol=1e-6)
        np.testing.assert_allclose(targets[np.arange(4), labels[::-1]], area, atol=1e-6)
    assert seen_boxes >= 15


def test_mixup_and_cutmix_each_take_about_half_of_the_batches():
    clips, labels = _batch(size=4, classes=4)
    mixing = LabelMixing(4, mixup=1.0, cutmix=1.0)
    kinds = []
    for seed in range(40):
        mixed = mixing(clips, labels, seed=[seed, 9])[0].numpy()
        kinds.append("cutmix" if (np.all(mixed == clips, axis=-1)).any() else "mixup")
    assert 10 <= kinds.count("cutmix") <= 30, kinds


def test_bad_values_are_refused_by_name():
    with pytest.raises(ValueError, match="label_smoothing"):
        LabelMixing(4, label_smoothing=1.0)
    with pytest.raises(ValueError, match="mixup"):
        LabelMixing(4, mixup=-0.5)
    with pytest.raises(ValueError, match="--label-smoothing"):
        TrainConfig(data="x", label_smoothing=-0.1)
    with pytest.raises(ValueError, match="--cutmix"):
        TrainConfig(data="x", cutmix=-1)
    assert not TrainConfig(data="x").label_mixing(4).active  # off by default: the paper's recipe


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixing") / "syn"
    return make_synthetic_dataset(str(root), classes=4, videos_per_class=8, frames=(12, 16), size=(48, 32), seed=0)


def test_the_pipeline_mixes_real_clips_with_graph_ops_only(tiny_data):
    dataset = load_dataset(tiny_data, "train")
    config = ClipConfig(clip_len=4, resize=(32, 48), crop=32, flip=False)
    plain = train_dataset(dataset, 4, config, seed=1, shuffle=False)
    mixing = LabelMixing(dataset.num_classes, label_smoothing=0.1, mixup=0.3, cutmix=1.0)
    mixed = mix_batches(plain, mixing, seed=5)
    assert python_ops(mix_batches(tf.data.Dataset.from_tensor_slices(
        (np.zeros((4, 2, 8, 8, 3), "float32"), np.arange(4))).batch(2), mixing, seed=5)) == []
    for (clips, labels), (mixed_clips, targets) in zip(plain, mixed):  # no shuffle: the same videos in order
        assert mixed_clips.shape == clips.shape and targets.shape == (clips.shape[0], dataset.num_classes)
        targets, labels = targets.numpy(), labels.numpy()
        np.testing.assert_allclose(targets.sum(1), 1.0, atol=1e-5)
        floor = 0.1 / dataset.num_classes
        assert (targets >= floor - 1e-6).all()  # smoothed: no class at 0
        for row, label, pair in zip(targets, labels, labels[::-1]):  # the weight above the floor: the pair's labels
            assert set(np.nonzero(row > floor + 1e-6)[0]) <= {label, pair}
    val = one_hot_batches(plain, dataset.num_classes)
    labels = np.concatenate([b[1].numpy() for b in plain])
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in val]).argmax(1), labels)


def test_a_run_on_soft_targets_trains_records_and_reloads(tiny_data, tmp_path):
    """`train(mixup=..., cutmix=..., label_smoothing=...)`: categorical loss on one-hot targets (validation's
    too), run.json records the settings, Video@1 is computed as always, and the model reloads with plain Keras."""
    import keras

    config = TrainConfig(data=tiny_data, out=str(tmp_path / "run"), arch="r2plus1d", depth=10, frames=4, size=32,
                         batch_size=4, epochs=1, width_multiplier=0.125, test_clips=2, flip=False, tensorboard=False,
                         label_smoothing=0.1, mixup=0.2, cutmix=1.0)
    result = train(config)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (record["config"]["label_smoothing"], record["config"]["mixup"], record["config"]["cutmix"]) == (
        0.1, 0.2, 1.0)
    assert result["model"].loss == "categorical_crossentropy"
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    header, row = history[0].split(","), history[1].split(",")
    values = dict(zip(header, row))
    assert np.isfinite(float(values["loss"])) and np.isfinite(float(values["val_loss"]))
    assert 0.0 <= float(values["val_video_accuracy"]) <= 1.0
    assert result["report"]["videos"] == 8
    model = keras.saving.load_model(str(tmp_path / "run" / "model.keras"))
    assert model.output_shape[-1] == 4
