"""The main job on a fresh machine (`make demo`), end to end on the embedded synthetic dataset.

1. Writes the synthetic motion dataset (classes that differ only by motion)
   as real MPEG-4 videos in the UCF101 layout.
2. Trains a small R(2+1)D and a small f-R2D on it with the same recipe.
3. Evaluates both at clip and video level (10 uniform clips per video).
4. Predicts a few test videos with the R(2+1)D.
5. Exports it as a TF Serving SavedModel and a TFLite file (no CONV_3D op)
   and predicts the same videos from both.
6. Prints where the reports, plots and models are.

The comparison is the paper's RQ1 in miniature: f-R2D pools frames without
order, so it cannot tell a video from its time-reversed twin class
(MoveLeft/MoveRight, RotateClockwise/RotateCounterClockwise), while R(2+1)D
can. The defaults (4 classes, 64 videos each, 25 epochs of tiny networks
on every 4th frame) take about 3.5 minutes on 2 CPU cores.

    python examples/demo.py [--out demo_out] [--epochs 25] [--classes 4]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import keras_r21d  # noqa: E402
from keras_r21d.data import load_dataset, make_synthetic_dataset  # noqa: E402
from keras_r21d.export import export_saved_model, export_tflite  # noqa: E402
from keras_r21d.inference import load_predictor  # noqa: E402
from keras_r21d.training import TrainConfig, predict_clips, train  # noqa: E402
from keras_r21d.training.evaluation import run_record, test_clip_config, video_predictions  # noqa: E402
from keras_r21d.training.rundir import is_run  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--videos-per-class", type=int, default=64)
    args = parser.parse_args()
    start = time.time()

    data_dir = os.path.join(args.out, "synthetic")
    if not os.path.exists(os.path.join(data_dir, "testlist01.txt")):
        print(f"[1/5] writing the synthetic motion dataset to {data_dir}")
        make_synthetic_dataset(data_dir, classes=args.classes, videos_per_class=args.videos_per_class, seed=0)
    spec = f"ucf101:{data_dir}"
    test_set = load_dataset(spec, "test")
    print(f"      {len(load_dataset(spec))} training and {len(test_set)} test videos, "
          f"{test_set.num_classes} classes: {', '.join(test_set.class_names)}")

    results = {}
    for arch in ["r2plus1d", "fr2d"]:
        run_dir = os.path.join(args.out, f"run_{arch}")
        print(f"[2/5] training {arch} -> {run_dir}")
        # Tiny networks and a plain recipe (constant learning rate, no weight
        # decay) that fit a CPU; no flips, which would swap the twin classes;
        # every 4th frame, where the motion is large enough to be found
        # reliably (tests/test_case.py's MOTION_RECIPE, the same recipe).
        config = TrainConfig(data=spec, out=run_dir, arch=arch, depth=10, frames=8, size=48, resize_to=(48, 64),
                             batch_size=16, epochs=args.epochs, width_multiplier=0.25, lr=0.01,
                             schedule="constant", weight_decay=0.0, nesterov=False, frame_stride=4, flip=False,
                             test_clips=10, val_freq=5, tensorboard=False)
        results[arch] = train(config, resume=is_run(run_dir))  # a rerun continues (or reuses) the run

    print("[3/5] evaluation on the test videos (Video@1 averages the softmax of 10 clips per video)")
    print("| model | paper params | GFLOPs | Clip@1 | Video@1 |")
    print("|---|---:|---:|---:|---:|")
    for arch, result in results.items():
        stats = keras_r21d.model_stats(result["model"], input_shape=(8, 48, 48, 3))
        report = result["report"]
        print(f"| {arch} | {stats['paper_params'] / 1e6:.2f}M | {stats['gflops']:.3f} | "
              f"{100 * report['clip_top1']:.1f} | {100 * report['video_top1']:.1f} |")
    chance = 100 / test_set.num_classes
    lead = 100 * (results["r2plus1d"]["report"]["video_top1"] - results["fr2d"]["report"]["video_top1"])
    print(f"      chance is {chance:.1f}%; R(2+1)D minus f-R2D: {lead:+.1f} points of Video@1 "
          f"after {args.epochs} epochs")

    print("[4/5] predictions of R(2+1)D on a few test videos")
    model_path = results["r2plus1d"]["model_path"]
    record = run_record(model_path)
    clip_config = test_clip_config(results["r2plus1d"]["model"], record)  # the clips it trained on, 10 per video
    sample = test_set.subset(range(0, len(test_set), max(1, len(test_set) // 4)))
    probabilities, labels, videos = predict_clips(results["r2plus1d"]["model"], sample, clip_config)
    video_probs, video_labels, ids = video_predictions(probabilities, labels, videos)
    for probs, label, index in zip(video_probs, video_labels, ids):
        top = np.argsort(-probs)[:3]
        guesses = ", ".join(f"{sample.class_names[i]} {100 * probs[i]:.0f}%" for i in top)
        print(f"      {os.path.basename(sample.paths[index])}: true {sample.class_names[label]}; top-3: {guesses}")

    print("[5/5] export of R(2+1)D: TF Serving SavedModel and TFLite; the same videos from each form")
    serving_dir = os.path.join(args.out, "serving", "r2plus1d")
    saved = export_saved_model(results["r2plus1d"]["model"], serving_dir, version=1, overwrite=True,
                               class_names=record["class_names"], clip_config=clip_config)
    tflite_path = os.path.join(args.out, "r2plus1d.tflite")
    lite = export_tflite(results["r2plus1d"]["model"], tflite_path, clip_config=clip_config,
                         class_names=record["class_names"])
    print(f"      SavedModel {saved['path']} (max |diff| vs Keras {saved['max_abs_diff']:.1e}); "
          f"TFLite {tflite_path}: {lite['size_bytes'] / 1e6:.1f} MB, CONV_3D ops: {lite['ops'].get('CONV_3D', 0)}, "
          f"max |diff| {lite['max_abs_diff']:.1e}")
    predictors = [load_predictor(path) for path in (model_path, serving_dir, tflite_path)]
    for video in sample.paths[:3]:
        answers = [p.classify(video, top=1)["top"][0] for p in predictors]
        print(f"      {os.path.basename(video)}: " + "; ".join(
            f"{p.kind} {a['class']} {100 * a['score']:.1f}%" for p, a in zip(predictors, answers)))

    for arch, result in results.items():
        run_dir = result["run_dir"]
        print(f"{arch}: model {result['model_path']}, report {os.path.join(run_dir, 'eval', 'report.json')}, "
              f"plots {os.path.join(run_dir, 'error.png')}, {os.path.join(run_dir, 'eval', 'confusion_matrix.png')}")
    print(f"demo finished in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
