"""Searches with keras-tuner on a tiny synthetic dataset: real trials, resume after a kill, distributed on 127.0.0.1."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
import types

import pytest

from keras_r21d.data import make_synthetic_dataset
from keras_r21d.tuning import SearchSpace, tune
from tests.test_case import free_port, read_until

pytestmark = pytest.mark.slow  # subprocess trainings and long loops: make test, not make test-fast

SETTINGS = dict(size=32, batch_size=4, test_clips=2, flip=False)
TUNE_ARGS = ["--variants", "fr2d,r2plus1d,r2d", "--depth", "10", "--clip-lengths", "4,6", "--width-multiplier",
             "0.125", "--lr", "0.01", "--weight-decay", "0.0001", "--warmup-epochs", "0", "--epochs", "1",
             "--size", "32", "--batch-size", "4", "--test-clips", "2", "--no-flip"]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune") / "syn"
    return make_synthetic_dataset(str(root), classes=2, videos_per_class=6, frames=(12, 16), size=(48, 32), seed=0)


def _trial_records(out):
    folder = os.path.join(out, "trials")
    records = {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name, "trial.json")
        if os.path.isfile(path):
            with open(path) as f:
                records[name] = json.load(f)
    return records


def _results(out):
    with open(os.path.join(out, "results.csv")) as f:
        return list(csv.DictReader(f))


def test_search_trains_each_trial_at_its_clip_length(tiny_data, tmp_path):
    out = str(tmp_path / "search")
    space = SearchSpace(variants=("fr2d", "r2plus1d", "r2d"), depths=(10,), frames=(4, 6),
                        width_multipliers=(0.125,), lr=(0.005, 0.02), weight_decay=(1e-4, 1e-4), warmup_epochs=(0,),
                        mixup=(0.0, 0.3))
    rows = tune(tiny_data, out, space, max_trials=4, epochs=1, seed=3, **SETTINGS)
    assert len(rows) == 4 and all(row["status"] == "COMPLETED" for row in rows)
    records = _trial_records(out)
    assert len(records) == 4
    lengths = set()
    for row in rows:
        record = records[f"trial_{row['trial_id']}"]
        frames = row["hyperparameters"]["frames"]
        lengths.add(frames)
        # The trial's training batches had its clip length; R2D's model input is fixed to it.
        assert record["train_clip_shape"] == [frames, 32, 32, 3]
        if row["hyperparameters"]["variant"] == "r2d":
            assert record["input_shape"] == [frames, None, None, 3]
        assert row["video_top1"] == record["video_top1"] and row["params"] == record["params"]
        assert row["gflops"] == pytest.approx(record["gflops"])
        with open(os.path.join(out, "trials", f"trial_{row['trial_id']}", "run.json")) as f:
            assert json.load(f)["config"]["mixup"] == row["hyperparameters"]["mixup"]  # the searched value trained
    assert lengths == {4, 6}  # the search tried both clip lengths
    assert {row["hyperparameters"]["mixup"] for row in rows} == {0.0, 0.3}  # and trained with and without mixup
    table = _results(out)
    assert [r["trial_id"] for r in table] == [row["trial_id"] for row in rows]
    assert [int(r["frames"]) for r in table] == [row["hyperparameters"]["frames"] for row in rows]
    assert [float(r["video_top1"]) for r in table] == [row["video_top1"] for row in rows]
    markdown = open(os.path.join(out, "results.md")).read()
    assert markdown.count("\n") == 2 + 4 and "(Pareto)" in markdown
    assert os.path.getsize(os.path.join(out, "pareto.png")) > 1000
    # The best trial's model is saved and exportable.
    best = max((r for r in rows), key=lambda r: r["score"])
    assert os.path.isfile(os.path.join(out, "best_model.keras"))
    record = json.load(open(os.path.join(out, "best_model.keras.json")))
    assert record["config"]["frames"] == best["hyperparameters"]["frames"]
    export = subprocess.run([sys.executable, "-m", "keras_r21d", "export", "--model",
                             os.path.join(out, "best_model.keras"), "--out", str(tmp_path / "serving")],
                            env=ENV, capture_output=True, text=True, timeout=600)
    assert export.returncode == 0, export.stderr[-2000:]


def test_per_stage_space_and_fixed_values():
    import keras_tuner as kt

    space = SearchSpace(per_stage=True, depths=(10, 18), frames=(8,), fixed={"depth": 18, "lr": 0.02})
    hp = kt.HyperParameters()
    values = space.declare(hp)
    assert set(values) == {"stem_type", "conv2", "conv3", "conv4", "conv5", "depth", "frames", "width_multiplier",
                           "lr", "weight_decay", "warmup_epochs", "label_smoothing", "mixup", "cutmix"}
    assert values["depth"] == 18 and values["lr"] == 0.02 and values["frames"] == 8
    # Soft targets off: values of 0, and no hyperparameters (a search from before they existed resumes as it was).
    assert (values["label_smoothing"], values["mixup"], values["cutmix"]) == (0.0, 0.0, 0.0)
    assert not {"label_smoothing", "mixup", "cutmix"} & set(hp.values)
    hp = kt.HyperParameters()
    values = SearchSpace(mixup=(0.0, 0.2), fixed={"label_smoothing": 0.1}).declare(hp)
    assert isinstance(hp._hps["mixup"][0], kt.engine.hyperparameters.Choice) and values["label_smoothing"] == 0.1
    assert "cutmix" not in hp.values and values["cutmix"] == 0.0
    with pytest.raises(ValueError, match="label_smoothing"):
        SearchSpace(label_smoothing=(0.0, 1.0))
    with pytest.raises(ValueError, match="cannot fix"):
        SearchSpace(fixed={"optimizer": "adam"})
    with pytest.raises(ValueError, match="unknown variants"):
        SearchSpace(variants=("r4d",))


def _tune_cli(data, out, *extra, env=ENV, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "keras_r21d", "tune", "--data", data, "--out", out, *TUNE_ARGS,
                             *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def _wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_search_resumes_without_rerunning_finished_trials(tiny_data, tmp_path):
    out = str(tmp_path / "search")
    process = _tune_cli(tiny_data, out, "--max-trials", "4", "--seed", "5")
    try:
        _wait_for(lambda: len(_trial_records(out)) >= 2, 400, "two finished trials")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finished = {name: os.path.getmtime(os.path.join(out, "trials", name, "trial.json"))
                for name in _trial_records(out)}
    assert 2 <= len(finished) < 4
    rerun = _tune_cli(tiny_data, out, "--max-trials", "4", "--seed", "5")
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, output[-3000:]
    records = _trial_records(out)
    assert len(records) == 4
    for name, mtime in finished.items():  # finished trials were kept, not run again
        assert os.path.getmtime(os.path.join(out, "trials", name, "trial.json")) == mtime
    table = _results(out)
    assert len(table) == 4 and {r["status"] for r in table} == {"COMPLETED"}


def _role_env(role, port):
    return dict(ENV, KERASTUNER_TUNER_ID=role, KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(port))


def test_distributed_search_chief_and_two_workers(tiny_data, tmp_path):
    out = str(tmp_path / "search")
    port = free_port()
    args = ("--distributed", "--max-trials", "4", "--seed", "7", "--trial-timeout-minutes", "5")
    chief = _tune_cli(tiny_data, out, *args, env=_role_env("chief", port))
    workers = [_tune_cli(tiny_data, out, *args, env=_role_env(f"tuner{i}", port)) for i in range(2)]
    try:
        for worker in workers:
            output, _ = worker.communicate(timeout=600)
            assert worker.returncode == 0, output[-3000:]
        output, _ = chief.communicate(timeout=120)
        assert chief.returncode == 0, output[-3000:]
    finally:
        for process in [chief, *workers]:
            if process.poll() is None:
                process.kill()
    table = _results(out)
    assert len(table) == 4 and {r["status"] for r in table} == {"COMPLETED"}
    assert {r["trial_id"] for r in table} == {name.split("_")[1] for name in _trial_records(out)}
    assert "| trial |" in output  # the chief printed the results table


def test_distributed_chief_does_not_wait_forever_for_a_dead_worker(tiny_data, tmp_path):
    out = str(tmp_path / "search")
    port = free_port()
    args = ("--distributed", "--max-trials", "3", "--seed", "9", "--trial-timeout-minutes", "0.5")
    chief = _tune_cli(tiny_data, out, *args, env=_role_env("chief", port))
    doomed = _tune_cli(tiny_data, out, *args, env=_role_env("tuner0", port))
    try:
        # Kill the worker as soon as it has started its first trial.
        _wait_for(lambda: os.path.isdir(os.path.join(out, "trials")) and os.listdir(os.path.join(out, "trials")),
                  300, "the first trial to start")
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(30)
        survivor = _tune_cli(tiny_data, out, *args, env=_role_env("tuner1", port))
        output, _ = survivor.communicate(timeout=600)
        assert survivor.returncode == 0, output[-3000:]
        started = time.monotonic()
        output, _ = chief.communicate(timeout=300)
        assert chief.returncode == 0, output[-3000:]
        assert time.monotonic() - started < 120
    finally:
        for process in (chief, doomed):
            if process.poll() is None:
                process.kill()
    table = _results(out)
    statuses = sorted(r["status"] for r in table)
    assert statuses == ["COMPLETED", "COMPLETED", "FAILED"], table
    assert "did not finish trial" in output


def test_budget_stops_starting_trials(tiny_data, tmp_path, monkeypatch):
    """No new trial starts once the budget is spent: a clock that trials advance by 25 s, a 30 s budget."""
    from keras_r21d.tuning import tuner as tuner_module

    clock = [1000.0]
    monkeypatch.setattr(tuner_module, "time", types.SimpleNamespace(monotonic=lambda: clock[0], time=time.time))
    run_trial = tuner_module._VideoTrials.run_trial

    def run_and_advance(self, trial, *args, **kwargs):
        result = run_trial(self, trial, *args, **kwargs)
        clock[0] += 25.0
        return result

    monkeypatch.setattr(tuner_module._VideoTrials, "run_trial", run_and_advance)
    out = str(tmp_path / "search")
    rows = tune(tiny_data, out, SPACE, max_trials=5, epochs=1, budget_minutes=0.5, **SETTINGS)
    # Trials start at 0 s and 25 s; at 50 s the budget is spent.
    assert len(rows) == 2 and {row["status"] for row in rows} == {"COMPLETED"}
    assert len(_trial_records(out)) == 2


SPACE = SearchSpace(variants=("fr2d",), depths=(10,), frames=(4,), width_multipliers=(0.125,), lr=(0.001, 0.1),
                    weight_decay=(1e-4, 1e-4), warmup_epochs=(0,))


def test_bayesian_search_runs_and_resumes(tiny_data, tmp_path):
    import keras_tuner as kt

    from keras_r21d.tuning import make_tuner

    out = str(tmp_path / "search")
    rows = tune(tiny_data, out, SPACE, algorithm="bayesian", max_trials=2, epochs=1, seed=1, **SETTINGS)
    assert len(rows) == 2 and {row["status"] for row in rows} == {"COMPLETED"}
    finished = {name: os.path.getmtime(os.path.join(out, "trials", name, "trial.json"))
                for name in _trial_records(out)}
    # Asked for one trial more, the reloaded Bayesian oracle keeps the two and runs a third.
    rows = tune(tiny_data, out, SPACE, algorithm="bayesian", max_trials=3, epochs=1, seed=1, **SETTINGS)
    assert len(rows) == 3 and {row["status"] for row in rows} == {"COMPLETED"}
    for name, mtime in finished.items():
        assert os.path.getmtime(os.path.join(out, "trials", name, "trial.json")) == mtime
    assert len({row["hyperparameters"]["lr"] for row in rows}) == 3
    tuner = make_tuner(tiny_data, out, SPACE, algorithm="bayesian", max_trials=3, epochs=1, seed=1, **SETTINGS)
    assert isinstance(tuner.oracle, kt.oracles.BayesianOptimizationOracle) and len(tuner.oracle.trials) == 3


def test_hyperband_continues_trials_from_their_saved_models(tiny_data, tmp_path):
    out = str(tmp_path / "search")
    rows = tune(tiny_data, out, SPACE, algorithm="hyperband", epochs=3, seed=2, **SETTINGS)
    assert rows and {row["status"] for row in rows} == {"COMPLETED"}
    records = _trial_records(out)
    continued = 0
    for row in rows:
        trial_dir = os.path.join(out, "trials", f"trial_{row['trial_id']}")
        run = json.load(open(os.path.join(trial_dir, "run.json")))
        epochs_run = len(open(os.path.join(trial_dir, "history.csv")).read().splitlines()) - 1
        previous = _hyperparameters(out, row["trial_id"]).get("tuner/trial_id")
        if previous is None:
            assert run["init"] is None and epochs_run == row["epochs"]
            continue
        continued += 1
        # It starts from the model the earlier bracket's trial saved (head kept: same classes) and trains
        # only the epochs that trial had not.
        source = os.path.join(out, "trials", f"trial_{previous}", "model.keras")
        assert os.path.isfile(source) and run["config"]["init"] == source and run["init"]["kept_head"]
        initial = _hyperparameters(out, row["trial_id"])["tuner/initial_epoch"]
        assert epochs_run == row["epochs"] - initial > 0
        assert records[f"trial_{previous}"]["epochs"] == initial
    assert continued >= 1


def _hyperparameters(out, trial_id):
    with open(os.path.join(out, "search", f"trial_{trial_id}", "trial.json")) as f:
        return json.load(f)["hyperparameters"]["values"]


def test_an_interrupted_trial_resumes_from_its_checkpoint(tiny_data, tmp_path):
    out = str(tmp_path / "search")
    args = ("--max-trials", "1", "--seed", "5", "--variants", "fr2d", "--clip-lengths", "4", "--epochs", "3")
    process = _tune_cli(tiny_data, out, *args, env=dict(ENV, PYTHONUNBUFFERED="1"))
    state = os.path.join(out, "trials")
    try:
        read_until(process, "Epoch 2/3", timeout=400)  # the trial's first epoch is checkpointed
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    (name,) = os.listdir(state)
    killed_at = json.load(open(os.path.join(state, name, "checkpoints", "state.json")))["epoch"]
    assert killed_at == 1 and not os.path.isfile(os.path.join(state, name, "trial.json"))
    rerun = _tune_cli(tiny_data, out, *args)
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, output[-3000:]
    assert os.listdir(state) == [name]  # the same trial, not a new one
    run = json.load(open(os.path.join(state, name, "run.json")))
    assert run["status"] == "done" and run["resumed_from_epoch"] == killed_at
    rows = open(os.path.join(state, name, "history.csv")).read().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in rows] == [0, 1, 2]  # each epoch trained once
    assert {r["status"] for r in _results(out)} == {"COMPLETED"}
