"""The search space: which stages are 3D, 2D or (2+1)D, depth, clip length, width, and the recipe."""

import dataclasses

import keras_tuner as kt

from keras_r21d.layers.blocks import CONV_TYPES
from keras_r21d.models.specs import DEPTHS, VARIANTS, clip_input_shape

STEM_TYPES = ("2d", "3d", "2plus1d")
# Hyperparameters a search may fix (the train command's flags).
FIXABLE = ("variant", "depth", "frames", "width_multiplier", "lr", "weight_decay", "warmup_epochs",
           "label_smoothing", "mixup", "cutmix")
# Soft-target settings (`TrainConfig`'s): off unless searched or fixed, and then not declared at all, so that a
# search from before they existed resumes with the same hyperparameters.
SOFT_TARGETS = ("label_smoothing", "mixup", "cutmix")


@dataclasses.dataclass
class SearchSpace:
    """What a search explores; every range configurable, any hyperparameter fixable.

    Attributes:
        variants: networks of the paper to choose from (`"r2d"`, `"fr2d"`,
            `"r3d"`, `"mc2"`..`"mc5"`, `"rmc2"`..`"rmc5"`, `"r2plus1d"`).
        per_stage: instead of a named variant, choose the stem (`2d`, `3d`,
            `2plus1d`) and each stage's conv type (`2d`, `3d`, `2plus1d`)
            independently (the paper's question, asked of your data).
        depths: network depths.
        frames: clip lengths; each trial's input pipeline is built for its own.
        width_multipliers: width scales (1.0 is the paper's network).
        lr: `(low, high)` peak learning rate, sampled log-uniformly.
        weight_decay: `(low, high)`, log-uniform.
        warmup_epochs: warm-up lengths to choose from.
        label_smoothing, mixup, cutmix: values to choose from (`TrainConfig`'s
            soft targets; default `(0.0,)`, off and not declared).
        fixed: `{name: value}` for hyperparameters not searched (names in `FIXABLE`).
    """

    variants: tuple = tuple(VARIANTS)
    per_stage: bool = False
    depths: tuple = (10, 18)
    frames: tuple = (8, 16)
    width_multipliers: tuple = (0.25, 0.5, 1.0)
    lr: tuple = (1e-3, 1e-1)
    weight_decay: tuple = (1e-5, 1e-3)
    warmup_epochs: tuple = (0, 1)
    label_smoothing: tuple = (0.0,)
    mixup: tuple = (0.0,)
    cutmix: tuple = (0.0,)
    fixed: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        unknown = set(self.fixed) - set(FIXABLE)
        if unknown:
            raise ValueError(f"cannot fix {sorted(unknown)}: fixable hyperparameters are {FIXABLE}")
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad:
            raise ValueError(f"unknown variants {bad}: choose from {sorted(VARIANTS)}")
        bad = [d for d in self.depths if d not in DEPTHS]
        if bad:
            raise ValueError(f"unknown depths {bad}: choose from {sorted(DEPTHS)}")
        for name in ("lr", "weight_decay"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"`{name}` must be (low, high) with 0 < low <= high. Received: {(low, high)}")
        from keras_r21d.data.mixing import check_soft_targets  # TensorFlow's module: imported when a space is made

        for name in SOFT_TARGETS:
            values = tuple(float(v) for v in getattr(self, name))
            if not values:
                raise ValueError(f"`{name}` needs at least one value to choose from (0: off)")
            for value in values:
                check_soft_targets(**{name: value})
            setattr(self, name, values)
        if not self.variants or not self.depths or not self.frames or not self.width_multipliers:
            raise ValueError("every choice list of the search space needs at least one value")

    def declare(self, hp):
        """Declares the hyperparameters on `hp` and returns their values for this trial."""

        def choice(name, values):
            if name in self.fixed:
                return hp.Fixed(name, self.fixed[name])
            values = list(dict.fromkeys(values))
            return hp.Fixed(name, values[0]) if len(values) == 1 else hp.Choice(name, values)

        def log_float(name, bounds):
            if name in self.fixed:
                return hp.Fixed(name, float(self.fixed[name]))
            low, high = bounds
            return hp.Fixed(name, float(low)) if low == high else hp.Float(name, low, high, sampling="log")

        values = {}
        if self.per_stage and "variant" not in self.fixed:
            values["stem_type"] = choice("stem_type", STEM_TYPES)
            for stage in range(2, 6):
                values[f"conv{stage}"] = choice(f"conv{stage}", CONV_TYPES)
        else:
            values["variant"] = choice("variant", self.variants)
        values["depth"] = choice("depth", self.depths)
        values["frames"] = choice("frames", self.frames)
        values["width_multiplier"] = choice("width_multiplier", self.width_multipliers)
        values["lr"] = log_float("lr", self.lr)
        values["weight_decay"] = log_float("weight_decay", self.weight_decay)
        values["warmup_epochs"] = choice("warmup_epochs", self.warmup_epochs)
        for name in SOFT_TARGETS:
            choices = getattr(self, name)
            values[name] = (float(choice(name, choices)) if name in self.fixed or set(choices) != {0.0}
                            else 0.0)
        return values


class VideoHyperModel(kt.HyperModel):
    """The paper's family as a keras-tuner `HyperModel` (for keras-tuner's own tuners, too).

    `build(hp)` returns a compiled model for `num_classes`; the tuners of
    `keras_r21d.tuning` train it with the package's pipeline and recipe
    (`run_trial`), since a trial's clip length changes its input pipeline.
    """

    def __init__(self, space, num_classes, size=112, steps_per_epoch=100, epochs=10, **kwargs):
        super().__init__(**kwargs)
        self.space = space
        self.num_classes = num_classes
        self.size = size
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs

    def build(self, hp):
        from keras_r21d.models.video_resnet import VideoResNet
        from keras_r21d.training.recipe import make_optimizer

        values = self.space.declare(hp)
        stem, stages = network(values)
        shape = clip_input_shape(values["frames"], stem_type=stem)
        model = VideoResNet(values["depth"], stem, stages, classes=self.num_classes, input_shape=shape,
                            width_multiplier=values["width_multiplier"])
        optimizer = make_optimizer(values["lr"], self.steps_per_epoch, self.epochs, values["warmup_epochs"],
                                   weight_decay=values["weight_decay"])
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model


def network(values):
    """`(stem_type, stage_conv_types)` of a trial's values (a named variant or per-stage choices)."""
    if "variant" in values:
        _, stem, stages = VARIANTS[values["variant"]]
        return stem, tuple(stages)
    return values["stem_type"], tuple(values[f"conv{stage}"] for stage in range(2, 6))


def describe(values):
    """A short name of a trial's network: `"R(2+1)D-18"` or `"3d|3d,2d,2d,2plus1d-18"`."""
    if "variant" in values:
        return f"{VARIANTS[values['variant']][0]}-{values['depth']}"
    stem, stages = network(values)
    return f"{stem}|{','.join(stages)}-{values['depth']}"
