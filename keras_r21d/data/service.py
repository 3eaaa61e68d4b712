"""tf.data service: the shard pipelines run on worker processes, here or on other machines.

`keras-r21d data-service dispatcher --port P` and `keras-r21d data-service
worker --dispatcher HOST:P` start TensorFlow's own servers
(`tf.data.experimental.service`); `train --data-service HOST:P` (and
`evaluate`, `tune`) send the shard pipeline (`shard_pipeline`, TensorFlow ops
only) to the workers, which read the shard files at the paths the trainer
names (a filesystem every worker mounts at the same path).

Epochs are split between the workers (`processing_mode="distributed_epoch"`,
dynamic sharding): each video is read by one worker, once per pass. A
dispatcher that is not reachable is an error within `CONNECT_TIMEOUT`
seconds, before any work starts.

A worker that dies mid-epoch: tf.data service's client keeps asking it for
the clips it was preparing and waits for it to come back at its address.
Restarted there (a fixed `--port` and a process supervisor), it is
reconnected and training goes on (the clips it was preparing are lost, the
at-most-once guarantee of `distributed_epoch`). Not restarted, no batch
arrives: `StallWatchdog` then stops the process after `timeout` seconds with
an error naming the dispatcher (exit status 2; the last epoch's checkpoint is
intact, so restart the workers and `--resume`), instead of hanging forever.
"""

import os
import socket
import sys
import threading
import time

from keras_r21d._tensorflow import tf

CONNECT_TIMEOUT = 10.0
# Seconds without a batch from the service before a run stops (`StallWatchdog`).
STALL_TIMEOUT = 600.0
# Dataset ops that run Python: a pipeline holding one cannot run on tf.data service.
PYTHON_OPS = ("PyFunc", "PyFuncStateless", "EagerPyFunc", "GeneratorDataset")
# The armed watchdog of this process, if any: the consumer side of a distributed pipeline ticks it per batch.
_watchdog = None


class ServiceError(ValueError):
    """A tf.data service address that cannot be used; the message says why and what to start."""


def parse_address(address):
    """`"HOST:PORT"` (a `grpc://` prefix is accepted) as `(host, port)`; raises `ServiceError` for anything else."""
    text = str(address).removeprefix("grpc://")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdecimal() or not 0 < int(port) < 65536:
        raise ServiceError(f"a tf.data service address is HOST:PORT, e.g. 10.0.0.5:5050. Received: {address!r}")
    return host.strip("[]"), int(port)


def check_dispatcher(address, timeout=CONNECT_TIMEOUT):
    """Raises `ServiceError` unless something accepts connections at the dispatcher's address within `timeout` s.

    tf.data service's own client retries a missing dispatcher forever; this
    turns that into an error naming the address.
    """
    host, port = parse_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as error:
        why = "timed out" if isinstance(error, TimeoutError) else (error.strerror or str(error))
        raise ServiceError(
            f"no tf.data service dispatcher at {host}:{port} ({why}, waited up to {timeout:g} s): start one with "
            f"keras-r21d data-service dispatcher --port {port}, and workers with keras-r21d data-service worker "
            f"--dispatcher {host}:{port}") from None


def python_ops(dataset):
    """The ops of a `tf.data.Dataset`'s graph (its functions included) that call back into Python."""
    from tensorflow.core.framework import graph_pb2

    graph = graph_pb2.GraphDef()
    graph.ParseFromString(dataset._as_serialized_graph().numpy())  # noqa: SLF001 - tf.data's own graph export
    nodes = list(graph.node) + [node for function in graph.library.function for node in function.node_def]
    return sorted({node.op for node in nodes if node.op in PYTHON_OPS})


def through_service(dataset, address, spec=None, job_name=None):
    """`dataset` (a `ShardDataset`) read through the dispatcher at `address`, checked reachable.

    Raises `ValueError` for a video dataset (tf.data service cannot run the
    OpenCV path: the message says to run `prepare`) and `ServiceError` when
    no dispatcher answers within `CONNECT_TIMEOUT` s.
    """
    from keras_r21d.data.shards import ShardDataset

    if not isinstance(dataset, ShardDataset):
        raise ValueError(f"--data-service needs frame shards: tf.data service cannot run the video pipeline (OpenCV "
                         f"in tf.py_function). Run keras-r21d prepare {spec or dataset.name} --out DIR, then use "
                         "shards:DIR as the dataset")
    check_dispatcher(address)
    return dataset.with_service(address, job_name)


def distribute(dataset, address, job_name=None):
    """`dataset` processed by the service's workers (`distributed_epoch`: each element once per pass).

    `job_name`: consumers that share it share one pass (the trainer processes
    of a multi-worker run); `None`, each iteration is a job of its own.
    Refuses a dataset whose graph runs Python, which the workers cannot run.
    """
    found = python_ops(dataset)
    if found:
        raise ServiceError(f"tf.data service cannot run this dataset: its graph calls Python ({', '.join(found)}); "
                           "only the frame-shard pipeline (shards:DIR, written by keras-r21d prepare) runs there")
    host, port = parse_address(address)
    dataset = dataset.apply(tf.data.experimental.service.distribute(
        processing_mode="distributed_epoch", service=f"grpc://{host}:{port}", job_name=job_name))
    return dataset.map(_ticking)  # on the trainer, after the service: each batch that arrives feeds the watchdog


def _tick():
    if _watchdog is not None:
        _watchdog.last = time.monotonic()
    return 0


def _ticking(*batch):
    with tf.control_dependencies([tf.py_function(_tick, [], tf.int32)]):
        return tuple(tf.identity(tensor) for tensor in batch)


class StallWatchdog:
    """While armed (`with StallWatchdog(timeout, address):`), stops the process when no batch has come from the
    service for `timeout` seconds: the error names the dispatcher and says how to go on, `on_stall()` runs (a
    run records its state), then the process exits with status 2. A blocked read of tf.data service cannot be
    interrupted otherwise (see the module's notes).
    """

    def __init__(self, timeout, address, exit_code=2, on_stall=None):
        self.timeout, self.address, self.exit_code = float(timeout), address, exit_code
        self.on_stall = on_stall
        self.last = time.monotonic()
        self._stop = threading.Event()

    def __enter__(self):
        global _watchdog
        self.last = time.monotonic()
        _watchdog = self
        threading.Thread(target=self._watch, daemon=True, name="keras_r21d-service-watchdog").start()
        return self

    def __exit__(self, *exc):
        global _watchdog
        self._stop.set()
        _watchdog = None
        return False

    def _watch(self):
        while not self._stop.wait(min(1.0, self.timeout / 4)):
            idle = time.monotonic() - self.last
            if idle > self.timeout:
                sys.stderr.write(
                    f"\nkeras-r21d: error: no batch from the tf.data service at {self.address} for {idle:.0f} s "
                    f"(limit {self.timeout:g} s): a worker that was preparing clips is gone and was not restarted "
                    "at its address. Restart it (keras-r21d data-service worker --port ITS_PORT), or start other "
                    "workers, then resume the run with --resume (its last checkpoint is intact)\n")
                sys.stderr.flush()
                try:
                    if self.on_stall is not None:
                        self.on_stall()
                finally:
                    os._exit(self.exit_code)


def start_dispatcher(port, work_dir=None, worker_timeout=None):
    """A running `DispatchServer` on `port`; with `work_dir`, its journal there (a restarted dispatcher recovers)."""
    options = {"port": int(port)}
    if work_dir:
        options.update(work_dir=work_dir, fault_tolerant_mode=True)
    if worker_timeout:
        options["worker_timeout_ms"] = int(worker_timeout * 1000)
    return tf.data.experimental.service.DispatchServer(tf.data.experimental.service.DispatcherConfig(**options))


def start_worker(dispatcher, port=0, host=None, heartbeat=None):
    """A running `WorkerServer` registered with `dispatcher` (`HOST:PORT`), reachable at `host` (default this
    machine's name) on `port` (0: any free port)."""
    check_dispatcher(dispatcher)
    dispatcher_host, dispatcher_port = parse_address(dispatcher)
    options = {"dispatcher_address": f"{dispatcher_host}:{dispatcher_port}", "port": int(port),
               "worker_address": f"{host or socket.gethostname()}:%port%"}
    if heartbeat:
        options["heartbeat_interval_ms"] = int(heartbeat * 1000)
    return tf.data.experimental.service.WorkerServer(tf.data.experimental.service.WorkerConfig(**options))
