"""Trains the shared learning recipe (tests.test_case.MOTION_RECIPE) on the backend KERAS_BACKEND names.

    KERAS_BACKEND=jax python tests/workers/learn.py DATA OUT [--mixed-precision] [--epochs N]

Prints one JSON line: the backend, the global dtype policy after training
(train() must restore it) and the run's report.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--mixed-precision", action="store_true")
    parser.add_argument("--epochs", type=int, help="instead of the recipe's")
    args = parser.parse_args()

    import keras

    from keras_r21d.training import TrainConfig, train
    from tests.test_case import MOTION_RECIPE

    recipe = dict(MOTION_RECIPE, **({"epochs": args.epochs} if args.epochs else {}))
    result = train(TrainConfig(data=args.data, out=args.out, mixed_precision=args.mixed_precision, **recipe))
    print(json.dumps({"backend": keras.backend.backend(), "policy_after": keras.config.dtype_policy().name,
                      "report": {k: result["report"][k] for k in ("video_top1", "clip_top1", "videos")}}))


if __name__ == "__main__":
    main()
