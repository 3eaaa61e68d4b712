"""`BatchNormalization`: Keras' `BatchNormalization` whose training step runs one fused kernel (TensorFlow, torch)."""

import keras


@keras.saving.register_keras_serializable(package="keras_r21d")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` over the channels of `(N, T, H, W, C)` clips, fused in training.

    The same variables, arguments, config and semantics as Keras' layer, and
    the same class name, which Keras' file format uses for the weights' paths
    inside a model's list of layers: a `.keras` file saved with one loads
    into the other, converted weights are unchanged, and inference (and
    the JAX backend) runs Keras' own code.
    What differs is the training call on the TensorFlow and torch backends.
    On TensorFlow, Keras runs BatchNorm as separate element-wise ops (mean, squared difference,
    multiply, ... and the broadcasts of their gradients), about 1.4 s of a
    10-s R(2+1)D-18 step on a CPU; this layer runs TensorFlow's fused batch
    norm (`FusedBatchNormV3`, one kernel forward and one backward) on the
    4-D view `(N * T, H, W, C)` of the clip, which has the same per-channel
    statistics: +14% on that step, +8% on R3D-18's (BENCHMARKS.md). The
    moving averages follow Keras' rule, `moving = moving * momentum + batch *
    (1 - momentum)`, with the biased batch variance as Keras uses (the fused
    kernel's unbiased one times `(n - 1) / n`).
    On the torch backend the training call runs torch's batch norm kernel
    (`torch.nn.functional.batch_norm`, one kernel each way) on the
    channels-first view of the clip, whose strides are PyTorch's
    channels-last format, so nothing is copied; the moving averages follow
    the same rule.

    Falls back to Keras' code where the fused kernel does not apply: the JAX
    backend (whose compiler fuses Keras' ops itself), a mask,
    `synchronized=True`, `renorm`, a channel axis other than the last, inputs
    of rank other than 4 or 5, or (torch) a single value per channel.

    Example:

    >>> import numpy as np
    >>> layer = BatchNormalization()  # keras_r21d.layers'
    >>> clips = np.random.default_rng(0).normal(size=(2, 4, 8, 8, 3)).astype("float32")
    >>> tuple(layer(clips, training=True).shape)
    (2, 4, 8, 8, 3)
    """

    def call(self, inputs, training=None, mask=None):
        if training and self.trainable and mask is None and self._fusable(inputs):
            return self._fused_training_call(inputs)
        return super().call(inputs, training=training, mask=mask)

    def _fusable(self, inputs):
        return (keras.backend.backend() in ("tensorflow", "torch") and len(inputs.shape) in (4, 5)
                and self.axis in (-1, len(inputs.shape) - 1) and not self.renorm
                and not self.synchronized)

    def _update_moving_averages(self, mean, variance):
        """Keras' rule, `moving = moving * momentum + batch * (1 - momentum)`, in float32, for both fused calls."""
        for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
            moving.assign(keras.ops.cast(moving, "float32") * self.momentum + batch * (1.0 - self.momentum))

    def _fused_training_call(self, inputs):
        if keras.backend.backend() == "torch":
            return self._torch_training_call(inputs)
        import tensorflow as tf

        x = tf.cast(inputs, "float32")  # as Keras' layer: statistics in float32 whatever the policy
        channels = x.shape[-1]
        shape = tf.shape(x)
        flat = tf.reshape(x, tf.stack([-1, shape[-3], shape[-2], channels])) if len(x.shape) == 5 else x
        gamma = tf.cast(self.gamma, "float32") if self.scale else tf.ones((channels,), "float32")
        beta = tf.cast(self.beta, "float32") if self.center else tf.zeros((channels,), "float32")
        outputs, mean, variance, _ = fused_training_batch_norm(flat, gamma, beta, self.epsilon)
        self._update_moving_averages(mean, variance)
        return tf.cast(tf.reshape(outputs, shape), self.compute_dtype)

    def _torch_training_call(self, inputs):
        import torch

        x = keras.ops.convert_to_tensor(inputs)
        channels = x.shape[-1]
        count = x.numel() // channels
        if count < 2:  # torch's kernel needs two values per channel; Keras' code gives variance 0
            return super().call(inputs, training=True)
        x = x.float()  # as Keras' layer: statistics in float32 whatever the policy
        rank = x.ndim
        # The channels-first view of a contiguous channels-last tensor has
        # PyTorch's channels-last strides, which its batch norm kernel reads
        # as they are; the output's channels-last view is contiguous again.
        xt = x.permute(0, rank - 1, *range(1, rank - 1))
        gamma = keras.ops.convert_to_tensor(self.gamma).float() if self.scale else None
        beta = keras.ops.convert_to_tensor(self.beta).float() if self.center else None
        # With momentum 1 the kernel writes the batch mean and unbiased variance into these buffers.
        mean = torch.zeros(channels, dtype=torch.float32, device=x.device)
        unbiased = torch.ones(channels, dtype=torch.float32, device=x.device)
        outputs = torch.nn.functional.batch_norm(xt, mean, unbiased, gamma, beta, training=True, momentum=1.0,
                                                 eps=self.epsilon)
        self._update_moving_averages(mean, unbiased * ((count - 1) / count))
        outputs = outputs.permute(0, *range(2, rank), 1)
        return keras.ops.cast(outputs, self.compute_dtype)


def fused_training_batch_norm(flat, gamma, beta, epsilon):
    """TensorFlow: `FusedBatchNormV3` in training over the 4-D NHWC `flat`.

    Returns `(outputs, mean, variance, reserve)`: the batch mean, the
    biased batch variance it normalized with (the kernel's unbiased one
    times `(n - 1) / n`, as Keras' moving averages use), and the three
    reserve spaces its gradient, `FusedBatchNormGradV3`, reads.
    """
    import tensorflow as tf

    empty = tf.constant([], "float32")
    outputs, mean, unbiased, *reserve = tf.raw_ops.FusedBatchNormV3(
        x=flat, scale=gamma, offset=beta, mean=empty, variance=empty, epsilon=epsilon,
        exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
    count = tf.cast(tf.size(flat) // flat.shape[-1], "float32")
    return outputs, mean, unbiased * (tf.maximum(count - 1.0, 0.0) / count), reserve
