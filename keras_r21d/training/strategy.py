"""Choosing a distribution: a `tf.distribute` strategy on TensorFlow, `keras.distribution` data parallelism on JAX."""

import contextlib
import json
import os

import keras

from keras_r21d._tensorflow import tf
from keras_r21d.training.backend import backend

STRATEGIES = ("auto", "default", "mirrored", "multiworker", "one_device", "data_parallel")
TF_STRATEGIES = ("mirrored", "multiworker", "one_device")


class DataParallel:
    """`keras.distribution.DataParallel` over the JAX devices, with the strategy interface `train()` uses.

    Inside `scope()` Keras replicates every variable on each device and
    splits each global batch over them; the gradients are averaged in the
    step XLA compiles (and BatchNorm's batch statistics are the global
    batch's), so training computes what one device would on the same batch.
    The scope restores the distribution it found.
    """

    def __init__(self, devices=None):
        devices = devices or keras.distribution.list_devices()
        self.distribution = keras.distribution.DataParallel(devices=devices)
        self.num_replicas_in_sync = len(devices)

    @contextlib.contextmanager
    def scope(self):
        previous = keras.distribution.distribution()
        keras.distribution.set_distribution(self.distribution)
        try:
            yield self
        finally:
            keras.distribution.set_distribution(previous)


def cluster_from_env():
    """The `TF_CONFIG` cluster and task, or `(None, None)` when there is none."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None, None
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from None
    cluster = config.get("cluster") or {}
    if sum(len(v) for v in cluster.values()) <= 1:
        return None, None
    return cluster, config.get("task") or {}


def make_strategy(name="auto", collective_timeout=300.0):
    """Returns a strategy: `MultiWorkerMirroredStrategy` when `TF_CONFIG` names a cluster,
    `MirroredStrategy` when more than one GPU is visible, the default strategy otherwise;
    on JAX, `DataParallel` when more than one JAX device is visible, else the default.

    Args:
        name: `"auto"`, or force one of `"default"`, `"mirrored"`, `"multiworker"`, `"one_device"`
            (TensorFlow), `"data_parallel"` (JAX). `"mirrored"` without GPUs mirrors over the
            logical CPU devices.
        collective_timeout: seconds a multi-worker collective may wait for a
            peer before failing, so that a dead worker cannot hang the others.
    """
    if name not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {STRATEGIES}. Received: strategy={name!r}")
    if backend() != "tensorflow":
        allowed = ("auto", "default", "data_parallel") if backend() == "jax" else ("auto", "default")
        if name not in allowed:
            kind = ("a tf.distribute strategy, which trains TensorFlow models" if name in TF_STRATEGIES
                    else "Keras' data parallelism for JAX")
            raise ValueError(f"strategy={name!r} is {kind}; the Keras backend here is {backend()!r}: use "
                             f"strategy={' or '.join(map(repr, allowed))}")
        several = backend() == "jax" and len(keras.distribution.list_devices()) > 1
        if name == "data_parallel" or (name == "auto" and several):
            return DataParallel()
        return tf.distribute.get_strategy()  # a scope that changes nothing: the model is not TensorFlow's
    if name == "data_parallel":
        raise ValueError("strategy='data_parallel' is Keras' data parallelism for JAX; the Keras backend here is "
                         "'tensorflow': use 'mirrored' (several GPUs) or 'auto'")
    if name == "auto":
        if cluster_from_env()[0] is not None:
            name = "multiworker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "multiworker":
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=collective_timeout)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    return tf.distribute.get_strategy()


def is_chief(strategy=None):
    """Whether this process writes the run's final artifacts (always true without a cluster)."""
    cluster, task = cluster_from_env()
    if cluster is None:
        return True
    task_type, index = task.get("type"), int(task.get("index", 0))
    if "chief" in cluster:
        return task_type == "chief"
    return task_type == "worker" and index == 0


def run_or_exit(function, *args, **kwargs):
    """Calls `function`; in a multi-worker cluster, a failure ends the process at once.

    A TensorFlow process whose multi-worker training failed can hang at
    interpreter exit (collective and coordination threads still waiting), so
    after printing the error this exits with `os._exit(1)`; its peers then see
    it gone and fail within `collective_timeout`. Outside a cluster the
    exception propagates as usual.
    """
    try:
        return function(*args, **kwargs)
    except BaseException:
        if cluster_from_env()[0] is None:
            raise
        import sys
        import traceback

        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
