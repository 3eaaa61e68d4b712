"""The shared test helper: every layer and model is checked the same way."""

import importlib.util
import os

import keras
import numpy as np
import pytest

# The demo's recipe: a small R(2+1)D on 4 motion classes (two time-reversed pairs) of real videos. Every 4th frame
# and 25 epochs: with every 2nd frame and 15 epochs, whether the network found the motion or memorized the
# training videos was a draw that float rounding decided (a 1e-6 change to the kernel gradients flipped it); with
# batch 8, weight decay or mixup 1 or 2 seeds of 4 fell below 0.40 Video@1, with lr 0.02 2 of 8, and with every
# 4th frame at 15 epochs 1 of 8 (BENCHMARKS.md, "The learning run's two outcomes").
MOTION_RECIPE = dict(arch="r2plus1d", depth=10, frames=8, size=48, resize_to=(48, 64), batch_size=16, epochs=25,
                     width_multiplier=0.25, lr=0.01, schedule="constant", weight_decay=0.0, nesterov=False,
                     frame_stride=4, flip=False, test_clips=5, val_freq=100, tensorboard=False)


def needs(module):
    """Skips the test unless `module` is installed, without importing it here.

    `pytest.importorskip` would import it into the test process, which has
    TensorFlow loaded: torch (and torchvision) crash there, and JAX is only
    ever used in child processes.
    """
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_until(process, text, timeout):
    """Reads the process's output until a line holds `text`; fails with the output when it exits or times out."""
    import queue
    import threading
    import time

    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout] + [lines.put(None)],
                     daemon=True).start()
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            raise AssertionError(f"exited ({process.wait()}) before printing {text!r}:\n{''.join(seen)[-3000:]}")
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"{text!r} not printed within {timeout} s:\n{''.join(seen)[-3000:]}")


def with_batchnorm_statistics(model, rng):
    """Gives every BatchNorm random moving statistics, so that inference differs from training-mode
    normalization (as in a trained model); returns the model."""
    for variable in model.non_trainable_weights:
        if "moving_mean" in variable.path:
            variable.assign(rng.normal(0, 0.1, variable.shape).astype("float32"))
        elif "moving_variance" in variable.path:
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
    return model


def random_clip(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def assert_weights_equal(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    assert len(wa) == len(wb)
    for x, y in zip(wa, wb):
        np.testing.assert_array_equal(x, y)


def run_layer_test(layer_cls, init_kwargs, input_shape, expected_output_shape, tmp_path):
    """Shape, config round trip, `.keras` round trip and a training step of one layer.

    Returns the built layer instance.
    """
    layer = layer_cls(**init_kwargs)
    x = random_clip(input_shape)
    y = layer(x, training=False)
    assert tuple(y.shape) == tuple(expected_output_shape)
    assert tuple(layer.compute_output_shape(input_shape)) == tuple(expected_output_shape)

    # Every constructor argument is stored and the config rebuilds an equal layer.
    config = layer.get_config()
    for key in init_kwargs:
        assert key in config, f"{layer_cls.__name__}.get_config() lacks {key!r}"
    clone = layer_cls.from_config(config)
    clone.build(input_shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(clone(x, training=False)), np.asarray(y), atol=1e-6)
    assert clone.get_config() == config

    # Inside a model: .keras round trip with safe_mode on, and one training step.
    inputs = keras.Input(input_shape[1:])
    model = keras.Model(inputs, layer_cls(**init_kwargs)(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    before = [w.copy() for w in model.get_weights()]
    model.train_on_batch(x, np.zeros((input_shape[0], *expected_output_shape[1:]), "float32"))
    changed = [not np.array_equal(b, a) for b, a in zip(before, model.get_weights())]
    assert any(changed), "a training step changed no weight"
    path = os.path.join(tmp_path, "layer.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert_weights_equal(model, loaded)
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), np.asarray(model(x, training=False)))
    return layer


def run_model_test(model, input_shape, tmp_path, train=True):
    """Forward shape, a training step, and a `.keras` round trip with identical outputs."""
    x = random_clip((2, *input_shape))
    y = np.asarray(model(x, training=False))
    assert y.shape[0] == 2
    assert np.isfinite(y).all()
    if train:
        model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="sparse_categorical_crossentropy")
        before = [w.copy() for w in model.get_weights()]
        loss = model.train_on_batch(x, np.arange(2) % model.output_shape[-1])
        assert np.isfinite(loss)
        assert any(not np.array_equal(b, a) for b, a in zip(before, model.get_weights()))
    path = os.path.join(tmp_path, f"{model.name}.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert_weights_equal(model, loaded)
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), np.asarray(model(x, training=False)))
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    return loaded


def write_run_dir(folder, model, config, class_names):
    """A training run's directory as `keras-r21d train` leaves it, for the commands that read one: `model.keras`
    and a `run.json` with `config` (the clip geometry) and `class_names`. Returns the folder."""
    import json
    import os

    os.makedirs(folder, exist_ok=True)
    model.save(os.path.join(folder, "model.keras"))
    with open(os.path.join(folder, "run.json"), "w") as f:
        json.dump({"config": config, "class_names": list(class_names)}, f)
    return folder
