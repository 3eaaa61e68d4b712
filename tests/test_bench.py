"""`keras-r21d bench` end to end at a toy size: both workers, the table, the JSON."""

import importlib.util
import json
import os
import platform
import re
import subprocess
import sys

import pytest

from keras_r21d.bench import fastest_backend, markdown, ratio_key, side_name, torch_available

pytestmark = pytest.mark.slow  # subprocess trainings and long loops: make test, not make test-fast


def _bench(out, *args):
    return subprocess.run([sys.executable, "-m", "keras_r21d", "bench", "--modes", "infer1,train1", "--frames", "4",
                           "--size", "32", "--json", str(out), *args], capture_output=True, text=True, timeout=900)


def test_bench_runs_both_sides_and_reports(tmp_path):
    out = tmp_path / "bench.json"
    backends = ["tensorflow"]
    result = _bench(out, "--models", "r2plus1d_18", "--reps", "2", "--warmup", "1", "--memory-processes", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    # The peak memory of each side: the median of 2 fresh processes, each one's kept.
    assert sorted(data["memory_runs"]) == sorted(data["memory"]) and "keras_r21d" in data["memory"]
    for name, runs in data["memory_runs"].items():
        assert len(runs) == 2 and data["memory"][name] == round(sum(runs) / 2), (name, runs)
        assert f"{name} {data['memory'][name]} ({min(runs)}-{max(runs)})" in result.stdout
    assert [(r["model"], r["mode"], r["batch"]) for r in data["rows"]] == [("r2plus1d_18", "infer", 1),
                                                                         ("r2plus1d_18", "train", 1)]
    assert data["peak_gflops"] > 1 and data["pipeline"]["clips_per_second"] > 0
    assert data["memory"]["keras_r21d"] > 100
    sides = [side_name(backend) for backend in backends]
    assert data["settings"]["backends"] == backends and sorted(data["gemm_gflops"]) == sorted(
        sides + (["torchvision"] if torch_available() else []))
    for row in data["rows"]:
        for name in sides:
            keras_side = row[name]
            assert keras_side["clips_per_s"] == row["batch"] / keras_side["median_s"]
            assert 0 < keras_side["peak_fraction"] < 2
            if torch_available():
                ratio = row["ratio" if name == "keras_r21d" else f"ratio_{name.rsplit('_', 1)[1]}"]
                assert ratio == keras_side["clips_per_s"] / row["torchvision"]["clips_per_s"]
    # A toy network's call takes milliseconds: its repetitions are many calls (at most 100), each side the same.
    assert data["settings"]["min_rep_seconds"] == 1.0 and 1 < data["rows"][0]["calls"] <= 100
    assert "each repetition at least 1 s" in result.stdout
    assert ("torchvision" in data["rows"][0]) == torch_available()
    assert result.stdout == markdown(data)
    assert "| r2plus1d_18 | train | 1 |" in result.stdout and "Input pipeline:" in result.stdout
    assert data["settings"]["fold_batchnorm"] is True and "with BatchNorm folded" in result.stdout
    # Whether TensorFlow ran oneDNN's kernels: as `keras-r21d train` runs, on on x86 unless TF_ENABLE_ONEDNN_OPTS
    # says otherwise.
    onednn = data["machine"]["onednn"]
    assert isinstance(onednn, bool) and f"TensorFlow's oneDNN kernels {'on' if onednn else 'off'}" in result.stdout
    if "TF_ENABLE_ONEDNN_OPTS" not in os.environ and platform.machine().lower() in ("x86_64", "amd64"):
        assert onednn is True


def test_a_repetition_is_enough_calls_for_the_minimum_time():
    from keras_r21d.bench import MAX_CALLS, calls_per_rep

    assert calls_per_rep(0.3, 1.0) == 4 and calls_per_rep(0.25, 1.0) == 4
    assert calls_per_rep(2.0, 1.0) == 1 and calls_per_rep(0.3, 0) == 1
    assert calls_per_rep(1e-4, 1.0) == MAX_CALLS == 100


def test_the_bench_worker_reports_the_users_onednn_choice():
    """`TF_ENABLE_ONEDNN_OPTS` set by the user is what the worker reports (unset: TensorFlow's own choice for the
    processor, which 2.21 leaves off on AVX2-only CPUs)."""
    script = "from keras_r21d.onednn import onednn_enabled; print(onednn_enabled())"
    found = {}
    for value in ("0", "1"):
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                                env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": value, "TF_CPP_MIN_LOG_LEVEL": "2"})
        assert result.returncode == 0, result.stderr[-3000:]
        found[value] = result.stdout.split()[-1]
    assert found == {"0": "False", "1": "True"}


def test_bench_runs_keras_r21d_on_the_other_backends(tmp_path):
    """keras_r21d on JAX and on PyTorch, each in its own worker (torch and TensorFlow never share a process), in
    columns of one table; R3D-10 keeps JAX's compilation short (torchvision has no R3D-10: --no-torch)."""
    backends = [name for name in ("jax", "torch") if importlib.util.find_spec(name)]
    if not backends:
        pytest.skip("neither jax nor torch is installed (make test installs both)")
    out = tmp_path / "bench.json"
    result = _bench(out, "--models", "r3d_10", "--backends", ",".join(backends), "--no-torch", "--no-memory",
                    "--no-pipeline", "--reps", "1", "--warmup", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    sides = [side_name(backend) for backend in backends]
    assert data["settings"]["backends"] == backends and sorted(data["gemm_gflops"]) == sorted(sides)
    assert [(r["model"], r["mode"]) for r in data["rows"]] == [("r3d_10", "infer"), ("r3d_10", "train")]
    for row in data["rows"]:
        assert sorted(name for name in row if name.startswith("keras_r21d")) == sorted(sides)
        for name in sides:
            assert row[name]["clips_per_s"] == row["batch"] / row[name]["median_s"] > 0
    assert result.stdout == markdown(data) and "keras_r21d clips/s" not in result.stdout  # no TensorFlow column
    if len(backends) > 1:  # each row names the backend that ran it fastest, and the table says so in one line
        for row in data["rows"]:
            best = max(sides, key=lambda name: row[name]["clips_per_s"])
            assert row["fastest_backend"] == fastest_backend(row) == ("jax" if best.endswith("jax") else "torch")
        assert "Fastest Keras backend for keras_r21d here: r3d_10 infer 1: " in result.stdout
    if "jax" in backends:
        assert "keras_r21d (JAX) clips/s" in result.stdout and f"JAX {data['machine']['jax']}" in result.stdout
    if "torch" in backends:
        assert "keras_r21d (torch) clips/s" in result.stdout


def test_the_table_names_the_fastest_backend_of_each_row():
    """What the AVX2 machine of BENCHMARKS.md measured (R3D-18 and R(2+1)D-18 training at batch 4): the line says
    which backend to train each network on there, with its speed against torchvision."""
    def side(clips_per_s):
        return {"median_s": 4 / clips_per_s, "clips_per_s": clips_per_s, "gflops_per_s": 1.0, "peak_fraction": 0.5}

    rows = []
    for model, speeds in (("r3d_18", (0.23, 0.12, 0.36, 0.44)), ("r2plus1d_18", (0.31, 0.09, 0.18, 0.27))):
        row = {"model": model, "mode": "train", "batch": 4}
        for name, speed in zip(("keras_r21d", "keras_r21d_jax", "keras_r21d_torch", "torchvision"), speeds):
            row[name] = side(speed)
            if name != "torchvision":
                row[ratio_key(name)] = speed / speeds[-1]
        row["fastest_backend"] = fastest_backend(row)
        rows.append(row)
    assert [row["fastest_backend"] for row in rows] == ["torch", "tensorflow"]
    result = {"machine": {"processor": "x86_64", "cpus": 2, "threads": 2, "keras": "3", "tensorflow": "2",
                          "onednn": False, "jax": "0", "torch": "2", "torchvision": "0"},
              "settings": {"frames": 16, "size": 112, "reps": 3, "warmup": 1, "fold_batchnorm": True,
                           "backends": ["tensorflow", "jax", "torch"]}, "peak_gflops": 170.0, "rows": rows}
    assert ("Fastest Keras backend for keras_r21d here: r3d_18 train 4: torch (0.36 clips/s, 0.82x torchvision); "
            "r2plus1d_18 train 4: tensorflow (0.31 clips/s, 1.15x torchvision)") in markdown(result)
    assert "; TensorFlow's oneDNN kernels off; torchvision 0 on PyTorch 2;" in markdown(result)


def test_profile_ops_reports_both_sides_by_category():
    tool = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "profile_ops.py")
    result = subprocess.run(
        [sys.executable, tool, "r2plus1d_18", "train", "1", "--shape", "4x32", "--steps", "1", "--warmup", "1"]
        + ([] if torch_available() else ["--no-torch"]),
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in result.stdout.splitlines()
            if line.startswith("| ") and "s/step (%)" not in line}
    sides = 2 if torch_available() else 1
    for name in ("conv forward", "conv backward"):
        cells = rows[name]
        assert len(cells) == sides
        assert all(float(cell.split()[0]) > 0 for cell in cells), (name, cells)  # measured on every side
    assert "Top op types, keras_r21d:" in result.stdout
    # TensorFlow's op types, categorized (oneDNN's kernels where the processor gets them, as on AVX-512 machines).
    assert re.search(r"`(_MklNative)?Conv2DBackpropFilter` \| conv backward", result.stdout), result.stdout
    if torch_available():
        assert "`aten::convolution_backward` | conv backward" in result.stdout


def test_bench_lowering_times_each_full_3d_conv_every_way():
    """`tools/bench_lowering.py` finds a network's distinct full 3D convolutions (R3D-10: the stem, the stride-1
    and the strided 3x3x3 of each stage), times the three lowerings of each, says which `"auto"` picks, and
    checks they compute the same."""
    tool = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "bench_lowering.py")
    result = subprocess.run([sys.executable, tool, "--models", "r3d_10", "--batch", "1", "--shape", "4x32x0.125",
                             "--reps", "1"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| r3d_10 |")]
    layers = [row for row in rows if row[1].strip() != "all full 3D convs"]
    assert len(layers) == 8 and rows[-1][1].strip() == "all full 3D convs"
    assert sum(int(row[5]) for row in layers) == 9  # the stem and 8 3x3x3 convs (two blocks of stage 2 share a shape)
    for row in layers:
        times = [[float(t) for t in cell.split("/")] for cell in (row[6], row[7])]
        assert all(len(ms) == 3 and min(ms) > 0 for ms in times), row  # all three lowerings measured
        # "auto" picks the fastest, inference and training apart, or Conv3D when no other beats it by 5% (the
        # times are printed to 0.1 ms).
        names = ["conv3d", "im2col", "shifted"]
        for choice, ms in zip([c.strip() for c in row[8].split(",")], times):
            if choice == "conv3d":
                assert min(ms) >= 0.95 * ms[0] - 0.1, row
            else:
                assert ms[names.index(choice)] <= min(0.95 * ms[0], min(ms)) + 0.1, row
        assert float(row[9]) < 1e-4, row  # the same convolution


def test_the_jax_worker_runs_on_the_threads_it_is_given():
    """XLA's CPU client takes no thread count, so the JAX worker keeps its process on `threads` CPUs (as the
    other sides run `threads` threads); with as many threads as CPUs it keeps them all."""
    script = ("import os, sys; from keras_r21d.bench._keras_worker import _pin_threads; "
              "before = len(os.sched_getaffinity(0)); _pin_threads('jax', int(sys.argv[1])); "
              "print(before, len(os.sched_getaffinity(0)))")
    for threads in (1, 64):
        result = subprocess.run([sys.executable, "-c", script, str(threads)], capture_output=True, text=True,
                                timeout=120, env={**os.environ, "KERAS_BACKEND": "jax"})
        assert result.returncode == 0, result.stderr[-3000:]
        before, after = map(int, result.stdout.split())
        assert after == min(threads, before), (threads, before, after)
