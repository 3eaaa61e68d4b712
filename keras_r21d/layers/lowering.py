"""Measured lowerings of full 3D kernels: the per-layer choice behind `VideoConv(implementation="auto")`.

This module holds the process-wide table and its file format;
`keras_r21d.layers.autotune` measures.

Which lowering of a full `t x h x w` kernel runs fastest (a 5-D `Conv3D`,
temporal im2col, or the sum of `t` 2D convolutions over shifted frames)
depends on the layer's shape, on the machine and on the backend's kernels
for it: on one 2-core EPYC `Conv3D` trains R3D-18's 3x3x3 layers 1.4-2.4x
faster than im2col, while on another 2-core machine im2col trained a small
R3D 4.7x faster (BENCHMARKS.md). So, as `torch.backends.cudnn.benchmark`
does, the choice is measured on the machine that runs:

>>> table = autotune_lowering(model, batch_size=8)   # doctest: +SKIP

times every distinct full 3D convolution of `model` in each lowering,
forward (inference) and forward plus the gradients of its kernel and,
unless it reads the network's input (the stem), of its input (training),
with the same weights and a random batch, and installs the fastest per
layer shape and mode in a process-wide table. Every `VideoConv`
with `implementation="auto"` reads that table when it is called (traced),
so install it before the first `fit` or `predict` of a model. Weights are
stored alike whatever the lowering, and the outputs agree to float32
summation order (about 1e-5): a table changes speed, never a file or a
result. Without an entry a full kernel runs as `Conv3D`.

`table.save(path)` writes the measurements as JSON; `LoweringTable.load(path)`
reads them back and `.install()` reuses them without measuring again
(`keras-r21d train --autotune-lowering` keeps the run's in `lowering.json`).
"""

import contextlib
import json
import os
import platform

import keras

from keras_r21d._files import atomic_write_text

FORMAT = "keras_r21d.lowering_table/1"
MODES = ("train", "infer")
# The lowerings of a full `t x h x w` kernel (`t > 1` and `h * w > 1`), the candidates `autotune_lowering` times.
FULL_LOWERINGS = ("conv3d", "im2col", "shifted")
# The `implementation` that runs a full kernel in each of them.
IMPLEMENTATION_OF = {"conv3d": "conv3d", "im2col": "conv2d", "shifted": "shifted"}
_INSTALLED = {}  # key (see _key) -> lowering


def _key(backend, dtype, input_shape, kernel, strides, padding, filters, mode):
    return (backend, str(dtype), tuple(int(d) for d in input_shape), tuple(kernel), tuple(strides), tuple(padding),
            int(filters), mode)


def _layer_key(layer, input_shape, mode, backend=None):
    """The table key of `layer` called on `(batch, *dims)` inputs in `mode`, or `None` when a dim is unknown."""
    if input_shape is None or len(input_shape) != 5 or any(d is None for d in input_shape[1:]):
        return None
    return _key(backend or keras.backend.backend(), layer.compute_dtype, input_shape[1:], layer.kernel_size,
                layer.strides, layer.padding, layer.filters, mode)


def measured_lowering(layer, input_shape, training):
    """The installed lowering of a full-kernel `VideoConv` on `input_shape` in training or inference, or `None`."""
    if not _INSTALLED:
        return None
    key = _layer_key(layer, input_shape, "train" if training else "infer")
    return _INSTALLED.get(key) if key is not None else None


def installed():
    """A copy of the process-wide table: `{key: lowering}`."""
    return dict(_INSTALLED)


def clear_lowering():
    """Empties the process-wide table: every `"auto"` full kernel runs as `Conv3D` again (in new traces)."""
    _INSTALLED.clear()


@contextlib.contextmanager
def lowering_scope():
    """Restores the process-wide table on exit: choices installed inside (e.g. by one training run) stay inside."""
    saved = dict(_INSTALLED)
    try:
        yield
    finally:
        _INSTALLED.clear()
        _INSTALLED.update(saved)


class LoweringError(ValueError):
    """A lowering table file that cannot be used; the message names the file and the entry."""


class LoweringTable:
    """Per-layer-shape timings of the full-kernel lowerings and the choice made from them.

    `entries` is a list of dicts: `backend`, `dtype`, `input_shape`
    (`(T, H, W, C)`), `kernel`, `strides`, `padding`, `filters`, `mode`
    (`"train"` or `"infer"`), `batch_size`, `input_gradient` (whether the
    training pass computed the input's gradient: not for the stem),
    `layers` (how many layers of the measured model have this shape), `ms`
    (`{lowering: median milliseconds}`) and `choice` (the fastest, or
    `conv3d` when nothing beats it by 5%).
    """

    def __init__(self, entries, machine=None):
        self.entries = list(entries)
        self.machine = dict(machine or {})

    def choices(self):
        return {_key(e["backend"], e["dtype"], e["input_shape"], e["kernel"], e["strides"], e["padding"],
                     e["filters"], e["mode"]): e["choice"] for e in self.entries}

    def machine_matches(self):
        """Whether this table was measured on this kind of machine: the same processor, CPU count and backend."""
        here = machine_facts(keras.backend.backend())
        return all(self.machine.get(k) == here[k] for k in ("backend", "cpu", "cpus"))

    def install(self):
        """Adds this table's choices to the process-wide table (later entries replace earlier ones); returns self."""
        _INSTALLED.update(self.choices())
        return self

    def to_json(self):
        return {"format": FORMAT, "machine": self.machine, "entries": self.entries}

    def save(self, path):
        """Writes the table as JSON, atomically (`atomic_write_text`: a temporary file, fsync, a rename)."""
        atomic_write_text(path, json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path):
        """Reads a table `save` wrote; a `LoweringError` names the file and what is wrong."""
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise LoweringError(f"{path}: not a readable lowering table ({e})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise LoweringError(f"{path}: not a lowering table of this version (format {found!r}, expected "
                                f"{FORMAT!r})")
        entries = data.get("entries")
        if not isinstance(entries, list):
            raise LoweringError(f"{path}: `entries` must be a list")
        fields = ("backend", "dtype", "input_shape", "kernel", "strides", "padding", "filters", "mode", "choice")
        for i, entry in enumerate(entries):
            missing = [k for k in fields if not isinstance(entry, dict) or k not in entry]
            if missing:
                raise LoweringError(f"{path}: entry {i} lacks {', '.join(missing)}")
            if entry["choice"] not in FULL_LOWERINGS:
                raise LoweringError(f"{path}: entry {i} chooses {entry['choice']!r}; a full kernel's lowering is "
                                    f"one of {FULL_LOWERINGS}")
            if entry["mode"] not in MODES:
                raise LoweringError(f"{path}: entry {i} has mode {entry['mode']!r}, not one of {MODES}")
            if len(entry["input_shape"]) != 4:
                raise LoweringError(f"{path}: entry {i} has input_shape {entry['input_shape']!r}, not (T, H, W, C)")
        return cls(entries, data.get("machine"))

    def summary(self):
        """A Markdown table: one row per layer shape and mode, the milliseconds of each lowering, the choice."""
        lines = ["| mode | input (T, H, W, C) | kernel | strides | filters | layers | "
                 + " | ".join(f"{name} ms" for name in FULL_LOWERINGS) + " | choice |",
                 "|---|---|---|---|---:|---:|" + "---:|" * len(FULL_LOWERINGS) + "---|"]
        for e in self.entries:
            times = " | ".join(f"{e['ms'][name]:.1f}" if name in e.get("ms", {}) else "-" for name in FULL_LOWERINGS)
            lines.append(f"| {e['mode']} | {tuple(e['input_shape'])} | {tuple(e['kernel'])} | {tuple(e['strides'])} "
                         f"| {e['filters']} | {e.get('layers', '')} | {times} | {e['choice']} |")
        return "\n".join(lines)


def machine_facts(backend):
    """What a table's choices depend on: the backend, Keras, the processor and CPU count (and Python)."""
    model_name = None
    try:
        with open("/proc/cpuinfo") as f:
            model_name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        pass
    return {"backend": backend, "keras": keras.__version__, "cpu": model_name or platform.processor(),
            "cpus": os.cpu_count(), "python": platform.python_version()}
