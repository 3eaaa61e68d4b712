"""BatchNorm folding: the folded copy computes the trained network's inference function."""

import keras
import numpy as np
import pytest

import keras_r21d
from keras_r21d.layers import BasicBlock, BottleneckBlock, Conv2Plus1D, VideoConv
from keras_r21d.model_files import load_keras_model

SHAPE = (8, 32, 32, 3)


def _trained_like(model, seed=0):
    """Gives every BatchNorm non-trivial statistics and affine parameters (as training would)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        name = variable.path.rsplit("/", 1)[-1]
        if name == "moving_mean" or name == "beta":
            variable.assign(rng.normal(0, 0.5, variable.shape).astype("float32"))
        elif name == "moving_variance":
            variable.assign(rng.uniform(0.3, 3.0, variable.shape).astype("float32"))
        elif name == "gamma":
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
    return model


def _all_layers(model):
    """Every layer, including the ones inside residual blocks and Conv2Plus1D."""
    return list(model._flatten_layers(include_self=False, recursive=True))


def _logits_model(name, **kwargs):
    kwargs.setdefault("width_multiplier", 0.25)
    model = keras_r21d.get_model(name, classes=7, input_shape=SHAPE, classifier_activation=None, **kwargs)
    return _trained_like(model)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("r2plus1d_10", {}),
        ("r2plus1d_10", {"implementation": "conv3d", "midplanes": "torchvision"}),
        ("r3d_10", {"implementation": "conv2d"}),
        ("r3d_10", {"implementation": "conv3d"}),
        ("mc3_10", {}),
        ("rmc4_10", {}),
        ("r2d_10", {}),
        ("fr2d_10", {}),
        ("r2plus1d_50", {"width_multiplier": 0.125}),
    ],
)
def test_folded_model_matches_inference(name, kwargs):
    model = _logits_model(name, **kwargs)
    clips = np.random.default_rng(1).normal(size=(2, *SHAPE)).astype("float32")
    before = [w.numpy().copy() for w in model.weights]
    expected = model(clips, training=False).numpy()

    folded = keras_r21d.fold_batchnorm(model)

    got = folded(clips).numpy()
    scale = np.abs(expected).max()
    assert scale > 1.0  # the logits are not trivially small, so the tolerance below means something
    np.testing.assert_allclose(got, expected, atol=1e-4 * scale, rtol=1e-4)
    layers = _all_layers(folded)
    assert not [layer.name for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert not [layer.name for layer in layers if isinstance(layer, keras.layers.ReLU)
                and not layer.name.endswith("_out")]  # only the ReLUs after a residual sum stay
    convs = [layer for layer in layers if isinstance(layer, VideoConv)]
    assert convs and all(c.use_bias for c in convs)  # every conv of these networks is followed by a BatchNorm
    # The folded copy has the same interface and layer names; the original is untouched.
    assert [layer.name for layer in folded.layers] == [layer.name for layer in model.layers]
    assert folded.input_shape == model.input_shape and folded.output_shape == model.output_shape
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights))
    np.testing.assert_array_equal(model(clips, training=False).numpy(), expected)


def test_folded_layers_fuse_relu_into_convs():
    model = _logits_model("r2plus1d_10")
    folded = keras_r21d.fold_batchnorm(model)
    block = folded.get_layer("conv2_block1")
    assert isinstance(block, BasicBlock) and not block.batchnorm
    assert block.bn1 is None and block.bn2 is None and block.relu1 is None
    assert isinstance(block.conv1, Conv2Plus1D) and not block.conv1.inner_batchnorm and block.conv1.bn is None
    # conv1: spatial conv + bias + ReLU (the inner BN), temporal conv + bias + ReLU (bn1, relu1);
    # conv2's temporal conv carries bn2 as a bias, the ReLU comes after the residual sum.
    assert block.conv1.spatial.use_bias and block.conv1.spatial.activation is keras.activations.relu
    assert block.conv1.temporal.activation is keras.activations.relu
    assert block.conv2.temporal.use_bias and block.conv2.temporal.activation is keras.activations.linear
    stem = folded.get_layer("conv1_temporal")
    assert stem.use_bias and stem.activation is keras.activations.relu
    assert type(folded.get_layer("conv1_bn")).__name__ == "FoldedAway"


def test_folded_bottleneck_and_shortcut():
    model = _logits_model("r3d_50", width_multiplier=0.125)
    folded = keras_r21d.fold_batchnorm(model)
    block = folded.get_layer("conv3_block1")
    assert isinstance(block, BottleneckBlock) and block.shortcut_bn is None
    assert block.shortcut_conv.use_bias and block.conv3.use_bias
    assert block.conv1.activation is keras.activations.relu and block.conv2.activation is keras.activations.relu
    clips = np.random.default_rng(2).normal(size=(1, *SHAPE)).astype("float32")
    expected = model(clips, training=False).numpy()
    np.testing.assert_allclose(folded(clips).numpy(), expected, atol=1e-4 * np.abs(expected).max())


def test_folded_model_saves_and_loads_in_safe_mode(tmp_path):
    model = _logits_model("mc3_10")
    folded = keras_r21d.fold_batchnorm(model)
    path = str(tmp_path / "folded.keras")
    folded.save(path)
    loaded = load_keras_model(path)
    clips = np.random.default_rng(3).normal(size=(2, *SHAPE)).astype("float32")
    np.testing.assert_allclose(loaded(clips).numpy(), folded(clips).numpy(), atol=1e-5)
    assert not [layer for layer in _all_layers(loaded) if isinstance(layer, keras.layers.BatchNormalization)]


def test_fold_refuses_a_non_functional_model():
    with pytest.raises(ValueError, match="functional keras.Model"):
        keras_r21d.fold_batchnorm(keras.layers.Dense(3))


def _mixed_model(policy="mixed_bfloat16"):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        return _logits_model("r2plus1d_10")
    finally:
        keras.config.set_dtype_policy(previous)


def test_a_mixed_precision_model_keeps_float32_variables_statistics_and_logits():
    model = _mixed_model()
    assert {layer.dtype_policy.name for layer in _all_layers(model)} == {"mixed_bfloat16", "float32"}
    assert model.get_layer("predictions").dtype_policy.name == "float32"  # the classifier (and a softmax) in float32
    assert {v.dtype for v in model.weights} == {"float32"}  # moving statistics included
    clips = np.random.default_rng(1).normal(size=(2, *SHAPE)).astype("float32")
    assert keras.ops.convert_to_numpy(model(clips, training=False)).dtype == np.float32


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_folding_and_as_float32_give_a_mixed_precision_model_its_float32_network(policy):
    """The serving forms (folded, or `as_float32`) compute the float32 network on the same weights."""
    from keras_r21d.models.fold import as_float32

    model = _mixed_model(policy)
    reference = _logits_model("r2plus1d_10")  # float32, same architecture
    reference.set_weights(model.get_weights())
    clips = np.random.default_rng(2).normal(size=(2, *SHAPE)).astype("float32")
    expected = keras.ops.convert_to_numpy(reference(clips, training=False))
    for serving in (keras_r21d.fold_batchnorm(model), as_float32(model)):
        assert {layer.dtype_policy.name for layer in _all_layers(serving)} == {"float32"}
        np.testing.assert_allclose(keras.ops.convert_to_numpy(serving(clips, training=False)), expected,
                                   rtol=1e-4, atol=1e-4)
    # ... while the mixed model itself computes in the low precision: close, not equal.
    low = keras.ops.convert_to_numpy(model(clips, training=False))
    assert 0 < np.abs(low - expected).max() < 0.1 * np.abs(expected).max()
    assert as_float32(reference) is reference
