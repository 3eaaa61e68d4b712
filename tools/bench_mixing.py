"""What soft targets cost: `python tools/bench_mixing.py [MODEL] [BATCH] [SHAPE] [STEPS]`.

Times, in one process and alternating, `model.fit` training steps fed by the
same in-memory clips (uint8, normalized in the pipeline as the real one
does) with no mixing, with mixup (alpha 0.2), with cutmix (alpha 1.0) and
with both plus label smoothing 0.1 (`keras_r21d.data.mixing`, the graph ops
`train --mixup/--cutmix/--label-smoothing` add), and with no mixing again
(`none2`, a second model: the spread between it and `none` is the noise). Also times the input
pipeline alone (ms per batch, no model) with and without them, which is
where their cost is. Prints medians of per-step times (a step includes
fetching its batch) after warm-up steps.
Defaults: `r2plus1d_18 8 16x112 6`.
"""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_r21d  # noqa: E402
from keras_r21d._tensorflow import tf  # noqa: E402
from keras_r21d.data.mixing import LabelMixing, mix_batches  # noqa: E402
from keras_r21d.data.transforms import normalize  # noqa: E402
from tools.bench_train import StepTimer  # noqa: E402 - a step's time from batch begin to end

CLASSES = 101
# "none2" is "none" again, built last: the spread between two identical settings is the run's noise.
SETTINGS = {"none": {}, "mixup": {"mixup": 0.2}, "cutmix": {"cutmix": 1.0},
            "all": {"label_smoothing": 0.1, "mixup": 0.2, "cutmix": 1.0}, "none2": {}}


def dataset(clips, labels, batch, settings):
    ds = tf.data.Dataset.from_tensor_slices((clips, labels)).repeat()
    ds = ds.map(lambda c, y: (normalize(c), y), num_parallel_calls=tf.data.AUTOTUNE).batch(batch)
    mixing = LabelMixing(CLASSES, **settings)
    return (mix_batches(ds, mixing, seed=0) if mixing.active else ds).prefetch(2), mixing.active


def main(model_name="r2plus1d_18", batch=8, shape="16x112", steps=6):
    batch, steps = int(batch), int(steps)
    frames, size = (int(v) for v in shape.split("x"))
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (2 * batch, frames, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, CLASSES, 2 * batch)

    print(f"input pipeline alone, batch {batch} of {frames}x{size}x{size} (ms per batch, median of 50):")
    for name, settings in SETTINGS.items():
        ds, _ = dataset(clips, labels, batch, settings)
        iterator = iter(ds)
        for _ in range(5):
            next(iterator)
        times = []
        for _ in range(50):
            start = time.perf_counter()
            next(iterator)
            times.append(time.perf_counter() - start)
        print(f"  {name:7s} {1000 * statistics.median(times):8.2f}")

    models = {}
    for name, settings in SETTINGS.items():
        keras.utils.set_random_seed(0)
        model = keras_r21d.get_model(model_name, input_shape=(frames, size, size, 3), classes=CLASSES)
        soft = LabelMixing(CLASSES, **settings).active
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                      loss="categorical_crossentropy" if soft else "sparse_categorical_crossentropy")
        ds, _ = dataset(clips, labels, batch, settings)
        model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)  # warm-up: tracing, oneDNN's first calls
        models[name] = (model, ds)
    times = {name: [] for name in SETTINGS}
    for _ in range(2):  # two rounds, the settings alternating; a fit call's first step (a new iterator) dropped
        for name, (model, ds) in models.items():
            timer = StepTimer()
            model.fit(ds, steps_per_epoch=steps + 1, epochs=1, verbose=0, callbacks=[timer])
            times[name].extend(timer.times[1:])
    print(f"{model_name} training step, batch {batch} of {frames}x{size}x{size}, {os.cpu_count()} CPUs "
          f"(s per step, median of {2 * steps}; clips/s):")
    base = statistics.median(times["none"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:7s} {median:8.3f} s  {batch / median:7.3f} clips/s  {100 * (median / base - 1):+6.1f}%")


if __name__ == "__main__":
    main(*sys.argv[1:])
