"""keras-tuner search over the paper's family, trained with the package's pipeline and recipe.

Each trial is a complete `keras_r21d.train` run in `OUT/trials/trial_<id>/`
(its own input pipeline at its clip length, checkpoints, evaluation), scored
by validation Video@1 (or Clip@1). An interrupted search resumes with
`overwrite=False`: finished trials are kept, an interrupted one runs again
(resuming from its last checkpoint).
"""

import json
import os
import time

import keras_tuner as kt

from keras_r21d.tuning.space import SearchSpace, VideoHyperModel, describe, network

ALGORITHMS = ("random", "bayesian", "hyperband")
OBJECTIVES = {"video": "val_video_accuracy", "clip": "val_video_clip_accuracy"}
TRIAL_FILE = "trial.json"


class BudgetReached(Exception):
    """Raised before a new trial once the wall-clock budget is spent."""


class _VideoTrials:
    """`run_trial` and the wall-clock budget, mixed into keras-tuner's tuners."""

    def __init__(self, data, out, space, train_settings, epochs, budget_minutes, trial_timeout_minutes=None,
                 **kwargs):
        self.trial_timeout_minutes = trial_timeout_minutes
        self.data = data
        self.out = out
        self.space = space
        self.train_settings = dict(train_settings)
        self.epochs = epochs
        self.budget_minutes = budget_minutes
        self._deadline = None
        super().__init__(directory=out, project_name="search", **kwargs)

    def trial_dir(self, trial_id):
        return os.path.join(self.out, "trials", f"trial_{trial_id}")

    def search(self, *args, **kwargs):
        from keras_tuner.src.distribute import utils as dist_utils

        if dist_utils.is_chief_oracle():
            self.save()
            serve_oracle(self.oracle, self.trial_timeout_minutes)
            return
        if self.budget_minutes:
            self._deadline = time.monotonic() + 60 * self.budget_minutes
        try:
            super().search(*args, **kwargs)
        except BudgetReached:
            print(f"keras-r21d tune: the {self.budget_minutes:g}-minute budget is spent: no new trial started")
            self.on_search_end()

    def pre_create_trial(self):
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise BudgetReached()

    def run_trial(self, trial, *args, **kwargs):
        from keras_r21d.models.stats import model_stats
        from keras_r21d.training import TrainConfig, train
        from keras_r21d.training.rundir import is_run

        hp = trial.hyperparameters
        values = self.space.declare(hp)
        stem, stages = network(values)
        epochs = int(hp.values.get("tuner/epochs", self.epochs))
        settings = dict(self.train_settings)
        settings.update(
            data=self.data, out=self.trial_dir(trial.trial_id), depth=values["depth"], frames=values["frames"],
            width_multiplier=values["width_multiplier"], lr=values["lr"], weight_decay=values["weight_decay"],
            warmup_epochs=values["warmup_epochs"], epochs=epochs, val_freq=epochs,
            label_smoothing=values["label_smoothing"], mixup=values["mixup"], cutmix=values["cutmix"],
        )
        if "variant" in values:
            settings["arch"] = values["variant"]
        else:
            settings.update(stem_type=stem, stage_conv_types=stages)
        previous = hp.values.get("tuner/trial_id")
        if previous:  # Hyperband: continue a trial of the previous bracket for the remaining epochs
            settings.update(init=os.path.join(self.trial_dir(previous), "model.keras"), finetune_lr=values["lr"],
                            epochs=max(1, epochs - int(hp.values.get("tuner/initial_epoch", 0))), stem_type=None,
                            stage_conv_types=None)
            settings["val_freq"] = settings["epochs"]
        config = TrainConfig(**settings)
        resume = is_run(config.out)  # an interrupted trial, also one that finished no epoch
        started = time.time()
        result = train(config, resume=resume)
        seconds = time.time() - started
        size = config.size
        stats = model_stats(result["model"], input_shape=(values["frames"], size, size, 3))
        report = result["report"]
        record = {
            "trial_id": trial.trial_id, "network": describe(values), "hyperparameters": values, "epochs": epochs,
            "input_shape": list(result["model"].input_shape[1:]), "train_clip_shape": result["train_clip_shape"],
            "params": stats["paper_params"], "gflops": stats["gflops"], "video_top1": report["video_top1"],
            "clip_top1": report["clip_top1"], "train_seconds": round(seconds, 1), "run_dir": config.out,
        }
        with open(os.path.join(config.out, TRIAL_FILE), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)
        return {"val_video_accuracy": report["video_top1"], "val_video_clip_accuracy": report["clip_top1"],
                "params": float(stats["paper_params"]), "gflops": float(stats["gflops"]),
                "train_seconds": float(seconds)}


class VideoRandomSearch(_VideoTrials, kt.RandomSearch):
    pass


class VideoBayesianOptimization(_VideoTrials, kt.BayesianOptimization):
    pass


class VideoHyperband(_VideoTrials, kt.Hyperband):
    pass


def make_tuner(data, out, space=None, algorithm="random", objective="video", max_trials=10, epochs=5,
               budget_minutes=None, seed=0, overwrite=False, num_classes=None, trial_timeout_minutes=None,
               **train_settings):
    """A keras-tuner tuner whose trials train `keras_r21d` networks on `data`.

    Args:
        data: a dataset spec (`ucf101:ROOT`, ...): trials train on its train
            subset and are scored on its test subset (or `val_data`).
        out: the search directory (keras-tuner's state in `OUT/search/`,
            trials in `OUT/trials/`, results in `OUT/results.*`).
        space: a `SearchSpace`.
        algorithm: `"random"`, `"bayesian"` or `"hyperband"`.
        objective: `"video"` (validation Video@1, default) or `"clip"` (Clip@1).
        max_trials: trials to run (Hyperband: its maximum epochs per trial is `epochs`).
        epochs: epochs per trial.
        budget_minutes: stop starting trials after this many minutes.
        seed: the search's random seed.
        overwrite: start afresh instead of resuming the search in `out`.
        num_classes: the class count (default: read from the dataset).
        trial_timeout_minutes: distributed chief only: a trial running longer
            is marked failed (its worker presumed dead).
        **train_settings: fixed `TrainConfig` fields for every trial (`size`,
            `batch_size`, `resize_to`, `frame_stride`, `flip`, `test_clips`, `test_crops`, ...).
    """
    from keras_r21d.data.datasets import load_dataset

    if algorithm not in ALGORITHMS:
        raise ValueError(f"`algorithm` must be one of {ALGORITHMS}. Received: {algorithm!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"`objective` must be one of {sorted(OBJECTIVES)}. Received: {objective!r}")
    space = space or SearchSpace()
    if num_classes is None:
        num_classes = load_dataset(data, "train").num_classes
    train_settings.setdefault("tensorboard", False)
    hypermodel = VideoHyperModel(space, num_classes, size=train_settings.get("size", 112), epochs=epochs)
    common = dict(data=data, out=out, space=space, train_settings=train_settings, epochs=epochs,
                  budget_minutes=budget_minutes, trial_timeout_minutes=trial_timeout_minutes, hypermodel=hypermodel,
                  objective=kt.Objective(OBJECTIVES[objective], direction="max"), seed=seed, overwrite=overwrite,
                  max_retries_per_trial=1, max_consecutive_failed_trials=3)
    if algorithm == "hyperband":
        return VideoHyperband(max_epochs=epochs, factor=3, hyperband_iterations=1, **common)
    cls = VideoRandomSearch if algorithm == "random" else VideoBayesianOptimization
    return cls(max_trials=max_trials, **common)


def _trial_record(out, trial):
    path = os.path.join(out, "trials", f"trial_{trial.trial_id}", TRIAL_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return {}


def collect_results(oracle, out):
    """One row per trial of an oracle: hyperparameters, status, params, GFLOPs, Clip@1, Video@1, time."""

    def metric(trial, name):
        return float(trial.metrics.get_best_value(name)) if trial.metrics.exists(name) else None

    rows = []
    for trial_id in sorted(oracle.trials):
        trial = oracle.trials[trial_id]
        record = _trial_record(out, trial)
        values = {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}
        rows.append({
            "trial_id": trial_id,
            "status": trial.status,
            "network": record.get("network") or (describe(values) if values else ""),
            "hyperparameters": values,
            "epochs": record.get("epochs", trial.hyperparameters.values.get("tuner/epochs")),
            "params": metric(trial, "params"),
            "gflops": metric(trial, "gflops"),
            "clip_top1": metric(trial, "val_video_clip_accuracy"),
            "video_top1": metric(trial, "val_video_accuracy"),
            "train_seconds": metric(trial, "train_seconds"),
            "score": None if trial.score is None else float(trial.score),
            "train_clip_shape": record.get("train_clip_shape"),
            "input_shape": record.get("input_shape"),
            "message": (trial.message or "").strip().splitlines()[-1:] or None,
        })
    return rows


def pareto_front(rows):
    """Trials no other trial beats on both Video@1 (higher) and GFLOPs (lower), by increasing GFLOPs."""
    done = sorted((r for r in rows if r["video_top1"] is not None and r["gflops"] is not None),
                  key=lambda r: (r["gflops"], -r["video_top1"]))
    front, best = [], -1.0
    for row in done:
        if row["video_top1"] > best:
            front.append(row)
            best = row["video_top1"]
    return front


def write_results(rows, out):
    """Writes `results.csv`, `results.md` and `pareto.png` (Video@1 vs GFLOPs) to `out`."""
    import csv

    from keras_r21d.training.io import atomic_write_text

    columns = ["trial_id", "status", "network", "depth", "frames", "width_multiplier", "lr", "weight_decay",
               "warmup_epochs", "epochs", "params", "gflops", "clip_top1", "video_top1", "train_seconds"]

    def cells(row):
        hp = row["hyperparameters"]
        return {"trial_id": row["trial_id"], "status": row["status"], "network": row["network"],
                "depth": hp.get("depth"), "frames": hp.get("frames"), "width_multiplier": hp.get("width_multiplier"),
                "lr": hp.get("lr"), "weight_decay": hp.get("weight_decay"), "warmup_epochs": hp.get("warmup_epochs"),
                "epochs": row["epochs"], "params": row["params"], "gflops": row["gflops"],
                "clip_top1": row["clip_top1"], "video_top1": row["video_top1"], "train_seconds": row["train_seconds"]}

    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, "results.csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(cells(row))
    os.replace(tmp, os.path.join(out, "results.csv"))

    def fmt(value, pattern):
        return "-" if value is None else pattern.format(value)

    front = {row["trial_id"] for row in pareto_front(rows)}
    lines = ["| trial | network | frames | width | lr | wd | warm-up | epochs | params | GFLOPs | Clip@1 | Video@1 "
             "| time (s) | status |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        c = cells(row)
        mark = " (Pareto)" if row["trial_id"] in front else ""
        lines.append(
            f"| {c['trial_id']} | {c['network']}{mark} | {fmt(c['frames'], '{}')} | "
            f"{fmt(c['width_multiplier'], '{:g}')} | {fmt(c['lr'], '{:.2g}')} | {fmt(c['weight_decay'], '{:.2g}')} | "
            f"{fmt(c['warmup_epochs'], '{}')} | {fmt(c['epochs'], '{}')} | {fmt(c['params'], '{:,.0f}')} | "
            f"{fmt(c['gflops'], '{:.3f}')} | {fmt(c['clip_top1'], '{:.3f}')} | {fmt(c['video_top1'], '{:.3f}')} | "
            f"{fmt(c['train_seconds'], '{:.0f}')} | {c['status']} |")
    atomic_write_text(os.path.join(out, "results.md"), "\n".join(lines) + "\n")
    plot_pareto(rows, os.path.join(out, "pareto.png"))


def plot_pareto(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["video_top1"] is not None and r["gflops"] is not None]
    front = pareto_front(rows)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([r["gflops"] for r in done], [100 * r["video_top1"] for r in done], color="tab:blue", label="trials")
    for row in done:
        ax.annotate(f"{row['trial_id']}: {row['network']} {row['hyperparameters'].get('frames')}f",
                    (row["gflops"], 100 * row["video_top1"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if front:
        ax.step([r["gflops"] for r in front], [100 * r["video_top1"] for r in front], where="post",
                color="tab:red", label="Pareto front")
    ax.set_xlabel("GFLOPs per clip (multiply-adds)")
    ax.set_ylabel("validation Video@1 (%)")
    ax.set_title("accuracy vs cost of the searched networks")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_best_model(rows, out):
    """Copies the best completed trial's model to `out/best_model.keras` (with its run record beside it)."""
    import shutil

    done = [r for r in rows if r["status"] == "COMPLETED" and r["score"] is not None]
    if not done:
        return None
    best = max(done, key=lambda r: r["score"])
    run_dir = os.path.join(out, "trials", f"trial_{best['trial_id']}")
    source = os.path.join(run_dir, "model.keras")
    if not os.path.isfile(source):
        return None  # trained on another machine: its model is in that worker's directory
    target = os.path.join(out, "best_model.keras")
    shutil.copyfile(source, target + ".tmp")
    os.replace(target + ".tmp", target)
    shutil.copyfile(os.path.join(run_dir, "run.json"), target + ".json")
    return target


def serve_oracle(oracle, trial_timeout_minutes=None, poll_seconds=1.0, idle_grace_seconds=10.0):
    """The chief of a distributed search: serves the oracle to the workers until the search ends.

    keras-tuner's own chief waits forever for a worker that died mid-trial.
    Here a trial running longer than `trial_timeout_minutes` is marked
    FAILED (with the reason) and its worker forgotten, and once every trial
    is handed out and none is running, the chief ends after
    `idle_grace_seconds` even if a worker never came back.
    """
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos  # keras-tuner's own chief uses these (no public API)
    from keras_tuner.src.distribute.oracle_chief import OracleServicer
    from keras_tuner.src.engine import trial as trial_module

    ip, port = os.environ["KERASTUNER_ORACLE_IP"], os.environ["KERASTUNER_ORACLE_PORT"]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    server.add_insecure_port(f"{ip}:{port}")
    server.start()
    first_seen, idle_since = {}, None
    try:
        while True:
            time.sleep(poll_seconds)
            now = time.monotonic()
            for tuner_id, trial in list(oracle.ongoing_trials.items()):
                seen = first_seen.setdefault(trial.trial_id, now)
                if trial_timeout_minutes and now - seen > 60 * trial_timeout_minutes:
                    trial.status = trial_module.TrialStatus.FAILED
                    trial.message = (f"worker {tuner_id} did not finish trial {trial.trial_id} within "
                                     f"{trial_timeout_minutes:g} minutes (dead or stuck): marked failed")
                    print(f"keras-r21d tune: {trial.message}", flush=True)
                    oracle.tuner_ids.discard(tuner_id)
                    try:
                        oracle.end_trial(trial)
                    except RuntimeError as error:  # too many consecutive failed trials
                        print(f"keras-r21d tune: stopping the search: {error}", flush=True)
                        return
            finished = servicer.stop_triggered and not oracle.ongoing_trials
            idle_since = (idle_since or now) if finished else None
            if finished and (not oracle.tuner_ids or now - idle_since > idle_grace_seconds):
                return
    finally:
        server.stop(grace=2)
