"""The paper's training recipe: SGD with Nesterov momentum, linear scaling, warm-up, step or cosine decay."""

import keras

from keras_r21d.schedules import SCHEDULES, WarmupSchedule  # noqa: F401 - re-exported (0.1.0 names)

# Base learning rate per 32-clip batch (paper / VMZ), scaled linearly with the global batch.
BASE_LR = 0.01
BASE_BATCH = 32


def scaled_learning_rate(global_batch_size, base_lr=BASE_LR, base_batch=BASE_BATCH):
    """The linear scaling rule: `base_lr * global_batch_size / base_batch`."""
    return base_lr * global_batch_size / base_batch


def make_optimizer(learning_rate, steps_per_epoch, epochs, warmup_epochs=0, schedule="step", decay_epochs=10,
                   momentum=0.9, nesterov=True, weight_decay=1e-4, accumulate=1, ema=0.0):
    """SGD with (Nesterov) momentum and weight decay on a `WarmupSchedule`.

    Weight decay is Keras' decoupled form and skips BatchNorm parameters and biases.
    `steps_per_epoch` counts updates. With `accumulate=N` (N >= 2) the
    optimizer sums the gradients of N batches and updates once with their
    mean (Keras' `gradient_accumulation_steps`): the update of one batch N
    times larger, whose learning rate `learning_rate` should be.
    With `ema=DECAY` (0 < DECAY < 1) the optimizer also keeps an exponential
    moving average of the trainable weights, `avg = DECAY * avg + (1 -
    DECAY) * w` after each update (Keras' `use_ema`; the first update sets
    it to `w`); `fit` leaves the averaged weights in the model when it ends.
    """
    if int(accumulate) != accumulate or accumulate < 1:
        raise ValueError(f"`accumulate` must be an integer >= 1. Received: accumulate={accumulate!r}")
    if not 0.0 <= float(ema) < 1.0:
        raise ValueError(f"`ema` (the moving average's decay) must be in [0, 1), 0: off. Received: ema={ema!r}")
    lr = WarmupSchedule(learning_rate, steps_per_epoch, epochs, warmup_epochs, schedule, decay_epochs)
    optimizer = keras.optimizers.SGD(lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay or None,
                                     gradient_accumulation_steps=int(accumulate) if accumulate > 1 else None,
                                     **({"use_ema": True, "ema_momentum": float(ema)} if ema else {}))
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return optimizer
