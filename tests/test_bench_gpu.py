"""`tools/bench_gpu.py --tiny`: the GPU benchmark's smoke run on this CPU (the same code path, toy sizes)."""

import json
import os
import subprocess
import sys

import pytest

from tests.test_case import needs

pytestmark = pytest.mark.slow  # two worker processes and XLA compiles: make test, not make test-fast

TOOL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "bench_gpu.py")


def test_bench_gpu_tiny_runs_keras_on_jax_against_torchvision_without_tensorflow(tmp_path):
    needs("jax")
    needs("torchvision")
    out = tmp_path / "bench_gpu.json"
    result = subprocess.run(
        [sys.executable, TOOL, "--tiny", "--models", "r2plus1d_18", "--frameworks", "torchvision,keras-jax",
         "--infer-batches", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    # Keras' FLOP count (2 x model_stats multiply-adds) is torch's own FlopCounterMode on torchvision's model.
    flops = data["forward_flops"]["r2plus1d_18"]
    assert flops["keras"] == flops["torchvision"] > 0
    assert data["gemm_tflops"]["torchvision"] > 0 and data["gemm_tflops"]["keras-jax"] > 0
    # The Keras side ran on JAX and never imported TensorFlow: the tool runs where only JAX and torch are.
    assert data["workers"]["keras-jax"]["jax"] and data["workers"]["keras-jax"]["tensorflow_imported"] is False
    measured = {(r["framework"], r["job"]["mode"], r["job"]["dtype"], r["batch"]): r for r in data["rows"]}
    expected = {(f, mode, dtype, batch) for f in ("torchvision", "keras-jax") for dtype in ("bf16", "fp32")
                for mode, batch in (("train", 2), ("infer", 2))}
    assert set(measured) == expected, [r for r in data["rows"] if "clips_per_s" not in r]
    for (framework, _, _, batch), row in measured.items():
        assert row["clips_per_s"] == pytest.approx(batch / row["seconds"]) and row["seconds"] > 0
        assert (row.get("compile_s", 0) > 0) == (framework == "keras-jax")
    # The table: one line per row, the torchvision reference at 1.00x, a share of the measured peak.
    lines = [line for line in result.stdout.splitlines() if line.startswith("| r2plus1d_18 |")]
    assert len(lines) == len(expected) and all("%" in line for line in lines)
    assert sum("torchvision (contiguous) | " in line and "| 1.00x |" in line for line in lines) == 4


def test_bench_gpu_reports_jobs_past_the_budget_as_not_measured(tmp_path):
    needs("torchvision")
    out = tmp_path / "bench_gpu.json"
    result = subprocess.run(
        [sys.executable, TOOL, "--tiny", "--models", "r3d_18", "--frameworks", "torchvision", "--dtypes", "fp32",
         "--budget", "0", "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert rows and all(r.get("skipped") == "budget" and "clips_per_s" not in r for r in rows)
    assert result.stdout.count("not measured: budget") == len(rows) == 3  # train at batch 2, infer at 1 and 2
    assert {r["job"]["kind"] for r in data["not_measured"]} == {"gemm", "flops"} and not data["gemm_tflops"]
