"""`conv(relu(bn(x)))` in training on TensorFlow, with `relu(bn(x))` computed again in the backward pass.

Run layer by layer, a training step keeps two tensors for each
`BatchNorm -> ReLU -> conv` of a network: `x`, which BatchNorm's gradient
reads, and `relu(bn(x))`, which ReLU's gradient and the convolution's kernel
gradient read. `bn_relu_conv` keeps only `x` (and the batch's mean and
variance): the backward pass normalizes `x` again and applies the ReLU (one
pass over the tensor each, fused into one op with oneDNN's kernels) once
the output gradient exists, and the forward pass's `relu(bn(x))` is freed as
soon as the convolution has read it. Everything else is the same ops: the
fused batch norm (`FusedBatchNormV3`, its gradient) as `BatchNormalization`,
the convolution with its own gradient (`VideoConv`'s lowering); the moving
averages follow `BatchNormalization`'s rule, and the values are those of
the layers run one after another (to float rounding: `tests/test_layers.py`).
`Conv2Plus1D` runs it between its spatial and temporal convolutions, the
residual blocks between their convolutions; in R(2+1)D-18 the first holds
the widest activations (144 channels at 56x56 in conv2_x). BENCHMARKS.md
has the training step's peak memory and speed with and without it.

`RECOMPUTE_ACTIVATION = False` runs the layers one after another.
"""

import keras

from keras_r21d.layers.batchnorm import fused_training_batch_norm

RECOMPUTE_ACTIVATION = True


def recomputes(bn, x, conv, training):
    """Whether `conv(relu(bn(x)))` runs as `bn_relu_conv` in this call (`RECOMPUTE_ACTIVATION`).

    Training on TensorFlow in float32, the BatchNormalization trainable,
    fused (its `_fusable`) and with scale and offset, the convolution a
    `VideoConv` without bias or activation: what the package's networks
    build. Anything else (inference, a frozen BatchNorm, bfloat16, JAX,
    torch, the folded form) runs the layers one after another.
    """
    return bool(
        training and RECOMPUTE_ACTIVATION and keras.backend.backend() == "tensorflow" and bn is not None
        and bn.trainable and bn.scale and bn.center and bn._fusable(x)
        and bn.compute_dtype == conv.compute_dtype == "float32"
        and keras.backend.standardize_dtype(x.dtype) == "float32"
        and conv.bias is None and conv.activation in (None, keras.activations.linear)
    )


def bn_relu_conv(bn, x, conv):
    """`conv(relu(bn(x)))` in training, keeping `x` and the batch statistics for the backward pass, not
    `relu(bn(x))` (TensorFlow; where `recomputes(bn, x, conv, True)`)."""
    import tensorflow as tf

    epsilon = bn.epsilon
    shape = tf.shape(x)
    channels = x.shape[-1]

    def convolve(a, kernel):
        a = tf.reshape(a, shape)
        a.set_shape(x.shape)  # the static shape the layer would see (its lowering and slices read it)
        return conv._lowered(a, True, kernel)

    @tf.custom_gradient
    def forward(flat, gamma, beta, kernel):
        y, mean, variance, reserve = fused_training_batch_norm(flat, gamma, beta, epsilon)
        outputs = convolve(tf.nn.relu(y), kernel)

        def gradient(doutputs, *_):  # the statistics have no gradient: they only feed the moving averages
            with tf.control_dependencies([doutputs]):  # in the backward pass, not kept from the forward one
                again = tf.identity(flat)
            a = tf.nn.relu(tf.raw_ops.FusedBatchNormV3(
                x=again, scale=gamma, offset=beta, mean=mean, variance=variance, epsilon=epsilon,
                data_format="NHWC", is_training=False)[0])
            with tf.GradientTape() as tape:  # the convolution's own gradient; its unused forward op is pruned
                tape.watch([a, kernel])
                recomputed = convolve(a, kernel)
            da, dkernel = tape.gradient(recomputed, [a, kernel], output_gradients=doutputs)
            dy = tf.raw_ops.ReluGrad(gradients=da, features=a)
            dflat, dgamma, dbeta, _, _ = tf.raw_ops.FusedBatchNormGradV3(
                y_backprop=dy, x=flat, scale=gamma, reserve_space_1=reserve[0], reserve_space_2=reserve[1],
                reserve_space_3=reserve[2], epsilon=epsilon, data_format="NHWC", is_training=True)
            return dflat, dgamma, dbeta, dkernel

        return (outputs, mean, variance), gradient

    flat = tf.reshape(x, tf.stack([-1, shape[-3], shape[-2], channels]))  # the 4-D view BatchNorm normalizes
    outputs, mean, variance = forward(flat, tf.convert_to_tensor(bn.gamma), tf.convert_to_tensor(bn.beta),
                                      tf.convert_to_tensor(conv.kernel))
    bn._update_moving_averages(tf.stop_gradient(mean), tf.stop_gradient(variance))
    return outputs
