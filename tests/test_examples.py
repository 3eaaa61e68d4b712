"""The README's two example runs, shortened: `make demo` (examples/demo.py) and the offline fine-tuning example."""

import json
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # whole example programs in subprocesses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CI": "1"}


def _run(script, *args):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), *map(str, args)],
                            capture_output=True, text=True, env=ENV, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_make_demo_shortened(tmp_path):
    makefile = open(os.path.join(ROOT, "Makefile")).read()
    assert "\tdemo: " not in makefile and "\n\t$(PY) examples/demo.py $(DEMO_ARGS)\n" in makefile
    out = tmp_path / "demo"
    stdout = _run("demo.py", "--out", out, "--epochs", "1", "--classes", "2", "--videos-per-class", "6")
    for step in range(1, 6):
        assert f"[{step}/5]" in stdout
    rows = [line for line in stdout.splitlines() if line.startswith("| r2plus1d |") or line.startswith("| fr2d |")]
    assert len(rows) == 2
    for arch in ("r2plus1d", "fr2d"):
        report = json.loads((out / f"run_{arch}" / "eval" / "report.json").read_text())
        row = next(r for r in rows if r.startswith(f"| {arch} |")).split("|")
        assert float(row[-2]) == pytest.approx(100 * report["video_top1"], abs=0.05)  # the printed Video@1
        assert (out / f"run_{arch}" / "model.keras").is_file()
    assert (out / "serving" / "r2plus1d" / "1" / "saved_model.pb").is_file() and (out / "r2plus1d.tflite").is_file()
    # The same test videos through the .keras file, the SavedModel and the TFLite file: the same top class.
    answers = re.findall(r"^\s+\S+\.avi: (keras \S+ .*)$", stdout, re.MULTILINE)
    assert len(answers) == 3
    for line in answers:
        classes = re.findall(r"(keras|saved_model|tflite) (\S+) ([\d.]+)%", line)
        assert [kind for kind, _, _ in classes] == ["keras", "saved_model", "tflite"], line
        assert len({name for _, name, _ in classes}) == 1, line
        assert max(float(s) for *_, s in classes) - min(float(s) for *_, s in classes) < 0.2, line
    assert re.search(r"demo finished in \d+ s", stdout)


def test_finetune_example_synthetic_shortened(tmp_path):
    out = tmp_path / "ft"
    stdout = _run("finetune_ucf101.py", "--synthetic", "--source-epochs", "1", "--epochs", "2",
                  "--freeze-backbone-epochs", "1", "--videos-per-class", "6", "--batch-size", "4", "--out", out)
    run = json.loads((out / "finetune_run" / "run.json").read_text())
    source = str(out / "source_run")
    assert run["status"] == "done" and run["config"]["init"] == source
    assert run["init"]["source_classes"] == 4 and not run["init"]["kept_head"]  # 2 new classes: a new head
    assert [(p["end_epoch"], p["trainable_from"]) for p in run["phases"]] == [(1, "head"), (2, None)]
    assert run["class_names"] == ["MoveLeft", "MoveRight"]
    report = json.loads((out / "finetune_run" / "eval" / "report.json").read_text())
    assert f"[evaluate] Video@1 {100 * report['video_top1']:.1f}%" in stdout
    assert (out / "serving" / "1" / "saved_model.pb").is_file()
    assert re.search(r"finished in \d+ s", stdout)
