"""Tasks on a `VideoResNetBackbone`: `VideoClassifier` (pooling, dropout, classifier) and `VideoFeatureExtractor`.

After keras-hub's tasks: each holds its backbone as `.backbone` and is
rebuilt from its config (the backbone's config and the head's arguments).
The head sits on the backbone's own graph, so a task's layers are the
backbone's and the head's side by side: `model.get_layer("conv3_block1")`
and the 0.1.0 layer names (`avg_pool`, `dropout`, `predictions`) hold.
"""

import keras

from keras_r21d.models.backbone import VideoResNetBackbone, freeze, frozen_layers

POOLINGS = ("avg", "max")


def _pooling_layer(pooling, policy):
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling3D(name="avg_pool", dtype=policy)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling3D(name="max_pool", dtype=policy)
    raise ValueError(f"`pooling` must be one of {POOLINGS}. Received: pooling={pooling!r}")


class _VideoTask(keras.Model):
    """A head on `backbone`'s graph: `self.pooler` is its global pooling layer, `self.pooled` the pooled conv5
    features."""

    def _check_backbone(self, backbone):
        if not isinstance(backbone, VideoResNetBackbone):
            raise ValueError(
                f"`backbone` must be a keras_r21d VideoResNetBackbone. Received: {type(backbone).__name__}"
            )
        return keras.dtype_policies.get(backbone.dtype_arg)

    def stage_layer_names(self):
        """`{stage: layer names}` for `"conv1"`..`"conv5"` (the backbone's) and `"head"` (the rest)."""
        stages = dict(self.backbone.stage_layer_names)
        inside = {name for names in stages.values() for name in names}
        stages["head"] = tuple(layer.name for layer in self.layers
                               if layer.name not in inside and not isinstance(layer, keras.layers.InputLayer))
        return stages

    def _task_config(self):
        head = [layer for layer in self.layers if layer.name in self.stage_layer_names()["head"]]
        return {"name": self.name, "trainable": self.trainable,
                "backbone": keras.saving.serialize_keras_object(self.backbone),
                "frozen_layers": frozen_layers(self, head)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        frozen = config.pop("frozen_layers", ())
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return freeze(cls(**config), frozen)


@keras.saving.register_keras_serializable(package="keras_r21d")
class VideoClassifier(_VideoTask):
    """Video classification: a backbone, global pooling, optional dropout and a dense classifier.

    Args:
        backbone: a `keras_r21d.models.VideoResNetBackbone`.
        num_classes: int, the number of classes.
        pooling: `"avg"` (the paper's) or `"max"` global pooling over T, H, W.
        dropout: float, dropout rate before the classifier (0 in the paper).
        activation: the classifier's activation, `"softmax"` or `None` (logits).
        **kwargs: `name`, `trainable`.

    A mixed-precision backbone gets a float32 classifier, so that the
    softmax and the loss are computed in float32.

    Example:

    >>> backbone = VideoResNetBackbone("3d", ("3d",) * 4, (1, 1, 1, 1), (8, 16, 32, 64), stem_filters=8,
    ...                                clip_shape=(None, None, None, 3))
    >>> classifier = VideoClassifier(backbone, num_classes=5)
    >>> classifier.backbone is backbone, classifier.output_shape
    (True, (None, 5))
    """

    def __init__(self, backbone, num_classes, pooling="avg", dropout=0.0, activation="softmax", **kwargs):
        policy = self._check_backbone(backbone)
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive integer. Received: num_classes={num_classes!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout!r}")
        pooler = _pooling_layer(pooling, policy)
        x = pooled = pooler(backbone.output)
        if dropout:
            x = keras.layers.Dropout(dropout, name="dropout", dtype=policy)(x)
        head_policy = "float32" if policy.name.startswith("mixed") else policy
        outputs = keras.layers.Dense(num_classes, activation=activation, name="predictions", dtype=head_policy)(x)
        super().__init__(inputs=backbone.input, outputs=outputs, **kwargs)
        self.backbone = backbone
        self.num_classes = num_classes
        self.pooling = pooling
        self.dropout = dropout
        self.activation = keras.activations.get(activation)
        self.pooler = pooler
        self.pooled = pooled

    def get_config(self):
        return {**self._task_config(), "num_classes": self.num_classes, "pooling": self.pooling,
                "dropout": self.dropout, "activation": keras.activations.serialize(self.activation)}


@keras.saving.register_keras_serializable(package="keras_r21d")
class VideoFeatureExtractor(_VideoTask):
    """Clip features: a backbone and global pooling, `(batch, frames, h, w, 3) -> (batch, features)`.

    Args:
        backbone: a `keras_r21d.models.VideoResNetBackbone`.
        pooling: `"avg"` or `"max"` global pooling over T, H, W.
        **kwargs: `name`, `trainable`.
    """

    def __init__(self, backbone, pooling="avg", **kwargs):
        policy = self._check_backbone(backbone)
        pooler = _pooling_layer(pooling, policy)
        pooled = pooler(backbone.output)
        super().__init__(inputs=backbone.input, outputs=pooled, **kwargs)
        self.backbone = backbone
        self.pooling = pooling
        self.pooler = pooler
        self.pooled = pooled

    def get_config(self):
        return {**self._task_config(), "pooling": self.pooling}
