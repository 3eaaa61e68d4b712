"""`keras-r21d bench`: keras_r21d against torchvision on this machine, in one run.

Each side runs in a worker process of its own (torch and TensorFlow must not
share a process), both pinned to the same thread count; the coordinator
alternates them repetition by repetition so that drift of the machine hits
both alike, and takes the median after warm-up. FLOPs are 2 x the
multiply-adds of `model_stats` (x3 for a training step); the fp32 peak is the
faster of TensorFlow's and PyTorch's 4096^3 GEMM, measured in the same run.
A repetition lasts at least `min_rep_seconds` on the fastest side: where
one call is shorter (batch-1 inference), each repetition times enough calls
in a row (the same number on every side) and reports the seconds of one.
"""

import json
import math
import os
import platform
import statistics
import subprocess
import sys

MODELS = ("r2plus1d_18", "r3d_18", "mc3_18")
MODES = (("infer", 1), ("infer", 8), ("train", 4))
BACKENDS = ("tensorflow", "jax", "torch")


def side_name(backend):
    """A Keras backend's column: `keras_r21d` on TensorFlow (as before backends were compared), else
    `keras_r21d_jax`, `keras_r21d_torch`."""
    return "keras_r21d" if backend == "tensorflow" else f"keras_r21d_{backend}"


class Worker:
    """A benchmark worker process speaking one JSON object per line."""

    def __init__(self, command, name, env=None):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1", **(env or {}))
        self.name = name
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.info = self._read()

    def _read(self):
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} benchmark worker ended unexpectedly (exit {self.process.poll()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.name} worker: {answer['error']}")
        return answer

    def ask(self, **command):
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self):
        if self.process.poll() is None:
            try:
                self.ask(op="exit")
            except (RuntimeError, BrokenPipeError, ValueError):
                pass
            self.process.wait(30)


def torch_available():
    probe = subprocess.run([sys.executable, "-c", "import torch, torchvision"], capture_output=True)
    return probe.returncode == 0


def keras_worker(threads, backend="tensorflow"):
    """keras_r21d's worker on one Keras backend; on TensorFlow, with the oneDNN kernels `keras-r21d train` runs."""
    from keras_r21d.onednn import VARIABLE, training_value

    env = {"KERAS_BACKEND": backend}
    onednn = training_value()
    if backend == "tensorflow" and onednn is not None:
        env[VARIABLE] = onednn
    return Worker([sys.executable, "-m", "keras_r21d.bench._keras_worker", str(threads)], side_name(backend),
                  env=env)


def torchvision_worker(threads):
    """torchvision's worker (a script: it must not import this package, which may load TensorFlow)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_torch_worker.py")
    return Worker([sys.executable, script, str(threads)], "torch")


def side_backend(name):
    """The Keras backend of a keras_r21d column (`side_name`'s inverse)."""
    return "tensorflow" if name == "keras_r21d" else name.rsplit("_", 1)[1]


def ratio_key(name):
    """The row key of a keras_r21d column's speed over torchvision's: `ratio` (TensorFlow), `ratio_jax`, ..."""
    return "ratio" if name == "keras_r21d" else f"ratio_{side_backend(name)}"


# At most this many calls in one repetition (a toy network's call takes milliseconds).
MAX_CALLS = 100


def calls_per_rep(seconds, min_rep_seconds):
    """Calls that make a repetition last `min_rep_seconds` when one call of the fastest side takes `seconds`."""
    if min_rep_seconds <= 0 or seconds <= 0:
        return 1
    return max(1, min(MAX_CALLS, math.ceil(min_rep_seconds / seconds)))


def run(models=MODELS, modes=MODES, reps=5, warmup=1, threads=2, frames=16, size=112, with_torch=None,
        pipeline=True, memory=True, log=print, fold_batchnorm=True, backends=("tensorflow",), min_rep_seconds=1.0,
        memory_processes=3):
    """Runs the benchmark; returns a dict with `rows`, `peak_gflops`, `pipeline`, `memory`, `machine`.

    keras_r21d runs on each of `backends` (Keras backends, each in its own
    worker: TensorFlow's column is `keras_r21d`, the others
    `keras_r21d_jax`, `keras_r21d_torch`). Its inference rows time
    `fold_batchnorm(model)` (what its exports and `predict` run) unless
    `fold_batchnorm=False`; torchvision's time the model in eval mode, as it
    ships. All the workers of a row alternate repetition by repetition; a
    repetition is `row["calls"]` calls, enough for `min_rep_seconds` on the
    fastest side after the warm-up (0: one call).
    With several backends each row also names its `fastest_backend`, and
    `markdown` prints them in one line. `memory` is the median peak RSS of
    `memory_processes` fresh processes per side (`memory_runs` each one's).
    """
    unknown = [backend for backend in backends if backend not in BACKENDS]
    if unknown or not backends:
        raise ValueError(f"backends must be some of {BACKENDS}. Received: {list(backends)}")
    with_torch = torch_available() if with_torch is None else with_torch
    sides = [(side_name(backend), keras_worker(threads, backend)) for backend in backends]
    if with_torch:
        sides.append(("torchvision", torchvision_worker(threads)))
    result = {"machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                          "threads": threads},
              "settings": {"reps": reps, "warmup": warmup, "min_rep_seconds": min_rep_seconds, "frames": frames,
                           "size": size, "fold_batchnorm": fold_batchnorm, "backends": list(backends)}, "rows": []}
    for _, worker in sides:
        result["machine"].update({k: v for k, v in worker.info.items() if k not in ("ready", "backend")})
    try:
        result["gemm_gflops"] = {name: worker.ask(op="gemm", n=4096, reps=5)["gflops"] for name, worker in sides}
        result["peak_gflops"] = max(result["gemm_gflops"].values())
        log(f"fp32 GEMM peak: {result['peak_gflops']:.0f} GFLOP/s ("
            + ", ".join(f"{name} {value:.0f}" for name, value in result["gemm_gflops"].items()) + ")")
        for model in models:
            for mode, batch in modes:
                setup = dict(op="setup", model=model, mode=mode, batch=batch, frames=frames, size=size)
                stats = None
                for name, worker in sides:
                    answer = worker.ask(**setup, **({} if name == "torchvision" else
                                                    {"fold_batchnorm": fold_batchnorm and mode == "infer"}))
                    stats = stats or answer
                for rep in range(warmup):
                    for _, worker in (sides if rep % 2 == 0 else sides[::-1]):
                        worker.ask(op="run")
                # One more call each sizes the repetitions.
                calls = calls_per_rep(min(worker.ask(op="run")["seconds"] for _, worker in sides), min_rep_seconds)
                times = {name: [] for name, _ in sides}
                for rep in range(reps):
                    for name, worker in (sides if rep % 2 == 0 else sides[::-1]):
                        times[name].append(worker.ask(op="run", calls=calls)["seconds"])
                flops = 2 * stats["macs"] * (3 if mode == "train" else 1)
                row = {"model": model, "mode": mode, "batch": batch, "calls": calls}
                for name, _ in sides:
                    median = statistics.median(times[name])
                    row[name] = {"median_s": median, "clips_per_s": batch / median,
                                 "gflops_per_s": flops * batch / median / 1e9,
                                 "peak_fraction": flops * batch / median / 1e9 / result["peak_gflops"]}
                if with_torch:
                    for name, _ in sides[:-1]:
                        row[ratio_key(name)] = row[name]["clips_per_s"] / row["torchvision"]["clips_per_s"]
                if len(backends) > 1:
                    row["fastest_backend"] = fastest_backend(row)
                result["rows"].append(row)
                log(_row_text(row))
    finally:
        for _, worker in sides:
            worker.close()
    if memory and "tensorflow" in backends:
        result["memory"], result["memory_runs"] = _memory(threads, frames, size, with_torch, memory_processes)
        log(f"peak RSS, R(2+1)D-18 training step at batch 8: {result['memory_runs']}")
    if pipeline and "tensorflow" in backends:
        worker = keras_worker(threads)
        try:
            result["pipeline"] = worker.ask(op="pipeline", videos=16, video_frames=150, frames=frames,
                                            size=size, batch=8, steps=12)
        finally:
            worker.close()
        log(f"input pipeline: {result['pipeline']['clips_per_second']:.1f} training clips/s")
    return result


def _memory(threads, frames, size, with_torch, processes=3):
    """Peak RSS (MB) of fresh processes that build R(2+1)D-18 and run training steps at batch 8: `({side: median},
    {side: [each process's]})`, the sides alternating process by process.

    One process is not enough: the peak of one TensorFlow process varied
    from 4541 to 6099 MB over 13 processes of the same step on an AVX-512
    Xeon (torchvision's 5157 to 5275 over 3; BENCHMARKS.md), for reasons
    not found yet (the worker runs one inter-op thread).
    """
    names = ("keras_r21d", "torchvision") if with_torch else ("keras_r21d",)
    runs = {name: [] for name in names}
    for _ in range(max(1, int(processes))):
        for name in names:
            worker = torchvision_worker(threads) if name == "torchvision" else keras_worker(threads)
            try:
                worker.ask(op="setup", model="r2plus1d_18", mode="train", batch=8, frames=frames, size=size)
                for _ in range(2):
                    worker.ask(op="run")
                runs[name].append(round(worker.ask(op="memory")["max_rss_mb"]))
            finally:
                worker.close()
    return {name: round(statistics.median(values)) for name, values in runs.items()}, runs


def _sides(row):
    return [name for name in row if name == "torchvision" or name.startswith("keras_r21d")]


def fastest_backend(row):
    """The Keras backend whose keras_r21d column ran this row fastest (clips/s)."""
    return side_backend(max((name for name in _sides(row) if name != "torchvision"),
                            key=lambda name: row[name]["clips_per_s"]))


def _row_text(row):
    text = f"| {row['model']} | {row['mode']} | {row['batch']} |"
    for name in _sides(row):
        side = row[name]
        text += f" {side['clips_per_s']:.2f} | {side['gflops_per_s']:.0f} ({100 * side['peak_fraction']:.0f}%) |"
    if "torchvision" in row:
        text += "".join(f" {row[ratio_key(name)]:.2f} |" for name in _sides(row) if name != "torchvision")
    return text


_BACKEND_TITLES = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}
_TITLES = {"keras_r21d": "keras_r21d", "keras_r21d_jax": "keras_r21d (JAX)", "keras_r21d_torch": "keras_r21d (torch)",
           "torchvision": "torchvision"}


def _fastest_text(row):
    name = side_name(row["fastest_backend"])
    speed = f"{row[name]['clips_per_s']:.2f} clips/s"
    if "torchvision" in row:
        speed += f", {row[ratio_key(name)]:.2f}x torchvision"
    return f"{row['model']} {row['mode']} {row['batch']}: {row['fastest_backend']} ({speed})"


def markdown(result):
    sides = _sides(result["rows"][0]) if result["rows"] else ["keras_r21d"]
    torch_side = "torchvision" in sides
    machine = result["machine"]
    backends = result["settings"].get("backends", ["tensorflow"])
    versions = [f"Keras {machine.get('keras')} on "
                + ", ".join(f"{_BACKEND_TITLES[backend]} {machine.get(backend)}" for backend in backends)]
    if machine.get("onednn") is not None:  # TensorFlow's CPU kernels: about 2x on full 3D convolutions on AVX2
        versions.append(f"TensorFlow's oneDNN kernels {'on' if machine['onednn'] else 'off'}")
    if torch_side:
        versions.append(f"torchvision {machine.get('torchvision')} on PyTorch {machine.get('torch')}")
    lines = [f"{machine['processor']}, {machine['cpus']} CPUs, {machine['threads']} threads each side; "
             + "; ".join(versions)
             + f"; {result['settings']['frames']}x{result['settings']['size']}x{result['settings']['size']} clips; "
             f"median of {result['settings']['reps']} after {result['settings']['warmup']} warm-up, alternating"
             + (f", each repetition at least {result['settings']['min_rep_seconds']:g} s (several calls where one "
                "is shorter)"
                if result["settings"].get("min_rep_seconds") else "") + "; "
             f"fp32 peak (GEMM) {result['peak_gflops']:.0f} GFLOP/s; keras_r21d inference "
             + ("with BatchNorm folded (`fold_batchnorm`)" if result["settings"].get("fold_batchnorm", True)
                else "with BatchNorm layers as trained (`--keep-batchnorm`)"), ""]
    header = "| model | mode | batch |" + "".join(f" {_TITLES[name]} clips/s | GFLOP/s (% peak) |" for name in sides)
    rule = "|---|---|---:|" + "---:|---:|" * len(sides)
    if torch_side:
        header += "".join(f" {_TITLES[name]} / torchvision |" for name in sides if name != "torchvision")
        rule += "---:|" * (len(sides) - 1)
    lines += [header, rule] + [_row_text(row) for row in result["rows"]]
    fastest = [_fastest_text(row) for row in result["rows"] if "fastest_backend" in row]
    if fastest:  # with several backends: which one to run this network on, on this machine
        lines += ["", "Fastest Keras backend for keras_r21d here: " + "; ".join(fastest)]
    if "memory" in result:
        runs = result.get("memory_runs", {})  # absent from a bench's JSON written before it measured several
        lines += ["", "Peak RSS, R(2+1)D-18 training step at batch 8 (MB"
                  + (f", median of {len(next(iter(runs.values())))} processes each" if runs else "") + "): "
                  + ", ".join(f"{k} {v}" + (f" ({min(runs[k])}-{max(runs[k])})" if k in runs else "")
                              for k, v in result["memory"].items())]
    if "pipeline" in result:
        train_rows = [r for r in result["rows"] if r["model"] == "r2plus1d_18" and r["mode"] == "train"]
        pipe = result["pipeline"]["clips_per_second"]
        text = f"Input pipeline: {pipe:.1f} training clips/s from {result['pipeline']['videos']} encoded videos"
        if train_rows:
            step = train_rows[0]["keras_r21d"]["clips_per_s"]
            text += f", {pipe / step:.0f}x the R(2+1)D-18 training step's {step:.2f} clips/s"
        lines += ["", text]
    return "\n".join(lines) + "\n"


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="keras-r21d bench", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--modes", default="infer1,infer8,train4", help="comma-separated MODEBATCH")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--min-rep-seconds", type=float, default=1.0,
                        help="a repetition times enough calls in a row to last this long on the fastest side "
                             "(0: one call)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--backends", default="tensorflow",
                        help="Keras backends to run keras_r21d on, comma-separated: tensorflow, jax, torch "
                             "(each in its own worker; the pipeline and memory figures are TensorFlow's)")
    parser.add_argument("--no-torch", action="store_true", help="keras_r21d only")
    parser.add_argument("--no-pipeline", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-processes", type=int, default=3,
                        help="fresh processes per side whose peak memory is measured; the median is reported "
                             "(default 3: the peak of one TensorFlow process varies by about a GB)")
    parser.add_argument("--keep-batchnorm", action="store_true",
                        help="time keras_r21d inference without folding BatchNorm into the convolutions")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.memory_processes < 1:
        parser.error(f"--memory-processes must be >= 1. Received: {args.memory_processes}")
    modes = []
    for item in args.modes.split(","):
        mode = item.rstrip("0123456789")
        if mode not in ("infer", "train") or mode == item:
            parser.error(f"--modes: expected e.g. infer1,infer8,train4. Received: {item!r}")
        modes.append((mode, int(item[len(mode):])))
    result = run(models=tuple(args.models.split(",")), modes=tuple(modes), reps=args.reps, warmup=args.warmup,
                 threads=args.threads, frames=args.frames, size=args.size,
                 with_torch=False if args.no_torch else None, pipeline=not args.no_pipeline,
                 memory=not args.no_memory, log=lambda text: print(text, file=sys.stderr, flush=True),
                 fold_batchnorm=not args.keep_batchnorm, backends=tuple(args.backends.split(",")),
                 min_rep_seconds=args.min_rep_seconds, memory_processes=args.memory_processes)
    print(markdown(result), end="")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return 0
