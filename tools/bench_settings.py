"""A/B of keras_r21d settings in one run: `python tools/bench_settings.py MODEL MODE BATCH [CONFIGS] [SHAPE]`.

Each configuration gets its own `keras-r21d bench` worker process (so that
process-wide switches such as `TF_ENABLE_ONEDNN_OPTS` apply), the
configurations run alternately rep by rep, and the median of 5 timed reps
after one warm-up is printed. Configurations: `default`, `onednn_off`
(`TF_ENABLE_ONEDNN_OPTS=0`), `conv3d` (`implementation="conv3d"`), `conv2d`
(`implementation="conv2d"`: full 3D kernels by temporal im2col), `folded`
(inference of `keras_r21d.fold_batchnorm(model)`), `xla` (`jit_compile=True`),
`folded_xla`, `plain_bn` (Keras' own BatchNormalization code in training,
the before of `BatchNormalization`'s fused call), `keep_pad` (padded strided
convolutions keep their padded input for the backward pass instead of
padding again), `autotune` and
`folded_autotune` (each full 3D kernel's lowering measured first by
`keras_r21d.layers.autotune_lowering`, at the bench's batch and mode),
`tap_grad` and `conv_grad` (every 2D convolution's kernel gradient as one
MatMul per kernel tap, or as the framework's own convolution gradient,
TensorFlow's `Conv2DBackpropFilter` whatever oneDNN's state or XLA's on
JAX: by default the taps run with oneDNN on where they measured faster
for the shape, `keras_r21d.layers.kernel_gradient`, and on JAX for
kernels over 32 or more channels), `temporal_conv3d` and `temporal_conv2d` (inference of
temporal kernels as one 5-D `Conv3D`, or as a `(t, 1)` `Conv2D`, whatever
oneDNN's state: by default `Conv3D` with oneDNN on), `keep_activation`
(each `BatchNorm -> ReLU -> conv` keeps `relu(bn(x))` for the backward pass
instead of computing it again there: `keras_r21d.layers.recompute`),
`jax` (the package on `KERAS_BACKEND=jax`; `jax+conv_grad` is XLA's own
kernel gradients there), `torch` (on `KERAS_BACKEND=torch`) and `torch_keras_ops` (the
same with Keras' own `ops.conv` and BatchNormalization code, the before of
the layers' torch kernels); CONFIGS is
a comma-separated subset, and `A+B` runs configurations A and B together
(e.g. `conv3d+onednn_on`). SHAPE is `FRAMESxSIZE[xWIDTH_MULTIPLIER]`
(default `16x112x1`), e.g. the small networks of `make demo` and
`keras-r21d study`:

    python tools/bench_settings.py r2plus1d_18 train 4
    python tools/bench_settings.py r3d_18 train 4 default,onednn_off
    python tools/bench_settings.py r3d_10 train 16 default,conv2d 8x48x0.25
    python tools/bench_settings.py r2plus1d_18 infer 1 default,folded
    python tools/bench_settings.py r3d_18 train 4 torch,torch_keras_ops
    python tools/bench_settings.py r2plus1d_18 train 4 onednn_on,conv3d+onednn_on
    python tools/bench_settings.py r2plus1d_18 infer 1 folded_onednn_on,folded_onednn_on+temporal_conv2d
    python tools/bench_settings.py r2plus1d_18 train 4 default,keep_activation
    python tools/bench_settings.py r2plus1d_18 train 4 jax,jax+conv_grad
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from keras_r21d.bench import Worker  # noqa: E402

CONFIGS = {  # name: (environment, setup arguments)
    "default": ({}, {}),
    "onednn_off": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, {}),
    "onednn_on": ({"TF_ENABLE_ONEDNN_OPTS": "1"}, {}),
    "folded_onednn_off": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, {"fold_batchnorm": True}),
    "folded_onednn_on": ({"TF_ENABLE_ONEDNN_OPTS": "1"}, {"fold_batchnorm": True}),
    "conv3d": ({}, {"implementation": "conv3d"}),
    "conv2d": ({}, {"implementation": "conv2d"}),
    "folded": ({}, {"fold_batchnorm": True}),
    "xla": ({}, {"jit_compile": True}),
    "folded_xla": ({}, {"fold_batchnorm": True, "jit_compile": True}),
    "plain_bn": ({}, {"plain_batchnorm": True}),
    "keep_pad": ({}, {"keep_pad": True}),
    "autotune": ({}, {"autotune_lowering": True}),
    "folded_autotune": ({}, {"fold_batchnorm": True, "autotune_lowering": True}),
    "tap_grad": ({}, {"kernel_gradient": "taps"}),
    "conv_grad": ({}, {"kernel_gradient": "conv"}),
    "temporal_conv3d": ({}, {"temporal_conv3d": True}),
    "temporal_conv2d": ({}, {"temporal_conv3d": False}),
    "keep_activation": ({}, {"keep_activation": True}),
    "jax": ({"KERAS_BACKEND": "jax"}, {}),
    "torch": ({"KERAS_BACKEND": "torch"}, {}),
    "torch_keras_ops": ({"KERAS_BACKEND": "torch"}, {"plain_batchnorm": True, "keras_conv": True}),
}


def config(name):
    """The environment and setup arguments of `name`, a configuration or several joined by `+`."""
    env, settings = {}, {}
    for part in name.split("+"):
        if part not in CONFIGS:
            raise SystemExit(f"unknown configuration {part!r} in {name!r}; known: {', '.join(CONFIGS)}")
        env.update(CONFIGS[part][0])
        settings.update(CONFIGS[part][1])
    return env, settings


def main(argv):
    model, mode, batch = argv[0], argv[1], int(argv[2])
    names = argv[3].split(",") if len(argv) > 3 else list(CONFIGS)
    shape = (argv[4] if len(argv) > 4 else "16x112x1").split("x")
    frames, size, width = int(shape[0]), int(shape[1]), float(shape[2]) if len(shape) > 2 else 1.0
    workers = {}
    for name in names:
        env, settings = config(name)
        saved = dict(os.environ)
        os.environ.update(env)
        try:
            workers[name] = Worker([sys.executable, "-m", "keras_r21d.bench._keras_worker", "2"], name)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        ready = workers[name].ask(op="setup", model=model, mode=mode, batch=batch, frames=frames, size=size,
                                  width_multiplier=width, **settings)
        if ready.get("lowerings"):  # what autotune_lowering chose: layers per lowering
            print(f"{name}: full 3D kernels measured fastest as {ready['lowerings']}", flush=True)
    times = {name: [] for name in workers}
    for rep in range(6):
        for name, worker in workers.items():
            seconds = worker.ask(op="run")["seconds"]
            if rep:
                times[name].append(seconds)
    for name, worker in workers.items():
        median = statistics.median(times[name])
        print(f"{model} {mode} batch {batch} {frames}x{size}x{size} width x{width:g} {name}: "
              f"{batch / median:.3f} clips/s ({median:.3f} s)")
        worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
