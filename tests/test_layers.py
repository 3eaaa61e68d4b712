import functools
import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from test_case import random_clip, run_layer_test

from keras_r21d.layers import BasicBlock, BottleneckBlock, Conv2Plus1D, VideoConv, paper_midplanes


def _reference_conv3d(filters, kernel, strides, padding, kernel_value):
    """keras.layers.Conv3D with explicit zero padding: an independent reference."""
    layer = keras.Sequential(
        [
            keras.layers.ZeroPadding3D(padding),
            keras.layers.Conv3D(filters, kernel, strides=strides, padding="valid", use_bias=False),
        ]
    )
    layer.build((None, None, None, None, kernel_value.shape[3]))
    layer.layers[-1].kernel.assign(kernel_value)
    return layer


@pytest.mark.parametrize("implementation", ["auto", "conv2d", "conv3d", "shifted"])
@pytest.mark.parametrize(
    "kernel,strides,padding",
    [
        ((3, 3, 3), (1, 1, 1), None),
        ((3, 3, 3), (2, 2, 2), None),
        ((1, 3, 3), (1, 2, 2), None),
        ((3, 1, 1), (2, 1, 1), None),
        ((1, 1, 1), (2, 2, 2), None),
        ((3, 7, 7), (1, 2, 2), None),
        ((6, 7, 7), (1, 2, 2), (0, 3, 3)),
    ],
)
def test_video_conv_matches_keras_conv3d(kernel, strides, padding, implementation):
    x = random_clip((2, 6, 15, 14, 5))
    layer = VideoConv(7, kernel, strides=strides, padding=padding, implementation=implementation)
    y = np.asarray(layer(x))
    pad = padding or tuple(k // 2 for k in kernel)
    ref = _reference_conv3d(7, kernel, strides, pad, np.asarray(layer.kernel))
    expected = np.asarray(ref(x))
    assert y.shape == expected.shape == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(y, expected, atol=1e-5)


def test_video_conv_lowering_choice():
    assert VideoConv(8, (1, 3, 3)).lowering == "spatial"
    assert VideoConv(8, (3, 1, 1), implementation="conv2d").lowering == "temporal"
    assert VideoConv(8, (3, 1, 1)).lowering_for(training=True) == "temporal"
    assert VideoConv(8, (3, 3, 3)).lowering == "conv3d"
    assert VideoConv(8, (3, 3, 3), implementation="conv2d").lowering == "im2col"
    assert VideoConv(8, (3, 3, 3), implementation="shifted").lowering == "shifted"
    assert VideoConv(8, (1, 3, 3), implementation="shifted").lowering == "spatial"
    assert VideoConv(8, (1, 3, 3), implementation="conv3d").lowering == "conv3d"


def test_video_conv_serialization(tmp_path):
    run_layer_test(
        VideoConv,
        {"filters": 6, "kernel_size": (3, 3, 3), "strides": (2, 2, 2), "implementation": "conv2d", "use_bias": True},
        (2, 4, 8, 8, 3),
        (2, 2, 4, 4, 6),
        tmp_path,
    )


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"filters": 0}, "filters=0"),
        ({"filters": 4, "kernel_size": (3, 3)}, "kernel_size=(3, 3)"),
        ({"filters": 4, "strides": 0}, "strides=0"),
        ({"filters": 4, "implementation": "cuda"}, "implementation='cuda'"),
    ],
)
def test_video_conv_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        VideoConv(**kwargs)


@pytest.mark.parametrize(
    "n_in,n_out,expected",
    [(64, 64, 144), (64, 128, 230), (128, 128, 288), (256, 256, 576), (512, 512, 1152), (128, 256, 460),
     (256, 512, 921)],
)
def test_paper_midplanes(n_in, n_out, expected):
    assert paper_midplanes(n_in, n_out) == expected
    layer = Conv2Plus1D(n_out)
    layer.build((None, None, None, None, n_in))
    assert layer.midplanes_ == expected
    # The factorized conv has (almost) the parameters of the 3D conv.
    params = sum(int(np.prod(w.shape)) for w in layer.weights if w.name == "kernel")
    assert abs(params - 27 * n_in * n_out) / (27 * n_in * n_out) < 0.01


@pytest.mark.parametrize("implementation", ["auto", "conv2d", "conv3d", "shifted"])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv2plus1d_equals_two_conv_reference(stride, implementation):
    """Conv2Plus1D == Conv3D(1x3x3) -> BN -> ReLU -> Conv3D(3x1x1) with the same weights."""
    x = random_clip((2, 8, 16, 12, 16), seed=1)
    layer = Conv2Plus1D(24, strides=stride, implementation=implementation, bn_epsilon=1e-5)
    layer.build(x.shape)
    rng = np.random.default_rng(2)
    bn = layer.bn
    bn.gamma.assign(rng.uniform(0.5, 1.5, bn.gamma.shape))
    bn.beta.assign(rng.normal(size=bn.beta.shape))
    bn.moving_mean.assign(rng.normal(size=bn.moving_mean.shape))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, bn.moving_variance.shape))
    y = np.asarray(layer(x, training=False))

    spatial = _reference_conv3d(layer.midplanes_, (1, 3, 3), (1, stride, stride), (0, 1, 1),
                                np.asarray(layer.spatial.kernel))
    temporal = _reference_conv3d(24, (3, 1, 1), (stride, 1, 1), (1, 0, 0), np.asarray(layer.temporal.kernel))
    ref_bn = keras.layers.BatchNormalization(epsilon=1e-5)
    ref_bn.build((None, None, None, None, layer.midplanes_))
    ref_bn.set_weights(bn.get_weights())
    mid = np.maximum(np.asarray(ref_bn(spatial(x), training=False)), 0)
    expected = np.asarray(temporal(mid))
    assert y.shape == expected.shape == (2, 8 // stride, 16 // stride, 12 // stride, 24)
    assert np.abs(y - expected).max() <= 1e-5


def test_conv2plus1d_serialization(tmp_path):
    layer = run_layer_test(
        Conv2Plus1D,
        {"filters": 8, "kernel_size": 3, "strides": (2, 2, 2), "midplanes": 5, "bn_epsilon": 1e-5},
        (2, 4, 8, 8, 4),
        (2, 2, 4, 4, 8),
        tmp_path,
    )
    assert layer.midplanes_ == 5


def test_conv2plus1d_variable_shapes():
    inputs = keras.Input((None, None, None, 8))
    model = keras.Model(inputs, Conv2Plus1D(16, strides=2)(inputs))
    for shape in [(1, 4, 10, 12, 8), (2, 7, 9, 5, 8)]:
        y = model(random_clip(shape))
        assert y.shape == (shape[0], (shape[1] + 1) // 2, (shape[2] + 1) // 2, (shape[3] + 1) // 2, 16)


@pytest.mark.parametrize("conv_type", ["3d", "2d", "2plus1d"])
@pytest.mark.parametrize("block_cls,filters,out", [(BasicBlock, 8, 8), (BottleneckBlock, 4, 16)])
def test_blocks(block_cls, filters, out, conv_type, tmp_path):
    t_out = 4 if conv_type == "2d" else 2
    block = run_layer_test(
        block_cls,
        {"filters": filters, "conv_type": conv_type, "stride": 2, "bn_epsilon": 1e-5, "midplanes": "torchvision"},
        (2, 4, 8, 8, 6),
        (2, t_out, 4, 4, out),
        tmp_path,
    )
    assert block.shortcut_conv is not None
    assert block.shortcut_conv.strides == ((1 if conv_type == "2d" else 2), 2, 2)


def test_identity_shortcut_when_shape_is_kept():
    block = BasicBlock(6, conv_type="2plus1d")
    block(random_clip((1, 4, 8, 8, 6)))
    assert block.shortcut_conv is None


def test_torchvision_midplanes_is_per_block():
    paper = BasicBlock(128, conv_type="2plus1d", stride=2, midplanes="paper")
    paper.build((None, 8, 56, 56, 64))
    assert (paper.conv1.midplanes_, paper.conv2.midplanes_) == (230, 288)
    tv = BasicBlock(128, conv_type="2plus1d", stride=2, midplanes="torchvision")
    tv.build((None, 8, 56, 56, 64))
    assert (tv.conv1.midplanes_, tv.conv2.midplanes_) == (230, 230)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"conv_type": "4d"}, "conv_type='4d'"),
        ({"stride": 3}, "stride=3"),
        ({"midplanes": "caffe"}, "midplanes='caffe'"),
    ],
)
def test_block_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BasicBlock(8, **kwargs)


def test_every_entry_point_checks_the_lowering_the_same_way():
    import keras_r21d
    from keras_r21d.export.graph import with_implementation

    message = (r"`implementation` must be one of \('auto', 'conv2d', 'conv3d', 'shifted'\). "
               r"Received: implementation='conv4d'")
    model = keras_r21d.R2Plus1D(10, input_shape=(4, 32, 32, 3), classes=3, width_multiplier=0.125)
    for build in (lambda: VideoConv(4, implementation="conv4d"),
                  lambda: Conv2Plus1D(4, implementation="conv4d"),
                  lambda: BasicBlock(4, implementation="conv4d"),
                  lambda: keras_r21d.R3D(10, implementation="conv4d"),
                  lambda: with_implementation(model, "conv4d")):
        with pytest.raises(ValueError, match=message):
            build()


@pytest.mark.parametrize("shape, epsilon, policy", [((2, 3, 6, 5, 4), 1e-3, "float32"),
                                                    ((3, 5, 7, 8), 1e-5, "float32"),
                                                    ((2, 3, 6, 5, 4), 1e-3, "mixed_bfloat16")])
def test_fused_batchnorm_trains_as_keras_batchnorm(shape, epsilon, policy):
    """`keras_r21d.layers.BatchNormalization`'s fused training call against Keras' layer with the same weights: the
    outputs, the gradients of the input, gamma and beta, and the moving averages after two steps (1e-5; the
    bf16 policy's outputs to its precision); inference is Keras' own code."""
    import tensorflow as tf

    from keras_r21d.layers import BatchNormalization as FusedBatchNormalization

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(2.0, 3.0, shape).astype("float32"))
    layers = [cls(epsilon=epsilon, momentum=0.8, dtype=policy)
              for cls in (keras.layers.BatchNormalization, FusedBatchNormalization)]
    for layer in layers:
        layer.build(shape)
        layer.set_weights([rng.normal(1, 0.2, shape[-1]), rng.normal(0, 0.2, shape[-1]),
                           rng.normal(0, 0.1, shape[-1]), rng.uniform(0.5, 2, shape[-1])] if layer is layers[0]
                          else layers[0].get_weights())
    seen = []
    for layer in layers:
        outs = []
        for step in range(2):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x * (step + 1), training=True)
                loss = tf.reduce_sum(tf.cast(y, "float32") * tf.sin(tf.range(tf.size(y), dtype="float32")
                                                                     ).numpy().reshape(shape))
            outs.append([y.numpy().astype("float32"), *[g.numpy() for g in tape.gradient(
                loss, [x, layer.gamma, layer.beta])]])
        seen.append((outs, [w.copy() for w in layer.get_weights()], layer(x, training=False).numpy()))
    (plain, plain_weights, plain_infer), (fused, fused_weights, fused_infer) = seen
    graph = tf.function(lambda x: layers[1](x, training=True)).get_concrete_function(x).graph
    assert "FusedBatchNormV3" in {op.type for op in graph.get_operations()}  # the fused path ran
    tolerance = 1e-2 if policy == "mixed_bfloat16" else 1e-5
    for a_step, b_step in zip(plain, fused):
        for a, b in zip(a_step, b_step):
            np.testing.assert_allclose(b, a, rtol=tolerance, atol=tolerance)
    for a, b in zip(plain_weights, fused_weights):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused_infer.astype("float32"), plain_infer.astype("float32"), rtol=1e-5, atol=1e-5)


def test_fused_batchnorm_config_and_files(tmp_path):
    """Its config is Keras' layer's; a model holding it saves and loads with safe_mode on, the same outputs."""
    from keras_r21d.layers import BatchNormalization as FusedBatchNormalization

    layer = FusedBatchNormalization(epsilon=1e-5, momentum=0.9, name="bn")
    assert layer.get_config() == keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name="bn").get_config()
    inputs = keras.Input((2, 4, 4, 3))
    model = keras.Model(inputs, FusedBatchNormalization(name="bn")(inputs))
    x = random_clip((2, 2, 4, 4, 3))
    model.layers[-1].set_weights([np.full(3, 2.0), np.ones(3), np.full(3, 0.5), np.full(3, 4.0)])
    model.save(tmp_path / "bn.keras")
    loaded = keras.saving.load_model(tmp_path / "bn.keras", safe_mode=True)
    assert type(loaded.layers[-1]) is FusedBatchNormalization
    np.testing.assert_allclose(loaded(x, training=False), model(x, training=False), atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 6, 10, 8, 4), (2, 6, 10, 9, 4)])
def test_strided_pointwise_conv_reads_only_the_pixels_it_uses(shape):
    """A downsampling 1x1x1 shortcut takes its pixels in one slice (1/8 of the clip), then a stride-1 conv: the
    same values and gradients as the 5-D reference. Where every axis divides by its stride the slice has stride 1
    (of the reshaped clip; TensorFlow's strided one was 2.5-4x slower), else it is strided (W = 9 here)."""
    import tensorflow as tf

    layer = VideoConv(6, (1, 1, 1), strides=(2, 2, 2))
    x = random_clip(shape)
    graph = tf.function(lambda x: layer(x)).get_concrete_function(tf.TensorSpec(x.shape, tf.float32)).graph
    slices = [op for op in graph.get_operations() if op.type == "StridedSlice" and op.outputs[0].shape.rank > 1]
    assert [op.outputs[0].shape.num_elements() for op in slices] == [2 * 3 * 5 * -(-shape[3] // 2) * 4]
    steps = set(tf.get_static_value(slices[0].inputs[3]).tolist())
    assert (steps == {1}) == (shape[3] % 2 == 0), steps
    convs = [op for op in graph.get_operations() if op.type == "Conv2D"]
    assert len(convs) == 1 and list(convs[0].get_attr("strides")) == [1, 1, 1, 1]
    reference = _reference_conv3d(6, (1, 1, 1), (2, 2, 2), (0, 0, 0), np.asarray(layer.kernel))
    x = tf.constant(x)
    gradients = []
    for conv in (layer, reference):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = conv(x, training=True)
            loss = tf.reduce_sum(y * tf.cos(y))
        gradients.append((y, tape.gradient(loss, x)))
    for got, expected in zip(*gradients):
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-5)


@pytest.mark.parametrize("implementation", ["conv2d", "conv3d", "shifted"])
@pytest.mark.parametrize("kernel,strides", [((3, 3, 3), (2, 2, 2)), ((1, 3, 3), (1, 2, 2)), ((3, 1, 1), (2, 1, 1)),
                                            ((3, 7, 7), (1, 2, 2))])
def test_padded_strided_conv_trains_as_the_reference(kernel, strides, implementation):
    """A padded strided conv's training call (whose gradient pads the input again on TensorFlow) gives the
    outputs and the input and kernel gradients of Keras' `ZeroPadding3D` + `Conv3D`."""
    import tensorflow as tf

    x = tf.constant(random_clip((2, 6, 11, 10, 4)))
    layer = VideoConv(5, kernel, strides=strides, implementation=implementation)
    layer.build(x.shape)
    reference = _reference_conv3d(5, kernel, strides, tuple(k // 2 for k in kernel), np.asarray(layer.kernel))
    weights = tf.constant(np.random.default_rng(1).normal(size=layer.compute_output_shape(x.shape)), "float32")
    seen = []
    for conv, kernel_variable in ((layer, layer.kernel), (reference, reference.layers[-1].kernel)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = conv(x, training=True)
            loss = tf.reduce_sum(y * weights)
        seen.append([y.numpy(), *[g.numpy() for g in tape.gradient(loss, [x, kernel_variable])]])
    for ours, theirs in zip(*seen):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def _optimized_graph(fn, shape):
    """The nodes of `fn`'s graph on a float32 input of `shape`, after Grappler's optimizations, by name."""
    import tensorflow as tf
    from tensorflow.python.grappler import tf_optimizer

    concrete = tf.function(fn).get_concrete_function(tf.TensorSpec(shape))
    with concrete.graph.as_default():
        meta = tf.compat.v1.train.export_meta_graph(graph_def=concrete.graph.as_graph_def())
    meta.collection_def["train_op"].node_list.value.extend(t.name for t in concrete.outputs)
    return {node.name: node for node in tf_optimizer.OptimizeGraph(tf.compat.v1.ConfigProto(), meta).node}


def _training_gradients(layer):
    import tensorflow as tf

    def gradients(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True) ** 2)
        return tape.gradient(loss, [x, layer.kernel])

    return gradients


@pytest.mark.parametrize("kernel,strides,conv", [((1, 3, 3), (1, 2, 2), "Conv2D"), ((3, 1, 1), (2, 1, 1), "Conv2D"),
                                                 ((3, 3, 3), (2, 2, 2), "Conv3D")])
def test_padded_strided_conv_does_not_keep_its_padded_input(kernel, strides, conv, monkeypatch):
    """Training, a padded strided conv's kernel gradient reads a second `Pad` of the input, made in the backward
    pass, not the forward conv's padded copy (which would stay alive between the two passes: 200-420 MB of an
    R(2+1)D-18 step at batch 8), also after Grappler's optimizations, which merge identical ops; inference keeps
    one `Pad`. (The temporal kernel's gradient as a convolution, as without oneDNN: see the tap test below.)"""
    from keras_r21d.layers import video_conv

    monkeypatch.setattr(video_conv, "TAP_KERNEL_GRADIENT", False)
    layer = VideoConv(5, kernel, strides=strides)
    layer.build((2, 4, 8, 8, 3))
    optimized = functools.partial(_optimized_graph, shape=(2, 4, 8, 8, 3))
    nodes = optimized(_training_gradients(layer))
    source = {name: node.input[0].split(":")[0] for name, node in nodes.items() if node.input}
    (forward,) = [name for name, node in nodes.items() if node.op == conv]
    (kernel_gradient,) = [name for name, node in nodes.items() if node.op.startswith(conv + "BackpropFilter")]
    assert nodes[source[forward]].op == nodes[source[kernel_gradient]].op == "Pad"
    assert source[forward] != source[kernel_gradient]
    inference = optimized(lambda x: layer(x, training=False))
    assert [node.op for node in inference.values()].count("Pad") == 1


def _traced_training_step(conv, kernel_variable, weights):
    """A `tf.function` of `conv`'s training call: its output and the gradients of `sum(y * weights)`."""
    import tensorflow as tf

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = conv(x, training=True)
            loss = tf.reduce_sum(y * weights)
        return [y, *tape.gradient(loss, [x, kernel_variable])]

    return step


@pytest.mark.parametrize("frames,kernel,strides,padding,implementation", [
    (6, (3, 1, 1), (1, 1, 1), None, "auto"), (6, (3, 1, 1), (2, 1, 1), None, "auto"),
    (7, (3, 1, 1), (2, 1, 1), None, "auto"), (6, (3, 1, 1), (1, 2, 2), (1, 0, 0), "auto"),
    (5, (5, 1, 1), (1, 1, 1), (1, 0, 0), "auto"), (4, (3, 1, 1), (1, 1, 1), (0, 0, 0), "auto"),
    (2, (3, 1, 1), (2, 1, 1), None, "auto"),  # one output frame: tap 0 reads only padding, its gradient is zero
    (3, (1, 3, 3), (1, 1, 1), None, "auto"), (3, (1, 3, 3), (1, 2, 2), None, "auto"),
    (4, (1, 7, 7), (1, 2, 2), None, "auto"), (3, (1, 3, 2), (1, 1, 1), (0, 1, 0), "auto"),
    (4, (3, 3, 3), (1, 1, 1), None, "conv2d"), (4, (3, 3, 3), (2, 2, 2), None, "shifted"),
])
def test_tap_kernel_gradient_is_the_convolutions(frames, kernel, strides, padding, implementation, monkeypatch):
    """A 2D convolution's kernel gradient as one MatMul per kernel tap (TensorFlow with oneDNN, whose
    `Conv2DBackpropFilter` is 1.3-8x slower on R(2+1)D's shapes), forced on every lowering, gives the outputs,
    input and kernel gradients of the convolution's own gradient and of Keras' `ZeroPadding3D` + `Conv3D`."""
    import tensorflow as tf

    from keras_r21d.layers import video_conv

    x = tf.constant(random_clip((2, frames, 7, 6, 4)))
    layer = VideoConv(5, kernel, strides=strides, padding=padding, implementation=implementation)
    layer.build(x.shape)
    pad = padding or tuple(k // 2 for k in kernel)
    reference = _reference_conv3d(5, kernel, strides, pad, np.asarray(layer.kernel))
    weights = tf.constant(np.random.default_rng(1).normal(size=layer.compute_output_shape(x.shape)), "float32")
    seen = []
    for conv, kernel_variable, taps in ((layer, layer.kernel, True), (layer, layer.kernel, False),
                                        (reference, reference.layers[-1].kernel, None)):
        monkeypatch.setattr(video_conv, "TAP_KERNEL_GRADIENT", taps)

        seen.append([value.numpy() for value in _traced_training_step(conv, kernel_variable, weights)(x)])
    for taps, convolution, keras_conv3d in zip(*seen):
        np.testing.assert_allclose(taps, convolution, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(taps, keras_conv3d, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel,strides,padding,forward_pad", [((3, 1, 1), (2, 1, 1), None, True),
                                                               ((1, 3, 3), (1, 1, 1), None, False),
                                                               ((3, 1, 1), (1, 1, 1), (0, 0, 0), False)])
def test_tap_kernel_gradient_runs_matmuls_and_keeps_no_padded_copy(kernel, strides, padding, forward_pad,
                                                                   monkeypatch):
    """With the taps, the kernel's gradient is one MatMul per tap and no `Conv2DBackpropFilter`; a padded
    convolution's backward pass pads the input again for its windows instead of keeping a padded copy from the
    forward pass (a stride-1 one pads inside the convolution there), also after Grappler's optimizations."""
    from keras_r21d.layers import video_conv
    from keras_r21d.onednn import onednn_enabled

    monkeypatch.setattr(video_conv, "TAP_KERNEL_GRADIENT", True)
    layer = VideoConv(5, kernel, strides=strides, padding=padding)
    layer.build((2, 4, 8, 8, 3))
    nodes = _optimized_graph(_training_gradients(layer), (2, 4, 8, 8, 3))
    ops = [node.op for node in nodes.values()]
    assert not [op for op in ops if "BackpropFilter" in op], ops
    assert len([op for op in ops if op.endswith("MatMul")]) == kernel[0] * kernel[1] * kernel[2], ops
    readers = {name: {node.op for node in nodes.values() if any(i.split(":")[0] == name for i in node.input)}
               for name, node in nodes.items() if node.op == "Pad"}
    if onednn_enabled():  # oneDNN's remapper may fuse the forward `Pad` into its convolution
        readers = {name: ops for name, ops in readers.items() if ops != {"Conv2D"}}
        forward_pad = False
    expected = [] if padding == (0, 0, 0) else [{"StridedSlice"}] + ([{"Conv2D"}] if forward_pad else [])
    assert sorted(readers.values(), key=sorted) == sorted(expected, key=sorted), readers


_JAX_TAPS_SCRIPT = """
import json, re, sys
import jax, keras, numpy as np
from keras_r21d.layers import VideoConv, video_conv
results = []
for frames, kernel, strides, padding, implementation in json.loads(sys.argv[1]):
    x = np.random.default_rng(0).normal(size=(2, frames, 7, 6, 40)).astype("float32")
    layer = VideoConv(5, tuple(kernel), strides=tuple(strides), padding=padding and tuple(padding),
                      implementation=implementation)
    layer.build(x.shape)
    weights = np.random.default_rng(1).normal(size=layer.compute_output_shape(x.shape)).astype("float32")
    seen, counts = [], []
    for taps in (True, False):
        video_conv.TAP_KERNEL_GRADIENT = taps
        def loss(kernel, x):  # a new function: jax.jit caches traces by function
            y = layer.stateless_call([kernel], [], x, training=True)[0]
            return (y * weights).sum(), y
        step = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
        compiled = jax.jit(step).lower(layer.kernel.value, x).compile()
        (_, y), (dkernel, dx) = compiled(layer.kernel.value, x)
        seen.append([np.asarray(y), np.asarray(dx), np.asarray(dkernel)])
        text = compiled.as_text()  # XLA's program, dead code gone
        counts.append([len(re.findall(r" convolution\\(", text)), len(re.findall(r" dot\\(", text))])
    video_conv.TAP_KERNEL_GRADIENT = None
    diff = max(float(np.abs(a - b).max() / max(1.0, np.abs(b).max())) for a, b in zip(*seen))
    results.append({"diff": diff, "counts": counts, "default": video_conv._tap_kernel_gradient(
        (None, 7, 6, 40), (kernel[1], kernel[2], 40, 5) if kernel[0] == 1 else (kernel[0], 1, 40, 5), strides[1:],
        (1, 1), "float32")})
f = video_conv._tap_kernel_gradient  # XLA's own where the taps are few channels, and in bfloat16
print(json.dumps({"cases": results, "stem": f((2, 112, 112, 3), (7, 7, 3, 45), (2, 2), (3, 3), "float32"),
                  "bfloat16": f((2, 56, 56, 64), (3, 3, 64, 144), (1, 1), (1, 1), "bfloat16")}))
"""


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed (make test installs it)")
def test_tap_kernel_gradient_on_jax_is_the_convolutions():
    """On JAX (whose CPU kernel gradient of a convolution ran R(2+1)D's shapes 1.4-4x slower than the products),
    a 2D convolution's kernel gradient is one `dot_general` per tap by default: the outputs, input and kernel
    gradients of XLA's own convolution gradient (to 1e-5); in XLA's compiled step the kernel gradient's
    convolution is gone and one product per tap is there (the input gradient's convolution stays)."""
    cases = [(6, (3, 1, 1), (1, 1, 1), None, "auto"), (7, (3, 1, 1), (2, 1, 1), None, "auto"),
             (6, (3, 1, 1), (1, 2, 2), (1, 0, 0), "auto"), (4, (3, 1, 1), (1, 1, 1), (0, 0, 0), "auto"),
             (3, (1, 3, 3), (1, 1, 1), None, "auto"), (3, (1, 3, 3), (1, 2, 2), None, "auto"),
             (3, (1, 3, 2), (1, 1, 1), (0, 1, 0), "auto"), (4, (3, 3, 3), (2, 2, 2), None, "shifted")]
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", _JAX_TAPS_SCRIPT, json.dumps(cases)], capture_output=True,
                            text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout.splitlines()[-1])
    assert output["stem"] is False and output["bfloat16"] is False
    for case, found in zip(cases, output["cases"]):
        t, h, w = case[1]
        # The 2D convolutions of the lowering (a full kernel "shifted": one per temporal tap) and their taps.
        convs, taps_each = (t, h * w) if t > 1 and h * w > 1 else (1, t * h * w)
        (tap_convs, tap_dots), (plain_convs, plain_dots) = found["counts"]
        assert found["diff"] <= 1e-5, (case, found)
        assert plain_convs == 3 * convs and tap_convs == 2 * convs, (case, found)  # forward, input, kernel
        assert tap_dots - plain_dots == convs * taps_each, (case, found)
        assert found["default"] is True, (case, found)


def _with_onednn_off_and_on(script):
    """`(TF_ENABLE_ONEDNN_OPTS, the words script printed)` for a Python script run with the variable at 0, then 1."""
    for value in ("0", "1"):
        env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": value, "TF_CPP_MIN_LOG_LEVEL": "3"}
        yield value, subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                                    timeout=300, check=True).stdout.split()


def test_temporal_kernel_infers_as_conv3d_where_tensorflow_runs_onednn():
    """By default an `"auto"` temporal kernel's inference is one `Conv3D` only where TensorFlow runs oneDNN's
    kernels (there it measured faster than the `(t, 1)` `Conv2D`), in float32; its training call, `"conv2d"`
    and bfloat16 stay 2D."""
    script = ("from keras_r21d.layers import VideoConv; from keras_r21d.onednn import onednn_enabled; "
              "a = VideoConv(8, (3, 1, 1)); b = VideoConv(8, (3, 1, 1), implementation='conv2d'); "
              "c = VideoConv(8, (3, 1, 1), strides=(2, 1, 1), dtype='mixed_bfloat16'); "
              "print(onednn_enabled(), a.lowering, a.lowering_for(training=True), b.lowering, c.lowering)")
    for value, out in _with_onednn_off_and_on(script):
        first = "conv3d" if out[0] == "True" else "temporal"
        assert out[1:] == [first, "temporal", "temporal", "temporal"], (value, out)


@pytest.mark.parametrize("strides,padding", [((1, 1, 1), None), ((2, 1, 1), None), ((1, 2, 2), (1, 1, 1))])
def test_temporal_kernel_as_conv3d_is_the_2d_lowering(monkeypatch, strides, padding):
    """Forced on (`TEMPORAL_CONV3D`), an `"auto"` temporal kernel's inference graph is one 5-D `Conv3D` and no
    2D convolution, with the 2D lowering's outputs (to 1e-5); training and `temporal_conv2d()` keep the 2D one."""
    import tensorflow as tf

    from keras_r21d.layers import video_conv

    monkeypatch.setattr(video_conv, "TEMPORAL_CONV3D", True)
    layer = VideoConv(7, (3, 1, 1), strides=strides, padding=padding, use_bias=True, activation="relu")
    x = random_clip((2, 6, 9, 10, 5))
    layer(x)
    layer.bias.assign(np.linspace(-1, 1, 7).astype("float32"))

    def conv_ops(training):
        graph = tf.function(lambda x: layer(x, training=training)).get_concrete_function(
            tf.TensorSpec(x.shape, tf.float32)).graph
        return sorted(op.type for op in graph.get_operations() if op.type.startswith("Conv"))

    assert conv_ops(False) == ["Conv3D"] and conv_ops(True) == ["Conv2D"]
    three_d = np.asarray(layer(x))
    with video_conv.temporal_conv2d():
        assert layer.lowering == "temporal" and conv_ops(False) == ["Conv2D"]
        two_d = np.asarray(layer(x))
    assert layer.lowering == "conv3d"
    reference = _reference_conv3d(7, (3, 1, 1), strides, padding or (1, 0, 0), np.asarray(layer.kernel))
    expected = np.maximum(np.asarray(reference(x)) + np.asarray(layer.bias), 0)
    np.testing.assert_allclose(three_d, two_d, atol=1e-5)
    np.testing.assert_allclose(three_d, expected, atol=1e-5)


_MEASURED_SCRIPT = """
import json
from keras_r21d.layers import kernel_gradient as kg
from keras_r21d.layers.video_conv import _tap_kernel_gradient as f
from keras_r21d.onednn import onednn_enabled
measured = [((8, 14, 14, 64), (3, 3, 64, 32), (1, 1), (1, 1)), ((2, 8, 196, 48), (3, 1, 48, 32), (2, 1), (1, 0)),
            ((None, 9, 9, 40), (3, 3, 40, 24), (2, 2), (0, 0))]
first = [f(*case, "float32") for case in measured]
again = [f(*case, "float32") for case in measured]  # remembered, not measured again
again.append(f((16, 14, 14, 64), (3, 3, 64, 32), (1, 1), (1, 1), "float32"))  # only N differs: the same
never = [f((8, 28, 28, 3), (7, 7, 3, 45), (2, 2), (3, 3), "float32"), f((8, 14, 14, 16), (3, 3, 16, 32), (1, 1),
         (1, 1), "float32"), f((8, 14, 14, 64), (1, 1, 64, 128), (1, 1), (0, 0), "float32"),
         f((8, 14, 14, 64), (3, 3, 64, 32), (1, 1), (1, 1), "bfloat16"),
         f((None, None, None, 64), (3, 3, 64, 32), (1, 1), (1, 1), "float32")]
print(json.dumps({"onednn": onednn_enabled(), "first": first, "again": again, "never": never,
                  "entries": kg.kernel_gradient_choices()}))
"""


def test_tap_kernel_gradient_measured_per_shape_where_tensorflow_runs_onednn():
    """By default the MatMuls per tap run only where TensorFlow runs oneDNN's kernels and they measured faster
    there for the shape (timed once per process, at the traced shape; `UNKNOWN_ROWS` for an unknown batch; a
    shape differing only in its rows reuses it): each 2D kernel over 32 or more channels is measured once, both
    ways timed, the choice `choose`'s of the times; never measured for the stem's 7x7 over 3 channels, fewer
    channels, 1x1 kernels, bfloat16 or frames of unknown size. With Eigen's kernels nothing is measured and the
    framework's own gradient runs."""
    from keras_r21d.layers.kernel_gradient import UNKNOWN_ROWS, choose

    for value, out in _with_onednn_off_and_on(_MEASURED_SCRIPT):
        found = json.loads(" ".join(out))  # the script printed one JSON line
        assert found["never"] == [False] * 5, (value, found)
        if not found["onednn"]:
            assert found["first"] == [False] * 3 and found["entries"] == [], (value, found)
            continue
        entries = found["entries"]
        assert [e["input_shape"] for e in entries] == [[8, 14, 14, 64], [2, 8, 196, 48], [UNKNOWN_ROWS, 9, 9, 40]]
        assert [e["kernel"][:2] for e in entries] == [[3, 3], [3, 1], [3, 3]]
        for taps, entry in zip(found["first"], entries):
            assert entry["ms"]["taps"] > 0 and entry["ms"]["conv"] > 0, entry
            assert entry["choice"] == choose(entry["ms"]) and taps == (entry["choice"] == "taps"), entry
        assert found["again"] == [*found["first"], found["first"][0]]


@pytest.mark.parametrize("taps_ms,conv_ms,expected", [(10.0, 20.0, "taps"), (20.0, 10.0, "conv"),
                                                      (9.7, 10.0, "conv")])
def test_measured_kernel_gradient_is_what_the_step_runs(taps_ms, conv_ms, expected, monkeypatch):
    """The measured choice is what a traced training step runs: one MatMul per tap and no
    `Conv2DBackpropFilter` where the MatMuls measured faster by `MARGIN`, else the convolution's own gradient
    (a near tie, 3% here, keeps it); the shape measured is the traced 2D convolution's input
    `(N * T, H, W, C)`. (The times are set here; the test above times for real.)"""
    import tensorflow as tf

    from keras_r21d.layers import kernel_gradient

    timed = []

    def time_ways(x_shape, kernel_shape, strides, pad):
        timed.append((x_shape, kernel_shape, strides, pad))
        return {"taps": [taps_ms / 1e3], "conv": [conv_ms / 1e3]}, x_shape[0]

    monkeypatch.setattr(kernel_gradient, "_time_ways", time_ways)
    monkeypatch.setattr(kernel_gradient, "kernel_gradient_measurable", lambda kernel_shape, dtype: True)
    kernel_gradient.clear_kernel_gradients()
    try:
        layer = VideoConv(8, (1, 3, 3))
        layer.build((2, 3, 10, 10, 40))
        graph = tf.function(_training_gradients(layer)).get_concrete_function(
            tf.TensorSpec((2, 3, 10, 10, 40))).graph
        ops = [op.type for op in graph.get_operations()]
        assert timed == [((6, 10, 10, 40), (3, 3, 40, 8), (1, 1), (1, 1))]
        (entry,) = kernel_gradient.kernel_gradient_choices()
        assert entry["choice"] == expected and entry["ms"] == {"taps": taps_ms, "conv": conv_ms}
    finally:
        kernel_gradient.clear_kernel_gradients()
    backprop = [op for op in ops if "BackpropFilter" in op]
    matmuls = [op for op in ops if op.endswith("MatMul")]
    assert (len(matmuls), len(backprop)) == ((9, 0) if expected == "taps" else (0, 1)), ops


@pytest.mark.parametrize("shape,kernel,strides,pad", [((3, 9, 8, 5), (3, 3), (1, 1), (1, 1)),
                                                      ((3, 9, 8, 5), (3, 3), (2, 2), (1, 1)),
                                                      ((2, 7, 12, 4), (3, 1), (2, 1), (1, 0)),
                                                      ((2, 7, 12, 4), (3, 1), (1, 1), (0, 0)),
                                                      ((2, 9, 9, 3), (7, 7), (2, 2), (3, 3))])
def test_both_measured_kernel_gradients_are_the_convolutions(shape, kernel, strides, pad):
    """The two ways the measurement times (`tap_kernel_gradient`, `conv_kernel_gradient`) compute the kernel
    gradient of the padded convolution, as TensorFlow's own gradient of `conv2d` gives it (to 1e-5)."""
    import tensorflow as tf

    from keras_r21d.layers.kernel_gradient import conv_kernel_gradient, tap_kernel_gradient

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=shape).astype("float32"))
    kernel_value = tf.Variable(rng.normal(size=(*kernel, shape[-1], 6)).astype("float32"))
    paddings = [[0, 0], [pad[0], pad[0]], [pad[1], pad[1]], [0, 0]]
    with tf.GradientTape() as tape:
        y = tf.nn.conv2d(tf.pad(x, paddings), kernel_value, [1, *strides, 1], "VALID")
    dy = tf.constant(rng.normal(size=y.shape).astype("float32"))
    expected = tape.gradient(y, kernel_value, output_gradients=dy).numpy()
    for way in (tap_kernel_gradient, conv_kernel_gradient):
        found = tf.function(way)(x, dy, tuple(kernel_value.shape), strides, pad).numpy()
        np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-5, err_msg=way.__name__)


def test_kernel_gradient_not_measured_with_op_determinism(monkeypatch):
    """With `tf.config.experimental.enable_op_determinism()` a timing never chooses a run's arithmetic: no 2D
    convolution's kernel gradient is measurable (otherwise, with oneDNN's kernels, it is)."""
    from tensorflow.python.framework import config

    import keras_r21d.onednn
    from keras_r21d.layers.kernel_gradient import kernel_gradient_measurable

    monkeypatch.setattr(keras_r21d.onednn, "onednn_enabled", lambda: True)
    assert kernel_gradient_measurable((3, 3, 64, 64), "float32")
    config.enable_op_determinism()
    try:
        assert not kernel_gradient_measurable((3, 3, 64, 64), "float32")
    finally:
        config.disable_op_determinism()


def _training_step_values(layer, x, weights, compiled):
    """A layer's training call: its outputs, the gradients of `sum(y * weights)` (input, then trainable
    variables) and its non-trainable variables after the call."""
    import tensorflow as tf

    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * weights)
        return [y, *tape.gradient(loss, [x, *layer.trainable_variables])]

    values = [np.asarray(t) for t in (tf.function(step) if compiled else step)(x)]
    return values + [np.asarray(v) for v in layer.non_trainable_variables]


def _recomputed_activations(layer, x):
    """How many `relu(bn(x))` a traced training step of `layer` computes again: the inference-mode batch norms
    of its backward pass."""
    import tensorflow as tf

    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x, training=True))
        return tape.gradient(loss, layer.trainable_variables)

    graph = tf.function(step).get_concrete_function(x).graph
    return sum(op.type == "FusedBatchNormV3" and not op.get_attr("is_training") for op in graph.get_operations())


@pytest.mark.parametrize("make,compiled,sites", [
    (lambda: Conv2Plus1D(12), True, 1),
    (lambda: Conv2Plus1D(12, strides=2), True, 1),
    (lambda: Conv2Plus1D(12, strides=2), False, 1),
    (lambda: BasicBlock(8, conv_type="2plus1d", stride=2, midplanes="torchvision"), True, 3),
    (lambda: BasicBlock(6, conv_type="3d"), True, 1),
    (lambda: BottleneckBlock(4, conv_type="2d", stride=2), True, 2),
], ids=["2plus1d", "2plus1d-strided", "2plus1d-strided-eager", "basic-2plus1d", "basic-3d", "bottleneck-2d"])
def test_training_recomputes_bn_relu_activations_to_the_same_values(make, compiled, sites, monkeypatch):
    """Training on TensorFlow, each `BatchNorm -> ReLU -> conv` inside Conv2Plus1D and the residual blocks
    computes `relu(bn(x))` again in the backward pass (`RECOMPUTE_ACTIVATION`; `sites` of them in the layer):
    the outputs, the gradients of the input and of every variable, and the moving averages are those of the
    layers run one after another (to float rounding), traced or eager."""
    import tensorflow as tf

    from keras_r21d.layers import recompute

    x = tf.constant(random_clip((2, 6, 10, 9, 5), seed=3))
    results = {}
    for recomputed in (False, True):
        monkeypatch.setattr(recompute, "RECOMPUTE_ACTIVATION", recomputed)
        keras.utils.set_random_seed(1)
        layer = make()
        layer.build(x.shape)
        rng = np.random.default_rng(5)
        for variable in layer.weights:
            if variable.path.endswith(("gamma", "beta")):  # not the initial 1 and 0
                variable.assign(rng.uniform(0.5, 1.5, variable.shape) if variable.path.endswith("gamma")
                                else rng.normal(0, 0.5, variable.shape))
        weights = random_clip(layer.compute_output_shape(x.shape), seed=4)
        results[recomputed] = _training_step_values(layer, x, weights, compiled)
        assert _recomputed_activations(layer, x) == (sites if recomputed else 0)
    names = ["outputs", "input gradient", *(f"gradient of {v.path}" for v in layer.trainable_variables),
             *(v.path for v in layer.non_trainable_variables)]
    assert len(names) == len(results[True]) == len(results[False])
    for name, plain, recomputed in zip(names, results[False], results[True]):
        assert np.abs(recomputed - plain).max() <= 1e-5 * max(1.0, np.abs(plain).max()), name


def test_training_recomputes_bn_relu_activations_only_where_it_applies():
    """The recomputation runs for the layers every network builds, training in float32 on TensorFlow; inference,
    a frozen BatchNorm, bfloat16 and the folded form (a conv with bias and ReLU, no BatchNorm) run the layers one
    after another."""
    from keras_r21d.layers.recompute import recomputes

    x = keras.ops.zeros((1, 4, 8, 8, 3))
    layer = Conv2Plus1D(8)
    layer.build(x.shape)
    mid = layer.spatial(x)
    assert recomputes(layer.bn, mid, layer.temporal, True) and not recomputes(layer.bn, mid, layer.temporal, False)
    layer.bn.trainable = False
    assert not recomputes(layer.bn, mid, layer.temporal, True)
    bf16 = Conv2Plus1D(8, dtype="mixed_bfloat16")
    bf16.build(x.shape)
    assert not recomputes(bf16.bn, keras.ops.cast(mid, "bfloat16"), bf16.temporal, True)
    folded = Conv2Plus1D(8, inner_batchnorm=False)
    folded.build(x.shape)
    assert folded.bn is None and not recomputes(folded.bn, mid, folded.temporal, True)


def test_conv2plus1d_training_step_keeps_no_activation_for_the_backward_pass():
    """What the recomputation is for: the training step's peak of allocated bytes (TensorFlow's BFC allocator's
    own count) over eight Conv2Plus1D layers falls by at least three of their `relu(bn(x))` activations (seven
    are no longer kept; a convolution's gradient's work space is part of either peak), with TensorFlow's and
    oneDNN's kernels. (It would not if the recomputation ran before the backward pass, or if the forward pass's
    copy were kept.)"""
    script = """
import numpy as np, tensorflow as tf, keras
from keras_r21d.layers import Conv2Plus1D, recompute
x = tf.constant(np.random.default_rng(0).normal(size=(2, 8, 32, 32, 16)).astype("float32"))
model = keras.Sequential([keras.Input(x.shape[1:])] + [Conv2Plus1D(16, midplanes=128) for _ in range(8)])
peaks = []
for recomputed in (False, True):
    recompute.RECOMPUTE_ACTIVATION = recomputed
    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x, training=True) ** 2)
        return tape.gradient(loss, model.trainable_variables)
    step(x)
    tf.config.experimental.reset_memory_stats("CPU:0")
    step(x)
    peaks.append(tf.config.experimental.get_memory_info("CPU:0")["peak"])
print(*peaks)
"""
    activation = 2 * 8 * 32 * 32 * 128 * 4  # one relu(bn(x)) of 128 channels, float32
    os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true"  # the peak counted with oneDNN's kernels off too
    try:
        runs = list(_with_onednn_off_and_on(script))
    finally:
        del os.environ["TF_CPU_ALLOCATOR_USE_BFC"]
    for value, (kept, recomputed) in runs:
        assert int(kept) - int(recomputed) >= 3 * activation, (value, kept, recomputed)
