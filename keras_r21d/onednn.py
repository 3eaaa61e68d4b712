"""TensorFlow's oneDNN CPU kernels: the networks that train faster with them, and whether they are on.

TensorFlow 2.21 runs oneDNN's CPU kernels by itself only on processors with
AVX-512 VNNI, bfloat16 or AMX. Elsewhere (AVX2 processors: most AMD EPYC and
Ryzen, older Xeons) it runs Eigen's kernels, built for AVX without FMA, and
there the full 3D convolutions of R3D, MCx and rMCx train at about half
speed: an R3D-18 training step ran 1.95x faster with `TF_ENABLE_ONEDNN_OPTS=1`
on an AVX2 EPYC, and MC3-18 went from 0.49x to 1.24x torchvision, while
R(2+1)D-18 (2D and 1D convolutions only) ran 5% slower and peaked about 450 MB
higher (BENCHMARKS.md). So `keras-r21d train` turns them on for the networks
with full 3D kernels, and leaves TensorFlow's choice for the others.

TensorFlow reads `TF_ENABLE_ONEDNN_OPTS` once, when it is imported: a value the
user set always wins, and a process that imported TensorFlow already keeps
what it has. This module imports neither Keras nor TensorFlow.
"""

import os
import platform
import sys

from keras_r21d.models.specs import VARIANTS

VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def has_full_3d_kernels(arch):
    """Whether variant `arch` (`"r3d"`, `"mc3"`, ...) has a full `t x h x w` convolution: a 3D stem or 3D stage.

    Example:

    >>> has_full_3d_kernels("mc3"), has_full_3d_kernels("r2plus1d")
    (True, False)
    """
    _, stem, stages = VARIANTS[arch]
    return stem == "3d" or "3d" in stages


def prefer_onednn(arch):
    """Turns TensorFlow's oneDNN kernels on before TensorFlow is imported, if `arch` has full 3D kernels.

    Does nothing (and returns False) when the user set `TF_ENABLE_ONEDNN_OPTS`,
    when TensorFlow is already imported, on a processor other than x86 (where
    the variable means other kernels), or for a network without full 3D
    kernels. Returns True when it set the variable.
    """
    if (VARIABLE in os.environ or "tensorflow" in sys.modules or arch not in VARIANTS
            or platform.machine().lower() not in ("x86_64", "amd64") or not has_full_3d_kernels(arch)):
        return False
    os.environ[VARIABLE] = "1"
    return True


def onednn_enabled():
    """Whether TensorFlow runs oneDNN's CPU kernels in this process (imports TensorFlow); None if it cannot say."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None
