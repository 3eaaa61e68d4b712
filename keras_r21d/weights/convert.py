"""PyTorch checkpoints of torchvision's `VideoResNet` layout into `keras_r21d` models.

torchvision's `r3d_18`, `mc3_18`, `r2plus1d_18` and the ig65m-pytorch
R(2+1)D-34 models share one state-dict layout:

    stem.0.weight, stem.1.*               3D / 2D stem: conv, BatchNorm
    stem.0, stem.1, stem.3, stem.4        (2+1)D stem: spatial conv (45), BN, temporal conv, BN
    layerL.B.conv1.0.weight               a 3D or 2D conv (O, I, T, H, W)
    layerL.B.conv1.0.{0,1,3}              a (2+1)D conv: spatial conv, its BN, temporal conv
    layerL.B.conv1.1.*, conv2.1.*         the block's BatchNorms
    layerL.B.downsample.{0,1}             the projection shortcut: conv, BN
    fc.weight, fc.bias                    the classifier

Kernels go from `(O, I, T, H, W)` to `(T, H, W, I, O)`; BatchNorm weight,
bias, running mean and variance to gamma, beta, moving mean and variance
(`num_batches_tracked` is not a weight); `fc.weight` is transposed. The
architecture reading must match the checkpoint's: torchvision's per-block
`M` and epsilon 1e-5 (`midplanes="torchvision"`), or the paper's per-conv
`M` and epsilon 1e-3 (the ig65m models). Any unmatched, missing or
mis-shaped tensor is an error naming it, and nothing is assigned until every
tensor has been matched.
"""

import os
import re
import subprocess
import sys
import tempfile

import numpy as np

BN_NAMES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
IGNORED = ("num_batches_tracked",)


class ConversionError(ValueError):
    """A checkpoint that does not fit the model; the message lists every problem."""


def _bn(prefix, variable):
    return f"{prefix}.{BN_NAMES[variable]}"


def _block_part(rest, variable):
    """Torch name inside a block for a Keras sublayer name `rest` (the part after `convS_blockB_`)."""
    match = re.fullmatch(r"conv(\d)", rest)
    if match:  # a 3D or 2D conv of the block
        return f"conv{match.group(1)}.0.weight"
    match = re.fullmatch(r"bn(\d)", rest)
    if match:
        return _bn(f"conv{match.group(1)}.1", variable)
    match = re.fullmatch(r"conv(\d)_(spatial|bn|temporal)", rest)
    if match:  # inside a (2+1)D conv
        index, part = match.groups()
        if part == "bn":
            return _bn(f"conv{index}.0.1", variable)
        return f"conv{index}.0.{0 if part == 'spatial' else 3}.weight"
    if rest == "shortcut_conv":
        return "downsample.0.weight"
    if rest == "shortcut_bn":
        return _bn("downsample.1", variable)
    return None


def torch_name(keras_path, stem_type):
    """The torchvision state-dict key of a Keras weight path, or `None` if it has none."""
    parts = keras_path.split("/")
    layer, variable = parts[-2], parts[-1]
    if layer == "predictions":
        return {"kernel": "fc.weight", "bias": "fc.bias"}.get(variable)
    match = re.fullmatch(r"conv(\d)_block(\d+)_(.+)", layer)
    if match:
        stage, block, rest = int(match.group(1)), int(match.group(2)), match.group(3)
        inner = _block_part(rest, variable)
        return None if inner is None else f"layer{stage - 1}.{block - 1}.{inner}"
    if stem_type == "2plus1d":
        stem = {"conv1_spatial": "stem.0.weight", "conv1_temporal": "stem.3.weight"}
        if layer in stem:
            return stem[layer]
        bns = {"conv1_spatial_bn": "stem.1", "conv1_bn": "stem.4"}
        return _bn(bns[layer], variable) if layer in bns else None
    if layer == "conv1_conv":
        return "stem.0.weight"
    if layer == "conv1_bn":
        return _bn("stem.1", variable)
    return None


def _to_keras(name, tensor):
    tensor = np.asarray(tensor, np.float32)
    if tensor.ndim == 5:
        return np.transpose(tensor, (2, 3, 4, 1, 0))
    if name == "fc.weight":
        return tensor.T
    return tensor


def stem_type_of(model):
    names = {layer.name for layer in model.layers}
    return "2plus1d" if "conv1_spatial" in names else "3d"


def convert_state_dict(state_dict, model, source="checkpoint"):
    """Loads a torchvision-layout state dict (name -> array) into `model`, all or nothing.

    Args:
        state_dict: mapping of torchvision names to arrays (numpy or torch tensors).
        model: a `keras_r21d` model of the same architecture and reading.
        source: the checkpoint's name, for error messages.

    Raises:
        ConversionError: listing every Keras weight without a tensor, every
            tensor without a Keras weight, and every shape mismatch.
    """
    stem = stem_type_of(model)
    tensors = {name: value for name, value in state_dict.items() if not name.endswith(IGNORED)}
    problems, assignments, used = [], [], set()
    for variable in model.weights:
        name = torch_name(variable.path, stem)
        if name is None:
            problems.append(f"Keras weight {variable.path} has no torchvision counterpart")
            continue
        if name not in tensors:
            problems.append(f"missing tensor {name} (for Keras weight {variable.path})")
            continue
        used.add(name)
        value = tensors[name]
        value = value.detach().cpu().numpy() if hasattr(value, "detach") else value
        value = _to_keras(name, value)
        if tuple(value.shape) != tuple(variable.shape):
            problems.append(f"tensor {name} has shape {tuple(np.asarray(tensors[name]).shape)} -> "
                            f"{tuple(value.shape)}, Keras weight {variable.path} needs {tuple(variable.shape)}")
            continue
        assignments.append((variable, value))
    for name in sorted(set(tensors) - used):
        problems.append(f"unexpected tensor {name} (no Keras weight takes it)")
    if problems:
        shown = "\n  ".join(problems[:30])
        more = f"\n  ... and {len(problems) - 30} more" if len(problems) > 30 else ""
        raise ConversionError(f"{source} does not fit model {model.name!r} ({len(problems)} problems):\n  "
                              f"{shown}{more}")
    for variable, value in assignments:
        variable.assign(value)
    return model


def load_torch_checkpoint(path, timeout=900):
    """A `.pth` state dict as numpy arrays, read with `torch.load(weights_only=True)` (needs `torch`).

    The file is read in a child process that loads only torch and numpy:
    torch imported after TensorFlow in one process crashes it.
    """
    if not os.path.isfile(path):
        raise ConversionError(f"checkpoint not found: {path}")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_read_pth.py")
    with tempfile.TemporaryDirectory(prefix="keras_r21d_pth_") as folder:
        out = os.path.join(folder, "state.npz")
        try:
            result = subprocess.run([sys.executable, script, os.path.abspath(path), out], capture_output=True,
                                    text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ConversionError(f"reading {path} took more than {timeout} s") from None
        reason = (result.stderr.strip().splitlines() or ["no message"])[-1]
        if result.returncode == 3:
            raise ImportError(reason)
        if result.returncode != 0:
            raise ConversionError(f"cannot read PyTorch checkpoint {path}: {reason}")
        with np.load(out, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
