"""keras_r21d side of `keras-r21d bench`: the protocol of `_protocol.py`, as `_torch_worker.py`.

    KERAS_BACKEND=tensorflow|jax|torch python -m keras_r21d.bench._keras_worker THREADS

Extra commands: `setup` takes `implementation`, `width_multiplier`,
`fold_batchnorm` (inference of `keras_r21d.fold_batchnorm(model)`),
`jit_compile` (XLA, TensorFlow), `autotune_lowering` (`keras_r21d.layers.autotune_lowering` at
the bench's batch and mode before the first step), `plain_batchnorm` (Keras' own
`BatchNormalization` code instead of the fused training call) and `keep_pad` (padded strided
convolutions keep their padded input for the backward pass, as before `VideoConv` padded again),
`kernel_gradient` (`"taps"` or `"conv"`: whether 2D convolutions' kernel gradients run as MatMuls per
kernel tap on TensorFlow, `keras_r21d.layers.video_conv.TAP_KERNEL_GRADIENT`), `temporal_conv3d`
(True or False: whether temporal kernels infer as one 5-D `Conv3D` on TensorFlow, `TEMPORAL_CONV3D`),
`keep_activation` (each `BatchNorm -> ReLU -> conv` keeps `relu(bn(x))` for the backward pass, as before
`keras_r21d.layers.recompute`);
`pipeline` (TensorFlow) times the training input pipeline on real encoded videos. On JAX and PyTorch the
worker imports no TensorFlow: torch and TensorFlow must not share a process.
"""

import functools
import os
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _pipeline(command):
    """Training clips/s of `train_dataset` over freshly written 320x240 videos."""
    import cv2

    from keras_r21d.data import ClipConfig, load_dataset, train_dataset
    from keras_r21d.data.synthetic import write_video

    folder = tempfile.mkdtemp(prefix="keras_r21d_bench_")
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        os.makedirs(os.path.join(folder, label))
        for index in range(command["videos"] // 2):
            # A textured scene panning sideways: compresses like camera footage, unlike noise.
            texture = cv2.resize(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), (320, 240))
            frames = np.stack([np.roll(texture, 3 * t, axis=1) for t in range(command["video_frames"])])
            write_video(os.path.join(folder, label, f"v{index}.avi"), frames, fps=30)
    dataset = load_dataset(f"folder:{folder}", "train")
    config = ClipConfig(clip_len=command["frames"], crop=command["size"])
    batches = train_dataset(dataset, command["batch"], config, seed=0, repeat=True)
    iterator = iter(batches)
    for _ in range(2):
        next(iterator)
    start = time.perf_counter()
    count = 0
    for _ in range(command["steps"]):
        clips, _ = next(iterator)
        count += int(clips.shape[0])
    return {"clips_per_second": count / (time.perf_counter() - start), "videos": len(dataset.paths)}


def _profile(run, steps):
    """Op kernel time per op type and step, from TensorFlow's profiler (the executor threads' op events)."""
    import glob
    import shutil

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    logdir = tempfile.mkdtemp(prefix="keras_r21d_profile_")
    try:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for _ in range(steps):
            run()
        wall = (time.perf_counter() - start) / steps
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        with open(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0], "rb") as f:
            space.ParseFromString(f.read())
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    ops = {}
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue  # op kernels run on the executor's threads; other lines are Python and Eigen workers
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" not in name or "::" in name:
                    continue  # executor bookkeeping (`ExecutorState::Process`), not an op (`scope/name:OpType`)
                op_type = name.rsplit(":", 1)[1]
                if op_type.endswith("PartitionedCall"):
                    continue  # a function call: its ops are counted themselves
                ops[op_type] = ops.get(op_type, 0.0) + event.duration_ps / 1e12 / steps
    return {"ops": ops, "wall_s": wall}


def _pin_threads(backend, threads):
    """The backend's compute on `threads` threads (as the torchvision side), before it starts."""
    if backend == "jax":
        # XLA's CPU client takes no thread count (an `intra_op_parallelism_threads=` in XLA_FLAGS is ignored
        # without a word): the process is kept on `threads` CPUs instead.
        available = sorted(os.sched_getaffinity(0))
        if threads < len(available):
            os.sched_setaffinity(0, available[:threads])
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    elif backend == "torch":
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
    else:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)


def _compiled_forward(model, backend, jit_compile):
    """The model's inference call, compiled as each backend compiles it: a `tf.function` on TensorFlow, `jax.jit`
    of the stateless call on JAX (the weights as arguments, as `predict` runs it), eager under no_grad on torch."""
    if backend == "tensorflow":
        import tensorflow as tf

        forward = tf.function(functools.partial(model, training=False), jit_compile=jit_compile)
        return lambda x: forward(x).numpy()
    if backend == "jax":
        import jax

        state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables])
        call = jax.jit(lambda trainable, non_trainable, x: model.stateless_call(trainable, non_trainable, x,
                                                                                training=False)[0])
        return lambda x: np.asarray(call(*state, x))
    import torch

    def forward(x):
        with torch.no_grad():
            return model(x, training=False).cpu().numpy()

    return forward


def main(threads):
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    _pin_threads(backend, threads)
    import keras

    import keras_r21d
    from keras_r21d.bench._protocol import serve

    fused_call = keras_r21d.layers.BatchNormalization.call

    def setup(command):
        keras.backend.clear_session()
        # `plain_batchnorm`: Keras' own BatchNormalization code in training (the before of the fused layer).
        fused = keras_r21d.layers.BatchNormalization
        fused.call = keras.layers.BatchNormalization.call if command.get("plain_batchnorm") else fused_call
        # `keep_pad`: the plain gradient of `Pad` and a valid convolution (the before of `_padded_conv`).
        keras_r21d.layers.video_conv.RECOMPUTE_PAD = not command.get("keep_pad")
        # `keras_conv`: Keras' own `ops.conv` on torch (the before of `_torch_conv`).
        keras_r21d.layers.video_conv.DIRECT_TORCH_CONV = not command.get("keras_conv")
        # `kernel_gradient`: "taps" or "conv" forces how 2D convolutions' kernel gradients run on TensorFlow and JAX
        # (`TAP_KERNEL_GRADIENT`; by default, with oneDNN on, taps where they measured faster for the shape).
        keras_r21d.layers.video_conv.TAP_KERNEL_GRADIENT = {"taps": True, "conv": False}.get(
            command.get("kernel_gradient"))
        # `temporal_conv3d`: True or False forces how temporal kernels infer on TensorFlow (`TEMPORAL_CONV3D`;
        # by default a 5-D `Conv3D` with oneDNN on).
        keras_r21d.layers.video_conv.TEMPORAL_CONV3D = command.get("temporal_conv3d")
        # `keep_activation`: relu(bn(x)) kept for the backward pass (the before of `recompute.bn_relu_conv`).
        keras_r21d.layers.recompute.RECOMPUTE_ACTIVATION = not command.get("keep_activation")
        shape = (command["frames"], command["size"], command["size"], 3)
        model = keras_r21d.get_model(command["model"], input_shape=shape, classes=400, midplanes="torchvision",
                                     implementation=command.get("implementation", "auto"),
                                     width_multiplier=command.get("width_multiplier", 1.0))
        rng = np.random.default_rng(0)
        x = rng.standard_normal((command["batch"], *shape)).astype("float32")
        y = rng.integers(0, 400, command["batch"])
        keras_r21d.layers.clear_lowering()
        choices = {}
        if command.get("autotune_lowering"):  # each full 3D kernel's lowering measured in this mode, at this batch
            table = keras_r21d.layers.autotune_lowering(
                model, batch_size=command["batch"], modes=("infer",) if command["mode"] == "infer" else ("train",))
            for entry in table.entries:
                choices[entry["choice"]] = choices.get(entry["choice"], 0) + entry["layers"]
        if command["mode"] == "infer":
            if command.get("fold_batchnorm"):
                model = keras_r21d.fold_batchnorm(model)
            forward = _compiled_forward(model, backend, bool(command.get("jit_compile")))

            def run():
                forward(x)
        else:
            model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="sparse_categorical_crossentropy",
                          jit_compile=bool(command.get("jit_compile")) if backend == "tensorflow" else "auto")

            def run():
                model.train_on_batch(x, y)

        stats = keras_r21d.model_stats(model)
        return run, {"ok": True, "macs": stats["macs"], "trainable_params": stats["trainable_params"],
                     "lowerings": choices}

    def gemm(n):
        a = keras.random.normal((n, n), seed=1)
        b = keras.random.normal((n, n), seed=2)
        return lambda: keras.ops.convert_to_numpy(keras.ops.matmul(a, b))

    versions = {"keras": keras.__version__, "backend": backend}
    if backend == "tensorflow":
        import tensorflow as tf

        versions["tensorflow"] = tf.__version__
        from keras_r21d.onednn import onednn_enabled

        versions["onednn"] = onednn_enabled()
    else:
        versions[backend] = __import__(backend).__version__
    extra = {"pipeline": _pipeline} if backend == "tensorflow" else {}
    serve(versions, setup, gemm, extra, profile=_profile if backend == "tensorflow" else None)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
