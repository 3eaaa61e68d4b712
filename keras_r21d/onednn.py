"""TensorFlow's oneDNN CPU kernels: `keras-r21d train`, `evaluate`, `predict` turn them on, and whether they are on.

TensorFlow 2.21 runs oneDNN's CPU kernels by itself only on processors with
AVX-512 VNNI, bfloat16 or AMX. Elsewhere (AVX2 processors: most AMD EPYC and
Ryzen, older Xeons) it runs Eigen's kernels, built for AVX without FMA. On an
AVX2 EPYC (BENCHMARKS.md), with `TF_ENABLE_ONEDNN_OPTS=1`, the full 3D
convolutions of R3D and MC3 trained about 2x faster, and, once the kernel
gradients of R(2+1)D's temporal and stride-1 spatial convolutions ran as
MatMuls (oneDNN's `Conv2DBackpropFilter` was 1.3-8x slower there; which
runs is measured per shape, `keras_r21d.layers.kernel_gradient`),
R(2+1)D-18 trained 1.42x faster and R2D-18 1.28x. So `keras-r21d train`
(and `tune`, `study`) turns them on for every network.
Inference with them, folded, with R(2+1)D's temporal kernels as `Conv3D`
(`keras_r21d.layers.video_conv.TEMPORAL_CONV3D`), ran R3D-18 1.39-1.46x,
MC3-18 1.20-1.35x and R(2+1)D-18 at batch 8 1.34x faster there, R(2+1)D-18
at batch 1 7% slower; so `evaluate`, `predict` and `extract` (batches of
clips) turn them on too. `export` leaves TensorFlow's choice.

TensorFlow reads `TF_ENABLE_ONEDNN_OPTS` once, when it is imported: a value the
user set always wins, and a process that imported TensorFlow already keeps
what it has. This module imports neither Keras nor TensorFlow.
"""

import functools
import os
import platform
import sys

VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def training_value():
    """The `TF_ENABLE_ONEDNN_OPTS` the package's commands run with: the user's if set, else "1" on x86, else None.

    (On other processors the variable means other kernels: TensorFlow's choice stays.)
    """
    if VARIABLE in os.environ:
        return os.environ[VARIABLE]
    return "1" if platform.machine().lower() in ("x86_64", "amd64") else None


def prefer_onednn():
    """Turns TensorFlow's oneDNN kernels on before TensorFlow is imported; True when it set the variable.

    Does nothing (and returns False) when the user set `TF_ENABLE_ONEDNN_OPTS`,
    when TensorFlow is already imported, or on a processor other than x86.
    """
    value = training_value()
    if VARIABLE in os.environ or "tensorflow" in sys.modules or value is None:
        return False
    os.environ[VARIABLE] = value
    return True


@functools.cache
def onednn_enabled():
    """Whether TensorFlow runs oneDNN's CPU kernels in this process (imports TensorFlow); None if it cannot say."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None
