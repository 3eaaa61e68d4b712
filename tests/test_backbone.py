"""The core after keras-hub: `VideoResNetBackbone` (the stage tables as arguments, stage outputs), the tasks on it
(`VideoClassifier`, `VideoFeatureExtractor`), the builders that make them, and 0.1.0's plain functional models
read back as tasks (`models.legacy`)."""

import os

import keras
import numpy as np
import pytest

import keras_r21d
from keras_r21d.export.graph import feature_model, pooling_layer_name
from keras_r21d.models.backbone import VideoResNetBackbone
from keras_r21d.models.classifier import VideoClassifier, VideoFeatureExtractor
from keras_r21d.models.legacy import as_task, upgrade
from keras_r21d.models.network import backbone_arguments, backbone_of, stage_layer_names
from keras_r21d.models.specs import VARIANTS
from tests.test_case import random_clip, with_batchnorm_statistics

OLD = os.path.join(os.path.dirname(__file__), "data", "v0_1_0", "models")
CLIPS = (2, 4, 32, 32, 3)
SMALL = dict(stem_filters=8, stem_midplanes=6, stage_filters=(8, 16, 32, 64), stage_blocks=(1, 2, 1, 1))


def test_the_backbone_config_is_its_arguments():
    arguments = dict(stem_type="3d", stage_conv_types=("3d", "2d", "2plus1d", "2d"), block_type="bottleneck",
                     midplanes="torchvision", bn_epsilon=1e-5, implementation="conv2d",
                     kernel_regularizer=keras.regularizers.L2(1e-4), clip_shape=(4, None, None, 3), **SMALL)
    backbone = VideoResNetBackbone(**arguments, name="b")
    config = backbone.get_config()
    assert config == {
        "name": "b", "trainable": True, "stem_type": "3d", "stage_conv_types": ["3d", "2d", "2plus1d", "2d"],
        "stage_blocks": [1, 2, 1, 1], "stage_filters": [8, 16, 32, 64], "block_type": "bottleneck",
        "stem_filters": 8, "stem_midplanes": 6, "midplanes": "torchvision", "bn_epsilon": 1e-5,
        "implementation": "conv2d", "kernel_regularizer": keras.regularizers.serialize(arguments["kernel_regularizer"]),
        "clip_shape": [4, None, None, 3], "dtype": "float32", "frozen_layers": [],
    }
    again = VideoResNetBackbone.from_config(config)
    assert again.get_config() == config
    again.set_weights(backbone.get_weights())
    clips = random_clip(CLIPS)
    np.testing.assert_allclose(np.asarray(again(clips)), np.asarray(backbone(clips)), atol=1e-6)
    # The blocks are the tables: conv type, width (bottleneck: 4x out), count per stage.
    kinds = [(layer.conv_type, layer.filters, layer.out_channels) for layer in backbone.layers
             if layer.name.endswith("_block1")]
    assert kinds == [("3d", 8, 32), ("2d", 16, 64), ("2plus1d", 32, 128), ("2d", 64, 256)]
    assert backbone.stage_layer_names["conv3"] == ("conv3_block1", "conv3_block2")


def test_stage_outputs_are_each_stages_output():
    backbone = VideoResNetBackbone("2plus1d", ("2plus1d",) * 4, clip_shape=(8, 64, 64, 3), **SMALL)
    shapes = {stage: tuple(tensor.shape) for stage, tensor in backbone.stage_outputs.items()}
    # conv1: spatial stride 2; conv3..conv5 stride 2 in time and space (Table 1).
    assert shapes == {"conv1": (None, 8, 32, 32, 8), "conv2": (None, 8, 32, 32, 8), "conv3": (None, 4, 16, 16, 16),
                      "conv4": (None, 2, 8, 8, 32), "conv5": (None, 1, 4, 4, 64)}
    assert backbone.stage_outputs["conv5"] is backbone.output
    clips = random_clip((1, 8, 64, 64, 3))
    stages = keras.Model(backbone.input, backbone.stage_outputs)(clips)
    conv3 = keras.Model(backbone.input, backbone.get_layer("conv3_block2").output)(clips)
    np.testing.assert_allclose(np.asarray(stages["conv3"]), np.asarray(conv3), atol=1e-6)


@pytest.mark.parametrize("args, message", [
    (dict(stem_type="4d"), "stem_type"),
    (dict(stage_conv_types=("3d",) * 3), "stage_conv_types"),
    (dict(stage_blocks=(1, 0, 1, 1)), "stage_blocks"),
    (dict(stage_filters=(8, 16, 32, 64.0)), "stage_filters"),
    (dict(stem_midplanes=0), "`stem_midplanes` must be a positive integer"),
    (dict(block_type="wide"), "block_type"),
    (dict(midplanes="vmz"), "midplanes"),
    (dict(stem_type="clip", clip_shape=(None, 32, 32, 3)), "clip length"),
    (dict(clip_shape=(4, 32, 32)), "input_shape"),
])
def test_bad_backbone_arguments_are_named(args, message):
    with pytest.raises(ValueError, match=message):
        VideoResNetBackbone(**{**SMALL, **args})


def test_the_builders_return_the_tasks_with_the_layer_names_of_0_1_0():
    model = keras_r21d.R2Plus1D(10, input_shape=(4, 32, 32, 3), classes=5, width_multiplier=0.0625)
    assert isinstance(model, VideoClassifier) and isinstance(model.backbone, VideoResNetBackbone)
    assert model.name == "r2plus1d_10" and model.backbone.name == "r2plus1d_10_backbone"
    old = keras.models.load_model(os.path.join(OLD, "r2plus1d.keras"), safe_mode=True)
    assert [layer.name for layer in model.layers] == [layer.name for layer in old.layers]
    # The head sits on the backbone's graph: one set of layers and weights.
    assert model.get_layer("conv3_block1") is model.backbone.get_layer("conv3_block1")
    assert len(model.weights) == len(model.backbone.weights) + 2
    assert backbone_of(model) is model.backbone
    features = keras_r21d.R3D(10, include_top=False, pooling="max", input_shape=(4, 32, 32, 3),
                              width_multiplier=0.125)
    assert isinstance(features, VideoFeatureExtractor) and features.output_shape == (None, 64)
    bare = keras_r21d.MC3(10, include_top=False, input_shape=(4, 32, 32, 3), width_multiplier=0.125)
    # MC3's 2D stages conv3..conv5 stride only in space: time stays 4.
    assert isinstance(bare, VideoResNetBackbone) and bare.name == "mc3_10" and bare.output_shape == (None, 4, 2, 2, 64)
    # The applications' argument is the backbone's arguments: Table 1 and the width.
    assert backbone_arguments(50, *VARIANTS["r2plus1d"][1:], width_multiplier=0.5) == dict(
        stem_type="2plus1d", stage_conv_types=("2plus1d",) * 4, stage_blocks=(3, 4, 6, 3),
        stage_filters=(32, 64, 128, 256), block_type="bottleneck", stem_filters=32, stem_midplanes=22,
        midplanes="paper", bn_epsilon=1e-3)


def test_a_task_file_loads_as_its_class_with_its_outputs_and_frozen_stages(tmp_path):
    model = with_batchnorm_statistics(
        keras_r21d.RMC3(10, input_shape=(None, None, None, 3), classes=4, width_multiplier=0.125, dropout=0.3),
        np.random.default_rng(1))
    for name in ("conv1_conv", "conv2_block1", "predictions"):
        model.get_layer(name).trainable = False
    path = str(tmp_path / "rmc3.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert type(loaded) is VideoClassifier and type(loaded.backbone) is VideoResNetBackbone
    assert loaded.get_config() == model.get_config() and loaded.dropout == 0.3
    assert [layer.name for layer in loaded.layers if not layer.trainable] == ["conv1_conv", "conv2_block1",
                                                                              "predictions"]
    clips = random_clip((2, 6, 40, 40, 3))
    np.testing.assert_allclose(np.asarray(loaded(clips, training=False)), np.asarray(model(clips, training=False)),
                               atol=1e-6)


def test_a_mixed_precision_network_by_argument_leaves_the_global_policy_alone(tmp_path):
    before = keras.config.dtype_policy().name
    model = keras_r21d.R3D(10, input_shape=(4, 32, 32, 3), classes=3, width_multiplier=0.125, dtype="mixed_bfloat16")
    assert keras.config.dtype_policy().name == before == "float32"
    assert model.get_layer("conv2_block1").dtype_policy.name == "mixed_bfloat16"
    assert model.get_layer("predictions").dtype_policy.name == "float32"  # the softmax and loss in float32
    assert model.backbone.get_config()["dtype"] == "mixed_bfloat16"
    assert keras.ops.convert_to_numpy(model(random_clip(CLIPS))).dtype == np.float32
    # Built under a global mixed policy (as train() does), the network records it and reloads mixed.
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        under_global = keras_r21d.MC3(10, input_shape=(4, 32, 32, 3), classes=3, width_multiplier=0.125)
    finally:
        keras.config.set_dtype_policy("float32")
    under_global.save(str(tmp_path / "mixed.keras"))
    loaded = keras.models.load_model(str(tmp_path / "mixed.keras"), safe_mode=True)
    assert loaded.get_layer("conv2_block1").dtype_policy.name == "mixed_bfloat16"
    assert loaded.get_layer("predictions").dtype_policy.name == "float32"


@pytest.mark.parametrize("name", sorted(n[:-6] for n in os.listdir(OLD) if n.endswith(".keras")))
def test_0_1_0_models_read_as_tasks_give_their_recorded_outputs(name, tmp_path):
    recorded = np.load(os.path.join(OLD, "outputs.npz"))
    old = keras.models.load_model(os.path.join(OLD, f"{name}.keras"), safe_mode=True)
    assert type(old) is keras.Model or type(old).__name__ == "Functional"  # as 0.1.0 wrote it
    task = upgrade(old)
    assert isinstance(task, VideoClassifier) and task.name == old.name
    assert [layer.name for layer in task.layers] == [layer.name for layer in old.layers]
    # 1e-5: recorded on another CPU, whose kernels sum in another order (tests/test_compat.py).
    np.testing.assert_allclose(np.asarray(task(recorded["clips"], training=False)), recorded[name], atol=1e-5)
    task.save(str(tmp_path / "task.keras"))
    again = keras.models.load_model(str(tmp_path / "task.keras"), safe_mode=True)
    np.testing.assert_allclose(np.asarray(again(recorded["clips"], training=False)), recorded[name], atol=1e-5)
    assert as_task(again) is again


def test_0_1_0_weights_files_load_into_the_builders_models(tmp_path):
    """A `.weights.h5` of a plain functional model (as 0.1.0 and its preset cache wrote them) loads into the
    builder's VideoClassifier, the layer paths being the same."""
    recorded = np.load(os.path.join(OLD, "outputs.npz"))
    old = keras.models.load_model(os.path.join(OLD, "mc3.keras"), safe_mode=True)
    old.save_weights(str(tmp_path / "mc3.weights.h5"))
    model = keras_r21d.MC3(10, input_shape=(None, None, None, 3), classes=5, width_multiplier=0.0625,
                           weights=str(tmp_path / "mc3.weights.h5"))
    np.testing.assert_allclose(np.asarray(model(recorded["clips"], training=False)), recorded["mc3"], atol=1e-5)


def test_stages_are_the_backbones_for_every_model_of_the_family():
    old = keras.models.load_model(os.path.join(OLD, "r2plus1d_50.keras"), safe_mode=True)
    stages = stage_layer_names(old)
    assert stages["conv4"] == tuple(f"conv4_block{i}" for i in range(1, 7)) and stages["head"] == ("avg_pool",
                                                                                                      "predictions")
    bare = keras_r21d.FR2D(10, include_top=False, input_shape=(4, 32, 32, 3), width_multiplier=0.125)
    assert stage_layer_names(bare)["head"] == () and stage_layer_names(bare)["conv1"] == ("conv1_conv", "conv1_bn",
                                                                                          "conv1_relu")


def test_a_model_not_of_the_family_is_refused_by_name():
    inputs = keras.Input((4, 32, 32, 3))
    other = keras.Model(inputs, keras.layers.Dense(2, name="predictions")(keras.layers.GlobalAveragePooling3D()(
        keras.layers.Conv3D(4, 3, name="conv1_conv")(inputs))), name="someone_elses")
    with pytest.raises(ValueError, match="'someone_elses' is not a network keras_r21d built"):
        as_task(other)
    with pytest.raises(ValueError, match="someone_elses"):
        feature_model(other)


def test_features_of_a_folded_copy_are_the_tasks():
    model = with_batchnorm_statistics(
        keras_r21d.R2Plus1D(10, input_shape=(4, 32, 32, 3), classes=3, width_multiplier=0.125),
        np.random.default_rng(2))
    folded = keras_r21d.fold_batchnorm(model)
    assert type(folded) is not VideoClassifier  # a plain graph: BatchNorms folded away
    clips = random_clip(CLIPS)
    expected = np.asarray(feature_model(model)(clips, training=False))
    assert expected.shape == (2, 64)
    np.testing.assert_allclose(np.asarray(feature_model(folded, pooling_layer_name(model))(clips)), expected,
                               atol=1e-4)
    old = keras.models.load_model(os.path.join(OLD, "r3d.keras"), safe_mode=True)  # 0.1.0's, read by models.legacy
    assert pooling_layer_name(old) == "avg_pool" and feature_model(old).output_shape == (None, 32)


def test_a_task_file_loads_with_plain_keras_after_import_keras_r21d(tmp_path):
    """`import keras_r21d` registers the backbone and task classes (keras_r21d.saving): a fresh process loads
    the file with plain Keras, safe mode on."""
    import subprocess
    import sys

    path = str(tmp_path / "features.keras")
    keras_r21d.R2Plus1D(10, include_top=False, pooling="avg", input_shape=(4, 32, 32, 3),
                        width_multiplier=0.125).save(path)
    script = ("import sys, keras, keras_r21d\nm = keras.models.load_model(sys.argv[1], safe_mode=True)\n"
              "print(type(m).__name__, type(m.backbone).__name__, m.output_shape)\n")
    result = subprocess.run([sys.executable, "-c", script, path], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.stdout.strip() == "VideoFeatureExtractor VideoResNetBackbone (None, 64)", result.stderr[-2000:]


def test_a_0_1_0_model_file_gives_its_features_through_the_predictor(tmp_path):
    """`extract` on a 0.1.0 file: the predictor folds the model and pools where the task pools (found by
    models.legacy without building the task); a backbone without pooling says so, naming the file."""
    from keras_r21d.inference import KerasPredictor
    from tests.videos import moving_frames, write_opencv

    video = str(tmp_path / "v.avi")
    write_opencv(video, moving_frames(12, 40, 40))
    path = os.path.join(OLD, "mc3.keras")
    predictor = KerasPredictor(path, clips=2, frames=4, size=32)
    features = predictor.clip_features(video)
    clips = predictor._clips(video)
    expected = feature_model(keras.models.load_model(path, safe_mode=True))(clips, training=False)
    assert features.shape == (2, 32)
    np.testing.assert_allclose(features, np.asarray(expected), atol=1e-4)
    bare = str(tmp_path / "bare.keras")
    keras_r21d.R3D(10, include_top=False, input_shape=(4, 32, 32, 3), width_multiplier=0.125).save(bare)
    with pytest.raises(ValueError, match=f"{bare}: .*conv5 feature maps"):
        KerasPredictor(bare, clips=2).clip_features(video)
