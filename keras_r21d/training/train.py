"""`keras_r21d.train`: the paper's recipe under `model.fit` and `tf.distribute`."""

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings

import keras

from keras_r21d._tensorflow import tf
from keras_r21d.classes import align_to_model
from keras_r21d.data.datasets import load_dataset, split_description
from keras_r21d.data.mixing import LabelMixing, check_soft_targets, mix_batches, one_hot_batches
from keras_r21d.data.pipeline import BadVideoLog, ClipConfig, eval_dataset, train_dataset
from keras_r21d.data.service import STALL_TIMEOUT
from keras_r21d.data.transforms import resize_for_crop
from keras_r21d.layers.autotune import autotune_lowering
from keras_r21d.layers.lowering import LoweringError, LoweringTable, lowering_scope
from keras_r21d.models.registry import get_model
from keras_r21d.models.specs import VARIANTS, clip_input_shape
from keras_r21d.models.video_resnet import VideoResNet
from keras_r21d.training.backend import backend, devices, mixed_precision_policy
from keras_r21d.training.callbacks import (
    STATE_FILE,
    ClipValidation,
    LearningRateLogger,
    ResumableCheckpoint,
    ResumeError,
    VideoAccuracy,
    averaged_weights_callbacks,
    load_checkpoint,
    read_state,
)
from keras_r21d.training.evaluation import evaluate_model
from keras_r21d.training.finetune import STAGES, init_model, keeps_head, load_source, set_trainable
from keras_r21d.training.io import atomic_save_model, atomic_write_text
from keras_r21d.training.plots import plot_history
from keras_r21d.training.recipe import make_optimizer, scaled_learning_rate
from keras_r21d.training.rundir import RESUMABLE_CHANGES, check_out_dir, read_run_record, resume_differences
from keras_r21d.training.strategy import DataParallel, is_chief, make_strategy
from keras_r21d.version import __version__

logger = logging.getLogger("keras_r21d.training")
LOWERING_FILE = "lowering.json"  # a run's measured lowerings (autotune_lowering=True)

EPOCHS = 45
FINETUNE_EPOCHS = 10
# The fine-tuning learning rate per 32 clips (SPEC: 1e-4..1e-3 when transferring from Kinetics).
FINETUNE_BASE_LR = 0.001


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run depends on; saved in the run's `run.json`.

    The defaults are the paper's recipe (SGD, Nesterov momentum 0.9, weight
    decay 1e-4, learning rate 0.01 per 32 clips scaled with the global batch,
    divided by 10 every 10 epochs, 45 epochs, 16x112x112 clips).

    Fine-tuning (`init`: a `.keras` file, a run directory or a preset name):
    the source's architecture and weights, a new classifier when the class
    count differs, 10 epochs by default. With `freeze_backbone_epochs=N`
    the first N epochs train the head alone at `lr` (default 0.01 per 32
    clips); then the layers from `trainable_from` on (default all) train at
    `finetune_lr` (default 0.001 per 32 clips, the paper's fine-tuning
    range). Frozen layers keep their weights and BatchNorm statistics.

    `implementation` is the lowering of the convolutions (`VideoConv`):
    `"conv2d"` trains small-channel 3D networks several times faster on CPUs
    (BENCHMARKS.md); the weights are the same whatever the lowering.
    With `autotune_lowering=True` each full 3D kernel's lowering (`Conv3D`,
    temporal im2col or shifted 2D taps) is timed on this machine before the
    first step (`keras_r21d.layers.autotune_lowering`, at the per-replica
    batch), the fastest installed, and the measurements kept in the run's
    `lowering.json`; a resumed run on the same kind of machine reuses them.
    The weights and results are the same whatever the lowering.
    `arch`, `depth`, `width_multiplier` and `dropout` come from the source
    (`arch` and `depth` name the network of a preset).

    `accumulate=N` (N >= 2) sums the gradients of N batches before each
    update (gradient accumulation): the update is that of one batch of
    `N * batch_size` clips, which the learning rate's linear scaling and
    `run.json`'s `effective_batch` use, in the memory of `batch_size` clips.
    BatchNorm still normalizes each batch of `batch_size` clips on its own
    (its statistics are not accumulated). An epoch is rounded up to whole
    updates. Under `tf.distribute` over several replicas Keras' accumulation
    does not run, and `train` refuses it; JAX's `data_parallel` runs it.

    `test_clips` and `test_crops` are Video@1's test views: uniform clips
    per validation video (the paper: 10) and spatial crops of each (1, the
    paper's center crop, or 3 along the long side: "10 clips x 3 crops").

    `label_smoothing` (in [0, 1)), `mixup` and `cutmix` (Beta alphas, 0
    off) make the training targets soft (`keras_r21d.data.mixing`: graph
    ops on each batch, on every backend and after tf.data service; cutmix
    pastes the same box through all frames of a clip and mixes the labels
    by its area; with both, each batch takes one of them). The loss is then
    the categorical cross-entropy on one-hot targets, validation's too.
    Video@1 and the reports are unchanged. All three off is the paper's
    recipe.

    `ema=DECAY` (0 < DECAY < 1; 0 off) keeps an exponential moving average
    of the trainable weights (Keras optimizers' `use_ema`): validation
    (`val_loss`, Video@1) and the saved `model.keras` (and so its final
    report) use the averaged weights; the epoch checkpoints hold the
    training weights with the averages in the optimizer, so `--resume`
    continues both. BatchNorm's moving statistics are the training
    weights' (Keras averages trainable weights only). With fine-tuning
    phases each phase's new optimizer starts its own average from the
    previous phase's averaged weights.

    `data_service` (`HOST:PORT` of a tf.data service dispatcher) sends the
    input pipeline to the service's workers; it needs frame shards
    (`data="shards:DIR"`, written by `keras-r21d prepare`). When no batch
    comes from the service for `data_service_timeout` seconds (a worker gone
    and not restarted at its address), the process stops with an error
    (exit status 2) rather than waiting forever; `--resume` goes on.
    """

    data: str
    out: str = "runs/run"
    arch: str = "r2plus1d"
    depth: int = 18
    frames: int = 16
    size: int = 112
    batch_size: int = 8
    epochs: int = None
    lr: float = None
    schedule: str = "step"
    decay_epochs: int = 10
    warmup_epochs: float = 0.0
    weight_decay: float = 1e-4
    momentum: float = 0.9
    nesterov: bool = True
    width_multiplier: float = 1.0
    dropout: float = 0.0
    val_data: str = None
    val_freq: int = 1
    test_clips: int = 10
    frame_stride: int = 1
    resize_to: tuple = None
    flip: bool = True
    strategy: str = "auto"
    collective_timeout: float = 300.0
    mixed_precision: bool = False
    jit_compile: bool = False
    implementation: str = "auto"
    autotune_lowering: bool = False
    seed: int = 0
    max_train_videos: int = None
    tensorboard: bool = True
    stem_type: str = None
    stage_conv_types: tuple = None
    init: str = None
    freeze_backbone_epochs: int = 0
    finetune_lr: float = None
    trainable_from: str = None
    data_service: str = None
    data_service_timeout: float = STALL_TIMEOUT
    accumulate: int = 1
    test_crops: int = 1
    label_smoothing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    ema: float = 0.0

    def __post_init__(self):
        if self.arch not in VARIANTS:
            raise ValueError(f"`arch` must be one of {sorted(VARIANTS)}. Received: arch={self.arch!r}")
        if self.epochs is None:
            self.epochs = FINETUNE_EPOCHS if self.init else EPOCHS
        if (self.stem_type is None) != (self.stage_conv_types is None):
            raise ValueError("a custom network needs both `stem_type` and `stage_conv_types` "
                             f"(received {self.stem_type!r}, {self.stage_conv_types!r})")
        if not self.init and (self.freeze_backbone_epochs or self.trainable_from or self.finetune_lr):
            raise ValueError("freeze_backbone_epochs, trainable_from and finetune_lr need `init` "
                             "(--init MODEL.keras | RUN_DIR | PRESET)")
        for name in ("frames", "size", "batch_size", "accumulate", "epochs", "val_freq", "test_clips",
                     "frame_stride"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"`{name}` must be >= 1. Received: {name}={getattr(self, name)!r}")
        if self.freeze_backbone_epochs and not 0 <= int(self.freeze_backbone_epochs) < int(self.epochs):
            raise ValueError(f"`freeze_backbone_epochs` (--freeze-backbone-epochs) must be in [0, epochs="
                             f"{self.epochs}): the network must train for at least one epoch after the head. "
                             f"Received: {self.freeze_backbone_epochs}")
        check_soft_targets(self.label_smoothing, self.mixup, self.cutmix, flags=True)
        if not 0.0 <= float(self.ema) < 1.0:
            raise ValueError(f"`ema` (--ema, the moving average's decay) must be in [0, 1), 0: off. Received: "
                             f"{self.ema!r}")
        if self.test_crops not in (1, 3):
            raise ValueError(f"`test_crops` (--test-crops) must be 1 or 3. Received: {self.test_crops!r}")
        if self.trainable_from is not None and self.trainable_from not in STAGES:
            raise ValueError(f"`trainable_from` must be one of {STAGES}. Received: {self.trainable_from!r}")

    @property
    def resize(self):
        """The pre-crop frame size: `resize_to`, else the paper's 128x171 for 112 crops, scaled to `size`."""
        if self.resize_to:
            return tuple(self.resize_to)
        return resize_for_crop(self.size)

    def label_mixing(self, num_classes):
        """The `LabelMixing` of the training batches (inactive with the defaults)."""
        return LabelMixing(num_classes, float(self.label_smoothing), float(self.mixup), float(self.cutmix))

    def clip_config(self, test_clips=None, test_crops=None):
        """The run's `ClipConfig`; its test views (`test_clips x test_crops`) are Video@1's."""
        return ClipConfig(clip_len=self.frames, frame_stride=self.frame_stride, resize=self.resize, crop=self.size,
                          flip=self.flip, test_clips=test_clips or self.test_clips,
                          test_crops=test_crops or self.test_crops)

    def input_shape(self):
        return clip_input_shape(self.frames, self.arch, self.stem_type)


def versions():
    import cv2

    from keras_r21d.onednn import onednn_enabled

    return {"keras_r21d": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "opencv": cv2.__version__, "python": platform.python_version(),
            "tensorflow_onednn": onednn_enabled()}


def _new_model(config, class_names):
    """A new model: built from the config, or from `config.init` with a head for `class_names`.

    Returns `(model, source)`: `source` describes `config.init` (`None`
    without), its `class_names` those of a kept head that records them.
    """
    num_classes = len(class_names)
    if config.stage_conv_types and not config.init:
        model = VideoResNet(config.depth, config.stem_type, tuple(config.stage_conv_types), classes=num_classes,
                            input_shape=config.input_shape(), width_multiplier=config.width_multiplier,
                            dropout=config.dropout, implementation=config.implementation,
                            name=f"custom_{config.depth}")
        return model, None
    if not config.init:
        model = get_model(
            f"{config.arch}_{config.depth}", classes=num_classes, input_shape=config.input_shape(),
            width_multiplier=config.width_multiplier, dropout=config.dropout, implementation=config.implementation,
        )
        return model, None
    source, description, source_names = load_source(config.init, config.arch, config.depth)
    outputs = int(source.output_shape[-1])
    keep = keeps_head(source_names, outputs, class_names)
    model, kept_head = init_model(source, len(class_names), config.frames, description, keep_head=keep)
    if kept_head and source_names is None:
        warnings.warn(f"{description} records no class names: its classifier is kept and its outputs are paired "
                      f"with the {len(class_names)} classes of {config.data!r} by position", UserWarning,
                      stacklevel=3)
    return model, {"init": description, "kept_head": kept_head, "source_classes": outputs,
                   "class_names": (source_names or None) if kept_head else None}


def _phases(config, global_batch):
    """`[(end_epoch, trainable_from, learning_rate)]`: one phase, or head-only then fine-tuning."""
    if not config.init:
        return [(config.epochs, None, config.lr if config.lr is not None else scaled_learning_rate(global_batch))]
    head_lr = config.lr if config.lr is not None else scaled_learning_rate(global_batch)
    finetune_lr = (config.finetune_lr if config.finetune_lr is not None
                   else scaled_learning_rate(global_batch, base_lr=FINETUNE_BASE_LR))
    phases = [(config.freeze_backbone_epochs, "head", head_lr)] if config.freeze_backbone_epochs else []
    return phases + [(config.epochs, config.trainable_from, finetune_lr)]


def _compile(model, config, lr, steps_per_epoch, epochs):
    """Compiles with the recipe's optimizer; `steps_per_epoch` counts batches, `steps_per_epoch / accumulate`
    updates."""
    optimizer = make_optimizer(lr, steps_per_epoch // config.accumulate, epochs, config.warmup_epochs,
                               config.schedule, config.decay_epochs, config.momentum, config.nesterov,
                               config.weight_decay, accumulate=config.accumulate, ema=config.ema)
    soft = config.label_mixing(int(model.output_shape[-1])).active  # one-hot targets
    model.compile(optimizer=optimizer, loss="categorical_crossentropy" if soft else "sparse_categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=config.jit_compile)


def _prebuild_for_multi_worker(model, strategy, dataset):
    """Works around keras-team/keras#20585 (Keras 3 `fit` under `MultiWorkerMirroredStrategy`).

    `fit` first reduces a real distributed batch in eager mode to build the
    compiled metrics symbolically, and that reduction fails for multi-worker
    `PerReplica` values. Building from the dataset's element spec instead, then
    skipping that step, leaves training itself unchanged. Private Keras
    methods are used here and only here; remove this once the upstream issue
    is fixed.
    """
    clips, labels = dataset.element_spec
    with strategy.scope():
        model._symbolic_build(data_batch=(clips, labels))
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    # Keras reduces each worker's logs with `strategy.reduce("MEAN", v, axis=0)`,
    # which needs rank >= 1: return the (public, overridable) steps' logs as (1,) tensors.
    for name in ("train_step", "test_step"):
        step = getattr(model, name)
        setattr(model, name, lambda data, step=step: {k: tf.reshape(v, (1,)) for k, v in step(data).items()})


def _autotune_lowering(model, run_dir, per_replica_batch, clip_shape=None):
    """Installs the fastest lowering of each full 3D kernel: the run's `lowering.json`, or measured here and kept.

    A table measured on another kind of machine (processor, CPU count,
    backend) is measured again and replaced: the lowering changes speed, not
    results, and what was fastest there need not be here.
    """
    path = os.path.join(run_dir, LOWERING_FILE) if run_dir else None
    if path and os.path.exists(path):
        try:
            table = LoweringTable.load(path)
        except LoweringError as error:  # the run's own file, damaged: say so rather than replace it
            raise LoweringError(f"{error}; delete it to measure the lowerings again") from None
        if table.machine_matches():
            table.install()
            logger.info("lowerings of the full 3D kernels from %s", path)
            return table
        logger.info("%s was measured on another machine (%s): measuring again", path, table.machine)
    table = autotune_lowering(model, batch_size=max(1, per_replica_batch), input_shape=clip_shape, log=logger.info)
    if path:
        os.makedirs(run_dir, exist_ok=True)
        table.save(path)
    return table


class TrainingInterrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C); the message says after which epoch and how to resume."""


def _effective_batch(config, num_videos):
    """The global batch actually trained: `batch_size`, or the number of training videos when smaller."""
    if config.batch_size <= num_videos:
        return config.batch_size
    warnings.warn(f"batch size {config.batch_size} exceeds the {num_videos} training videos: training with "
                  f"batches of {num_videos}, the learning rate scaled for {num_videos * config.accumulate}",
                  UserWarning, stacklevel=3)
    return num_videos


def _data_facts(train_set, val_set):
    return {"class_names": list(train_set.class_names), "train_files": train_set.fingerprint(),
            "val_files": val_set.fingerprint()}


def _check_resume(record, run_dir, config, facts):
    """Refuses to resume with settings or data that differ from the run's record; returns the record."""
    differences = resume_differences(record, dataclasses.asdict(config), facts)
    if differences:
        raise ResumeError(f"cannot resume {run_dir} with other settings or data than it was trained with: "
                          + "; ".join(differences) + ". Resume with the run's settings (run.json), or start a new "
                          "run in another --out")
    return record


def _load_or_start(checkpoint_dir):
    """`(model, epochs_done)` of the checkpoint to resume, or `(None, 0)` for a run that finished no epoch."""
    if not os.path.exists(os.path.join(checkpoint_dir, STATE_FILE)):
        return None, 0
    return load_checkpoint(checkpoint_dir)


def _write_record(run_dir, record):
    atomic_write_text(os.path.join(run_dir, "run.json"), json.dumps(record, indent=2))


def _stall_watchdog(config, on_stall=None):
    """Stops the process when the tf.data service sends no batch for `data_service_timeout` s (a worker gone)."""
    if not config.data_service:
        return contextlib.nullcontext()
    from keras_r21d.data.service import StallWatchdog

    return StallWatchdog(config.data_service_timeout, config.data_service, on_stall=on_stall)


def _through_service(config, strategy, train_set, val_set):
    """The shard datasets read through the dispatcher: the trainer processes of a multi-worker run share one
    training job (each clip goes to one of them); validation is each process's own job. Video datasets and an
    unreachable dispatcher are refused (`service.through_service`)."""
    from keras_r21d.data.service import through_service
    from keras_r21d.data.shards import ShardDataset

    job = None
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        job = f"keras_r21d-train-{hashlib.sha256(os.path.abspath(config.out).encode()).hexdigest()[:12]}"
    train_set = through_service(train_set, config.data_service, config.data, job)
    if isinstance(val_set, ShardDataset):
        val_set = through_service(val_set, config.data_service)
    return train_set, val_set


def train(config=None, callbacks=None, **kwargs):
    """Trains a network of the family on a video dataset, evaluates it, writes a run directory.

    Args:
        config: a `TrainConfig`, or leave it out and pass its fields as
            keyword arguments (`data=...` is required). `resume=True` continues
            an interrupted run in `out`.
        callbacks: extra Keras callbacks for `model.fit`.

    Returns:
        A dict with `model` (the trained `keras.Model`), `run_dir`,
        `model_path`, `report` (the video-level evaluation, chief only) and
        `history`.

    The run directory holds `run.json` (configuration, versions, results),
    `checkpoints/` (the latest epoch, `best.keras`, `state.json`),
    `history.csv`, `logs/` (TensorBoard), `model.keras`, `eval/report.json`
    and the plots. With several workers only the chief writes it.

    `out` must be a new or empty folder, or (with `resume=True`) a run of
    this package; a resumed run must have the same settings and data as its
    `run.json` records, except those in `rundir.RESUMABLE_CHANGES` (epochs,
    validation frequency and clips, TensorBoard, strategy). Classes are
    paired by name: validation data may list the training classes in any
    order (and hold only some of them); a fine-tuned model keeps its head
    when the data has exactly the source's recorded classes, in any order
    (`finetune.keeps_head`).

    Raises:
        TrainingInterrupted: on Ctrl-C (a `KeyboardInterrupt`): `run.json`
            says `interrupted`, the last finished epoch's checkpoint is kept.
    """
    resume = kwargs.pop("resume", False)
    config = config or TrainConfig(**kwargs)
    run_dir = config.out
    chief = is_chief()
    checkpoint_dir = os.path.join(run_dir, "checkpoints") if chief else tempfile.mkdtemp(prefix="keras_r21d-worker-")
    if chief:
        check_out_dir(run_dir, resume)
    keras.utils.set_random_seed(config.seed)

    train_set = load_dataset(config.data, "train")
    if config.data_service:  # refused before a model is built: video data, no dispatcher at the address
        _through_service(config, None, train_set, None)
    if config.max_train_videos:
        train_set = train_set.subset(range(min(config.max_train_videos, len(train_set))))
    if not train_set.paths:
        raise ValueError(f"dataset {config.data!r} has no training videos")
    val_set = load_dataset(config.val_data or config.data, "test")
    split = split_description(config.data) if not config.val_data else {"kind": "val_data",
                                                                         "detail": config.val_data}
    overlap = len(set(map(os.path.abspath, train_set.paths)) & set(map(os.path.abspath, val_set.paths)))
    if overlap:
        logger.warning("%d of the %d validation videos are training videos (%s): validation and the final report "
                       "score videos the network was trained on", overlap, len(val_set), config.val_data or
                       config.data)

    source = None
    with _dtype_policy(config.mixed_precision), _distribution(config) as strategy, lowering_scope():
        batch_size = _effective_batch(config, len(train_set))
        data_parallel = isinstance(strategy, DataParallel) and strategy.num_replicas_in_sync > 1
        if data_parallel and batch_size % strategy.num_replicas_in_sync:
            raise ValueError(f"the global batch of {batch_size} clips does not split evenly over the "
                             f"{strategy.num_replicas_in_sync} devices of strategy 'data_parallel': choose a batch "
                             f"size that is a multiple of {strategy.num_replicas_in_sync}")
        if config.accumulate > 1 and not isinstance(strategy, DataParallel) and strategy.num_replicas_in_sync > 1:
            raise ValueError(
                f"accumulate={config.accumulate} (--accumulate) cannot train under {type(strategy).__name__} over "
                f"{strategy.num_replicas_in_sync} replicas: Keras' gradient accumulation synchronizes the replicas "
                "inside a conditional, which tf.distribute does not support. Train on one device (--strategy "
                "default), or on JAX devices with --strategy data_parallel")
        # Whole updates per epoch: the batches of one pass, rounded up to a multiple of `accumulate`.
        steps_per_epoch = math.ceil(math.ceil(len(train_set) / batch_size) / config.accumulate) * config.accumulate
        effective_batch = batch_size * config.accumulate  # the clips of one update: what the learning rate scales with
        phases = _phases(config, effective_batch)
        starts = [0] + [end for end, _, _ in phases[:-1]]
        previous = read_run_record(run_dir) if resume and chief else None
        trained_on = (previous or {}).get("backend", "tensorflow")  # runs before 0.2 record none: TensorFlow
        if previous is not None and trained_on != backend():
            raise ResumeError(
                f"cannot resume {run_dir} on the Keras backend {backend()!r}: it trained on {trained_on!r} "
                f"(run.json), and its checkpoints hold that backend's optimizer. Resume it with "
                f"KERAS_BACKEND={trained_on}, or start a new run from it on this backend with --init {run_dir}")
        with strategy.scope():
            model, initial_epoch = _load_or_start(checkpoint_dir) if resume else (None, 0)
            if model is None:
                model, source = _new_model(config, train_set.class_names)
        model_names = ((source or {}).get("class_names") or (previous or {}).get("class_names")
                       or list(train_set.class_names))
        # Classes pair by name: labels index the model's outputs, whatever order the data lists them in.
        train_set = align_to_model(train_set, model_names, int(model.output_shape[-1]), "the model",
                                   f"training data {config.data!r}")
        val_set = align_to_model(val_set, model_names, int(model.output_shape[-1]), "the model",
                                 f"validation data {config.val_data or config.data!r}")
        facts = _data_facts(train_set, val_set)
        record = _check_resume(previous, run_dir, config, facts) if previous is not None else None
        with strategy.scope():
            if initial_epoch:
                # The phase the checkpoint belongs to (a phase's first epoch belongs to the one before).
                current = max([0] + [i for i, start in enumerate(starts) if start < initial_epoch])
                set_trainable(model, phases[current][1])
            else:
                set_trainable(model, phases[0][1])
                _compile(model, config, phases[0][2], steps_per_epoch, phases[0][0])

        if config.data_service:
            train_set, val_set = _through_service(config, strategy, train_set, val_set)
        bad_videos = BadVideoLog()  # one per run: a bad video is reported once, whichever pass meets it
        train_ds = train_dataset(train_set, batch_size, config.clip_config(), seed=config.seed,
                                 bad_videos=bad_videos, repeat=True)
        val_ds = eval_dataset(val_set, batch_size, config.clip_config(test_clips=1, test_crops=1), with_video_id=False,
                              bad_videos=bad_videos)
        mixing = config.label_mixing(int(model.output_shape[-1]))
        if mixing.active:  # soft training targets: one-hot labels, the categorical loss (`_compile`)
            train_ds = mix_batches(train_ds, mixing, config.seed)
            val_ds = one_hot_batches(val_ds, mixing.num_classes)

        if chief:
            os.makedirs(run_dir, exist_ok=True)
            now = {"config": dataclasses.asdict(config), "versions": versions(), "status": "running",
                   "backend": backend(), "devices": devices(), "dtype_policy": keras.config.dtype_policy().name,
                   "strategy": type(strategy).__name__, "replicas": strategy.num_replicas_in_sync,
                   "batch_size": batch_size, "accumulate": config.accumulate,
                   "effective_batch": effective_batch, "steps_per_epoch": steps_per_epoch,
                   "train_videos": len(train_set), "val_videos": len(val_set),
                   "split": split, "val_overlaps_train": overlap, **facts,
                   "phases": [{"start_epoch": start, "end_epoch": end, "trainable_from": stage, "learning_rate": lr}
                              for start, (end, stage, lr) in zip(starts, phases)]}
            if record is None:
                record = {**now, "init": source, "resumed_from_epoch": None}
            else:  # the run's own record, with what may change on resume and the resumption noted
                for key in RESUMABLE_CHANGES:
                    if key in now["config"]:
                        record.setdefault("config", {})[key] = now["config"][key]
                record.update({k: now[k] for k in ("versions", "status", "backend", "devices", "dtype_policy",
                                                   "strategy", "replicas", "phases")})
                record.update({k: v for k, v in now.items() if k not in record})
                record["resumed_from_epoch"] = initial_epoch
                record.setdefault("resumes", []).append({"from_epoch": initial_epoch, "versions": now["versions"]})
            _write_record(run_dir, record)
        if config.accumulate > 1:
            logger.info("gradient accumulation: %d batches of %d clips per update (effective batch %d), %d updates "
                        "per epoch", config.accumulate, batch_size, effective_batch,
                        steps_per_epoch // config.accumulate)
        if config.autotune_lowering:  # after run.json: the folder is a run, whatever happens from here
            _autotune_lowering(model, run_dir if chief else None, batch_size // strategy.num_replicas_in_sync,
                               tuple(train_ds.element_spec[0].shape[1:]))

        # Data parallelism on JAX: validation outside fit, whose compiled steps need evenly splitting batches.
        # With --ema, validation runs on the averaged weights, and checkpoints keep the training weights with the
        # averages in the optimizer (`averaged_weights_callbacks`).
        averaging = list(averaged_weights_callbacks()) if config.ema else []
        validation = [ClipValidation(val_ds)] * data_parallel + [
            VideoAccuracy(val_set, config.clip_config(), batch_size, config.val_freq, bad_videos=bad_videos)]
        callbacks = list(callbacks or []) + averaging[:1] + validation + averaging[1:] + [
            LearningRateLogger(),
            ResumableCheckpoint(checkpoint_dir),
            keras.callbacks.TerminateOnNaN(),
        ]
        if chief:
            csv_log = keras.callbacks.CSVLogger(os.path.join(run_dir, "history.csv"), append=initial_epoch > 0)
            callbacks.append(csv_log)
            if config.tensorboard:
                callbacks.append(keras.callbacks.TensorBoard(os.path.join(run_dir, "logs"), write_graph=False))

        multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        if multi_worker:
            _prebuild_for_multi_worker(model, strategy, train_ds)
        started = time.time()
        history = {}

        def stalled():
            if chief:
                record.update({"status": "interrupted", "epochs_done": _epochs_done(checkpoint_dir),
                               "stopped": "no batch from the tf.data service", "skipped_videos":
                               dict(bad_videos.failures)})
                _write_record(run_dir, record)

        try:
            with _stall_watchdog(config, stalled):
                for index, (start, (end, stage, lr)) in enumerate(zip(starts, phases)):
                    if initial_epoch >= end:
                        continue
                    if index > 0 and initial_epoch <= start:
                        # Entering this phase: unfreeze from `stage` on and start a new optimizer at its rate.
                        with strategy.scope():
                            set_trainable(model, stage)
                            _compile(model, config, lr, steps_per_epoch, end - start)
                        if multi_worker:
                            _prebuild_for_multi_worker(model, strategy, train_ds)
                    with warnings.catch_warnings():
                        # Keras says "Your input ran out of data" at the end of every epoch of a finite dataset;
                        # the dataset repeats and every epoch has its steps: nothing is cut short.
                        warnings.filterwarnings("ignore", message=".*ran out of data.*")
                        phase_history = model.fit(
                            train_ds, validation_data=None if data_parallel else val_ds, epochs=end,
                            initial_epoch=max(initial_epoch, start),
                            steps_per_epoch=steps_per_epoch, callbacks=callbacks, shuffle=False,
                            verbose="auto" if sys.stdout.isatty() and not os.environ.get("CI") else 2,
                        ).history
                    for key, values in phase_history.items():
                        history.setdefault(key, []).extend(values)
                    if chief:
                        csv_log.append = True  # the next phase adds its rows
        except KeyboardInterrupt:
            done = _epochs_done(checkpoint_dir)
            if chief:
                record.update({"status": "interrupted", "epochs_done": done,
                               "skipped_videos": dict(bad_videos.failures)})
                _write_record(run_dir, record)
            raise TrainingInterrupted(
                f"interrupted after epoch {done} of {config.epochs}" + (
                    f"; resume with the same command and --resume (train(..., resume=True)): {run_dir}"
                    if done else f"; no epoch finished: {run_dir} can be resumed from the start with --resume")
            ) from None
        train_seconds = time.time() - started

        result = {"model": model, "run_dir": run_dir, "history": history, "report": None, "model_path": None,
                  "skipped_videos": dict(bad_videos.failures), "batch_size": batch_size,
                  "train_clip_shape": list(train_ds.element_spec[0].shape[1:])}
        if not chief:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
            return result
        model_path = os.path.join(run_dir, "model.keras")
        atomic_save_model(model, model_path)
        with _stall_watchdog(config):
            report = evaluate_model(model, val_set, config.clip_config(), batch_size,
                                    out_dir=os.path.join(run_dir, "eval"), bad_videos=bad_videos)
    plots = plot_history(os.path.join(run_dir, "history.csv"), run_dir)
    record.update({"status": "done", "train_seconds": round(train_seconds, 1), "model": model_path,
                   "results": {k: report[k] for k in ("clip_top1", "clip_top5", "video_top1", "video_top5",
                                                      "clips", "videos")},
                   "plots": plots, "skipped_videos": dict(bad_videos.failures)})
    _write_record(run_dir, record)
    result.update({"report": report, "model_path": model_path})
    return result


def _epochs_done(checkpoint_dir):
    try:
        return read_state(checkpoint_dir)["epoch"]
    except ResumeError:
        return 0


@contextlib.contextmanager
def _distribution(config):
    """The run's strategy; a JAX `DataParallel` one is in force for the whole run (fit, validation, evaluation)."""
    strategy = make_strategy(config.strategy, config.collective_timeout)
    if isinstance(strategy, DataParallel):
        with strategy.scope():
            yield strategy
    else:
        yield strategy


@contextlib.contextmanager
def _dtype_policy(mixed_precision):
    """`mixed_precision_policy()` inside the block when asked; the global policy is restored after it."""
    previous = keras.config.dtype_policy()
    if mixed_precision:
        keras.config.set_dtype_policy(mixed_precision_policy())
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
