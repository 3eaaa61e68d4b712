"""A timeline of a long video: `python tools/bench_timeline.py [MINUTES] [MODEL] [--short MINUTES]`.

Writes a synthetic 320x240, 25 fps MPEG-4 video of MINUTES (default 10)
minutes, then runs `keras_r21d.timeline.video_timeline` over it with a
window every second: MODEL (default `r2plus1d_18`, 16x112x112 clips,
random weights, BatchNorm folded as `predict` runs it) through the `.keras`
predictor. Each length runs in a fresh process, first the `--short` video
(default 1 minute), so that the peak resident memory (`VmHWM`) of the two
can be compared: streamed frames mean the long video needs no more memory.
Prints seconds, windows per second and peak memory of each.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def write_video(path, minutes, fps=25):
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    texture = cv2.resize(rng.integers(0, 256, (60, 200, 3), dtype=np.uint8), (800, 240))
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (320, 240))
    for i in range(int(minutes * 60 * fps)):
        x = (i * 2) % 480
        writer.write(np.ascontiguousarray(texture[:, x:x + 320]))
    writer.release()


def child(video, model_path):
    sys.path.insert(0, ROOT)
    from keras_r21d.inference import load_predictor
    from keras_r21d.timeline import video_timeline

    predictor = load_predictor(model_path)
    started = time.perf_counter()
    timeline = video_timeline(predictor, video, window_stride=1.0)
    seconds = time.perf_counter() - started
    peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print(json.dumps({"windows": len(timeline.starts), "duration": timeline.duration, "seconds": seconds,
                      "peak_mb": peak / 1024}))


def main(argv):
    if argv and argv[0] == "--child":
        return child(*argv[1:])
    minutes = float(argv[0]) if argv and not argv[0].startswith("-") else 10.0
    model_name = argv[1] if len(argv) > 1 and not argv[1].startswith("-") else "r2plus1d_18"
    short = float(argv[argv.index("--short") + 1]) if "--short" in argv else 1.0
    sys.path.insert(0, ROOT)
    with tempfile.TemporaryDirectory() as folder:
        import keras_r21d

        model_path = os.path.join(folder, "model.keras")
        keras_r21d.get_model(model_name, input_shape=(16, 112, 112, 3), classes=400).save(model_path)
        for length in (short, minutes):
            video = os.path.join(folder, f"{length:g}min.mp4")
            started = time.perf_counter()
            write_video(video, length)
            written = time.perf_counter() - started
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
            result = subprocess.run([sys.executable, __file__, "--child", video, model_path], capture_output=True,
                                    text=True, env=env)
            if result.returncode:
                raise SystemExit(result.stderr[-3000:])
            answer = json.loads(result.stdout.strip().splitlines()[-1])
            print(f"{length:g}-minute video ({os.path.getsize(video) / 1e6:.0f} MB, written in {written:.0f} s): "
                  f"{answer['windows']} windows in {answer['seconds']:.0f} s "
                  f"({answer['windows'] / answer['seconds']:.2f} windows/s, "
                  f"{answer['duration'] / answer['seconds']:.2f}x real time), peak memory {answer['peak_mb']:.0f} MB")


if __name__ == "__main__":
    main(sys.argv[1:])
