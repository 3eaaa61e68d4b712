"""Benchmark: training and evaluation clips/s from frame shards (`prepare`) against decoding the videos.

Writes 10-s 320x240 videos (250 frames at 25 fps, textured motion) as H.264
with a keyframe every 12 frames (web), H.264 with one keyframe (phone) and
MPEG-4 part 2, prepares each set into shards at the default 128x171 and
measures, in one run and one process:

- `prepare` throughput (videos/s, frames/s) with `--workers` processes;
- the training pipeline (jitter, resize 128x171, random crop 112, flip,
  normalize; batches of 8) from the videos and from the shards, on a
  1-thread tf.data pool and on the default pool;
- the test pipeline (10 uniform clips per video, center crop);
- shard bytes per minute of video and the max and mean abs difference of the
  normalized test clips against the video path, at several JPEG qualities;
- with `--service`, the training pipeline from shards through tf.data service
  on 127.0.0.1 (a dispatcher and 1, then 2 worker processes started with
  `keras-r21d data-service`) against reading the shards locally.

    python tools/bench_shards.py [--videos 12] [--clips 160] [--qualities 75,90,95] [--service]
"""

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_r21d.data import ClipConfig, eval_dataset, load_dataset, train_dataset  # noqa: E402
from keras_r21d.data.prepare import prepare  # noqa: E402
from keras_r21d.data.synthetic import render_video  # noqa: E402

FORMATS = {"h264-gop12": ("libx264", 12, "H.264, keyframe every 12 frames"),
           "h264-gop250": ("libx264", 250, "H.264, one keyframe (10 s)"),
           "mpeg4": ("mpeg4", 12, "MPEG-4 part 2, keyframe every 12 frames")}


def write(path, frames, codec, gop):
    height, width = frames.shape[1:3]
    extra = ["-pix_fmt", "yuv420p"] + (["-q:v", "4"] if codec == "mpeg4" else [])
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s",
                    f"{width}x{height}", "-r", "25", "-i", "-", "-c:v", codec, *extra, "-g", str(gop), str(path)],
                   input=frames.tobytes(), check=True)


def make_set(root, name, count):
    codec, gop, _ = FORMATS[name]
    for i in range(count):
        frames = render_video("horizontal" if i % 2 else "vertical", 1, np.random.default_rng(i), 250, 240, 320)
        frames = np.clip(frames + np.random.default_rng(i).integers(-12, 12, frames.shape), 0, 255).astype(np.uint8)
        folder = os.path.join(root, "train", f"c{i % 2}")
        os.makedirs(folder, exist_ok=True)
        write(os.path.join(folder, f"v{i}.mp4"), frames, codec, gop)
    shutil.copytree(os.path.join(root, "train"), os.path.join(root, "test"))
    return f"folder:{root}"


def rate(ds, clips, per_batch):
    iterator = iter(ds)
    for _ in range(2):
        next(iterator)
    batches = max(1, clips // per_batch)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * per_batch / (time.perf_counter() - start)


def threaded(ds, threads):
    if not threads:
        return ds
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    return ds.with_options(options)


def service_rates(shards, config, clips):
    """Training clips/s through tf.data service with 1 and 2 worker processes on 127.0.0.1."""
    import socket

    def free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    cli = [sys.executable, "-m", "keras_r21d", "data-service"]
    port = free_port()
    processes = [subprocess.Popen(cli + ["dispatcher", "--port", str(port)], stdout=subprocess.PIPE, text=True)]
    rates = {}
    try:
        processes[0].stdout.readline()
        for count in (1, 2):
            while len(processes) - 1 < count:
                worker = subprocess.Popen(cli + ["worker", "--dispatcher", f"127.0.0.1:{port}", "--host",
                                                 "127.0.0.1"], stdout=subprocess.PIPE, text=True)
                worker.stdout.readline()
                processes.append(worker)
            remote = shards.with_service(f"127.0.0.1:{port}")
            rates[count] = rate(train_dataset(remote, 8, config, seed=0, repeat=True), clips, 8)
    finally:
        for process in processes:
            process.kill()
    return rates


def eval_clips(dataset, config):
    return np.concatenate([clips.numpy() for clips, _, _ in eval_dataset(dataset, 10, config)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--clips", type=int, default=160)
    parser.add_argument("--qualities", default="75,90,95")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--formats", default=",".join(FORMATS), help=f"some of {','.join(FORMATS)}")
    parser.add_argument("--service", action="store_true", help="also through tf.data service (1 and 2 workers)")
    args = parser.parse_args()
    qualities = [int(q) for q in args.qualities.split(",")]
    config = ClipConfig(clip_len=16)
    rows, quality_rows = [], []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.formats.split(","):
            spec = make_set(os.path.join(folder, name), name, args.videos)
            videos = load_dataset(spec, "train")
            row = {"format": FORMATS[name][2]}
            for quality in qualities if name == "h264-gop12" else [90]:
                out = os.path.join(folder, f"{name}-q{quality}")
                start = time.perf_counter()
                manifest = prepare(spec, out, quality=quality, workers=args.workers)
                seconds = time.perf_counter() - start
                if quality == 90:
                    row["prepare"] = 2 * args.videos / seconds
                    row["prepare_fps"] = (manifest["splits"]["train"]["frames"] * 2) / seconds
                if name == "h264-gop12":
                    shards = load_dataset(f"shards:{out}", "test")
                    test = load_dataset(spec, "test")
                    diff = np.abs(eval_clips(shards, config) - eval_clips(test, config))
                    minutes = manifest["splits"]["test"]["frames"] / 25 / 60
                    quality_rows.append((quality, manifest["splits"]["test"]["bytes"] / minutes / 1e6,
                                         float(diff.max()), float(diff.mean())))
            shards = load_dataset(f"shards:{os.path.join(folder, f'{name}-q90')}", "train")
            for label, dataset in (("videos", videos), ("shards", shards)):
                for threads in (1, None):
                    ds = threaded(train_dataset(dataset, 8, config, seed=0, repeat=True), threads)
                    row[f"train_{label}_{threads or 'all'}"] = rate(ds, args.clips, 8)
                ds = eval_dataset(dataset.__class__.subset(dataset, range(len(dataset))), 10, config).repeat()
                row[f"eval_{label}"] = rate(ds, args.clips, 10)
            if args.service:
                row["service"] = service_rates(shards, config, args.clips)
            rows.append(row)
    cores = os.cpu_count()
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores; TensorFlow {tf.__version__}, "
          f"Python {sys.version.split()[0]}; {args.videos} videos of 250 frames at 320x240 per format")
    print("| videos | prepare videos/s (frames/s) | train clips/s: videos, 1 thread | shards, 1 thread | ratio | "
          f"videos, {cores} threads | shards, {cores} threads | ratio | test clips/s: videos | shards | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['format']} | {r['prepare']:.2f} ({r['prepare_fps']:.0f}) | {r['train_videos_1']:.1f} | "
              f"{r['train_shards_1']:.1f} | {r['train_shards_1'] / r['train_videos_1']:.1f}x | "
              f"{r['train_videos_all']:.1f} | {r['train_shards_all']:.1f} | "
              f"{r['train_shards_all'] / r['train_videos_all']:.1f}x | {r['eval_videos']:.1f} | "
              f"{r['eval_shards']:.1f} | {r['eval_shards'] / r['eval_videos']:.1f}x |")
    if args.service:
        print("\n| videos | train clips/s from shards: local, default pool | tf.data service, 1 worker | 2 workers |")
        print("|---|---:|---:|---:|")
        for r in rows:
            local = r["train_shards_all"]
            print(f"| {r['format']} | {local:.1f} | {r['service'][1]:.1f} ({r['service'][1] / local:.2f}x) | "
                  f"{r['service'][2]:.1f} ({r['service'][2] / local:.2f}x) |")
    print("\n| JPEG quality | shard MB per minute of video | max abs diff (normalized test clips) | mean abs diff |")
    print("|---:|---:|---:|---:|")
    for quality, mb, worst, mean in quality_rows:
        print(f"| {quality} | {mb:.1f} | {worst:.3f} | {mean:.4f} |")


if __name__ == "__main__":
    main()
