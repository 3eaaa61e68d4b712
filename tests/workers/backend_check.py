"""The core on another Keras backend, in a process where TensorFlow is not installed.

    KERAS_BACKEND=jax python -S tests/workers/backend_check.py FIXTURES OUT.json [VARIANT,...]

(PYTHONPATH: see the test.)

tests/test_backends.py starts it without the site packages (`-S`) on a copy of them that lacks TensorFlow, so
`import tensorflow` fails here as it does where TensorFlow is not installed. FIXTURES (written on TensorFlow)
holds, per variant, `<variant>.weights.h5`, `<variant>.keras` and TensorFlow's outputs and statistics in
`reference.npz` / `reference.json`. For every variant this process builds the same network, loads the weights
and the `.keras` file, compares outputs, folds the BatchNorms, takes two training steps and saves a `.keras`
file of its own for TensorFlow to read back (every variant, or the comma-separated ones named).
"""

import importlib.util
import json
import os
import sys


def torch_kernels():
    """torch: the layers' own training kernels against Keras' code, outputs and gradients.

    `keras_r21d.layers.BatchNormalization` trains with torch's batch norm kernel on the channels-last view, and
    `VideoConv` convolves that view without Keras' copies (`_torch_conv`). Each is run beside Keras' own code with
    the same weights: outputs, the gradients of the input and the weights, and the moving averages.
    """
    import keras
    import numpy as np
    import torch

    from keras_r21d.layers import BatchNormalization, VideoConv

    rng = np.random.default_rng(0)
    found = {"batchnorm": [], "conv": []}
    calls = []
    batch_norm = torch.nn.functional.batch_norm

    def counting_batch_norm(*args, **kwargs):
        calls.append(1)
        return batch_norm(*args, **kwargs)

    torch.nn.functional.batch_norm = counting_batch_norm

    def weighted_sum(y):  # a loss whose gradient differs element by element
        weights = torch.sin(torch.arange(y.numel(), dtype=torch.float32)).reshape(y.shape)
        return (y.float() * weights).sum()

    for shape, epsilon, policy in (((2, 3, 6, 5, 4), 1e-3, "float32"), ((3, 5, 7, 8), 1e-5, "float32"),
                                   ((2, 3, 6, 5, 4), 1e-3, "mixed_bfloat16")):
        x = rng.normal(2.0, 3.0, shape).astype("float32")
        layers = [cls(epsilon=epsilon, momentum=0.8, dtype=policy)
                  for cls in (keras.layers.BatchNormalization, BatchNormalization)]
        weights = [rng.normal(1, 0.2, shape[-1]), rng.normal(0, 0.2, shape[-1]),
                   rng.normal(0, 0.1, shape[-1]), rng.uniform(0.5, 2, shape[-1])]
        seen = []
        for layer in layers:
            layer.build(shape)
            layer.set_weights(weights)
            before = len(calls)
            steps = []
            for step in range(2):
                xt = torch.tensor(x * (step + 1), requires_grad=True)
                y = layer(xt, training=True)
                grads = torch.autograd.grad(weighted_sum(y), [xt, layer.gamma.value, layer.beta.value])
                steps.append([y.detach().float().numpy(), *[g.numpy() for g in grads]])
            infer = keras.ops.convert_to_numpy(layer(x, training=False)).astype("float32")
            seen.append((steps, layer.get_weights(), infer, len(calls) - before))
        (plain, plain_weights, plain_infer, plain_calls), (own, own_weights, own_infer, own_calls) = seen
        found["batchnorm"].append({
            "shape": shape, "policy": policy, "kernel_calls": [plain_calls, own_calls],
            "diff": max(float(np.abs(b - a).max() / (1 + np.abs(a).max())) for sa, sb in zip(plain, own)
                        for a, b in zip(sa, sb)),
            "moving_diff": max(float(np.abs(b - a).max()) for a, b in zip(plain_weights, own_weights)),
            "infer_diff": float(np.abs(own_infer - plain_infer).max())})
    torch.nn.functional.batch_norm = batch_norm
    # Kernel, strides, padding, lowering: full kernels (3D, im2col, shifted taps), the stem, R(2+1)D's spatial and
    # temporal halves, a strided shortcut.
    for kernel, strides, padding, implementation in (((3, 3, 3), 1, None, "conv3d"), ((3, 3, 3), 2, None, "conv3d"),
                                                     ((3, 7, 7), (1, 2, 2), (1, 3, 3), "conv3d"),
                                                     ((3, 3, 3), 2, None, "conv2d"), ((3, 3, 3), 1, None, "shifted"),
                                                     ((1, 3, 3), (1, 2, 2), None, "auto"),
                                                     ((3, 1, 1), (2, 1, 1), None, "auto"),
                                                     ((1, 1, 1), 2, (0, 0, 0), "auto")):
        layer = VideoConv(6, kernel, strides=strides, padding=padding, implementation=implementation)
        x = torch.tensor(rng.normal(size=(2, 5, 9, 8, 4)).astype("float32"), requires_grad=True)
        y = layer(x, training=True)
        grads = torch.autograd.grad(weighted_sum(y), [x, layer.kernel.value])
        # Keras' own convolution of the zero-padded clip, the same kernel.
        xr = torch.tensor(x.detach().numpy(), requires_grad=True)
        padded = keras.ops.pad(xr, [[0, 0], *[[p, p] for p in layer.padding], [0, 0]])
        yr = keras.ops.conv(padded, layer.kernel.value, strides=layer.strides, padding="valid")
        ref_grads = torch.autograd.grad(weighted_sum(yr), [xr, layer.kernel.value])
        pairs = [(a.detach().numpy(), b.detach().numpy()) for a, b in zip([y, *grads], [yr, *ref_grads])]
        relative = [float(np.abs(a - b).max() / (1 + np.abs(b).max())) for a, b in pairs]
        found["conv"].append({
            "kernel": kernel, "strides": strides, "lowering": layer.lowering_for(True), "shape": list(y.shape),
            "contiguous": bool(y.is_contiguous()),
            "diff": max(relative)})
    return found


if __name__ == "__main__":
    fixtures, out_path = sys.argv[1], sys.argv[2]
    only = sys.argv[3].split(",") if len(sys.argv) > 3 else None
    import keras
    import numpy as np

    import keras_r21d
    from keras_r21d.models.legacy import as_task

    with open(os.path.join(fixtures, "reference.json")) as f:
        reference = json.load(f)
    arrays = np.load(os.path.join(fixtures, "reference.npz"))
    clips, labels = arrays["clips"], arrays["labels"]
    results = {"backend": keras.backend.backend(), "variants": {}}
    for variant, facts in reference["variants"].items():
        if only is not None and variant not in only:
            continue
        keras.utils.set_random_seed(1)
        model = keras_r21d.get_model(f"{variant}_{facts['depth']}", **facts["kwargs"])
        model.load_weights(os.path.join(fixtures, f"{variant}.weights.h5"))
        expected = arrays[f"{variant}_outputs"]
        outputs = keras.ops.convert_to_numpy(model(clips, training=False))
        loaded = keras.models.load_model(os.path.join(fixtures, f"{variant}.keras"), safe_mode=True)
        from_file = keras.ops.convert_to_numpy(loaded(clips, training=False))
        folded = keras.ops.convert_to_numpy(keras_r21d.fold_batchnorm(model)(clips, training=False))
        stats = keras_r21d.model_stats(model)
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
        first = float(model.train_on_batch(clips, labels))  # the loss at the loaded weights, then one step
        second = float(model.train_on_batch(clips, labels))  # the loss after that step
        saved = os.path.join(os.path.dirname(out_path), f"{variant}.{keras.backend.backend()}.keras")
        model.save(saved)
        results["variants"][variant] = {
            "weights_diff": float(np.abs(outputs - expected).max()),
            "file_diff": float(np.abs(from_file - expected).max()),
            "fold_diff": float(np.abs(folded - outputs).max()),
            "paper_params": stats["paper_params"], "gflops": stats["gflops"],
            "losses": [first, second], "saved": saved,
            "classes": [type(model).__name__, type(loaded).__name__, type(loaded.backbone).__name__],
            "saved_outputs": keras.ops.convert_to_numpy(model(clips, training=False)).tolist(),
        }
    # A preset from a local converted .weights.h5 (the cache a first use fills), with the test's own preset.
    from keras_r21d.weights import presets

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from cli_with_preset import PRESET

    presets.PRESETS[:] = [PRESET]
    os.environ["KERAS_R21D_CACHE"] = os.path.join(fixtures, "cache")
    pretrained = keras_r21d.R2Plus1D(10, weights="kinetics400", input_shape=(4, 32, 32, 3))
    results["preset_diff"] = float(np.abs(keras.ops.convert_to_numpy(pretrained(clips, training=False))
                                          - arrays["preset_outputs"]).max())
    # Model files written by 0.1.0 (on TensorFlow) give their recorded outputs here too.
    old = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "v0_1_0", "models")
    recorded = np.load(os.path.join(old, "outputs.npz"))
    results["old_files"] = {}
    for name in sorted(n[:-6] for n in os.listdir(old) if n.endswith(".keras")):
        model = keras.models.load_model(os.path.join(old, f"{name}.keras"), safe_mode=True)
        got = keras.ops.convert_to_numpy(model(recorded["clips"], training=False))
        task = as_task(model)  # read back as a VideoClassifier on its backbone, on this backend too
        as_read = keras.ops.convert_to_numpy(task(recorded["clips"], training=False))
        results["old_files"][name] = max(float(np.abs(got - recorded[name]).max()),
                                         float(np.abs(as_read - recorded[name]).max()))
    # Each full 3D kernel's lowering measured on this backend: every entry times all three lowerings and installs
    # the fastest; the model's outputs stay as they were, and it trains with the training choices.
    from keras_r21d.layers import autotune_lowering, clear_lowering
    from keras_r21d.layers.autotune import choose

    r3d = keras_r21d.get_model("r3d_10", **reference["variants"]["r3d"]["kwargs"])
    before = keras.ops.convert_to_numpy(r3d(clips, training=False))
    table = autotune_lowering(r3d, batch_size=1, reps=1)
    after = keras.ops.convert_to_numpy(r3d(clips, training=False))
    r3d.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    losses = [float(r3d.train_on_batch(clips, labels)) for _ in range(2)]
    results["autotune"] = {
        "entries": len(table.entries), "backends": sorted({e["backend"] for e in table.entries}),
        "fastest": all(e["choice"] == choose(e["ms"]) for e in table.entries),
        "timed": all(len(e["ms"]) == 3 and min(e["ms"].values()) > 0 for e in table.entries),
        "choices": sorted({e["choice"] for e in table.entries}),
        "diff": float(np.abs(after - before).max()), "losses": losses,
    }
    clear_lowering()
    if keras.backend.backend() == "torch":
        results["torch_kernels"] = torch_kernels()
    # What needs TensorFlow says so, in one line naming the extra to install.
    try:
        import keras_r21d.data.pipeline  # noqa: F401
        results["pipeline_error"] = None
    except ImportError as error:
        results["pipeline_error"] = str(error)
    import contextlib
    import io

    from keras_r21d.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["train", "--data", f"folder:{fixtures}", "--out", os.path.join(os.path.dirname(out_path), "run")])
    results["cli_train"] = {"code": code, "stderr": err.getvalue()}
    for command in (["models", "--depth", "10", "--json"], ["presets", "--json"]):  # these need no TensorFlow
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            results[f"cli_{command[0]}"] = {"code": main(command), "rows": len(json.loads(out.getvalue()))}
    results["tensorflow_modules"] = sorted(name for name in sys.modules if name.split(".")[0] == "tensorflow")
    results["tensorflow_findable"] = importlib.util.find_spec("tensorflow") is not None
    with open(out_path, "w") as f:
        json.dump(results, f)
