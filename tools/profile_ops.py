"""Where the time goes: an op-level profile of keras_r21d and torchvision, same model, same run.

    python tools/profile_ops.py MODEL MODE BATCH [--steps N] [--shape FRAMESxSIZE] [--no-torch]
    python tools/profile_ops.py r2plus1d_18 train 4
    python tools/profile_ops.py r2plus1d_18 infer 8 --keep-batchnorm

Each side runs in its own `keras-r21d bench` worker (2 threads), is set up
exactly as in the benchmark, warmed up, then runs `--steps` steps under its
framework's profiler: TensorFlow's (op kernel events of the executor
threads, grouped by op type) and `torch.profiler` (each operator's self CPU
time). Ops are sorted into categories (convolution forward, convolution
backward, BatchNorm, ...) so that the two sides can be compared line by
line; the top op types of each side follow. Profiling adds overhead: the
"profiled" time per step is above the benchmark's.
"""

import argparse
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from keras_r21d.bench import Worker  # noqa: E402

# (category, pattern over TensorFlow op types or torch operator names); the first match wins.
CATEGORIES = [
    ("conv backward", r"Conv\dDBackprop|Conv3DBackprop|convolution_backward|conv.*backward"),
    ("conv forward", r"Conv\dD|FusedConv|conv|Conv"),
    ("BatchNorm", r"BatchNorm|batch_norm"),
    ("ReLU", r"^Relu|ReluGrad|relu|threshold_backward|clamp_min"),
    ("optimizer", r"ApplyKerasMomentum|ApplyMomentum|AssignSubVariable|AssignAddVariable|AssignVariable|_foreach"),
    ("data movement", r"Reshape|Transpose|Pad|Concat|Slice|StridedSlice|Split|Tile|Identity|copy_|contiguous|"
                      r"^aten::cat|as_strided|clone|zero_|fill_|view|permute|empty"),
    # With oneDNN, the tap kernel gradients of R(2+1)D's convolutions (`keras_r21d.layers.video_conv`) are MatMuls.
    ("MatMul (tap kernel gradients, classifier)", r"MatMul|^aten::mm$|^aten::addmm$"),
    ("pooling, classifier, loss", r"Mean|Softmax|MatMul|Sum|BiasAdd|Sparse|mm|addmm|mean|softmax|log_softmax|nll|"
                                  r"avg_pool|adaptive"),
    ("elementwise", r"Add|Mul|Sub|Rsqrt|Square|Maximum|add|mul|sub|div|sqrt"),
]


def category(name):
    for label, pattern in CATEGORIES:
        if re.search(pattern, name):
            return label
    return "other"


def profile_side(script_args, setup, steps, warmup, name):
    worker = Worker(script_args, name)
    try:
        worker.ask(op="setup", **setup)
        for _ in range(warmup):
            worker.ask(op="run")
        return worker.ask(op="profile", steps=steps)
    finally:
        worker.close()


def table(results, top):
    sides = list(results)
    totals = {side: sum(results[side]["ops"].values()) for side in sides}
    lines = ["| category | " + " | ".join(f"{side} s/step (%)" for side in sides) + " |",
             "|---|" + "---:|" * len(sides)]
    labels = [label for label, _ in CATEGORIES] + ["other"]
    for label in labels:
        cells = []
        for side in sides:
            seconds = sum(t for op, t in results[side]["ops"].items() if category(op) == label)
            cells.append(f"{seconds:.3f} ({100 * seconds / totals[side]:.0f}%)")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| **op time, all** | " + " | ".join(f"**{totals[s]:.3f}**" for s in sides) + " |")
    lines.append("| step wall time (profiled) | " + " | ".join(f"{results[s]['wall_s']:.3f}" for s in sides) + " |")
    for side in sides:
        ops = sorted(results[side]["ops"].items(), key=lambda item: -item[1])[:top]
        lines += ["", f"Top op types, {side}:", "", "| op | category | s/step | % |", "|---|---|---:|---:|"]
        lines += [f"| `{op}` | {category(op)} | {t:.3f} | {100 * t / totals[side]:.1f} |" for op, t in ops]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="e.g. r2plus1d_18 (torchvision's name, as `keras-r21d bench`)")
    parser.add_argument("mode", choices=["infer", "train"])
    parser.add_argument("batch", type=int)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--shape", default="16x112", help="FRAMESxSIZE (default 16x112)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--implementation", default="auto", choices=["auto", "conv2d", "conv3d", "shifted"])
    parser.add_argument("--keep-batchnorm", action="store_true", help="keras inference without BatchNorm folding")
    parser.add_argument("--keep-activation", action="store_true",
                        help="keras training keeps relu(bn(x)) for the backward pass (`keep_activation`)")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    frames, size = (int(v) for v in args.shape.split("x"))
    setup = dict(model=args.model, mode=args.mode, batch=args.batch, frames=frames, size=size)
    results = {"keras_r21d": profile_side(
        [sys.executable, "-m", "keras_r21d.bench._keras_worker", str(args.threads)],
        dict(setup, implementation=args.implementation,
             fold_batchnorm=args.mode == "infer" and not args.keep_batchnorm, keep_activation=args.keep_activation),
        args.steps, args.warmup, "keras")}
    if not args.no_torch:
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "keras_r21d", "bench",
                              "_torch_worker.py")
        results["torchvision"] = profile_side([sys.executable, script, str(args.threads)], setup, args.steps,
                                              args.warmup, "torch")
    print(f"{args.model} {args.mode} batch {args.batch}, {frames}x{size}x{size}, {args.threads} threads, "
          f"{args.steps} profiled steps after {args.warmup} warm-up\n")
    print(table(results, args.top), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
