import json

import keras
import numpy as np
import pytest
from test_case import random_clip, run_model_test

import keras_r21d
from keras_r21d.models.specs import DEPTHS, VARIANTS
from keras_r21d.models.video_resnet import BUILDERS

# Paper Table 2 / VMZ's table of released models (tutorials/models.md), 18 layers,
# 400 classes: parameters in millions (0.1M rounding) and GFLOPs (multiply-adds)
# at 8x112x112 and 16x112x112.
PAPER_TABLE2 = {
    "r2d": (11.4, 1.9, 2.2),
    "fr2d": (11.4, 13.8, 27.6),
    "r3d": (33.4, 20.3, 40.7),
    "mc2": (11.4, 14.3, 28.5),
    "mc3": (11.7, 21.7, 43.3),
    "mc4": (12.7, 20.0, 40.0),
    "mc5": (16.8, 20.0, 39.9),
    "rmc2": (33.3, 19.9, 39.8),
    "rmc3": (33.0, 12.5, 25.0),
    "rmc4": (32.0, 14.5, 29.1),
    "rmc5": (27.9, 15.4, 30.8),
    "r2plus1d": (33.3, 20.7, 41.5),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_table2_params_and_flops(variant):
    params_m, gflops8, gflops16 = PAPER_TABLE2[variant]
    model = BUILDERS[variant](18, input_shape=(8, 112, 112, 3), classes=400)
    stats = keras_r21d.model_stats(model)
    assert round(stats["paper_params"] / 1e6, 1) == params_m
    assert abs(stats["gflops"] - gflops8) / gflops8 <= 0.02
    if variant == "r2d":  # R2D's stem spans the clip: a 16-frame R2D is another network.
        model16 = BUILDERS[variant](18, input_shape=(16, 112, 112, 3), classes=400)
        stats16 = keras_r21d.model_stats(model16)
        assert round(stats16["paper_params"] / 1e6, 1) == 11.5
    else:
        stats16 = keras_r21d.model_stats(model, input_shape=(16, 112, 112, 3))
    assert abs(stats16["gflops"] - gflops16) / gflops16 <= 0.02


def test_calibration_points_exact():
    assert keras_r21d.model_stats(keras_r21d.R3D(18, input_shape=(8, 112, 112, 3)))["paper_params"] == 33_361_472
    assert keras_r21d.model_stats(keras_r21d.R2Plus1D(18))["paper_params"] == 33_344_279


@pytest.mark.parametrize(
    "builder,trainable",
    [(keras_r21d.R2Plus1D, 31_505_325), (keras_r21d.R3D, 33_371_472), (keras_r21d.MC3, 11_695_440)],
)
def test_torchvision_reading_matches_torchvision_parameter_count(builder, trainable):
    """torchvision's r2plus1d_18 / r3d_18 / mc3_18 have these trainable parameter counts."""
    model = builder(18, midplanes="torchvision")
    assert keras_r21d.model_stats(model)["trainable_params"] == trainable
    epsilons = {layer.epsilon for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)}
    assert epsilons == {1e-5}


def _all_layers(layer):
    for sub in getattr(layer, "_layers", []):
        yield sub
        yield from _all_layers(sub)


def _stage_shapes(model):
    names = ["conv1_relu"] + [f"conv{g}_block1" for g in range(2, 6)]
    return [tuple(model.get_layer(n).output.shape[1:]) for n in names]


@pytest.mark.parametrize(
    "variant,expected",
    [
        ("r3d", [(16, 56, 56, 64), (16, 56, 56, 64), (8, 28, 28, 128), (4, 14, 14, 256), (2, 7, 7, 512)]),
        ("r2plus1d", [(16, 56, 56, 64), (16, 56, 56, 64), (8, 28, 28, 128), (4, 14, 14, 256), (2, 7, 7, 512)]),
        ("mc3", [(16, 56, 56, 64), (16, 56, 56, 64), (16, 28, 28, 128), (16, 14, 14, 256), (16, 7, 7, 512)]),
        ("fr2d", [(16, 56, 56, 64), (16, 56, 56, 64), (16, 28, 28, 128), (16, 14, 14, 256), (16, 7, 7, 512)]),
        ("r2d", [(1, 56, 56, 64), (1, 56, 56, 64), (1, 28, 28, 128), (1, 14, 14, 256), (1, 7, 7, 512)]),
        ("rmc3", [(16, 56, 56, 64), (16, 56, 56, 64), (8, 28, 28, 128), (4, 14, 14, 256), (2, 7, 7, 512)]),
        ("rmc5", [(16, 56, 56, 64), (16, 56, 56, 64), (16, 28, 28, 128), (16, 14, 14, 256), (8, 7, 7, 512)]),
        ("mc5", [(16, 56, 56, 64), (16, 56, 56, 64), (8, 28, 28, 128), (4, 14, 14, 256), (4, 7, 7, 512)]),
    ],
)
def test_stage_output_shapes(variant, expected):
    model = BUILDERS[variant](18, input_shape=(16, 112, 112, 3))
    assert _stage_shapes(model) == expected
    assert tuple(model.get_layer(f"conv5_block{DEPTHS[18][1][3]}").output.shape[1:]) == expected[-1]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_trains_and_round_trips(variant, tmp_path):
    model = BUILDERS[variant](10, input_shape=(8, 32, 32, 3), classes=5, width_multiplier=0.25)
    assert model.output_shape == (None, 5)
    loaded = run_model_test(model, (8, 32, 32, 3), tmp_path)
    assert json.dumps(loaded.get_config(), sort_keys=True) == json.dumps(model.get_config(), sort_keys=True)


# Paper Table 1 (and VMZ's model_builder): residual blocks per group conv2..conv5 and the block kind.
# Depth counts weight layers: conv1, two convolutions per basic block or three per bottleneck, the classifier.
PAPER_TABLE1 = {
    10: ("basic", (1, 1, 1, 1)), 16: ("basic", (2, 2, 2, 1)), 18: ("basic", (2, 2, 2, 2)),
    26: ("basic", (2, 3, 4, 3)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)), 152: ("bottleneck", (3, 8, 36, 3)),
}


def test_depth_tables_are_the_papers():
    assert DEPTHS == PAPER_TABLE1
    for depth, (kind, blocks) in PAPER_TABLE1.items():
        assert 1 + (2 if kind == "basic" else 3) * sum(blocks) + 1 == depth


def _paper_conv_types(variant):
    """conv1..conv5 by the paper (Section 3): MCx is 3D below group x and 2D from it; rMCx the reverse."""
    if variant.startswith("rmc"):
        x = int(variant[3:])
        return ["2d" if group < x else "3d" for group in range(1, 6)]
    if variant.startswith("mc"):
        x = int(variant[2:])
        return ["3d" if group < x else "2d" for group in range(1, 6)]
    return {"r2d": ["clip"] + ["2d"] * 4, "fr2d": ["2d"] * 5, "r3d": ["3d"] * 5,
            "r2plus1d": ["2plus1d"] * 5}[variant]


def _conv_kind(kernels, stem=False):
    """The convolution kind of a stem or block from the shapes of its kernels `(t, h, w, in, out)`."""
    shapes = {tuple(k[:3]) for k in kernels} - {(1, 1, 1)}  # drop 1x1x1 projections and bottleneck reductions
    spatial = (7, 7) if stem else (3, 3)
    if shapes == {(1, *spatial), (3, 1, 1)}:
        return "2plus1d"
    if len(shapes) != 1:
        return f"mixed {sorted(shapes)}"
    t, h, w = shapes.pop()
    if (h, w) != spatial:
        return f"spatial {(h, w)}"
    return {1: "2d", 3: "3d"}.get(t, "clip" if stem else f"t={t}")


@pytest.mark.parametrize("variant,depth", [(v, d) for v in VARIANTS for d in (10, 50)]
                         + [("r2plus1d", d) for d in sorted(PAPER_TABLE1) if d not in (10, 50)])
def test_every_variant_and_depth_has_the_papers_structure(variant, depth):
    """Blocks per group and block kind from Table 1; the conv kind of conv1..conv5 from the variant's definition,
    read from the kernel shapes. Every variant at a basic and a bottleneck depth, every depth for R(2+1)D."""
    model = BUILDERS[variant](depth, input_shape=(8, 32, 32, 3), classes=3, width_multiplier=0.125)
    y = np.asarray(model(random_clip((1, 8, 32, 32, 3))))
    assert y.shape == (1, 3)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-5)
    kind, blocks = PAPER_TABLE1[depth]
    expected_class = keras_r21d.layers.BasicBlock if kind == "basic" else keras_r21d.layers.BottleneckBlock
    stem = [w.shape for w in model.weights if w.path.startswith("conv1") and w.path.endswith("kernel")]
    kinds = [_conv_kind(stem, stem=True)]
    for group, count in enumerate(blocks, start=2):
        found = [layer for layer in model.layers if layer.name.startswith(f"conv{group}_block")]
        assert [layer.name for layer in found] == [f"conv{group}_block{i}" for i in range(1, count + 1)]
        assert all(type(layer) is expected_class for layer in found)
        group_kinds = {_conv_kind([w.shape for w in layer.weights if w.path.endswith("kernel")]) for layer in found}
        assert len(group_kinds) == 1, group_kinds
        kinds.append(group_kinds.pop())
    assert kinds == _paper_conv_types(variant)


@pytest.mark.parametrize("builder", [keras_r21d.R2Plus1D, keras_r21d.MC3])
def test_bottleneck_trains_and_round_trips(builder, tmp_path):
    model = builder(50, input_shape=(4, 32, 32, 3), classes=3, width_multiplier=0.125)
    run_model_test(model, (4, 32, 32, 3), tmp_path)


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "r2d"])
def test_variable_clip_length_and_size(variant):
    model = BUILDERS[variant](10, input_shape=(None, None, None, 3), classes=4, width_multiplier=0.125)
    for shape in [(1, 4, 32, 32, 3), (2, 9, 40, 24, 3)]:
        assert model(random_clip(shape)).shape == (shape[0], 4)


def test_r2d_needs_a_fixed_clip_length():
    with pytest.raises(ValueError, match="R2D"):
        keras_r21d.R2D(18, input_shape=(None, 112, 112, 3))
    model = keras_r21d.R2D(10, input_shape=(6, None, None, 3), classes=2, width_multiplier=0.125)
    assert model(random_clip((1, 6, 48, 40, 3))).shape == (1, 2)


@pytest.mark.parametrize("pooling,shape", [(None, (None, 2, 7, 7, 64)), ("avg", (None, 64)), ("max", (None, 64))])
def test_feature_extractor(pooling, shape):
    model = keras_r21d.R3D(10, include_top=False, pooling=pooling, input_shape=(16, 112, 112, 3),
                           width_multiplier=0.125)
    assert model.output_shape == shape


def test_input_tensor():
    inputs = keras.Input((8, 32, 32, 3))
    model = keras_r21d.MC3(10, input_tensor=inputs, classes=2, width_multiplier=0.125)
    assert model.inputs[0] is inputs


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"depth": 19}, "depth=19"),
        ({"weights": "imagenet"}, "weights file not found: imagenet"),
        ({"pooling": "sum", "include_top": False}, "pooling='sum'"),
        ({"input_shape": (16, 112, 112, 1)}, "input_shape=.16, 112, 112, 1."),
        ({"classes": 0}, "classes=0"),
        ({"midplanes": "caffe2"}, "midplanes='caffe2'"),
        ({"width_multiplier": 0}, "width_multiplier=0"),
    ],
)
def test_builder_errors_echo_the_bad_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_r21d.R2Plus1D(**kwargs)


def test_logits_and_classifier_activation():
    model = keras_r21d.R2Plus1D(10, classes=3, classifier_activation=None, input_shape=(4, 32, 32, 3),
                                width_multiplier=0.125)
    y = np.asarray(model(random_clip((2, 4, 32, 32, 3))))
    assert not np.allclose(y.sum(-1), 1.0)


def test_layer_names_are_deterministic():
    a = keras_r21d.R2Plus1D(18, input_shape=(8, 112, 112, 3))
    b = keras_r21d.R2Plus1D(18, input_shape=(8, 112, 112, 3))
    assert [w.path for w in a.weights] == [w.path for w in b.weights]
    names = [layer.name for layer in a.layers]
    assert names[:8] == ["clip", "conv1_spatial", "conv1_spatial_bn", "conv1_spatial_relu", "conv1_temporal",
                         "conv1_bn", "conv1_relu", "conv2_block1"]
    assert names[-2:] == ["avg_pool", "predictions"]
    paths = {w.path for w in a.weights}
    assert "conv3_block1/conv3_block1_conv1/conv3_block1_conv1_spatial/kernel" in paths
    assert "conv3_block1/conv3_block1_shortcut_conv/kernel" in paths


def test_registry():
    names = keras_r21d.list_models()
    assert len(names) == len(VARIANTS) * len(DEPTHS)
    for name in ["r2d_18", "fr2d_18", "r3d_18", "mc2_18", "mc5_18", "rmc2_18", "rmc5_18", "r2plus1d_18",
                 "r2plus1d_34", "r3d_152"]:
        assert name in names
    assert keras_r21d.list_models("mc3") == [f"mc3_{d}" for d in sorted(DEPTHS)]
    model = keras_r21d.get_model("mc4_10", classes=7, input_shape=(8, 32, 32, 3), width_multiplier=0.125)
    assert model.name == "mc4_10" and model.output_shape == (None, 7)
    for bad in ["r2plus1d_19", "r4d_18", "r2plus1d"]:
        with pytest.raises(ValueError, match=bad):
            keras_r21d.get_model(bad)


def test_named_builders_are_documented():
    for name in ["R2D", "FR2D", "R3D", "MC2", "MC3", "MC4", "MC5", "RMC2", "RMC3", "RMC4", "RMC5", "R2Plus1D"]:
        builder = getattr(keras_r21d, name)
        assert builder.__name__ == name
        assert "Tran et al." in builder.__doc__


def test_the_fixed_clip_length_rule_lives_in_one_place():
    """Only a stem over the whole clip (R2D's) fixes the clip length; train, fine-tuning, the tuner, the converter
    and the study ask `specs.stem_spans_clip` / `clip_input_shape`."""
    from keras_r21d.models.specs import clip_input_shape, stem_spans_clip

    assert [v for v in VARIANTS if stem_spans_clip(v)] == ["r2d"]
    assert stem_spans_clip(stem_type="clip") and not stem_spans_clip("r2d", stem_type="3d")
    assert clip_input_shape(8, "r2d") == (8, None, None, 3) and clip_input_shape(8, "mc3") == (None, None, None, 3)
    from keras_r21d.training import TrainConfig

    assert TrainConfig(data="x", arch="r2d", frames=6).input_shape() == (6, None, None, 3)
    assert TrainConfig(data="x", arch="r3d", frames=6, stem_type="clip",
                       stage_conv_types=("3d",) * 4).input_shape() == (6, None, None, 3)
    with pytest.raises(ValueError, match="R2D's stem spans the whole clip"):
        keras_r21d.R2D(10, input_shape=(None, 32, 32, 3))
