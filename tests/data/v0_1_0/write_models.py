"""Writes the .keras files of tests/data/v0_1_0/models/ with keras_r21d 0.1.0, and their outputs.

    PYTHONPATH=<a checkout of 97a918e> python write_models.py OUT_DIR   (run from outside the repository)
"""

import os
import sys

import keras
import numpy as np

import keras_r21d
from keras_r21d.training.finetune import init_model

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(2026)
clips = rng.normal(size=(2, 4, 32, 32, 3)).astype("float32")


def with_statistics(model):
    """Random BatchNorm statistics, so that inference differs from training-mode normalization."""
    for variable in model.non_trainable_weights:
        if "moving_mean" in variable.path:
            variable.assign(rng.normal(0, 0.1, variable.shape).astype("float32"))
        elif "moving_variance" in variable.path:
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
    return model


ANY = (None, None, None, 3)
models = {}
for variant in ("r2d", "fr2d", "r3d", "mc3", "rmc3", "r2plus1d"):
    keras.utils.set_random_seed(1)
    shape = (4, 32, 32, 3) if variant == "r2d" else ANY
    models[variant] = with_statistics(keras_r21d.get_model(f"{variant}_10", input_shape=shape, classes=5,
                                                           width_multiplier=0.0625))
keras.utils.set_random_seed(2)
models["r2plus1d_50"] = with_statistics(keras_r21d.get_model("r2plus1d_50", input_shape=ANY, classes=5,
                                                             width_multiplier=0.03125))
keras.utils.set_random_seed(3)
models["r2plus1d_torchvision"] = with_statistics(keras_r21d.get_model(
    "r2plus1d_10", input_shape=ANY, classes=5, width_multiplier=0.0625, midplanes="torchvision"))
models["r2plus1d_finetuned_head"], _ = init_model(models["r2plus1d"], 3, 4)
outputs = {}
for name, model in models.items():
    model.save(os.path.join(out, f"{name}.keras"))
    outputs[name] = np.asarray(model(clips, training=False))
np.savez(os.path.join(out, "outputs.npz"), clips=clips, **outputs)
