"""GPU benchmark: keras_r21d on JAX (and on TensorFlow or torch where installed) against torchvision.

R(2+1)D-18 (torchvision's reading of the mid-planes) and R3D-18 at
16x112x112, 400 classes: a training step (SGD with momentum, cross-entropy on
logits) at batch 32 and at the largest batch found to fit, and inference at
batch 1 and 64, each in fp32 and in bf16 mixed precision (float32 weights,
bfloat16 compute: Keras' `mixed_bfloat16` policy, torch's `autocast`), all on
the same GPU in one run. Each framework runs in its own process, one after
the other; inputs live on the device, so the figures are the models' own.

    python tools/bench_gpu.py [--models r2plus1d_18,r3d_18] [--frameworks keras-jax,torchvision]
                              [--budget 420] [--json bench_gpu.json]
    python tools/bench_gpu.py --tiny      # a CPU smoke run at toy sizes (make test runs it)

Needs no TensorFlow: the Keras side imports `keras_r21d` under
`KERAS_BACKEND=jax` (or `torch`), so it runs where only JAX and PyTorch are
installed. How each side runs:

- torchvision: `cudnn.benchmark` on, `autocast(bfloat16)` for bf16, and both
  memory layouts (contiguous and `channels_last_3d`; the largest batch in
  `channels_last_3d` only, the faster one in every training row measured);
  its best is the reference for the ratios. fp32 runs as torch defaults
  (cuDNN may use TF32).
- keras-jax: the step `model.fit` compiles, written out with Keras' public
  stateless API (`model.stateless_call`, `optimizer.stateless_apply`) and
  `jax.jit` with the state donated, called on device-resident arrays; XLA's
  compile time is `lower().compile()` of that step. fp32 runs as XLA defaults.
- keras-tensorflow, keras-torch: `model.train_on_batch` / `predict_on_batch`
  on device tensors after the first (tracing) call.

Timing: every step is synchronized (`torch.cuda.synchronize`,
`block_until_ready`), warm-up steps are excluded and the median is reported.
The GPU's bf16 peak is an 8192^3 bf16 matrix product measured by each
framework in the same run; "% peak" is the training step's FLOPs (3 x the
forward's: 2 x `model_stats` multiply-adds, cross-checked by torch's
`FlopCounterMode` on torchvision's model) over time, against the higher of
the two. The largest batch: a linear fit of the step's memory (torch:
`max_memory_allocated` at batch 16 and 32; JAX: the compiled step's
`memory_analysis` at batch 32, whose temporary buffers grow with the batch)
to 90% of the device memory, rounded down to a multiple of 8, then run
(shrunk by 15% on an out-of-memory error), 2 warm-up and 5 timed steps.

`--budget` seconds bound the whole run: jobs not started by then are listed
as not measured. The jobs run in order of importance (the bf16 training step
at batch 32 first).
"""

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time

MODELS = ("r2plus1d_18", "r3d_18")
FRAMEWORKS = ("torchvision", "keras-jax", "keras-tensorflow", "keras-torch")
DTYPES = ("bf16", "fp32")


# ----------------------------------------------------------------------------------------------- shared helpers


def median_time(step, sync, warmup, reps):
    """Median seconds of `reps` synchronized calls of `step`, after `warmup` calls."""
    for _ in range(warmup):
        sync(step())
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        sync(step())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fit_batch(batch_a, bytes_a, batch_b, bytes_b, limit_bytes, multiple=8):
    """The largest batch (a multiple of `multiple`) whose linearly fitted memory stays within `limit_bytes`."""
    per_clip = (bytes_b - bytes_a) / (batch_b - batch_a)
    fixed = bytes_a - per_clip * batch_a
    if per_clip <= 0:
        return batch_b
    batch = int((limit_bytes - fixed) / per_clip)
    return max(multiple, batch - batch % multiple)


def is_out_of_memory(error):
    text = f"{type(error).__name__}: {error}"
    return any(s in text for s in ("RESOURCE_EXHAUSTED", "out of memory", "OutOfMemory", "Out of memory"))


def repeats(args, job):
    """(warm-up, timed) steps: at the largest batch a step takes seconds, so at most 2 and 5."""
    if job["batch"] == "max":
        return min(args.warmup, 2), min(args.reps, 5)
    return args.warmup, args.reps


def emit(record):
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


# ----------------------------------------------------------------------------------------------- torchvision side


def torchvision_worker(args, jobs, deadline):
    import torch
    import torchvision
    from torch.utils.flop_counter import FlopCounterMode
    from torchvision.models import video

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.backends.cudnn.benchmark = True
    sync = (lambda _: torch.cuda.synchronize()) if cuda else (lambda _: None)
    emit(
        {
            "info": {
                "framework": "torchvision",
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
                "device": torch.cuda.get_device_name() if cuda else "cpu",
                "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            }
        }
    )
    layouts = ("contiguous", "channels_last_3d") if cuda else ("contiguous",)
    # The largest batch runs in the layout that trained faster in every batch-32 row measured (BENCHMARKS.md).
    max_layouts = ("channels_last_3d",) if cuda else layouts

    def setup(name, mode, batch, dtype, layout):
        torch.manual_seed(0)
        model = getattr(video, name)(num_classes=400).to(device)
        memory_format = torch.channels_last_3d if layout == "channels_last_3d" else torch.contiguous_format
        model = model.to(memory_format=memory_format)
        x = torch.randn(batch, 3, args.frames, args.size, args.size, device=device).to(memory_format=memory_format)
        y = torch.randint(0, 400, (batch,), device=device)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")
        if mode == "infer":
            model.eval()

            def step():
                with torch.inference_mode(), autocast:
                    return model(x)

            return step
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            return loss

        return step

    def peak_memory(step):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        sync(step())
        return torch.cuda.max_memory_allocated()

    for job in jobs:
        if time.time() > deadline:
            emit({"job": job, "skipped": "budget"})
            continue
        if job["kind"] == "gemm":
            a, b = (torch.randn(job["n"], job["n"], device=device, dtype=torch.bfloat16) for _ in range(2))
            seconds = median_time(functools.partial(torch.matmul, a, b), sync, 3, 10)
            emit({"job": job, "tflops": 2 * job["n"] ** 3 / seconds / 1e12})
            continue
        if job["kind"] == "flops":
            model = getattr(video, job["model"])(num_classes=400).eval()
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                model(torch.zeros(1, 3, args.frames, args.size, args.size))
            emit({"job": job, "forward_flops": counter.get_total_flops()})
            continue
        for layout in max_layouts if job["batch"] == "max" else layouts:
            record = {"job": job, "layout": layout}
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            try:
                batch = job["batch"]
                if batch == "max":
                    if not cuda:
                        emit({"job": job, "layout": layout, "skipped": "the largest batch is measured on a GPU only"})
                        continue
                    low = peak_memory(setup(job["model"], "train", 16, job["dtype"], layout))
                    high = peak_memory(setup(job["model"], "train", 32, job["dtype"], layout))
                    batch = fit_batch(16, low, 32, high, 0.9 * torch.cuda.mem_get_info()[1])
                while True:
                    try:
                        step = setup(job["model"], job["mode"], batch, job["dtype"], layout)
                        seconds = median_time(step, sync, *repeats(args, job))
                        break
                    except torch.OutOfMemoryError:
                        if job["batch"] != "max" or batch <= 8:
                            raise
                        step = None
                        torch.cuda.empty_cache()
                        batch = max(8, int(batch * 0.85) // 8 * 8)
                record.update(batch=batch, seconds=seconds, clips_per_s=batch / seconds)
                if cuda:
                    record["step_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
            except Exception as error:  # noqa: BLE001 - reported in the table
                record["error"] = f"{type(error).__name__}: {str(error)[:300]}"
            step = None
            if cuda:
                torch.cuda.empty_cache()
            emit(record)


# ----------------------------------------------------------------------------------------------- Keras side


def keras_worker(args, jobs, deadline):
    import keras
    import numpy as np

    import keras_r21d

    backend = keras.backend.backend()
    info = {"framework": f"keras-{backend}", "keras": keras.__version__}
    if backend == "jax":
        import jax

        info.update(jax=jax.__version__, device=str(jax.devices()[0].device_kind), devices=len(jax.devices()))
    elif backend == "torch":
        import torch

        info.update(
            torch=torch.__version__, device=torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        )
    else:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        info.update(tensorflow=tf.__version__, device=gpus[0].name if gpus else "cpu")
    emit({"info": info})
    rng = np.random.default_rng(0)

    def build(name, dtype):
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy("mixed_bfloat16" if dtype == "bf16" else "float32")
        try:
            return keras_r21d.get_model(
                name,
                input_shape=(args.frames, args.size, args.size, 3),
                classes=400,
                midplanes="torchvision",
                classifier_activation=None,
            )
        finally:
            keras.config.set_dtype_policy(previous)

    def data(batch):
        x = rng.standard_normal((batch, args.frames, args.size, args.size, 3)).astype("float32")
        y = rng.integers(0, 400, batch).astype("int32")
        return keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)

    for job in jobs:
        if time.time() > deadline:
            emit({"job": job, "skipped": "budget"})
            continue
        if job["kind"] == "gemm":
            if backend != "jax":
                continue
            import jax
            import jax.numpy as jnp

            a, b = (jax.random.normal(jax.random.key(i), (job["n"], job["n"]), jnp.bfloat16) for i in range(2))
            seconds = median_time(functools.partial(jax.jit(jnp.matmul), a, b), jax.block_until_ready, 3, 10)
            emit({"job": job, "tflops": 2 * job["n"] ** 3 / seconds / 1e12})
            continue
        if job["kind"] == "flops":
            model = build(job["model"], "fp32")
            emit({"job": job, "forward_flops": 2 * keras_r21d.model_stats(model)["macs"]})
            continue
        record = {"job": job, "implementation": "auto"}
        try:
            if backend == "jax":
                record.update(_jax_job(args, job, build, data))
            else:
                record.update(_keras_job(args, job, build, data, backend))
        except Exception as error:  # noqa: BLE001 - reported in the table
            record["error"] = f"{type(error).__name__}: {str(error)[:300]}"
        emit(record)
    emit({"info": {"tensorflow_imported": "tensorflow" in sys.modules}})


def _jax_job(args, job, build, data):
    """One job on JAX: the jitted stateless step, its compile time and (for `"max"`) the largest batch."""
    import jax
    import keras

    model = build(job["model"], job["dtype"])
    if job["mode"] == "infer":

        @jax.jit
        def function(state, x, y):
            return model.stateless_call(state[0], state[1], x, training=False)[0]

        variables = (model.trainable_variables, model.non_trainable_variables)
    else:
        optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
        optimizer.build(model.trainable_variables)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        def loss_and_updates(trainable, non_trainable, x, y):
            logits, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
            return loss_fn(y, logits), non_trainable

        gradients = jax.value_and_grad(loss_and_updates, has_aux=True)

        @functools.partial(jax.jit, donate_argnums=0)
        def function(state, x, y):
            trainable, non_trainable, optimizer_vars = state
            (loss, non_trainable), grads = gradients(trainable, non_trainable, x, y)
            trainable, optimizer_vars = optimizer.stateless_apply(optimizer_vars, grads, trainable)
            return trainable, non_trainable, optimizer_vars, loss

        variables = (model.trainable_variables, model.non_trainable_variables, optimizer.variables)

    def fresh_state():
        # Copies: the training step donates its state, which must not be the variables' own buffers.
        return tuple([jax.numpy.array(v.value, copy=True) for v in group] for group in variables)

    state = fresh_state()

    def compile_at(batch):
        x, y = data(batch)
        start = time.perf_counter()
        compiled = function.lower(state, x, y).compile()
        return compiled, x, y, time.perf_counter() - start

    batch = job["batch"]
    result = {}
    if batch == "max":
        if jax.devices()[0].platform != "gpu":
            return {"skipped": "the largest batch is measured on a GPU only"}
        # Activations (the temporary buffers) grow with the batch; weights and optimizer state do not.
        analysis = compile_at(32)[0].memory_analysis()
        fixed = _planned_bytes(analysis) - analysis.temp_size_in_bytes
        limit = jax.devices()[0].memory_stats()["bytes_limit"]
        batch = fit_batch(0, fixed, 32, fixed + analysis.temp_size_in_bytes, 0.9 * limit)
    while True:
        try:
            compiled, x, y, compile_s = compile_at(batch)
            step = _stepper(compiled, fresh_state(), x, y, job["mode"] == "train")
            seconds = median_time(step, jax.block_until_ready, *repeats(args, job))
            break
        except Exception as error:  # noqa: BLE001 - an out-of-memory error shrinks the largest batch
            if job["batch"] != "max" or not is_out_of_memory(error) or batch <= 8:
                raise
            batch = max(8, int(batch * 0.85) // 8 * 8)
    result.update(batch=batch, seconds=seconds, clips_per_s=batch / seconds, compile_s=compile_s)
    analysis = compiled.memory_analysis()
    if analysis is not None:  # what XLA planned for the step: its buffers, weights and inputs
        result["step_memory_gb"] = _planned_bytes(analysis) / 1e9
    return result


def _planned_bytes(analysis):
    """Device bytes XLA planned for a compiled step: temporaries, arguments and outputs (donated ones once)."""
    return (
        analysis.temp_size_in_bytes
        + analysis.argument_size_in_bytes
        + analysis.output_size_in_bytes
        - analysis.alias_size_in_bytes
    )


def _stepper(compiled, state, x, y, training):
    """A call of the compiled function; a training step carries its (donated) state to the next call."""
    holder = {"state": state}

    def step():
        out = compiled(holder["state"], x, y)
        if training:
            holder["state"] = out[:3]
            return out[3]
        return out

    return step


def _keras_job(args, job, build, data, backend):
    """One job through Keras' own `train_on_batch` / `predict_on_batch` (TensorFlow and torch backends)."""
    import keras

    if job["batch"] == "max":
        return {"skipped": "the largest batch is measured on keras-jax and torchvision"}
    model = build(job["model"], job["dtype"])
    x, y = data(job["batch"])
    if job["mode"] == "train":
        model.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )

        def step():
            return model.train_on_batch(x, y)
    else:

        def step():
            return model.predict_on_batch(x)

    start = time.perf_counter()
    step()  # results come back as NumPy: each call is synchronized
    first_s = time.perf_counter() - start
    seconds = median_time(step, lambda _: None, args.warmup, args.reps)
    return {
        "batch": job["batch"],
        "seconds": seconds,
        "clips_per_s": job["batch"] / seconds,
        "compile_s": first_s - seconds,
    }


# ----------------------------------------------------------------------------------------------- coordinator


def available_frameworks():
    from importlib.util import find_spec

    have = {name: find_spec(name) is not None for name in ("torch", "torchvision", "jax", "tensorflow")}
    return [
        f
        for f, needs in (
            ("torchvision", ("torch", "torchvision")),
            ("keras-jax", ("jax",)),
            ("keras-tensorflow", ("tensorflow",)),
            ("keras-torch", ("torch",)),
        )
        if all(have[n] for n in needs)
    ]


def plan(args):
    """The job phases in order of importance; each phase runs every framework in turn."""
    train, infer = [], []
    for dtype in args.dtypes:
        for model in args.models:
            train.append({"kind": "bench", "model": model, "mode": "train", "batch": args.train_batch, "dtype": dtype})
            for batch in args.infer_batches:
                infer.append({"kind": "bench", "model": model, "mode": "infer", "batch": batch, "dtype": dtype})
    first = [{"kind": "gemm", "n": args.gemm}] + [{"kind": "flops", "model": m} for m in args.models]
    phases = []
    if "train" in args.phases:
        phases += [train[: len(args.models)], train[len(args.models) :]]
    if "infer" in args.phases:
        phases.append(infer)
    if "max" in args.phases and args.max_batch:
        phases.append([dict(job, batch="max") for job in train])
    phases = [phase for phase in phases if phase]
    return [first + phases[0]] + phases[1:] if phases else [first]


def run_worker(framework, jobs, args, deadline):
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
    if framework.startswith("keras-"):
        env["KERAS_BACKEND"] = framework.split("-", 1)[1]
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")
    if args.tiny:
        env["CUDA_VISIBLE_DEVICES"] = ""
        env["JAX_PLATFORMS"] = "cpu"
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        framework,
        "--jobs",
        json.dumps(jobs),
        "--deadline",
        str(deadline),
    ] + args.passthrough
    started = time.time()
    grace = None if args.budget >= 1e8 else max(60.0, deadline - started) + args.grace
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=grace)
        stdout, stderr, code = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as expired:
        stdout = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        stderr, code = f"killed after {grace:.0f} s", "timeout"
    records = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    reported = {json.dumps(r["job"], sort_keys=True) for r in records if "job" in r}
    for job in jobs:
        if json.dumps(job, sort_keys=True) not in reported and job["kind"] == "bench":
            records.append({"job": job, "error": f"worker exit {code}: {stderr.strip()[-300:]}"})
    for record in records:
        record["framework"] = framework
    return records, time.time() - started


def table(result):
    rows = [r for r in result["rows"] if r["job"]["kind"] == "bench"]
    flops = result["forward_flops"]
    peak = max(result["gemm_tflops"].values(), default=None)

    def key(r):
        return (r["job"]["model"], r["job"]["mode"], r["job"]["dtype"], str(r["job"]["batch"]))

    best_torch = {}
    for r in rows:
        if r["framework"] == "torchvision" and "clips_per_s" in r:
            best_torch[key(r)] = max(best_torch.get(key(r), 0), r["clips_per_s"])
    lines = [
        "| network | mode | dtype | batch | framework | clips/s | x torchvision | % bf16 peak | compile s |",
        "|---|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        job = r["job"]
        who = r["framework"] + (f" ({r['layout']})" if "layout" in r else "")
        if "clips_per_s" not in r:
            why = r.get("skipped") or r.get("error", "not measured")
            lines.append(
                f"| {job['model']} | {job['mode']} | {job['dtype']} | {job['batch']} | {who} | "
                f"not measured: {why[:120]} | | | |"
            )
            continue
        batch = f"{r['batch']}" + (" (largest)" if job["batch"] == "max" else "")
        ratio = "" if key(r) not in best_torch else f"{r['clips_per_s'] / best_torch[key(r)]:.2f}x"
        forward = flops.get(job["model"], {}).get("keras") or flops.get(job["model"], {}).get("torchvision")
        used = forward * (3 if job["mode"] == "train" else 1) * r["clips_per_s"] / 1e12 if forward else None
        share = f"{100 * used / peak:.1f}%" if used and peak else ""
        compile_s = f"{r['compile_s']:.1f}" if "compile_s" in r else ""
        lines.append(
            f"| {job['model']} | {job['mode']} | {job['dtype']} | {batch} | {who} | {r['clips_per_s']:.1f} | "
            f"{ratio} | {share} | {compile_s} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--frameworks", default=None, help="default: every one installed, of " + ", ".join(FRAMEWORKS))
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--infer-batches", default="1,64")
    parser.add_argument("--no-max-batch", dest="max_batch", action="store_false")
    parser.add_argument(
        "--phases",
        default="train,infer,max",
        help="which jobs: train (batch --train-batch), infer (--infer-batches), max (largest batch)",
    )
    parser.add_argument("--gemm", type=int, default=8192, help="side of the bf16 matrix product giving the peak")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--budget", type=float, default=1e9, help="seconds: no job starts after this")
    parser.add_argument("--grace", type=float, default=120, help="seconds a worker may run past the budget")
    parser.add_argument("--tiny", action="store_true", help="a CPU smoke run: 4x32x32 clips, batch 2, no GPU")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--jobs", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tiny:
        args.frames, args.size, args.train_batch, args.gemm, args.warmup, args.reps = 4, 32, 2, 256, 1, 3
        args.max_batch = False
        if args.infer_batches == "1,64":
            args.infer_batches = "1,2"
    args.passthrough = [
        "--frames",
        str(args.frames),
        "--size",
        str(args.size),
        "--warmup",
        str(args.warmup),
        "--reps",
        str(args.reps),
    ]
    if args.worker:
        jobs = json.loads(args.jobs)
        worker = torchvision_worker if args.worker == "torchvision" else keras_worker
        worker(args, jobs, args.deadline)
        return None
    args.models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}: choose from {MODELS}")
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    args.phases = [p for p in args.phases.split(",") if p]
    if set(args.dtypes) - set(DTYPES):
        parser.error(f"--dtypes takes {DTYPES}; received {args.dtypes}")
    args.infer_batches = [int(b) for b in args.infer_batches.split(",") if b]
    frameworks = args.frameworks.split(",") if args.frameworks else available_frameworks()
    if set(frameworks) - set(FRAMEWORKS):
        parser.error(f"--frameworks takes {FRAMEWORKS}; received {frameworks}")
    deadline = time.time() + args.budget
    result = {
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "settings": {
            k: getattr(args, k)
            for k in (
                "frames",
                "size",
                "train_batch",
                "infer_batches",
                "dtypes",
                "warmup",
                "reps",
                "gemm",
                "budget",
                "tiny",
            )
        },
        "workers": {},
        "rows": [],
        "gemm_tflops": {},
        "forward_flops": {},
        "not_measured": [],
    }
    for phase in plan(args):
        for framework in frameworks:
            records, seconds = run_worker(framework, phase, args, deadline)
            result["workers"].setdefault(framework, {"seconds": 0.0})["seconds"] += seconds
            for record in records:
                if "info" in record:
                    result["workers"][framework].update(record["info"])
                elif record["job"]["kind"] != "bench":
                    if "tflops" in record:
                        result["gemm_tflops"][framework] = record["tflops"]
                    elif "forward_flops" in record:
                        side = "torchvision" if framework == "torchvision" else "keras"
                        result["forward_flops"].setdefault(record["job"]["model"], {})[side] = record["forward_flops"]
                    else:
                        result["not_measured"].append(record)
                else:
                    result["rows"].append(record)
                    print(json.dumps(record), file=sys.stderr, flush=True)
    result["table"] = table(result)
    print(json.dumps({k: result[k] for k in ("machine", "workers", "gemm_tflops", "forward_flops")}, indent=1))
    print(result["table"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
