"""The Keras backend seen from the TensorFlow programs: a compiled model call and the run's devices.

The input pipeline is tf.data on every backend (Keras 3 feeds tf.data to
JAX and PyTorch models); the model, its optimizer and its callbacks run on
the backend Keras was started with (`KERAS_BACKEND`).
"""

import keras
import numpy as np


def backend():
    """The Keras backend's name: `"tensorflow"`, `"jax"` or `"torch"`."""
    return keras.backend.backend()


def model_function(function):
    """`function(clips)` (a model call) as the backend runs it best; takes tf.Tensors or arrays, returns NumPy.

    On TensorFlow a `tf.function` (one trace per input shape); on JAX and
    torch an eager call on the model's current weights (a jitted closure
    would freeze the weights it was traced with while training changes them).
    """
    if backend() == "tensorflow":
        from keras_r21d._tensorflow import tf

        compiled = tf.function(function, reduce_retracing=True)
        return lambda clips: compiled(clips).numpy()

    def call(clips):
        clips = clips.numpy() if hasattr(clips, "numpy") else np.asarray(clips)
        return keras.ops.convert_to_numpy(function(keras.ops.convert_to_tensor(clips)))

    return call


def devices():
    """The devices the model trains on, as `"platform:index"` strings (what run.json records)."""
    if backend() == "jax":
        import jax

        return [f"{d.platform}:{d.id}" for d in jax.devices()]
    if backend() == "torch":
        import torch

        return [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cpu:0"]
    from keras_r21d._tensorflow import tf

    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")][:1]


def has_gpu():
    """Whether the backend computes on a GPU here."""
    if backend() == "jax":
        import jax

        return jax.devices()[0].platform == "gpu"
    if backend() == "torch":
        import torch

        return torch.cuda.is_available()
    from keras_r21d._tensorflow import tf

    return bool(tf.config.list_logical_devices("GPU"))


def mixed_precision_policy():
    """`"mixed_float16"` on a GPU (Keras scales the loss), `"mixed_bfloat16"` elsewhere (no scaling needed).

    Either way the variables, BatchNorm's statistics, the classifier's
    softmax and the loss stay float32.
    """
    return "mixed_float16" if has_gpu() else "mixed_bfloat16"
