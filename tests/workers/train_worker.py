"""A training process for the distributed tests: trains, then writes a digest of its weights.

    python train_worker.py DATA OUT RESULT_JSON STRATEGY [--fail-at-batch N] [--cpus N] [--data-service HOST:PORT]
        [--accumulate N]
"""

import argparse
import hashlib
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("result")
    parser.add_argument("strategy")
    parser.add_argument("--fail-at-batch", type=int, default=None)
    parser.add_argument("--cpus", type=int, default=1)
    parser.add_argument("--data-service", default=None)
    parser.add_argument("--accumulate", type=int, default=1)
    args = parser.parse_args()

    import tensorflow as tf

    if args.cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.cpus)

    import keras

    from keras_r21d.training import TrainConfig, is_chief, run_or_exit, train

    class FailAt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 >= args.fail_at_batch:
                raise RuntimeError(f"injected failure at batch {batch + 1}")

    config = TrainConfig(data=args.data, out=args.out, arch="r2plus1d", depth=10, frames=4, size=32, batch_size=4,
                         epochs=2, width_multiplier=0.125, test_clips=2, strategy=args.strategy, tensorboard=False,
                         collective_timeout=30.0, data_service=args.data_service, accumulate=args.accumulate)
    result = run_or_exit(train, config, callbacks=[FailAt()] if args.fail_at_batch else None)
    digest = hashlib.sha256()
    # Trainable weights are all-reduced; BatchNorm moving statistics are each
    # worker's own (as in PyTorch DDP without SyncBatchNorm).
    for weight in result["model"].trainable_weights:
        digest.update(keras.ops.convert_to_numpy(weight).tobytes())
    with open(args.result, "w") as f:
        json.dump({"digest": digest.hexdigest(), "chief": is_chief(), "model_path": result["model_path"],
                   "replicas": result["model"].distribute_strategy.num_replicas_in_sync}, f)


if __name__ == "__main__":
    main()
