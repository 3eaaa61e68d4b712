"""TensorFlow, for the parts of the package that need it, or one clear error naming what to install.

The layers, the builders, `model_stats`, `fold_batchnorm` and the presets
run on every Keras backend and import no TensorFlow. The input pipeline,
training, evaluation, inference, export and serving are TensorFlow programs
(tf.data, tf.distribute, SavedModel, TFLite): they import it from here.

Under another Keras backend (JAX, torch) TensorFlow only feeds the model
(tf.data) and is kept off the GPUs, which belong to that backend: a
TensorFlow that saw them would reserve their memory.
"""

MESSAGE = ("keras_r21d's input pipeline, training, evaluation, prediction, export and serving need TensorFlow, "
           "which is not installed here: pip install 'keras_r21d[cpu]' (or 'keras_r21d[gpu]' for NVIDIA GPUs). "
           "The models and layers alone also run on JAX and PyTorch")

try:
    import tensorflow as tf  # noqa: F401 - the name the importers use
except ImportError as error:
    raise ImportError(f"{MESSAGE} ({error})") from None


def _keep_off_gpus():
    import keras

    if keras.backend.backend() != "tensorflow":
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # TensorFlow's devices were already initialized by the caller: theirs to choose
            pass


_keep_off_gpus()
