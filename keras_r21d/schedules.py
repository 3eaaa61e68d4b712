"""The learning-rate schedule the package's optimizers carry (in every run's `model.keras` and checkpoints).

It lives here, apart from the training code, so that `import keras_r21d`
registers it (`keras_r21d.saving`) without importing the training pipeline.
"""

import math

import keras

SCHEDULES = ("step", "cosine", "constant")


@keras.saving.register_keras_serializable(package="keras_r21d")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then step decay (`/ decay_factor` every `decay_epochs`) or cosine decay.

    Args:
        learning_rate: the peak learning rate (after warm-up).
        steps_per_epoch: optimizer steps in one epoch.
        total_epochs: planned epochs (the cosine schedule ends at 0 there).
        warmup_epochs: epochs of linear warm-up from `learning_rate / 10` (0 for none).
        schedule: `"step"`, `"cosine"` or `"constant"`.
        decay_epochs: with `"step"`: divide every this many epochs.
        decay_factor: with `"step"`: the divisor (10 in the paper).

    Example:

    >>> lr = WarmupSchedule(0.01, steps_per_epoch=100, total_epochs=45, warmup_epochs=2)
    >>> optimizer = keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)
    """

    def __init__(self, learning_rate, steps_per_epoch, total_epochs, warmup_epochs=0, schedule="step",
                 decay_epochs=10, decay_factor=10.0):
        if schedule not in SCHEDULES:
            raise ValueError(f"`schedule` must be one of {SCHEDULES}. Received: schedule={schedule!r}")
        if steps_per_epoch < 1:
            raise ValueError(f"`steps_per_epoch` must be >= 1. Received: steps_per_epoch={steps_per_epoch}")
        self.learning_rate = float(learning_rate)
        self.steps_per_epoch = int(steps_per_epoch)
        self.total_epochs = int(total_epochs)
        self.warmup_epochs = float(warmup_epochs)
        self.schedule = schedule
        self.decay_epochs = int(decay_epochs)
        self.decay_factor = float(decay_factor)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        epoch = step / self.steps_per_epoch
        peak = self.learning_rate
        if self.schedule == "step":
            decayed = peak / keras.ops.power(self.decay_factor, keras.ops.floor(epoch / max(self.decay_epochs, 1)))
        elif self.schedule == "cosine":
            progress = keras.ops.clip(epoch / max(self.total_epochs, 1), 0.0, 1.0)
            decayed = 0.5 * peak * (1.0 + keras.ops.cos(math.pi * progress))
        else:
            decayed = keras.ops.convert_to_tensor(peak, "float32")
        if self.warmup_epochs > 0:
            warm = peak * (0.1 + 0.9 * keras.ops.clip(epoch / self.warmup_epochs, 0.0, 1.0))
            return keras.ops.where(epoch < self.warmup_epochs, warm, decayed)
        return decayed

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "steps_per_epoch": self.steps_per_epoch,
            "total_epochs": self.total_epochs,
            "warmup_epochs": self.warmup_epochs,
            "schedule": self.schedule,
            "decay_epochs": self.decay_epochs,
            "decay_factor": self.decay_factor,
        }
