"""Fine-tune a pretrained or saved network on UCF101 (or any dataset spec), evaluate Video@1, export it.

The paper's transfer recipe: start from a Kinetics-pretrained network, replace
the classifier, train the new head alone for a few epochs, then fine-tune the
whole network (or the stages from `--trainable-from` on) at a small learning
rate.

    python examples/finetune_ucf101.py --data ucf101:/data/UCF101:split=1 --init kinetics400 \\
        --arch r2plus1d --depth 18 --out runs/ft_ucf101
    python examples/finetune_ucf101.py --data ucf101:/data/UCF101 --init runs/my_kinetics_run --out runs/ft
    python examples/finetune_ucf101.py --synthetic --out ft_demo     # offline, about 5 minutes on 2 cores
    python examples/finetune_ucf101.py --synthetic --source-epochs 1 --epochs 2 --freeze-backbone-epochs 1 \\
        --videos-per-class 6 --batch-size 4 --out ft_smoke               # the suite's shortened run

`--synthetic` needs no download: it trains a small source network on four
synthetic motion classes, then fine-tunes it on a new synthetic dataset of
two classes in the UCF101 layout (new videos, a new head).
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_r21d.data import make_synthetic_dataset  # noqa: E402
from keras_r21d.export import export_saved_model  # noqa: E402
from keras_r21d.training import TrainConfig, train  # noqa: E402
from keras_r21d.training.evaluation import run_record, test_clip_config  # noqa: E402
from keras_r21d.training.rundir import is_run  # noqa: E402

# Small networks and clips that train on a CPU (the --synthetic run).
SMALL = dict(depth=10, frames=8, size=48, resize_to=(48, 64), batch_size=16, width_multiplier=0.25,
             schedule="constant", weight_decay=0.0, nesterov=False, frame_stride=2, flip=False, test_clips=10,
             val_freq=100, tensorboard=False)


def synthetic_source(out, epochs=15, videos_per_class=64):
    """A small R(2+1)D trained on 4 synthetic motion classes: the stand-in for a Kinetics-pretrained model."""
    data = make_synthetic_dataset(os.path.join(out, "source_data"), classes=4, videos_per_class=videos_per_class,
                                  seed=0)
    run = os.path.join(out, "source_run")
    if not os.path.isfile(os.path.join(run, "model.keras")):
        print(f"[source] training a small R(2+1)D on 4 synthetic motion classes -> {run}")
        train(TrainConfig(data=data, out=run, arch="r2plus1d", epochs=epochs, lr=0.01, **SMALL), resume=is_run(run))
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="dataset spec, e.g. ucf101:/data/UCF101:split=1")
    parser.add_argument("--init", help="a preset (kinetics400, ig65m_kinetics400), a .keras file or a run directory")
    parser.add_argument("--arch", default="r2plus1d", help="with a preset: the network (default r2plus1d)")
    parser.add_argument("--depth", type=int, default=18, help="with a preset: its depth (default 18)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--freeze-backbone-epochs", type=int, default=2)
    parser.add_argument("--finetune-lr", type=float, default=None, help="default 0.001 x batch / 32")
    parser.add_argument("--trainable-from", default=None, help="conv2..conv5: keep earlier stages frozen")
    parser.add_argument("--synthetic", action="store_true", help="offline run on synthetic data")
    parser.add_argument("--source-epochs", type=int, default=15, help="--synthetic: epochs of the source network")
    parser.add_argument("--videos-per-class", type=int, default=None,
                        help="--synthetic: videos per class of both datasets (default 64 source, 48 target)")
    parser.add_argument("--out", default="finetune_out")
    args = parser.parse_args()
    start = time.time()

    if args.synthetic:
        init = synthetic_source(args.out, args.source_epochs, args.videos_per_class or 64)
        data = make_synthetic_dataset(os.path.join(args.out, "target_data"), classes=2,
                                      videos_per_class=args.videos_per_class or 48, seed=1)
        settings = dict(SMALL, batch_size=args.batch_size, lr=0.01, finetune_lr=args.finetune_lr or 0.003)
    else:
        if not args.data or not args.init:
            parser.error("--data and --init are required (or --synthetic)")
        init, data = args.init, args.data
        settings = dict(arch=args.arch, depth=args.depth, frames=args.frames, batch_size=args.batch_size,
                        finetune_lr=args.finetune_lr)

    run_dir = os.path.join(args.out, "finetune_run")
    print(f"[finetune] {init} -> {data}: {args.freeze_backbone_epochs} head-only epochs, then "
          f"{args.epochs - args.freeze_backbone_epochs} fine-tuning epochs -> {run_dir}")
    config = TrainConfig(data=data, out=run_dir, init=init, epochs=args.epochs,
                         freeze_backbone_epochs=args.freeze_backbone_epochs, trainable_from=args.trainable_from,
                         **settings)
    result = train(config, resume=is_run(run_dir))  # a rerun continues (or reuses) the run
    report = result["report"]
    print(f"[evaluate] Video@1 {100 * report['video_top1']:.1f}%  Clip@1 {100 * report['clip_top1']:.1f}%  "
          f"({report['videos']} test videos, chance {100 / len(report['class_names']):.1f}%)")

    record = run_record(result["model_path"])
    serving = os.path.join(args.out, "serving")
    export = export_saved_model(result["model"], serving, class_names=record["class_names"],
                                clip_config=test_clip_config(result["model"], record), overwrite=True, version=1)
    print(f"[export] TF Serving SavedModel {export['path']} (max |diff| vs Keras {export['max_abs_diff']:.1e})")
    print(f"finished in {time.time() - start:.0f} s; run {run_dir}, report {os.path.join(run_dir, 'eval')}")


if __name__ == "__main__":
    main()
