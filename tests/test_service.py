"""tf.data service on 127.0.0.1 with real processes: a dispatcher, workers and trainers (`--data-service`)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from test_case import free_port

from keras_r21d.data import load_dataset
from keras_r21d.data.prepare import prepare
from keras_r21d.data.service import ServiceError, through_service
from keras_r21d.data.synthetic import make_synthetic_dataset

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CI": "1"}
CLI = [sys.executable, "-m", "keras_r21d"]
TRAIN_ARGS = ["--arch", "r2plus1d", "--depth", "10", "--frames", "4", "--size", "32", "--batch-size", "2",
              "--width-multiplier", "0.125", "--test-clips", "2", "--no-tensorboard"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """3 motion classes, 4 videos each, prepared into shards (9 training videos, 3 test)."""
    root = tmp_path_factory.mktemp("service")
    spec = make_synthetic_dataset(str(root / "videos"), classes=3, videos_per_class=4, frames=(16, 24), size=(64, 48))
    prepare(spec, str(root / "shards"), size=(37, 49), videos_per_shard=3, workers=2)
    return spec, f"shards:{root / 'shards'}"


class _Process:
    """A CLI process whose output one thread collects: `wait_for(text)` while it runs, `output` after."""

    def __init__(self, *args):
        self.process = subprocess.Popen(CLI + list(args), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
        self.lines = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self.reader.start()

    @property
    def output(self):
        return "".join(self.lines)

    def wait_for(self, text, timeout):
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.reader.join(5)
                if text in self.output:
                    break
                raise AssertionError(f"{text!r} not printed (exit {self.process.poll()}):\n{self.output[-3000:]}")
            time.sleep(0.1)

    def finish(self, timeout):
        """The exit status, waiting at most `timeout` s (`None` if it is still running then: killed)."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = None
        self.reader.join(5)
        return code

    def kill(self):
        self.process.kill()
        self.process.wait()


def _start(*args):
    return _Process(*args)


@contextlib.contextmanager
def _service(workers=2):
    """A dispatcher and `workers` workers on fixed ports of 127.0.0.1: `(address, worker ports, start_worker)`."""
    port = free_port()
    processes = [_start("data-service", "dispatcher", "--port", str(port))]
    try:
        processes[0].wait_for("dispatcher ready", 60)
        address = f"127.0.0.1:{port}"

        def start_worker(worker_port):
            process = _start("data-service", "worker", "--dispatcher", address, "--port", str(worker_port),
                             "--host", "127.0.0.1")
            processes.append(process)
            process.wait_for("worker ready", 60)
            return process

        ports = [free_port() for _ in range(workers)]
        yield address, ports, start_worker, [start_worker(p) for p in ports]
    finally:
        for process in processes:
            process.kill()


def test_service_mistakes_are_clear_errors(shards, tmp_path):
    spec, shard_spec = shards
    # A video spec: refused, saying to run prepare (before any dispatcher is contacted).
    result = subprocess.run(CLI + ["train", "--data", spec, "--out", str(tmp_path / "a"), "--data-service",
                                   "127.0.0.1:1", *TRAIN_ARGS], env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and f"keras-r21d prepare {spec} --out DIR" in result.stderr
    # No dispatcher at the address: a clear error in bounded time, no run directory left behind.
    port = free_port()
    start = time.monotonic()
    result = subprocess.run(CLI + ["train", "--data", shard_spec, "--out", str(tmp_path / "b"), "--data-service",
                                   f"127.0.0.1:{port}", *TRAIN_ARGS], env=ENV, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and f"no tf.data service dispatcher at 127.0.0.1:{port}" in result.stderr
    assert time.monotonic() - start < 60 and not (tmp_path / "b").exists()
    result = subprocess.run(CLI + ["evaluate", "--model", "nothing.keras", "--data", spec, "--data-service",
                                   "not-an-address"], env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    with pytest.raises(ValueError, match="needs frame shards"):
        through_service(load_dataset(spec, "train"), "127.0.0.1:1", spec)
    with pytest.raises(ServiceError, match="HOST:PORT"):
        through_service(load_dataset(shard_spec, "train"), "localhost")


def _worker_env(ports, index):
    config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
    return {**ENV, "TF_CONFIG": json.dumps(config)}


@pytest.mark.slow
def test_two_trainers_share_two_service_workers(shards, tmp_path):
    """MultiWorkerMirroredStrategy: two trainer processes read one training job from two service workers."""
    _, shard_spec = shards
    with _service() as (address, _, _, _):
        ports = [free_port(), free_port()]
        trainers = [subprocess.Popen(
            [sys.executable, os.path.join(HERE, "workers", "train_worker.py"), shard_spec, str(tmp_path / "run"),
             str(tmp_path / f"result{i}.json"), "multiworker", "--data-service", address],
            env=_worker_env(ports, i), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
        outputs = [t.communicate(timeout=600)[0] for t in trainers]
    assert [t.returncode for t in trainers] == [0, 0], outputs
    results = [json.loads((tmp_path / f"result{i}.json").read_text()) for i in range(2)]
    assert results[0]["digest"] == results[1]["digest"]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["status"] == "done" and run["config"]["data_service"] == address and run["train_videos"] == 9
    # 2 epochs of ceil(9 / 4) steps, on both trainers.
    assert all(o.count("3/3 - ") == 2 for o in outputs), outputs


@pytest.mark.slow
def test_a_killed_worker_restarted_at_its_address_or_not(shards, tmp_path):
    """Killed and restarted at its port: training goes on. Killed for good: the run stops with a clear error in
    bounded time instead of hanging, and resumes once a worker is back."""
    _, shard_spec = shards
    run = tmp_path / "run"
    with _service() as (address, ports, start_worker, workers):
        trainer = _start("train", "--data", shard_spec, "--out", str(run), "--epochs", "5", "--data-service",
                         address, "--data-service-timeout", "40", *TRAIN_ARGS)
        trainer.wait_for("Epoch 2/5", 300)
        workers[0].kill()
        time.sleep(2)
        start_worker(ports[0])  # the same address: tf.data service reconnects to it
        trainer.wait_for("Epoch 4/5", 300)
        for worker in workers:
            worker.process.send_signal(signal.SIGKILL)
        start = time.monotonic()
        code = trainer.finish(180)
        assert code is not None, f"training hung after its service workers were killed:\n{trainer.output[-3000:]}"
        assert code == 2 and time.monotonic() - start < 120, trainer.output[-3000:]
        assert f"no batch from the tf.data service at {address}" in trainer.output and "--resume" in trainer.output
        record = json.loads((run / "run.json").read_text())
        assert record["status"] == "interrupted" and record["epochs_done"] >= 3
        start_worker(ports[1])
        resumed = subprocess.run(CLI + ["train", "--data", shard_spec, "--out", str(run), "--epochs", "5",
                                        "--resume", "--strategy", "mirrored", "--data-service", address,
                                        *TRAIN_ARGS], env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "done" and record["strategy"] == "MirroredStrategy"
    assert [int(r.split(",")[0]) for r in (run / "history.csv").read_text().splitlines()[1:]] == list(range(5))


def test_clips_through_the_service_are_the_local_clips(shards):
    """The workers send uint8 clips, normalized on the trainer: the same test clips as reading locally (the
    shards are at the pre-crop size, so nothing is rounded), and the training labels of every video."""
    import numpy as np

    from keras_r21d.data import ClipConfig, eval_dataset, train_dataset
    from keras_r21d.data.service import start_dispatcher, start_worker

    _, shard_spec = shards
    dispatcher = start_dispatcher(0)
    address = dispatcher.target.split("://")[1]
    workers = [start_worker(address, host="127.0.0.1") for _ in range(2)]
    config = ClipConfig(clip_len=4, resize=(37, 49), crop=32, test_clips=2)
    local = load_dataset(shard_spec, "test")
    remote = through_service(local, address)

    def clips(dataset):
        found = {}
        for batch, labels, ids in eval_dataset(dataset, 3, config):
            for clip, label, video in zip(batch.numpy(), labels.numpy(), ids.numpy()):
                found.setdefault(int(video), []).append((int(label), clip))
        return found

    here, there = clips(local), clips(remote)
    assert sorted(here) == sorted(there) == list(range(len(local)))
    for video in here:
        assert [label for label, _ in here[video]] == [label for label, _ in there[video]]
        np.testing.assert_array_equal(np.stack([c for _, c in here[video]]), np.stack([c for _, c in there[video]]))
    train = through_service(load_dataset(shard_spec, "train"), address)
    batches = list(train_dataset(train, 4, config, seed=0))  # one pass, split between the two workers
    assert {clips.numpy().dtype for clips, _ in batches} == {np.dtype("float32")}
    assert sorted(np.concatenate([labels.numpy() for _, labels in batches]).tolist()) == sorted(train.labels)
    del workers, dispatcher
