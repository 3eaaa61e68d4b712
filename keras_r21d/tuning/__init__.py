"""Architecture and recipe search with keras-tuner: variant or per-stage conv types, depth, clip length, width.

>>> from keras_r21d.tuning import SearchSpace, tune
>>> rows = tune("ucf101:/data/UCF101", "search/", SearchSpace(variants=("r3d", "r2plus1d")),
...             max_trials=8)  # doctest: +SKIP

Distributed (keras-tuner's chief/worker mode): start one chief and any number
of workers with the same arguments and `KERASTUNER_TUNER_ID` (`chief`,
`tuner0`, `tuner1`, ...), `KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT`
set; each worker may train under its own `tf.distribute` strategy.
"""

import os

from keras_r21d.tuning.space import FIXABLE, SearchSpace, VideoHyperModel, describe, network
from keras_r21d.tuning.tuner import (
    ALGORITHMS,
    OBJECTIVES,
    collect_results,
    make_tuner,
    pareto_front,
    save_best_model,
    serve_oracle,
    write_results,
)


def distributed_role():
    """`"chief"`, `"worker"` or `None` (not distributed), from keras-tuner's environment variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return None
    missing = [n for n in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID") if not os.environ.get(n)]
    if missing:
        raise ValueError(f"distributed tuning needs {', '.join(missing)} set beside KERASTUNER_ORACLE_IP")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def tune(data, out, space=None, **kwargs):
    """Runs a search (or its chief, or a worker) and writes the results; returns the table's rows.

    Arguments as `make_tuner`. Writes `OUT/results.csv`, `OUT/results.md`,
    `OUT/pareto.png` and `OUT/best_model.keras` (not on workers: the chief,
    or the only process, holds every trial).
    """
    tuner = make_tuner(data, out, space, **kwargs)
    tuner.search()
    if distributed_role() == "worker":
        return None
    rows = collect_results(tuner.oracle, out)
    write_results(rows, out)
    save_best_model(rows, out)
    return rows


__all__ = [
    "ALGORITHMS", "FIXABLE", "OBJECTIVES", "SearchSpace", "VideoHyperModel", "collect_results", "describe",
    "distributed_role", "make_tuner", "network", "pareto_front", "save_best_model", "serve_oracle", "tune",
    "write_results",
]
