"""`autotune_lowering`: times each full 3D convolution of a model in each lowering and installs the fastest.

See `keras_r21d.layers.lowering` for the table it fills and why it is measured.
"""

import statistics
import time

import keras
import numpy as np

from keras_r21d.layers.lowering import FULL_LOWERINGS, IMPLEMENTATION_OF, MODES, LoweringTable, machine_facts
from keras_r21d.layers.video_conv import VideoConv

# Another lowering replaces Conv3D (the default, what runs without a table) only when it is this much faster: a
# near tie is timing noise, and a convolution timed alone is only a proxy for the same one inside the whole step.
MARGIN = 0.05


def choose(ms):
    """The lowering to run from `{lowering: milliseconds}`: the fastest, but `conv3d` unless beaten by `MARGIN`."""
    fastest = min(ms, key=ms.get)
    if "conv3d" in ms and ms[fastest] > (1.0 - MARGIN) * ms["conv3d"]:
        return "conv3d"
    return fastest


def _known(shape):
    return shape is not None and all(d is not None for d in shape[1:])


def auto_full_convs(model, input_shape=None):
    """`{(dims, kernel, strides, padding, filters, dtype, input_gradient): [layers]}`: the full-kernel `"auto"`
    VideoConvs of `model`; `input_gradient` is `False` for one that reads the network's input (the stem).

    With `input_shape`, the layers' shapes are those of one forward pass of a
    zero batch of that shape (how a model built for clips of any size,
    `(None, None, None, 3)`, learns them); else those it was built or last
    called with.
    """
    layers = [layer for layer in model._flatten_layers(include_self=True, recursive=True)
              if isinstance(layer, VideoConv) and layer.implementation == "auto" and layer.full_kernel]
    if input_shape is not None and layers:
        model(keras.ops.zeros((1, *input_shape)), training=False)  # each VideoConv records the shape it sees
    found = {}
    for layer in layers:
        # A conv reading the network's input (the stem) computes no input gradient in training: time it so.
        input_gradient = not any(isinstance(tensor._keras_history.operation, keras.layers.InputLayer)
                                 for node in layer._inbound_nodes for tensor in node.input_tensors)
        shape = getattr(layer, "_call_shape", None)
        if not _known(shape):
            raise ValueError(f"{layer.name}: its input shape must be known (except the batch) to measure its "
                             f"lowering. Received: {shape}; pass autotune_lowering(..., input_shape=(T, H, W, C)) "
                             f"for a model built for clips of any size")
        key = (tuple(shape[1:]), layer.kernel_size, layer.strides, layer.padding, layer.filters,
               layer.compute_dtype, input_gradient)
        found.setdefault(key, []).append(layer)
    return found


def _runner(layer, x, mode, input_gradient=True):
    """A function that runs `layer` on `x` once in `mode` and waits for the result (the backend's own way).

    Training is the forward pass and the kernel's gradient, and the input's when `input_gradient`.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if mode == "train":
            @tf.function
            def step(x):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    loss = tf.reduce_sum(tf.square(tf.cast(layer(x, training=True), "float32")))
                return tape.gradient(loss, [x, layer.kernel] if input_gradient else [layer.kernel])
        else:
            step = tf.function(lambda x: layer(x, training=False))
        return lambda: [t.numpy() for t in tf.nest.flatten(step(x))]
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        def forward(kernel, x):
            return layer.stateless_call([kernel], [], x, training=mode == "train")[0]

        if mode == "train":
            step = jax.jit(jax.grad(lambda k, x: jnp.sum(jnp.square(forward(k, x).astype("float32"))),
                                    argnums=(0, 1) if input_gradient else 0))
        else:
            step = jax.jit(forward)
        kernel = layer.kernel.value
        return lambda: jax.block_until_ready(step(kernel, x))
    if backend == "torch":
        import torch

        def run():
            if mode == "train":
                inputs = x.detach().requires_grad_(input_gradient)
                torch.sum(torch.square(layer(inputs, training=True).float())).backward()
                layer.kernel.value.grad = None
            else:
                with torch.no_grad():
                    layer(x, training=False)
            if x.is_cuda:
                torch.cuda.synchronize()

        return run
    raise ValueError(f"autotune_lowering does not know how to time the Keras backend {backend!r}")


def autotune_lowering(model, batch_size=8, input_shape=None, modes=MODES, lowerings=None, reps=3, install=True,
                      log=None):
    """Measures each full 3D convolution of `model` in each lowering; installs and returns the fastest.

    The fastest replaces `Conv3D` only when it is at least `MARGIN` (5%)
    faster (`choose`).

    Args:
        model: a built model (or layer) whose full-kernel `VideoConv`s with
            `implementation="auto"` are measured, each distinct shape once.
        batch_size: the batch to time with (per replica: what one device runs).
        input_shape: `(T, H, W, C)` of the clips, needed when `model` was
            built for clips of any size (a zero batch then runs once).
        modes: `"train"` (forward, then the gradients of the kernel and of
            the input, but for a conv reading the network's input)
            and/or `"infer"` (forward).
        lowerings: the candidates, by default all of `FULL_LOWERINGS`.
        reps: timed runs per candidate after a warm-up run; candidates
            alternate run by run and the median counts.
        install: put the choices in the process-wide table, read by every
            `"auto"` `VideoConv` traced afterwards.
        log: optional callable given one line per measured shape.

    Returns:
        A `LoweringTable`. A model without full-kernel `"auto"` layers
        (R(2+1)D, R2D) gives an empty one.
    """
    lowerings = tuple(lowerings or FULL_LOWERINGS)
    unknown = [name for name in lowerings if name not in FULL_LOWERINGS]
    if unknown or not lowerings:
        raise ValueError(f"`lowerings` must be taken from {FULL_LOWERINGS}. Received: {lowerings!r}")
    bad_modes = [m for m in modes if m not in MODES]
    if bad_modes or not modes:
        raise ValueError(f"`modes` must be taken from {MODES}. Received: {tuple(modes)!r}")
    if int(batch_size) < 1 or int(reps) < 1:
        raise ValueError(f"`batch_size` and `reps` must be >= 1. Received: {batch_size}, {reps}")
    backend = keras.backend.backend()
    entries = []
    rng = np.random.default_rng(0)
    for (dims, kernel, strides, padding, filters, dtype, input_gradient), layers in auto_full_convs(
            model, input_shape).items():
        x = keras.ops.convert_to_tensor(rng.standard_normal((int(batch_size), *dims)).astype("float32"), dtype=dtype)
        candidates = {}
        for name in lowerings:
            candidate = VideoConv(filters, kernel, strides=strides, padding=padding,
                                  implementation=IMPLEMENTATION_OF[name], dtype=layers[0].dtype_policy)
            candidate.build((None, *dims))
            candidate.kernel.assign(layers[0].kernel)
            candidates[name] = candidate
        for mode in modes:
            runs = {name: _runner(candidates[name], x, mode, input_gradient) for name in lowerings}
            for run in runs.values():
                run()  # warm-up: tracing or compiling, the kernels' caches
            seconds = {name: [] for name in lowerings}
            for _ in range(int(reps)):
                for name, run in runs.items():
                    start = time.perf_counter()
                    run()
                    seconds[name].append(time.perf_counter() - start)
            # Rounded to the microsecond first, so that the table's choice is `choose` of the times it records.
            ms = {name: round(1e3 * statistics.median(values), 3) for name, values in seconds.items()}
            choice = choose(ms)
            entries.append({"backend": backend, "dtype": str(dtype), "input_shape": list(dims),
                            "kernel": list(kernel), "strides": list(strides), "padding": list(padding),
                            "filters": int(filters), "mode": mode, "batch_size": int(batch_size),
                            "input_gradient": bool(input_gradient) if mode == "train" else False,
                            "layers": len(layers), "ms": ms, "choice": choice})
            if log is not None:
                log(f"{mode} {tuple(dims)} kernel {tuple(kernel)} strides {tuple(strides)} -> {filters}: "
                    + ", ".join(f"{k} {v:.1f} ms" for k, v in ms.items()) + f": {choice}")
    table = LoweringTable(entries, machine=machine_facts(backend))
    if install:
        table.install()
    return table
