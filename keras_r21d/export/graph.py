"""Graph functions shared by every export: whole-video preprocessing, probabilities, features.

`video_clips` is the evaluator's test-time protocol (uniform clips, short
videos per the clip config's policy, resize, center crop, normalization)
written with the same `sampling` functions and `ClipPreprocessor` the input
pipeline uses, so that a served `classify_video` gives the evaluator's
video-level answer for the same frames.
"""

import keras

from keras_r21d._tensorflow import tf
from keras_r21d.data import sampling
from keras_r21d.layers.video_conv import check_implementation
from keras_r21d.models import legacy
from keras_r21d.models.backbone import VideoResNetBackbone
from keras_r21d.models.classifier import VideoClassifier, VideoFeatureExtractor
from keras_r21d.models.fold import as_float32, fold_batchnorm

# Largest video `classify_video` accepts by default: frames x height x width
# (2**28 pixels, e.g. 116 s of 320x240 at 30 fps; 805 MB of uint8 RGB).
MAX_VIDEO_PIXELS = 2**28


def video_clips(frames, config, max_pixels=MAX_VIDEO_PIXELS, name="classify_video"):
    """`(test_clips x test_crops, clip_len, crop, crop, 3)` float32 test views of one uint8 video `(F, H, W, 3)`.

    The input is checked in the graph: rank 4 with 3 channels, at least one
    frame of at least one pixel, at most `max_pixels` frames x height x width.
    A failed check is an `InvalidArgumentError` whose message says which.
    """
    # A runtime check: signature shapes are not enforced when a served graph is called.
    frames = tf.ensure_shape(tf.convert_to_tensor(frames), (None, None, None, 3), name=f"{name}_frames")
    shape = tf.shape(frames, out_type=tf.int64)
    checks = [
        tf.debugging.assert_positive(shape[0], message=f"{name}: the video has no frames"),
        tf.debugging.assert_positive(shape[1] * shape[2], message=f"{name}: the frames have no pixels"),
        tf.debugging.assert_less_equal(
            shape[0] * shape[1] * shape[2], tf.constant(max_pixels, tf.int64),
            message=f"{name}: the video is larger than the limit of {max_pixels} pixels (frames x height x width)",
        ),
    ]
    with tf.control_dependencies(checks):
        num_frames = tf.identity(shape[0])
    starts = sampling.uniform_clip_starts(num_frames, config.clip_len, config.test_clips, config.frame_stride)
    indices = sampling.clip_indices(starts, num_frames, config.clip_len, config.frame_stride, config.short_policy)
    clips = tf.gather(frames, tf.maximum(indices, 0))
    if config.short_policy == "pad":
        # Index -1 is a black frame, as in the decoder.
        clips = tf.where((indices >= 0)[:, :, None, None, None], clips, tf.zeros_like(clips))
    clips = config.preprocessor.views(clips, config.test_crops)
    return tf.ensure_shape(clips, (config.test_views, config.clip_len, config.crop, config.crop, 3))


def checked_clips(clips, shape, name):
    """`clips` after a runtime check of their shape `(N, T, H, W, 3)` (`None` where any size goes)."""
    return tf.ensure_shape(clips, (None, *shape), name=f"{name}_clips")


def outputs_probabilities(model):
    """Whether the model's output is already a softmax (else the export applies one)."""
    activation = getattr(model.layers[-1], "activation", None)
    if activation is keras.activations.softmax:
        return True
    if activation in (None, keras.activations.linear):
        return False
    name = getattr(activation, "__name__", activation)
    raise ValueError(f"the model's last layer has activation {name!r}: export needs softmax or linear (logits)")


def probabilities_fn(model):
    """`f(clips) -> (N, classes)` float32 probabilities, inference mode."""
    softmax_done = outputs_probabilities(model)

    def probabilities(clips):
        outputs = keras.ops.cast(model(clips, training=False), "float32")
        return outputs if softmax_done else keras.ops.softmax(outputs, axis=-1)

    return probabilities


def pooling_layer_name(model):
    """The name of the layer where a model of the family pools its conv5 features (a task's `pooler`; 0.1.0's
    read by `models.legacy`); a `ValueError` when it has none."""
    if isinstance(model, (VideoClassifier, VideoFeatureExtractor)):
        return model.pooler.name
    try:
        name = None if isinstance(model, VideoResNetBackbone) else legacy.pooling_layer_name(model)
    except ValueError as error:
        raise ValueError(f"cannot extract features: {error}") from None
    if name is None:
        raise ValueError(
            f"model {model.name!r} ends in conv5 feature maps, not pooled features: build it with include_top=True "
            "or pooling='avg'/'max' to extract features"
        )
    return name


def feature_model(model, pooling=None):
    """The network up to the global pooling: `(N, T, H, W, 3) -> (N, features)`.

    `pooling`: the pooling layer's name (`pooling_layer_name(task)`) when
    `model` is a task's folded or float32 copy (`fold_batchnorm`,
    `as_float32` keep the layer names); by default `model`'s own.
    """
    name = pooling or pooling_layer_name(model)
    return keras.Model(model.inputs[0], model.get_layer(name).output, name=f"{model.name}_features")


def folded(model):
    """`keras_r21d.fold_batchnorm(model)` for a functional model with a BatchNorm, else the model in float32."""
    if not hasattr(model, "_nodes_by_depth"):
        return model
    layers = model._flatten_layers(include_self=False, recursive=True)
    if not any(isinstance(layer, keras.layers.BatchNormalization) for layer in layers):
        return as_float32(model)
    return fold_batchnorm(model)


def with_implementation(model, implementation):
    """A copy of `model` whose convolutions use another lowering (same weights, same outputs).

    `"conv2d"` gives a graph without 5-D convolutions (for TFLite's XNNPACK
    and GPU delegates and int8); `"conv3d"` one with them.
    """
    check_implementation(implementation)

    def clone(layer):
        config = layer.get_config()
        if "implementation" in config:
            config["implementation"] = implementation
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if layer.weights:
            copy.get_layer(layer.name).set_weights(layer.get_weights())
    return copy
