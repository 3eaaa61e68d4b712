"""The lowerings of full 3D kernels (Conv3D, temporal im2col, shifted 2D taps) and the measured choice of `"auto"`."""

import json

import numpy as np
import pytest
import tensorflow as tf
from test_case import random_clip

import keras_r21d
from keras_r21d.layers import LoweringError, LoweringTable, VideoConv, autotune_lowering, clear_lowering
from keras_r21d.layers.autotune import choose
from keras_r21d.layers.lowering import FULL_LOWERINGS, installed, lowering_scope

IMPLEMENTATION = {"conv3d": "conv3d", "im2col": "conv2d", "shifted": "shifted"}


@pytest.fixture(autouse=True)
def no_table_left():
    """Every test starts and ends without installed choices (the table is process-wide)."""
    clear_lowering()
    yield
    clear_lowering()


def _op_types(layer, shape, training):
    fn = tf.function(lambda x: layer(x, training=training))
    graph = fn.get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph
    return [op.type for op in graph.get_operations()]


@pytest.mark.parametrize("kernel,strides,padding", [((3, 3, 3), (1, 1, 1), None), ((3, 3, 3), (2, 2, 2), None),
                                                    ((3, 7, 7), (1, 2, 2), None), ((2, 3, 3), (2, 1, 2), (1, 0, 1))])
def test_every_lowering_trains_alike(kernel, strides, padding):
    """Outputs and the gradients of input and kernel agree across the lowerings (float32 summation order)."""
    x = tf.constant(random_clip((2, 6, 11, 10, 4)))
    results, weights = {}, None
    for name in FULL_LOWERINGS:
        layer = VideoConv(5, kernel, strides=strides, padding=padding, implementation=IMPLEMENTATION[name],
                          use_bias=True, activation="relu")
        layer.build(x.shape)
        weights = weights or [random_clip(w.shape, seed=i) for i, w in enumerate(layer.get_weights())]
        layer.set_weights(weights)
        assert layer.lowering == name and layer.lowering_for(training=True) == name
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * y)
        results[name] = [y.numpy(), *(g.numpy() for g in tape.gradient(loss, [x, layer.kernel, layer.bias]))]
    for name in ("im2col", "shifted"):
        for got, want in zip(results[name], results["conv3d"]):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4 * max(1.0, float(np.abs(want).max())))


def test_shifted_lowering_has_no_5d_or_concatenated_convolution():
    layer = VideoConv(8, (3, 3, 3))
    layer.build((None, 4, 8, 8, 6))
    assert "Conv3D" in _op_types(layer, (2, 4, 8, 8, 6), False)  # "auto", nothing installed
    shifted = VideoConv(8, (3, 3, 3), implementation="shifted")
    shifted.build((None, 4, 8, 8, 6))
    ops = _op_types(shifted, (2, 4, 8, 8, 6), False)
    # One ConcatV2: the zero frames padding the time axis; im2col would add a second, over the channels.
    assert "Conv3D" not in ops and ops.count("ConcatV2") == 1 and ops.count("Conv2D") == 3


def test_installed_choice_changes_the_graph_not_the_outputs():
    layer = VideoConv(8, (3, 3, 3), strides=(1, 2, 2))
    layer.build((None, 4, 8, 8, 6))
    x = random_clip((2, 4, 8, 8, 6))
    before = np.asarray(layer(x, training=False))
    entry = {"backend": "tensorflow", "dtype": "float32", "input_shape": [4, 8, 8, 6], "kernel": [3, 3, 3],
             "strides": [1, 2, 2], "padding": [1, 1, 1], "filters": 8}
    LoweringTable([{**entry, "mode": "infer", "choice": "shifted"},
                   {**entry, "mode": "train", "choice": "im2col"}]).install()
    assert layer.lowering == "shifted" and layer.lowering_for(training=True) == "im2col"
    infer, train = _op_types(layer, (2, 4, 8, 8, 6), False), _op_types(layer, (2, 4, 8, 8, 6), True)
    assert "Conv3D" not in infer and infer.count("Conv2D") == 3
    assert "Conv3D" not in train and train.count("Conv2D") == 1 and train.count("ConcatV2") == 2
    np.testing.assert_allclose(np.asarray(layer(x, training=False)), before, atol=1e-5)
    # Another shape, another dtype or another backend's entry: not this layer's.
    other = VideoConv(8, (3, 3, 3), strides=(1, 2, 2))
    other.build((None, 4, 8, 10, 6))
    assert other.lowering == "conv3d"
    LoweringTable([{**entry, "input_shape": [4, 8, 10, 6], "backend": "jax", "mode": "infer",
                    "choice": "im2col"}]).install()
    assert other.lowering == "conv3d"
    # Forced implementations ignore the table.
    forced = VideoConv(8, (3, 3, 3), strides=(1, 2, 2), implementation="conv3d")
    forced.build((None, 4, 8, 8, 6))
    assert forced.lowering == "conv3d"
    with lowering_scope():
        clear_lowering()
        assert layer.lowering == "conv3d"
    assert layer.lowering == "shifted"  # the scope put the table back


def test_autotune_lowering_installs_the_fastest_per_shape_and_mode(tmp_path):
    model = keras_r21d.get_model("r3d_10", input_shape=(4, 32, 32, 3), classes=3, width_multiplier=0.125)
    convs = [layer for layer in model._flatten_layers() if isinstance(layer, VideoConv) and layer.full_kernel]
    assert len(convs) == 9  # the stem and 8 3x3x3 convs
    x = random_clip((2, 4, 32, 32, 3))
    before = np.asarray(model(x, training=False))
    lines = []
    table = autotune_lowering(model, batch_size=1, reps=1, log=lines.append)
    # Two stride-1 convs of stage 2 share a shape: 8 distinct shapes, each timed in both modes.
    assert len(table.entries) == 16 and len(lines) == 16
    assert sum(e["layers"] for e in table.entries if e["mode"] == "train") == 9
    # Only the stem reads the network's input: its training pass is timed without the input's gradient.
    assert [e["input_shape"] for e in table.entries if e["mode"] == "train" and not e["input_gradient"]] == [
        [4, 32, 32, 3]]
    for entry in table.entries:
        assert set(entry["ms"]) == set(FULL_LOWERINGS) and min(entry["ms"].values()) > 0
        # The fastest measured, unless it beats Conv3D by less than 5% (then Conv3D, the default, stays).
        ms = entry["ms"]
        fastest = min(ms, key=ms.get)
        assert entry["choice"] == (fastest if ms[fastest] <= 0.95 * ms["conv3d"] else "conv3d"), entry
    choices = table.choices()
    assert installed() == choices
    for layer in convs:
        for training, mode in ((False, "infer"), (True, "train")):
            [entry] = [e for e in table.entries if e["mode"] == mode and tuple(e["input_shape"]) ==
                       tuple(layer._call_shape[1:]) and tuple(e["strides"]) == layer.strides and
                       e["filters"] == layer.filters and tuple(e["kernel"]) == layer.kernel_size]
            assert layer.lowering_for(training) == entry["choice"]
    # The model's graph follows the table: as many Conv3D ops as full kernels whose inference choice is conv3d.
    ops = _op_types(model, (2, 4, 32, 32, 3), False)
    assert ops.count("Conv3D") == sum(layer.lowering == "conv3d" for layer in convs)
    np.testing.assert_allclose(np.asarray(model(x, training=False)), before, atol=1e-5)
    # Saved and read back, the same choices; cleared, every "auto" full kernel is a Conv3D again.
    path = tmp_path / "lowering.json"
    table.save(str(path))
    clear_lowering()
    assert all(layer.lowering == "conv3d" for layer in convs)
    loaded = LoweringTable.load(str(path))
    assert loaded.choices() == choices and loaded.machine_matches()
    assert "| train |" in loaded.summary() and "| infer |" in loaded.summary()
    loaded.install()
    assert installed() == choices
    # R(2+1)D has no full kernel: nothing to measure.
    assert autotune_lowering(keras_r21d.get_model("r2plus1d_10", input_shape=(4, 32, 32, 3), classes=3,
                                                  width_multiplier=0.125), reps=1).entries == []


def test_conv3d_stays_unless_clearly_beaten():
    assert choose({"conv3d": 100.0, "im2col": 96.0, "shifted": 97.0}) == "conv3d"  # within 5%: a tie
    assert choose({"conv3d": 100.0, "im2col": 94.0, "shifted": 97.0}) == "im2col"
    assert choose({"conv3d": 100.0, "im2col": 120.0, "shifted": 90.0}) == "shifted"
    assert choose({"im2col": 3.0, "shifted": 2.0}) == "shifted"  # Conv3D not among the candidates


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a readable lowering table"),
    (json.dumps({"format": "other/2", "entries": []}), "format 'other/2'"),
    (json.dumps({"format": "keras_r21d.lowering_table/1", "entries": [{"mode": "train"}]}), "entry 0 lacks backend"),
    (json.dumps({"format": "keras_r21d.lowering_table/1", "entries": [
        {"backend": "tensorflow", "dtype": "float32", "input_shape": [4, 8, 8, 6], "kernel": [3, 3, 3],
         "strides": [1, 1, 1], "padding": [1, 1, 1], "filters": 8, "mode": "train", "choice": "winograd"}]}),
     "entry 0 chooses 'winograd'"),
])
def test_a_bad_lowering_table_names_the_file_and_entry(tmp_path, content, message):
    path = tmp_path / "lowering.json"
    path.write_text(content)
    with pytest.raises(LoweringError, match=str(path)) as error:
        LoweringTable.load(str(path))
    assert message in str(error.value)


def test_autotune_lowering_rejects_bad_arguments():
    model = keras_r21d.get_model("r3d_10", input_shape=(4, 32, 32, 3), classes=3, width_multiplier=0.125)
    with pytest.raises(ValueError, match="winograd"):
        autotune_lowering(model, lowerings=("conv3d", "winograd"))
    with pytest.raises(ValueError, match="'eval'"):
        autotune_lowering(model, modes=("eval",))
    with pytest.raises(ValueError, match="must be >= 1"):
        autotune_lowering(model, batch_size=0)
    assert installed() == {}


def test_a_runs_table_is_reused_on_the_same_machine_and_remeasured_on_another(tmp_path):
    from keras_r21d.training.train import LOWERING_FILE, _autotune_lowering

    model = keras_r21d.get_model("r3d_10", input_shape=(4, 32, 32, 3), classes=3, width_multiplier=0.125)
    measured = _autotune_lowering(model, str(tmp_path), 1)
    path = tmp_path / LOWERING_FILE
    data = json.loads(path.read_text())
    assert len(data["entries"]) == 16 and installed() == measured.choices()
    # Reused as written, not measured again (every choice set to "shifted" here, and the file left as it is).
    for entry in data["entries"]:
        entry["choice"] = "shifted"
    path.write_text(json.dumps(data))
    clear_lowering()
    _autotune_lowering(model, str(tmp_path), 1)
    assert set(installed().values()) == {"shifted"} and json.loads(path.read_text()) == data
    # Measured on another machine: measured again here and replaced.
    data["machine"]["cpu"] = "another processor"
    path.write_text(json.dumps(data))
    clear_lowering()
    again = _autotune_lowering(model, str(tmp_path), 1)
    assert json.loads(path.read_text())["machine"]["cpu"] != "another processor"
    assert installed() == again.choices()
    assert all(e["choice"] == choose(e["ms"]) for e in again.entries)

    # Damaged: a clear error naming the file, and the file left as it is.
    path.write_text("{truncated")
    with pytest.raises(LoweringError, match=f"{path}: not a readable lowering table.*delete it to measure"):
        _autotune_lowering(model, str(tmp_path), 1)
    assert path.read_text() == "{truncated"


@pytest.mark.parametrize("choice", ["im2col", "shifted"])
def test_mixed_lowerings_retraced_for_any_batch(choice):
    """A `Conv3D` stem, then im2col or shifted 3x3x3 convs, in a function retraced for any batch size (as
    `predict_clips` runs): the graph Grappler rewrites runs, with the default lowering's outputs."""
    model = keras_r21d.get_model("r3d_10", input_shape=(None, None, None, 3), classes=4, width_multiplier=0.125)
    clips = {n: random_clip((n, 4, 32, 32, 3), seed=n) for n in (4, 6)}
    reference = {n: np.asarray(model(x, training=False)) for n, x in clips.items()}
    LoweringTable([{"backend": "tensorflow", "dtype": "float32", "input_shape": [4, 16, 16, 8], "kernel": [3, 3, 3],
                    "strides": [1, 1, 1], "padding": [1, 1, 1], "filters": 8, "mode": "infer",
                    "choice": choice}]).install()
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    for n in (4, 6, 4):
        np.testing.assert_allclose(forward(clips[n]).numpy(), reference[n], atol=1e-5)
