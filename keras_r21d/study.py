"""The paper's study at small scale: Table 2, train-vs-validation error curves, the clip-length study.

`run_study` trains every variant of the family (R2D, f-R2D, R3D, MC2..MC5,
rMC2..rMC5, R(2+1)D) at one depth on the same data with the same recipe and
budget, over several seeds and clip lengths, and writes to `out`:

- `table.md` / `table.csv`: paper-convention parameters and GFLOPs (the
  numbers of `keras-r21d models` for the same depth, size, width and
  classes), Clip@1 and Video@1 per clip length as mean ± sample standard
  deviation over the seeds; on the synthetic motion dataset also
  Direction@1 (is the true class more probable than its time-reversed twin;
  chance 50%). `runs.csv` has one row per run.
- `curves.png`: training and validation error per epoch of R3D and R(2+1)D
  at each of `curve_depths` (the paper's Figure 4 in spirit).
- `clip_length.png`: R(2+1)D trained at each of `clip_lengths`, tested at
  each of them; Clip@1 and Video@1 (the paper's Figure 6 in spirit).
- `summary.md`: which of the paper's findings hold at this scale, with the
  numbers. A comparison "holds" when the difference of the means exceeds the
  sum of the two standard deviations, "is reversed" when it does so the
  other way, and is "not resolved" otherwise.
- `study.json`: everything above as data, and `runs/`: one ordinary run
  directory per training (`keras-r21d evaluate`/`export` work on them).

An interrupted study resumes where it stopped: finished runs are reused and
an interrupted run continues from its last epoch.
"""

import csv
import dataclasses
import json
import math
import os
import platform
import shlex
import time

import numpy as np

from keras_r21d.models.specs import VARIANTS, stem_spans_clip

STUDY_VARIANTS = tuple(VARIANTS)  # the paper's Table 2 order
SYNTHETIC_TWINS = "synthetic"  # classes 2k and 2k+1 are each other's time reversal


@dataclasses.dataclass
class StudyConfig:
    """A study: which networks, how many seeds and clip lengths, and the shared training recipe.

    The defaults train 51 small networks on the synthetic motion dataset
    (`data=None`: written to `OUT/synthetic` with the classes of `motions`,
    two per motion kind), about 70 minutes on 2 CPU cores (`seeds=(0,)` or
    `frames=(8,)` about halves it; docs/paper_study/ has the measured time).
    `paper_recipe()` returns the paper's settings for real data
    (`data="ucf101:ROOT"`).
    """

    out: str = "study_out"
    data: str = None
    motions: tuple = ("horizontal", "vertical")
    videos_per_class: int = 64
    variants: tuple = STUDY_VARIANTS
    depth: int = 10
    frames: tuple = (8, 16)
    seeds: tuple = (0, 1)
    curve_depths: tuple = (10, 16)
    clip_lengths: tuple = (4, 8, 16)
    epochs: int = 8
    batch_size: int = 8
    size: int = 48
    resize_to: tuple = (48, 64)
    width_multiplier: float = 0.25
    lr: float = None  # the paper's 0.01 per 32 clips, scaled to the batch: 0.0025 at batch 8
    schedule: str = "constant"
    weight_decay: float = 0.0
    nesterov: bool = False
    frame_stride: int = 2
    flip: bool = False
    test_clips: int = 10
    implementation: str = "conv2d"
    test_crops: int = 1

    def __post_init__(self):
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variants {unknown}: choose from {list(VARIANTS)}")
        from keras_r21d.data.synthetic import motion_classes

        for name in ("motions", "frames", "seeds", "curve_depths", "clip_lengths", "variants"):
            if not getattr(self, name):
                raise ValueError(f"`{name}` must not be empty")
            setattr(self, name, tuple(getattr(self, name)))
        motion_classes(self.motions, "motions")
        if self.resize_to is not None:
            self.resize_to = tuple(self.resize_to)

    @classmethod
    def paper_recipe(cls, data, **overrides):
        """The paper's settings: depth 18, 8 and 16 frames of 112x112 from 128x171, full width,
        SGD with Nesterov momentum, weight decay 1e-4, lr 0.01 per 32 clips /10 every 10 epochs,
        45 epochs, flips, 3 seeds."""
        settings = dict(data=data, depth=18, frames=(8, 16), seeds=(0, 1, 2), curve_depths=(18, 34),
                        clip_lengths=(8, 16, 32), epochs=45, batch_size=8, size=112, resize_to=None,
                        width_multiplier=1.0, lr=None, schedule="step", weight_decay=1e-4, nesterov=True,
                        frame_stride=1, flip=True, implementation="auto")
        settings.update(overrides)
        return cls(**settings)

    def train_config(self, arch, depth, frames, seed, out):
        from keras_r21d.training import TrainConfig

        return TrainConfig(data=self.data, out=out, arch=arch, depth=depth, frames=frames, size=self.size,
                           resize_to=self.resize_to, batch_size=self.batch_size, epochs=self.epochs, lr=self.lr,
                           schedule=self.schedule, weight_decay=self.weight_decay, nesterov=self.nesterov,
                           width_multiplier=self.width_multiplier, frame_stride=self.frame_stride, flip=self.flip,
                           test_clips=self.test_clips, test_crops=self.test_crops, val_freq=self.epochs, seed=seed,
                           tensorboard=False, implementation=self.implementation)

    def planned_runs(self):
        """`[(arch, depth, frames, seed)]`: every training the study needs, without repeats."""
        first_seed, first_frames = self.seeds[0], self.frames[0]
        # The first clip length's table first, then the curve and clip-length runs, then the other clip
        # lengths: an interrupted study has early a complete `--frames FIRST` study to show.
        runs = [(v, self.depth, first_frames, s) for v in self.variants for s in self.seeds]
        runs += [(v, d, first_frames, first_seed) for d in self.curve_depths for v in ("r3d", "r2plus1d")]
        runs += [("r2plus1d", self.depth, length, first_seed) for length in self.clip_lengths]
        runs += [(v, self.depth, f, s) for f in self.frames[1:] for v in self.variants for s in self.seeds]
        return list(dict.fromkeys(runs))


def _run_name(arch, depth, frames, seed):
    return f"{arch}_d{depth}_f{frames}_s{seed}"


def _mean_sd(values):
    """`(mean, sample sd)`; the sd is `None` for a single value (no spread to show)."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), None
    mean = float(np.mean(values))
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return mean, sd


def _train_or_reuse(config, key, runs_dir, log):
    """Trains one network (or reuses a finished run, or resumes an interrupted one); returns its record."""
    from keras_r21d.training import train
    from keras_r21d.training.rundir import is_run

    arch, depth, frames, seed = key
    run_dir = os.path.join(runs_dir, _run_name(*key))
    record_path = os.path.join(run_dir, "run.json")
    train_config = config.train_config(arch, depth, frames, seed, run_dir)
    if os.path.exists(record_path):
        with open(record_path) as f:
            record = json.load(f)
        wanted = json.loads(json.dumps(dataclasses.asdict(train_config)))
        recorded = record.get("config", {})
        # A setting newer than the run (no key in its record) was at its default then.
        differing = sorted(k for k in wanted if k != "out" and k in recorded and recorded[k] != wanted[k])
        if differing:
            raise ValueError(f"{run_dir} was trained with other settings ({', '.join(differing)} differ): "
                             "use another --out for a study with new settings")
        if record.get("status") == "done":
            log(f"reusing {run_dir}")
            return record
    resume = is_run(run_dir)  # an interrupted run, also one that finished no epoch
    log(f"{'resuming' if resume else 'training'} {VARIANTS[arch][0]}-{depth}, {frames} frames, seed {seed} "
        f"-> {run_dir}")
    train(train_config, resume=resume)
    with open(record_path) as f:
        return json.load(f)


def _video_probabilities(run_dir):
    from keras_r21d.training.evaluation import video_predictions

    with np.load(os.path.join(run_dir, "eval", "clip_predictions.npz")) as saved:
        return video_predictions(saved["probabilities"], saved["labels"], saved["video_ids"])[:2]


def direction_accuracy(video_probabilities, video_labels):
    """The fraction of videos whose true class is more probable than its time-reversed twin (class `label ^ 1`).

    Meaningful on the synthetic motion dataset, whose classes come in
    twin pairs (0, 1), (2, 3), ...: chance is 50%, and a model blind to
    frame order (f-R2D) cannot do better.
    """
    labels = np.asarray(video_labels)
    twins = labels ^ 1
    rows = np.arange(len(labels))
    return float(np.mean(video_probabilities[rows, labels] > video_probabilities[rows, twins]))


def _synthetic_names(motions):
    from keras_r21d.data.synthetic import motion_classes

    return [name for name, _, _ in motion_classes(motions)]


def _is_synthetic(class_names):
    """Whether the classes are synthetic twin pairs: classes 2k and 2k+1 the two directions of one motion."""
    from keras_r21d.data.synthetic import MOTIONS

    kinds = {name: kind for name, kind, _ in MOTIONS}
    names = list(class_names)
    if not names or len(names) % 2 or any(n not in kinds for n in names):
        return False
    pairs = [kinds[names[i]] for i in range(0, len(names), 2)]
    return len(set(pairs)) == len(pairs) and names == _synthetic_names(pairs)


def _history(run_dir):
    from keras_r21d.training.plots import read_history

    history = read_history(os.path.join(run_dir, "history.csv"))
    return {"train_error": [1 - a for a in history.get("accuracy", [])],
            "val_error": [1 - a for a in history.get("val_accuracy", [])]}


def _compare(name_a, a, name_b, b, metric, higher_is_better=True):
    """One finding: does `a` beat `b` on `metric` (lists over seeds) beyond the seeds' spread?"""
    (mean_a, sd_a), (mean_b, sd_b) = _mean_sd(a), _mean_sd(b)
    difference = (mean_a - mean_b) * (1 if higher_is_better else -1)
    margin = (sd_a or 0.0) + (sd_b or 0.0)
    verdict = "holds" if difference > margin else "is reversed" if difference < -margin else "is not resolved"
    return {"claim": f"{name_a} {'above' if higher_is_better else 'below'} {name_b} on {metric}",
            "verdict": verdict, "a": [mean_a, sd_a], "b": [mean_b, sd_b], "seeds": [len(a), len(b)]}


def _pct(mean_sd):
    mean, sd = mean_sd
    if math.isnan(mean):
        return "n/a"
    return f"{100 * mean:.1f}" if sd is None else f"{100 * mean:.1f} ± {100 * sd:.1f}"


def _write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _plot_curves(curves, depths, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(depths), figsize=(5.5 * len(depths), 4), squeeze=False)
    for ax, depth in zip(axes[0], depths):
        for arch, color in (("r3d", "tab:blue"), ("r2plus1d", "tab:red")):
            curve = curves.get(f"{arch}_{depth}")
            if not curve:
                continue
            epochs = range(1, len(curve["train_error"]) + 1)
            name = f"{VARIANTS[arch][0]}-{depth}"
            ax.plot(epochs, [100 * e for e in curve["train_error"]], color=color, linestyle="--",
                    label=f"{name} train")
            ax.plot(epochs, [100 * e for e in curve["val_error"]], color=color, label=f"{name} validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel("clip error (%)")
        ax.set_title(f"R3D vs R(2+1)D, depth {depth}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_clip_length(lengths, grid, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    same = [grid[(length, length)] for length in lengths]
    axes[0].plot(lengths, [100 * r["clip_top1"] for r in same], "o-", label="Clip@1")
    axes[0].plot(lengths, [100 * r["video_top1"] for r in same], "s-", label="Video@1")
    axes[0].set_xlabel("clip length (frames), train = test")
    axes[0].set_ylabel("accuracy (%)")
    axes[0].set_title("R(2+1)D: accuracy vs clip length")
    for train_length in lengths:
        axes[1].plot(lengths, [100 * grid[(train_length, test)]["video_top1"] for test in lengths], "o-",
                     label=f"trained on {train_length}")
    axes[1].set_xlabel("test clip length (frames)")
    axes[1].set_ylabel("Video@1 (%)")
    axes[1].set_title("R(2+1)D: train vs test clip length")
    for ax in axes:
        ax.set_xticks(lengths)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _stats_rows(config, num_classes):
    from keras_r21d.models.stats import models_table

    return {frames: {row["name"].rpartition("_")[0]: row for row in models_table(
        config.depth, frames, config.size, num_classes, config.width_multiplier, variants=config.variants)}
        for frames in config.frames}


def _findings(config, table, curves, grid, twins, chance):
    """The paper's claims, each checked against this study's numbers."""
    findings = []
    metric = "Direction@1" if twins else "Video@1"
    key = "direction" if twins else "video_top1"
    for frames in config.frames:
        rows = table[frames]
        for temporal in ("r3d", "r2plus1d"):
            if temporal in rows and "fr2d" in rows:
                findings.append(dict(rq="RQ1", frames=frames, **_compare(
                    VARIANTS[temporal][0], rows[temporal][key], "f-R2D", rows["fr2d"][key], metric)))
        if "r2plus1d" in rows and "r3d" in rows:
            findings.append(dict(rq="RQ2", frames=frames, **_compare(
                "R(2+1)D", rows["r2plus1d"]["video_top1"], "R3D", rows["r3d"]["video_top1"], "Video@1")))
        for n in (2, 3, 4, 5):
            if f"mc{n}" in rows and f"rmc{n}" in rows:
                findings.append(dict(rq="RQ2", frames=frames, **_compare(
                    f"MC{n}", rows[f"mc{n}"]["video_top1"], f"rMC{n}", rows[f"rmc{n}"]["video_top1"], "Video@1")))
        if "fr2d" in rows:
            mean, sd = _mean_sd(rows["fr2d"][key])
            near = abs(mean - (0.5 if twins else chance)) <= max(2 * (sd or 0.0), 0.1)
            findings.append({"rq": "RQ1", "frames": frames, "claim": f"f-R2D near chance on {metric} "
                             f"({100 * (0.5 if twins else chance):.0f}%)",
                             "verdict": "holds" if near else "does not hold", "a": [mean, sd], "b": None,
                             "seeds": [len(rows['fr2d'][key])]})
    for depth in config.curve_depths:
        r3d, r21d = curves.get(f"r3d_{depth}"), curves.get(f"r2plus1d_{depth}")
        if r3d and r21d and r3d["train_error"] and r21d["train_error"]:
            findings.append(dict(rq="RQ3", frames=config.frames[0], **_compare(
                f"R(2+1)D-{depth}", [r21d["train_error"][-1]], f"R3D-{depth}", [r3d["train_error"][-1]],
                "final training error", higher_is_better=False)))
    lengths = sorted(config.clip_lengths)
    if len(lengths) > 1 and grid:
        short, long = grid[(lengths[0], lengths[0])], grid[(lengths[-1], lengths[-1])]
        clip_gain = long["clip_top1"] - short["clip_top1"]
        video_gain = long["video_top1"] - short["video_top1"]
        findings.append({"rq": "RQ4", "frames": lengths[-1],
                         "claim": f"longer clips ({lengths[0]} -> {lengths[-1]} frames) raise Clip@1",
                         "verdict": "holds" if clip_gain > 0 else "does not hold",
                         "a": [long["clip_top1"], None], "b": [short["clip_top1"], None], "seeds": [1, 1]})
        findings.append({"rq": "RQ4", "frames": lengths[-1],
                         "claim": "Video@1 gains less than Clip@1 from longer clips",
                         "verdict": "holds" if video_gain < clip_gain else "does not hold",
                         "a": [video_gain, None], "b": [clip_gain, None], "seeds": [1, 1]})
    return findings


def _finding_line(f):
    def fmt(pair):
        return _pct(pair) if pair else ""

    numbers = f"{fmt(f['a'])} vs {fmt(f['b'])}" if f["b"] else fmt(f["a"])
    if f["claim"].startswith("Video@1 gains"):
        numbers = f"Video@1 {100 * f['a'][0]:+.1f} points vs Clip@1 {100 * f['b'][0]:+.1f} points"
    return f"- **{f['rq']}**, {f['frames']} frames: {f['claim']} **{f['verdict']}** ({numbers})"


def run_study(config=None, log=print, command=None, **kwargs):
    """Runs (or resumes) the study and writes its table, plots and summary; returns `study.json`'s content.

    Args:
        config: a `StudyConfig`, or its fields as keyword arguments.
        log: a callable for progress lines.
        command: the command line to record in the outputs (default: the
            equivalent `keras-r21d study` command).
    """
    from keras_r21d.data import load_dataset, make_synthetic_dataset
    from keras_r21d.model_files import load_keras_model
    from keras_r21d.training import evaluate_model
    from keras_r21d.training.io import atomic_write_text

    config = config or StudyConfig(**kwargs)
    started = time.time()
    os.makedirs(config.out, exist_ok=True)
    synthetic = config.data is None
    if synthetic:
        data_dir = os.path.join(config.out, "synthetic")
        if not os.path.exists(os.path.join(data_dir, "testlist01.txt")):
            log(f"writing the synthetic motion dataset ({', '.join(_synthetic_names(config.motions))}) "
                f"to {data_dir}")
            make_synthetic_dataset(data_dir, kinds=config.motions, videos_per_class=config.videos_per_class,
                                   seed=0)
        config = dataclasses.replace(config, data=f"ucf101:{data_dir}")
    test_set = load_dataset(config.data, "test")
    if synthetic and (list(test_set.class_names) != _synthetic_names(config.motions)
                      or len(test_set) != test_set.num_classes * ((config.videos_per_class + 3) // 4)):
        raise ValueError(f"{data_dir} holds {len(test_set)} test videos of {list(test_set.class_names)}, not the "
                         f"data of --motions {','.join(config.motions)} --videos-per-class {config.videos_per_class}: "
                         "use another --out for a study with new settings")
    twins = _is_synthetic(test_set.class_names)
    chance = 1.0 / test_set.num_classes
    runs_dir = os.path.join(config.out, "runs")
    planned = config.planned_runs()
    log(f"{len(planned)} trainings planned ({len(config.variants)} variants x {len(config.frames)} clip lengths x "
        f"{len(config.seeds)} seeds, plus the curve and clip-length runs)")

    records = {}
    for index, key in enumerate(planned, 1):
        log(f"[{index}/{len(planned)}]")
        records[key] = _train_or_reuse(config, key, runs_dir, log)

    stats = _stats_rows(config, test_set.num_classes)
    run_rows, table = [], {}
    for key, record in records.items():
        arch, depth, frames, seed = key
        results = record["results"]
        run_dir = os.path.join(runs_dir, _run_name(*key))
        direction = direction_accuracy(*_video_probabilities(run_dir)) if twins else None
        run_rows.append({"variant": VARIANTS[arch][0], "arch": arch, "depth": depth, "frames": frames, "seed": seed,
                         "clip_top1": results["clip_top1"], "video_top1": results["video_top1"],
                         "direction": direction, "train_seconds": record.get("train_seconds"),
                         "run_dir": os.path.relpath(run_dir, config.out)})
        if depth == config.depth and frames in config.frames and arch in config.variants and seed in config.seeds:
            cell = table.setdefault(frames, {}).setdefault(arch, {"clip_top1": [], "video_top1": [],
                                                                  "direction": []})
            for name in cell:
                cell[name].append(run_rows[-1][name])
    _write_csv(os.path.join(config.out, "runs.csv"), run_rows)

    table_rows = []
    for arch in config.variants:
        for frames in config.frames:
            cell, stat = table[frames][arch], stats[frames][arch]
            row = {"model": f"{arch}_{config.depth}", "variant": VARIANTS[arch][0], "frames": frames,
                   "paper_params": stat["paper_params"], "gflops": stat["gflops"], "seeds": len(cell["clip_top1"])}
            for name in ("clip_top1", "video_top1") + (("direction",) if twins else ()):
                row[f"{name}_mean"], row[f"{name}_sd"] = _mean_sd(cell[name])
            table_rows.append(row)
    _write_csv(os.path.join(config.out, "table.csv"), table_rows)

    curves = {}
    for depth in config.curve_depths:
        for arch in ("r3d", "r2plus1d"):
            key = (arch, depth, config.frames[0], config.seeds[0])
            curves[f"{arch}_{depth}"] = _history(os.path.join(runs_dir, _run_name(*key)))
    _plot_curves(curves, config.curve_depths, os.path.join(config.out, "curves.png"))

    lengths = sorted(config.clip_lengths)
    grid = {}
    grid_path = os.path.join(config.out, "clip_length.json")
    if os.path.exists(grid_path):
        with open(grid_path) as f:
            saved = json.load(f)
        if saved.get("lengths") == lengths:
            grid = {tuple(cell["train_test"]): cell for cell in saved["cells"]}
    for train_length in lengths:
        run_dir = os.path.join(runs_dir, _run_name("r2plus1d", config.depth, train_length, config.seeds[0]))
        model = None
        for test_length in lengths:
            if (train_length, test_length) in grid:
                continue
            if model is None:
                model = load_keras_model(os.path.join(run_dir, "model.keras"))
            log(f"R(2+1)D trained on {train_length} frames, tested on {test_length}")
            # The evaluator's clips of a run trained at `test_length` (TrainConfig.clip_config, as train() uses).
            clip_config = config.train_config("r2plus1d", config.depth, test_length, config.seeds[0],
                                              run_dir).clip_config()
            report = evaluate_model(model, test_set, clip_config, config.batch_size)
            grid[(train_length, test_length)] = {"train_test": [train_length, test_length],
                                                 "clip_top1": report["clip_top1"],
                                                 "video_top1": report["video_top1"]}
        atomic_write_text(grid_path, json.dumps({"lengths": lengths, "cells": list(grid.values())}, indent=2))
    _plot_clip_length(lengths, grid, os.path.join(config.out, "clip_length.png"))

    findings = _findings(config, table, curves, grid, twins, chance)
    command = command or study_command(config)
    seconds = time.time() - started
    markdown = _table_markdown(config, table_rows, twins)
    atomic_write_text(os.path.join(config.out, "table.md"), markdown)
    train_minutes = sum(r["train_seconds"] or 0.0 for r in run_rows) / 60
    summary = _summary_markdown(config, markdown, findings, twins, chance, test_set, command, seconds, grid, lengths,
                                train_minutes, len(run_rows))
    atomic_write_text(os.path.join(config.out, "summary.md"), summary)
    study = {"config": dataclasses.asdict(config), "command": command, "seconds": round(seconds, 1),
             "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "table": table_rows,
             "runs": run_rows, "findings": findings, "curves": curves,
             "clip_length": list(grid.values()), "twins": twins, "chance": chance}
    atomic_write_text(os.path.join(config.out, "study.json"), json.dumps(study, indent=2))
    log(f"study written to {config.out} (table.md, table.csv, runs.csv, curves.png, clip_length.png, summary.md) "
        f"in {seconds:.0f} s")
    return study


def _table_markdown(config, rows, twins):
    from keras_r21d.models.stats import format_gflops, format_params

    frames = config.frames
    header = ["model", "params"]
    for f in frames:
        header += [f"GFLOPs {f}f", f"Clip@1 {f}f", f"Video@1 {f}f"] + ([f"Direction@1 {f}f"] if twins else [])
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    by_key = {(r["model"], r["frames"]): r for r in rows}
    for arch in config.variants:
        model = f"{arch}_{config.depth}"
        params = sorted({by_key[(model, f)]["paper_params"] for f in frames})
        cells = [VARIANTS[arch][0], " / ".join(format_params(p) for p in params)]
        for f in frames:
            r = by_key[(model, f)]
            cells += [format_gflops(r["gflops"]), _pct((r["clip_top1_mean"], r["clip_top1_sd"])),
                      _pct((r["video_top1_mean"], r["video_top1_sd"]))]
            if twins:
                cells.append(_pct((r["direction_mean"], r["direction_sd"])))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _summary_markdown(config, table, findings, twins, chance, test_set, command, seconds, grid, lengths,
                      train_minutes, trainings):
    from keras_r21d.data.pipeline import view_protocol

    seeds = len(config.seeds)
    lines = [
        "# The paper's study at small scale",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs. {trainings} trainings, {train_minutes:.0f} minutes "
        f"of `model.fit` in all (whatever else ran on the machine included); this invocation took "
        f"{seconds / 60:.1f} minutes (finished runs are reused, not retrained).",
        "",
        f"Data: `{config.data}`, {test_set.num_classes} classes ({', '.join(test_set.class_names)}), "
        f"{len(test_set)} test videos; chance Video@1 {100 * chance:.1f}%.",
        f"Networks: depth {config.depth}, width x{config.width_multiplier:g}, {config.size}x{config.size} crops, "
        f"frame stride {config.frame_stride}; {config.epochs} epoch(s), batch {config.batch_size}, "
        f"lr {_lr_text(config)} ({config.schedule}), "
        f"weight decay {config.weight_decay:g}; {view_protocol(config.test_clips, config.test_crops)} per test "
        "video.",
        "",
        f"## Table 2 at this scale (mean ± sd over {seeds} seed{'s' if seeds > 1 else ''}, %)",
        "",
        "Params and GFLOPs are the paper's convention (conv kernels and classifier; multiply-adds per clip), as "
        f"printed by `keras-r21d models --depth {config.depth} --frames F --size {config.size} "
        f"--classes {test_set.num_classes} --width-multiplier {config.width_multiplier:g}`.",
    ]
    if any(stem_spans_clip(variant) for variant in config.variants) and len(config.frames) > 1:
        lines.append("R2D's first layer sees the whole clip, so its parameters grow with the clip length (shown as "
                     + " / ".join(f"{f}f" for f in config.frames) + " values).")
    if twins:
        lines.append("Direction@1: the fraction of test videos whose class is more probable than its time-reversed "
                     "twin (chance 50%, and the ceiling of any model blind to frame order).")
    lines += ["", table, "## Findings", "",
              "A comparison holds when the difference of the means exceeds the sum of the seeds' standard "
              "deviations; with one seed (curves, clip lengths) it is a single observation.", ""]
    lines += [_finding_line(f) for f in findings]
    if grid:
        lines += ["", "## Clip length (R(2+1)D, one seed; rows: train length, columns: test length; Video@1 %)", "",
                  "| train \\ test | " + " | ".join(str(t) for t in lengths) + " |",
                  "|---|" + "---:|" * len(lengths)]
        for train_length in lengths:
            lines.append(f"| {train_length} | " + " | ".join(
                f"{100 * grid[(train_length, t)]['video_top1']:.1f}" for t in lengths) + " |")
    lines += ["", "Plots: `curves.png` (train and validation clip error per epoch, R3D vs R(2+1)D), "
              "`clip_length.png`.", ""]
    return "\n".join(lines)


def _lr_text(config):
    if config.lr is not None:
        return f"{config.lr:g}"
    from keras_r21d.training.recipe import scaled_learning_rate

    return f"{scaled_learning_rate(config.batch_size):g} (the paper's 0.01 per 32 clips at batch {config.batch_size})"


def study_command(config):
    """The `keras-r21d study` command line that reproduces `config`."""
    defaults = StudyConfig()
    parts = ["keras-r21d", "study", "--out", config.out]
    flags = {"data": "--data", "motions": "--motions", "videos_per_class": "--videos-per-class",
             "variants": "--variants", "depth": "--depth", "frames": "--frames", "seeds": "--seeds",
             "curve_depths": "--curve-depths", "clip_lengths": "--clip-lengths", "epochs": "--epochs",
             "batch_size": "--batch-size", "size": "--size", "width_multiplier": "--width-multiplier",
             "lr": "--lr", "weight_decay": "--weight-decay", "frame_stride": "--frame-stride",
             "test_clips": "--test-clips", "test_crops": "--test-crops"}
    for field, flag in flags.items():
        value, default = getattr(config, field), getattr(defaults, field)
        if value == default or value is None:
            continue
        if field == "data" and value.endswith(os.path.join(config.out, "synthetic")):
            continue
        if isinstance(value, tuple):
            value = ",".join(str(v) for v in value)
        parts += [flag, str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def _ints(text):
    try:
        values = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise ValueError(f"expected comma-separated integers, got {text!r}")
    return values


def add_arguments(parser):
    """The options of `keras-r21d study` and `examples/paper_study.py`."""
    d = StudyConfig()
    parser.add_argument("--out", default=d.out, help=f"output folder (default {d.out}); rerun to resume")
    parser.add_argument("--data", help="dataset spec (default: the synthetic motion dataset, written to OUT)")
    parser.add_argument("--paper-recipe", action="store_true",
                        help="the paper's settings (depth 18, 112x112, 45 epochs, ...; needs --data); "
                             "other flags still override them")
    parser.add_argument("--motions", help="synthetic data: comma-separated motion kinds, each giving two classes "
                                          f"(its two directions; default {','.join(d.motions)}; "
                                          "also rotate, zoom, diagonal, antidiagonal)")
    parser.add_argument("--videos-per-class", type=int, help=f"videos per class (default {d.videos_per_class})")
    parser.add_argument("--variants", help="comma-separated variants (default: all 12 of the paper)")
    parser.add_argument("--depth", type=int, help=f"depth of the table's networks (default {d.depth})")
    parser.add_argument("--frames", help=f"clip lengths of the table (default {','.join(map(str, d.frames))})")
    parser.add_argument("--seeds", help=f"seeds (default {','.join(map(str, d.seeds))})")
    parser.add_argument("--curve-depths", help="depths of the R3D vs R(2+1)D curves "
                                               f"(default {','.join(map(str, d.curve_depths))})")
    parser.add_argument("--clip-lengths", help="train/test clip lengths of the clip-length study "
                                               f"(default {','.join(map(str, d.clip_lengths))})")
    parser.add_argument("--epochs", type=int, help=f"epochs per training (default {d.epochs})")
    parser.add_argument("--batch-size", type=int, help=f"clips per batch (default {d.batch_size})")
    parser.add_argument("--size", type=int, help=f"crop size (default {d.size})")
    parser.add_argument("--width-multiplier", type=float, help=f"width multiplier (default {d.width_multiplier})")
    parser.add_argument("--lr", type=float, help="learning rate, constant (default: the paper's 0.01 per 32 clips, "
                                                 "scaled to the batch: 0.0025 at batch 8)")
    parser.add_argument("--weight-decay", type=float, help=f"weight decay (default {d.weight_decay})")
    parser.add_argument("--frame-stride", type=int, help=f"frame stride (default {d.frame_stride})")
    parser.add_argument("--test-clips", type=int, help=f"clips per test video (default {d.test_clips})")
    parser.add_argument("--test-crops", type=int, choices=[1, 3],
                        help=f"crops per test clip: 1 (the center) or 3 along the long side (default {d.test_crops})")


def config_from_args(args):
    """A `StudyConfig` from parsed `add_arguments` options."""
    overrides = {"out": args.out}
    for name in ("videos_per_class", "depth", "epochs", "batch_size", "size", "width_multiplier", "lr",
                 "weight_decay", "frame_stride", "test_clips", "test_crops", "data"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    for name in ("frames", "seeds", "curve_depths", "clip_lengths"):
        if getattr(args, name) is not None:
            overrides[name] = _ints(getattr(args, name))
    if args.motions:
        overrides["motions"] = tuple(m.strip() for m in args.motions.split(",") if m.strip())
    if args.variants:
        overrides["variants"] = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    if args.size is not None and not args.paper_recipe:
        overrides["resize_to"] = None  # the paper's 128:171 proportions scaled to the crop
    if args.paper_recipe:
        if not args.data:
            raise ValueError("--paper-recipe needs --data (e.g. ucf101:/data/UCF101:split=1)")
        return StudyConfig.paper_recipe(**overrides)
    return StudyConfig(**overrides)
