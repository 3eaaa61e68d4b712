"""TFLite (LiteRT) export: batch-1 clips in, probabilities out; no `CONV_3D` by default.

With `implementation="conv2d"` (the default) every convolution is lowered
to `CONV_2D` on reshaped tensors (a full 3D kernel by temporal im2col), so
the file runs under the XNNPACK and GPU delegates and quantizes fully to
int8, for every variant, R3D and MCx included. `implementation="auto"` keeps
the model's own lowering, where full 3D kernels become `CONV_3D` (float
only, CPU only; temporal ones stay `CONV_2D`, even where TensorFlow's
oneDNN kernels run them as `Conv3D`). No select-TF (Flex) op is ever allowed.
"""

import json
import os
import tempfile

import keras
import numpy as np

from keras_r21d._tensorflow import tf
from keras_r21d.export import graph
from keras_r21d.export.saved_model import ExportError, _config_dict, check_class_names, check_clip_shape
from keras_r21d.layers.video_conv import temporal_conv2d
from keras_r21d.training.io import atomic_write_bytes, atomic_write_text

QUANTIZATIONS = (None, "float16", "dynamic", "int8")


def _op_names():
    from tensorflow.lite.python import schema_py_generated as schema

    return {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}


def tflite_ops(model):
    """Op types of a `.tflite` file (path or bytes) and how often each occurs: `{"CONV_2D": 37, ...}`."""
    from tensorflow.lite.python import schema_py_generated as schema

    if isinstance(model, (str, os.PathLike)):
        with open(model, "rb") as f:
            model = f.read()
    names = _op_names()
    root = schema.Model.GetRootAs(bytearray(model), 0)
    codes = []
    for i in range(root.OperatorCodesLength()):
        code = root.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = names.get(builtin, str(builtin))
        if name == "CUSTOM":
            name = code.CustomCode().decode()
        codes.append(name)
    counts = {}
    for s in range(root.SubgraphsLength()):
        subgraph = root.Subgraphs(s)
        for o in range(subgraph.OperatorsLength()):
            name = codes[subgraph.Operators(o).OpcodeIndex()]
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def interpreter(model, num_threads=None, delegates=True):
    """A LiteRT interpreter (`ai_edge_litert`) for a `.tflite` path or bytes, tensors allocated.

    `delegates=False` runs the plain builtin kernels (no XNNPACK).
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs = {"model_path": os.fspath(model)} if isinstance(model, (str, os.PathLike)) else {"model_content": model}
    if not delegates:
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    runner = Interpreter(num_threads=num_threads, **kwargs)
    runner.allocate_tensors()
    return runner


def run_tflite(runner, clips):
    """Runs a batch-1 interpreter over `(N, T, H, W, 3)` clips one at a time: `(N, classes)`."""
    inp = runner.get_input_details()[0]
    out = runner.get_output_details()[0]
    results = []
    for clip in np.asarray(clips, np.float32):
        runner.set_tensor(inp["index"], clip[None])
        runner.invoke()
        results.append(np.array(runner.get_tensor(out["index"])[0]))
    return np.stack(results)


def _converter(saved_model_dir, quantization, representative_data):
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # never Flex ops
    if quantization is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        data = np.asarray(representative_data, np.float32)
        converter.representative_dataset = lambda: ([clip[None]] for clip in data)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # Inputs and outputs stay float32: the app passes normalized clips and reads probabilities.
        converter.inference_input_type = tf.float32
        converter.inference_output_type = tf.float32
    return converter


def export_tflite(model, path, quantization=None, representative_data=None, implementation="conv2d",
                  clip_config=None, class_names=None, check_data=None, tolerance=1e-4, fold_batchnorm=True):
    """Exports a model to a `.tflite` file taking one normalized clip `(1, T, H, W, 3)`.

    Args:
        model: a `keras_r21d` classification model.
        path: the `.tflite` file to write; a report goes beside it as `PATH.json`.
        quantization: `None` (float32), `"float16"`, `"dynamic"` (int8
            weights) or `"int8"` (full integer; needs `representative_data`).
        representative_data: normalized clips `(N, T, H, W, 3)` for int8
            calibration; also the data the parity check runs on.
        implementation: `"conv2d"` (no `CONV_3D`, default), `"shifted"` (no
            `CONV_3D`, each full 3D kernel as a sum of 2D ones) or
            `"auto"`/`"conv3d"` (full 3D kernels as `CONV_3D`: float only).
        clip_config: clip length and crop (default: the evaluator's for the model).
        class_names: written into the report for apps and `keras-r21d predict`.
        check_data: clips for the parity check (default `representative_data`,
            else 4 random clips).
        tolerance: float32 exports must match Keras' probabilities within this.
        fold_batchnorm: convert `keras_r21d.fold_batchnorm(model)`: every
            BatchNorm folded into its convolution, so no `MUL`/`ADD` follows
            the convolutions (the check still compares with `model` itself).

    Returns:
        The report: `path`, `ops` (op type -> count), `has_conv3d`, `quantization`,
        `max_abs_diff`, `top1_agreement`, `input_shape`, `size_bytes`, `notes`.
    """
    from keras_r21d.training.evaluation import test_clip_config

    if quantization not in QUANTIZATIONS:
        raise ValueError(f"`quantization` must be one of {QUANTIZATIONS}. Received: {quantization!r}")
    if quantization == "int8" and representative_data is None:
        raise ValueError("int8 quantization needs `representative_data`: normalized clips to calibrate on")
    if class_names is not None:
        class_names = check_class_names(class_names, int(model.output_shape[-1]))
    config = clip_config or test_clip_config(model)
    shape = check_clip_shape(model, config)
    reference = graph.probabilities_fn(graph.as_float32(model))  # a mixed-precision model's float32 network
    if implementation != "auto":
        model = graph.with_implementation(model, implementation)
    model = graph.folded(model) if fold_batchnorm else graph.as_float32(model)  # float32 whatever the training policy
    probabilities = graph.probabilities_fn(model)

    # TFLite has no oneDNN: `"auto"` temporal kernels stay 2D convolutions whatever this process runs.
    with tempfile.TemporaryDirectory(prefix="keras_r21d_tflite_") as staging, temporal_conv2d():
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", lambda clips: {"probabilities": probabilities(clips)},
                             input_signature=[tf.TensorSpec((1, *shape), tf.float32, name="clips")])
        archive.write_out(staging, verbose=False)
        try:
            content = _converter(staging, quantization, representative_data).convert()
        except Exception as error:  # noqa: BLE001 - the converter raises many types; name the cause
            hint = (" (full 3D kernels cannot be int8: export with implementation='conv2d')"
                    if quantization == "int8" and implementation not in ("conv2d", "shifted") else "")
            raise ExportError(f"TFLite conversion failed{hint}: {type(error).__name__}: {error}") from None

    ops = tflite_ops(content)
    flex = [name for name in ops if name.startswith("Flex") or name == "CUSTOM"]
    if flex:
        raise ExportError(f"the TFLite model needs ops outside the builtin set: {flex}")
    notes = []
    if "CONV_3D" in ops:
        notes.append("contains CONV_3D: float only, not supported by the GPU delegate; "
                     "export with implementation='conv2d' for a 2D-only model")

    if check_data is None:
        check_data = representative_data
    if check_data is None:
        check_data = np.random.default_rng(0).normal(size=(4, *shape)).astype("float32")
    check_data = np.asarray(check_data, np.float32)
    expected = reference(tf.constant(check_data)).numpy()
    served = run_tflite(interpreter(content), check_data)
    diff = float(np.abs(served - expected).max())
    agreement = float((served.argmax(-1) == expected.argmax(-1)).mean())
    if quantization is None and not diff <= tolerance:
        raise ExportError(f"TFLite outputs differ from Keras' by {diff:.3g} (tolerance {tolerance})")

    report = {
        "path": os.path.abspath(path),
        "quantization": quantization or "float32",
        "implementation": implementation,
        "batchnorm_folded": bool(fold_batchnorm),
        "ops": ops,
        "has_conv3d": "CONV_3D" in ops,
        "input_shape": [1, *shape],
        "size_bytes": len(content),
        "max_abs_diff": diff,
        "top1_agreement": agreement,
        "checked_clips": int(len(check_data)),
        "notes": notes,
        "class_names": list(class_names) if class_names is not None else None,
        "clip_config": _config_dict(config),
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_bytes(path, content)
    atomic_write_text(path + ".json", json.dumps(report, indent=2))
    return report


def load_report(path):
    """The `PATH.json` report written beside a `.tflite` file, or `{}`."""
    report = path + ".json"
    if not os.path.isfile(report):
        return {}
    with open(report, encoding="utf-8") as f:
        return json.load(f)
