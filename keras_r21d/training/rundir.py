"""What a run directory may be, and what may change when a run is resumed.

`--out` must be a new or empty folder, or a run of this package (then
`--resume` continues it, and anything else is refused): a user's own files
are never overwritten or mixed with a run's. On `--resume`, every setting
that defines the model, the data or the recipe is compared with the run's
`run.json`, and a difference is refused with the list of differences, so
`run.json` never describes a run that did not happen.
"""

import json
import os

from keras_r21d.training.callbacks import STATE_FILE, ResumeError

RUN_FILE = "run.json"
# Settings that may change when a run is resumed: how long it trains (the
# step and constant schedules extend; the cosine schedule is planned for its
# epochs, so it may not), how often and how much it validates, and where and
# on what it runs. Everything else defines the model, the data or the recipe.
RESUMABLE_CHANGES = ("out", "epochs", "val_freq", "test_clips", "test_crops", "tensorboard", "strategy",
                     "collective_timeout", "jit_compile", "data_service", "data_service_timeout", "autotune_lowering")


class RunDirError(ValueError):
    """`--out` names something that is not a new or empty folder or a run of this package."""


def _listing(names, limit=5):
    names = sorted(names)
    return ", ".join(names[:limit]) + (f", ... ({len(names)} entries)" if len(names) > limit else "")


def is_run(path):
    """Whether `path` is a run directory of this package (it holds `run.json` or a checkpoint state)."""
    return os.path.isfile(os.path.join(path, RUN_FILE)) or os.path.isfile(
        os.path.join(path, "checkpoints", STATE_FILE))


def check_out_dir(out, resume):
    """Refuses an `--out` that would overwrite or mix with files that are not this run's.

    Accepted: a path that does not exist yet (its parent folders are made), an
    empty folder, or, with `resume`, a run of this package. Raises
    `RunDirError` naming what is there, or `ResumeError` for a run without
    `resume` (or `resume` without a run).
    """
    out = str(out)
    parent = os.path.dirname(os.path.abspath(out))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise RunDirError(f"--out {out}: {parent} is a file, not a folder")
    if not os.path.exists(out):
        if resume:
            raise ResumeError(f"nothing to resume: {out} does not exist")
        return
    if not os.path.isdir(out):
        raise RunDirError(f"--out {out} is a file: name a new or empty folder (a run directory)")
    entries = os.listdir(out)
    if is_run(out):
        if not resume and os.path.isfile(os.path.join(out, "checkpoints", STATE_FILE)):
            raise ResumeError(f"{out} already holds a run: pass resume=True (--resume) or choose another output")
        if not resume:
            raise ResumeError(f"{out} holds a run that finished no epoch: pass resume=True (--resume) to start it "
                              "again with its settings, or choose another output")
        return
    if entries:
        raise RunDirError(f"--out {out} is a folder that is not a run of keras_r21d and is not empty "
                          f"({_listing(entries)}): name a new or empty folder, nothing in it is overwritten")
    if resume:
        raise ResumeError(f"nothing to resume: {out} is empty")


def read_run_record(run_dir):
    """The run's `run.json` as a dict, or `None` when it has none; a corrupt one is a `ResumeError`."""
    path = os.path.join(run_dir, RUN_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        if not isinstance(record, dict) or not isinstance(record.get("config", {}), dict):
            raise ValueError("not a run record")
        return record
    except (OSError, ValueError) as error:
        raise ResumeError(f"cannot resume: {path} is corrupt ({error}); refusing to guess the run's settings") \
            from None


def _normal(value):
    return json.loads(json.dumps(value))


def resume_differences(record, config_dict, facts):
    """`["name: run X, now Y", ...]` for every setting that may not change on resume.

    Args:
        record: the run's `run.json` (any version: keys it lacks are not compared).
        config_dict: `dataclasses.asdict(TrainConfig)` of the resuming call.
        facts: `{"class_names": ..., "train_files": ..., "val_files": ...}` as
            recorded by the run (the data's classes and file-list hashes).
    """
    recorded = record.get("config", {})
    wanted = _normal(config_dict)
    differences = []
    moved = "train_files" in record and "train_files" in facts  # the files themselves are compared below
    for key in sorted(wanted):
        if key in RESUMABLE_CHANGES or key not in recorded:
            continue
        if key in ("data", "val_data") and moved and _same_spec_but_path(recorded[key], wanted[key]):
            continue  # the dataset was moved: the same files (by their hash) in another folder may resume
        if _normal(recorded[key]) != wanted[key]:
            differences.append(f"{key}: run {recorded[key]!r}, now {wanted[key]!r}")
    if (recorded.get("schedule") == "cosine" and "epochs" in recorded
            and recorded["epochs"] != wanted.get("epochs")):
        differences.append(f"epochs: run {recorded['epochs']!r}, now {wanted.get('epochs')!r} (the cosine schedule "
                           "is planned for the run's epochs; use the step or constant schedule to extend a run)")
    for key, label in (("class_names", "classes"), ("train_files", "training videos"),
                       ("val_files", "validation videos")):
        if key in record and key in facts and _normal(record[key]) != _normal(facts[key]):
            if key == "class_names":
                differences.append(f"classes: run {record[key]!r}, now {facts[key]!r}")
            else:
                differences.append(f"{label}: run {record[key]}, now {facts[key]} (the files or their labels "
                                   "changed)")
    return differences


def _same_spec_but_path(a, b):
    from keras_r21d.data.datasets import parse_spec

    if a is None or b is None:
        return a == b
    try:
        (kind_a, _, options_a), (kind_b, _, options_b) = parse_spec(a), parse_spec(b)
    except ValueError:
        return False
    return kind_a == kind_b and options_a == options_b
