"""The core (layers, builders, model_stats, fold_batchnorm, .keras files) on JAX and PyTorch, without TensorFlow.

Each backend runs in its own child process (tests/workers/backend_check.py), started without the site packages
(`python -S`) on a folder of links to every installed package but TensorFlow: there, TensorFlow is not
installed. This process (TensorFlow) writes every variant's weights and outputs; the child must reproduce them,
fold, train a step and save a file that TensorFlow reads back.
"""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_r21d
from keras_r21d.models.specs import VARIANTS
from tests.test_case import with_batchnorm_statistics

pytestmark = pytest.mark.slow  # a child process per backend building and training the variants

# torch runs all 12 variants. JAX compiles each one (about 25 s a variant on a 2-CPU machine), so it runs one of
# each kind of stem and block and both mixed orders: the 2D-clip, 2D, 3D and (2+1)D stems, 2D, 3D and (2+1)D blocks,
# 3D then 2D (MC) and 2D then 3D (rMC). MC2..MC5 and rMC2..rMC5 differ from these only in where the switch is.
BACKEND_VARIANTS = {"jax": ["r2d", "fr2d", "r3d", "mc3", "rmc3", "r2plus1d"], "torch": sorted(VARIANTS)}

WORKER = os.path.join(os.path.dirname(__file__), "workers", "backend_check.py")
KWARGS = dict(input_shape=(4, 32, 32, 3), classes=5, width_multiplier=0.25)
DEPTH = 10


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backend_fixtures")
    rng = np.random.default_rng(0)
    clips = rng.normal(size=(2, 4, 32, 32, 3)).astype("float32")
    labels = np.array([1, 3])
    arrays, facts = {"clips": clips, "labels": labels}, {}
    for variant in VARIANTS:
        model = with_batchnorm_statistics(keras_r21d.get_model(f"{variant}_{DEPTH}", **KWARGS), rng)
        model.save_weights(str(folder / f"{variant}.weights.h5"))
        model.save(str(folder / f"{variant}.keras"))
        arrays[f"{variant}_outputs"] = np.asarray(model(clips, training=False))
        stats = keras_r21d.model_stats(model)
        facts[variant] = {"depth": DEPTH, "kwargs": KWARGS, "paper_params": stats["paper_params"],
                          "gflops": stats["gflops"]}
    # A preset whose converted weights are in the local cache (as after a first use): no download, no torch.
    from keras_r21d.weights import presets
    from tests.workers.cli_with_preset import CACHE_FILE, PRESET

    (folder / "cache").mkdir()
    reference = presets._reference_model(PRESET)
    reference.save_weights(str(folder / "cache" / CACHE_FILE))
    arrays["preset_outputs"] = np.asarray(reference(clips, training=False))
    np.savez(folder / "reference.npz", **arrays)
    (folder / "reference.json").write_text(json.dumps({"variants": facts}))
    return folder


@pytest.fixture(scope="module")
def without_tensorflow(tmp_path_factory):
    """A folder of links to everything in this environment's site packages except TensorFlow's."""
    import site

    folder = tmp_path_factory.mktemp("site_without_tensorflow")
    for packages in site.getsitepackages():
        for entry in os.listdir(packages):
            if entry.lower().startswith("tensorflow") or entry.endswith(".pth") or (folder / entry).exists():
                continue
            os.symlink(os.path.join(packages, entry), folder / entry)
    return folder


def _available(module):
    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("backend", [
    pytest.param("jax", marks=pytest.mark.skipif(not _available("jax"), reason="jax is not installed "
                                                 "(make test installs it)")),
    pytest.param("torch", marks=pytest.mark.skipif(not _available("torch"), reason="torch is not installed "
                                                   "(make test installs it)")),
])
def test_every_variant_on_another_backend_without_tensorflow(fixtures, without_tensorflow, backend, tmp_path):
    out = tmp_path / "result.json"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": "-1", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([root, str(without_tensorflow)])}
    variants = BACKEND_VARIANTS[backend]
    result = subprocess.run([sys.executable, "-S", WORKER, str(fixtures), str(out), ",".join(variants)],
                            capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    found = json.loads(out.read_text())
    assert found["backend"] == backend and found["tensorflow_modules"] == [] and not found["tensorflow_findable"]
    reference = json.loads((fixtures / "reference.json").read_text())["variants"]
    arrays = np.load(fixtures / "reference.npz")
    assert sorted(found["variants"]) == sorted(variants)
    for variant, facts in found["variants"].items():
        # The same weights, and the same .keras file, give TensorFlow's outputs.
        assert facts["weights_diff"] <= 1e-4 and facts["file_diff"] <= 1e-4, (variant, facts)
        assert facts["fold_diff"] <= 1e-4, (variant, facts)
        assert facts["classes"] == ["VideoClassifier", "VideoClassifier", "VideoResNetBackbone"], variant
        assert facts["paper_params"] == reference[variant]["paper_params"]
        assert facts["gflops"] == pytest.approx(reference[variant]["gflops"])
        assert facts["losses"][1] < facts["losses"][0], (variant, facts["losses"])
        # The file this backend saved reads back on TensorFlow with its outputs. compile=False: its compile
        # config names the backend's own optimizer class (keras.src.backend.torch.optimizers...), which would
        # import torch here, and torch imported after TensorFlow crashes the process.
        moved = keras.models.load_model(facts["saved"], safe_mode=True, compile=False)
        np.testing.assert_allclose(np.asarray(moved(arrays["clips"], training=False)), facts["saved_outputs"],
                                   atol=1e-4, err_msg=variant)
    assert found["preset_diff"] <= 1e-4  # R2Plus1D(10, weights="kinetics400") from the local cache
    # autotune_lowering times R3D-10's 8 distinct full-kernel shapes in both modes with this backend's own timer.
    tuned = found["autotune"]
    assert tuned["entries"] == 16 and tuned["backends"] == [backend] and tuned["fastest"] and tuned["timed"], tuned
    assert tuned["diff"] <= 1e-4 and all(np.isfinite(tuned["losses"])), tuned
    # The .keras files 0.1.0 wrote (tests/data/v0_1_0/models) give 0.1.0's outputs on this backend, as loaded and
    # read back as tasks (models.legacy).
    assert len(found["old_files"]) == 9 and max(found["old_files"].values()) <= 1e-4, found["old_files"]
    if backend == "torch":
        # The layers' own torch training kernels (torch's batch norm on the channels-last view, convolutions
        # without Keras' copies) give Keras' outputs, gradients and moving averages.
        kernels = found["torch_kernels"]
        assert len(kernels["batchnorm"]) == 3 and len(kernels["conv"]) == 8, kernels
        for case in kernels["batchnorm"]:
            assert case["kernel_calls"] == [0, 2], case  # Keras' layer runs its own code; ours the fused kernel
            assert case["diff"] <= 1e-5 and case["moving_diff"] <= 1e-5 and case["infer_diff"] <= 1e-5, case
        assert {case["lowering"] for case in kernels["conv"]} == {"conv3d", "im2col", "shifted", "spatial",
                                                                   "temporal"}
        for case in kernels["conv"]:
            assert case["diff"] <= 1e-5 and case["contiguous"], case
    # The input pipeline (and training, export, serving) say what to install, in one line.
    assert "need TensorFlow, which is not installed here: pip install 'keras_r21d[cpu]'" in found["pipeline_error"]
    assert found["cli_train"]["code"] == 2
    lines = found["cli_train"]["stderr"].splitlines()
    assert len(lines) == 1 and lines[0].startswith("keras-r21d train: error: keras_r21d's input pipeline"), lines
    assert found["cli_models"] == {"code": 0, "rows": 12} and found["cli_presets"]["code"] == 0
