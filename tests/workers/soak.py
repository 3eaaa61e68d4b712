"""Soak worker: `predict` over many videos, or export/load cycles, in one process; prints RSS as JSON lines.

    python tests/workers/soak.py predict MODEL.keras VIDEO_DIR
    python tests/workers/soak.py export MODEL.keras OUT_DIR CYCLES VIDEO
"""

import gc
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def report(step, **extra):
    print(json.dumps({"step": step, "rss_mb": round(rss_mb(), 1), **extra}), flush=True)


def soak_predict(model, folder):
    from keras_r21d.inference import load_predictor

    predictor = load_predictor(model, clips=2)
    videos = sorted(os.path.join(folder, name) for name in os.listdir(folder))
    for number, video in enumerate(videos, 1):
        answer = predictor.classify(video, top=1)
        assert answer["top"][0]["score"] > 0
        if number % 100 == 0:
            gc.collect()
            report(number)


def soak_export(model_path, out, cycles, video):
    import shutil

    from keras_r21d.data import ClipConfig
    from keras_r21d.export import export_saved_model
    from keras_r21d.inference import load_predictor
    from keras_r21d.model_files import load_keras_model

    model = load_keras_model(model_path)
    config = ClipConfig(clip_len=4, resize=(32, 43), crop=32, test_clips=2)
    for cycle in range(1, cycles + 1):
        target = os.path.join(out, "serving")
        export_saved_model(model, target, version=1, class_names=["a", "b"], clip_config=config, overwrite=True,
                           check=False)  # the load and classify below are the check
        predictor = load_predictor(target)
        assert predictor.classify(video, top=1)["top"][0]["class"] in ("a", "b")
        del predictor
        shutil.rmtree(target)
        gc.collect()
        report(cycle)


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "predict":
        soak_predict(*args)
    else:
        soak_export(args[0], args[1], int(args[2]), args[3])
