"""Peak memory of predict / evaluate / extract / training on large videos (issue: memory follows the clip).

Writes three videos with Debian's ffmpeg (a 3-s 1080p, a 3-s 4K and a
10-minute 720p H.264 clip of `testsrc2`), a model of the paper's size
(R(2+1)D-18, 400 classes, untrained) and a small one, then runs each command
in a fresh process and reports its peak RSS (VmHWM, read in that process).

    python tools/bench_memory.py --work /tmp/bench_memory [--only predict,evaluate] [--base /path/to/old/checkout]

`--base` runs the same commands with another checkout's package first on
`PYTHONPATH` (the "before" column). Results go to stdout as a Markdown table.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

VIDEOS = {  # name: (size, frames at 30 fps)
    "1080p_3s": ("1920x1080", 90),
    "4k_3s": ("3840x2160", 90),
    "720p_10min": ("1280x720", 18000),
}
MEASURE = """
import sys
from keras_r21d.cli import main
code = main(sys.argv[1:])
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print("PEAK_KB", int(status["VmHWM"].split()[0]), "EXIT", code)
"""


def make_video(path, size, frames):
    if os.path.exists(path):
        return path
    started = time.time()
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30",
                    "-frames:v", str(frames), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                    path + ".tmp.mp4"], check=True)
    os.replace(path + ".tmp.mp4", path)
    print(f"wrote {path} ({size}, {frames} frames) in {time.time() - started:.0f} s", file=sys.stderr)
    return path


def make_models(work):
    paths = {"paper": os.path.join(work, "r2plus1d_18.keras"), "small": os.path.join(work, "small.keras")}
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    script = f"""
import keras_r21d
keras_r21d.R2Plus1D(18, classes=400, input_shape=(None, None, None, 3)).save({paths['paper']!r})
keras_r21d.R2Plus1D(10, classes=2, width_multiplier=0.25, input_shape=(None, None, None, 3)).save({paths['small']!r})
"""
    subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return paths


def dataset_of(work, name, video):
    """A folder: dataset (train/ and test/, classes a and b) whose every video is `video`."""
    root = os.path.join(work, f"data_{name}")
    for subset in ("train", "test"):
        for cls in ("a", "b"):
            target = os.path.join(root, subset, cls, "v.mp4")
            if not os.path.exists(target):
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.symlink(video, target)
    return f"folder:{root}"


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def peak_mb(args, checkout, work):
    """Runs `keras-r21d ARGS` with `checkout`'s package, from `work` (so that the current folder adds no other)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CI": "1",
           "PYTHONPATH": checkout + os.pathsep + os.environ.get("PYTHONPATH", "")}
    started = time.time()
    result = subprocess.run([sys.executable, "-c", MEASURE, *args], capture_output=True, text=True, env=env, cwd=work)
    seconds = time.time() - started
    if "PEAK_KB" not in result.stdout:
        tail = (result.stderr.strip().splitlines() or ["?"])[-1]
        return None, seconds, f"failed: {tail[:160]}"
    words = result.stdout.rsplit("PEAK_KB", 1)[1].split()
    lines = [line for line in result.stderr.strip().splitlines() if "keras-r21d" in line] or [""]
    note = "" if words[2] == "0" else f"exit {words[2]}: {lines[-1][:200]}"
    return int(words[0]) / 1024, seconds, note


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="/tmp/bench_memory")
    parser.add_argument("--only", default="predict,evaluate,extract,train")
    parser.add_argument("--videos", default=",".join(VIDEOS))
    parser.add_argument("--base", help="another checkout to measure first (PYTHONPATH)")
    args = parser.parse_args(argv)
    if not shutil.which("ffmpeg"):
        sys.exit("needs ffmpeg")
    os.makedirs(args.work, exist_ok=True)
    models = make_models(args.work)
    commands = args.only.split(",")
    rows = []
    for name in args.videos.split(","):
        size, frames = VIDEOS[name]
        video = make_video(os.path.join(args.work, f"{name}.mp4"), size, frames)
        spec = dataset_of(args.work, name, video)
        for command in commands:
            row = {"video": name, "command": command}
            for label, checkout in (("before", args.base), ("after", REPO)):
                if not checkout:
                    continue
                out = os.path.join(args.work, "out", f"{name}-{command}-{label}")
                shutil.rmtree(out, ignore_errors=True)
                jobs = {
                    "predict": ["predict", "--model", models["paper"], video],
                    "evaluate": ["evaluate", "--model", models["paper"], "--data", spec, "--batch-size", "2"],
                    "extract": ["extract", "--model", models["paper"], "--data", spec, "--subset", "test",
                                "--out", out],
                    "train": ["train", "--data", spec, "--out", out, "--init", models["small"], "--epochs", "1",
                              "--batch-size", "2", "--test-clips", "2", "--no-tensorboard"],
                }
                mb, seconds, note = peak_mb(jobs[command], checkout, args.work)
                row[label] = {"peak_mb": None if mb is None else round(mb), "seconds": round(seconds, 1),
                              "note": note}
                print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    print("| video | command | " + ("peak RSS before (MB) | " if args.base else "") + "peak RSS (MB) | s | note |")
    print("|---|---|" + ("---:|" if args.base else "") + "---:|---:|---|")
    for row in rows:
        before = row.get("before")
        cells = [row["video"], row["command"]]
        if args.base:
            cells.append(str(before["peak_mb"]) if before["peak_mb"] is not None else before["note"][:60])
        after = row["after"]
        cells += [str(after["peak_mb"]), str(after["seconds"]), after["note"][:80]]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
