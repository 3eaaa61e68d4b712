"""Frame shards: `prepare` decodes a dataset once; `shards:DIR` reads clips with TensorFlow ops only."""

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import videos

from keras_r21d.data import BadVideoLog, ClipConfig, eval_dataset, load_dataset, sampling, train_dataset
from keras_r21d.data import prepare as prepare_module
from keras_r21d.data.prepare import PrepareError, prepare
from keras_r21d.data.service import python_ops
from keras_r21d.data.shards import ShardFormatError
from keras_r21d.data.transforms import MEAN, STD

SIZE = (48, 64)  # stored at the test videos' own size: the graph's resize has nothing left to do, as with 128x171
CONFIG = ClipConfig(clip_len=6, resize=SIZE, crop=32, test_clips=3, flip=False)
RAMP_STEP = 10


def _ramp(n):
    """Flat frames whose brightness names the frame: frame i is 20 + 10 i."""
    return np.repeat((20 + RAMP_STEP * np.arange(n, dtype=np.uint8))[:, None, None, None], 3, axis=3) * np.ones(
        (1, *SIZE, 1), np.uint8)


def _source(root):
    """A folder: dataset with train/ and test/: 5 good training videos and a corrupt one; a ramp and a short
    video for testing."""
    for i in range(3):
        videos.write_opencv(root / "train" / "a" / f"a{i}.avi", videos.moving_frames(24 + 3 * i, seed=i))
    for i in range(2):
        videos.write_opencv(root / "train" / "b" / f"b{i}.avi", videos.moving_frames(26 + 2 * i, seed=10 + i)[::-1])
    (root / "train" / "b" / "broken.avi").write_bytes(b"not a video at all")
    videos.write_opencv(root / "test" / "a" / "ramp.avi", _ramp(24))
    videos.write_opencv(root / "test" / "b" / "short.avi", _ramp(4))
    return f"folder:{root}"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("source")
    spec = _source(root)
    out = tmp_path_factory.mktemp("shards") / "out"
    reported = []
    manifest = prepare(spec, str(out), size=SIZE, videos_per_shard=2, workers=2,
                       report=lambda path, reason: reported.append((path, reason)))
    return spec, str(out), manifest, reported


def _sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_prepare_accounts_for_every_video(prepared):
    spec, out, manifest, reported = prepared
    train, test = manifest["splits"]["train"], manifest["splits"]["test"]
    assert (train["videos_in"], train["written"], train["failed"]) == (6, 5, 1)
    assert (test["videos_in"], test["written"], test["failed"]) == (2, 2, 0)
    [failed] = manifest["failed"]
    assert failed["path"].endswith("broken.avi") and "cannot open" in failed["reason"]
    assert [(os.path.basename(p), r) for p, r in reported] == [("broken.avi", failed["reason"])]
    assert manifest["classes"] == ["a", "b"]
    assert manifest["preprocessing"]["size"] == list(SIZE) and manifest["preprocessing"]["quality"] == 90
    assert [s["file"] for s in train["shards"]] == [f"train-0000{i}-of-00003.tfrecord" for i in range(3)]
    assert sum(s["videos"] for s in train["shards"]) == 5
    for shard in train["shards"] + test["shards"]:
        path = os.path.join(out, shard["file"])
        assert _sha256(path) == shard["sha256"] and os.path.getsize(path) == shard["bytes"]
    assert not os.path.exists(os.path.join(out, ".partial"))
    for subset in ("train", "test"):
        source, shards = load_dataset(spec, subset), load_dataset(f"shards:{out}", subset)
        kept = [(p, label) for p, label in zip(source.paths, source.labels) if not p.endswith("broken.avi")]
        assert list(zip(shards.paths, shards.labels)) == kept
        assert shards.class_names == source.class_names


@pytest.mark.parametrize("crops", [1, 3])
def test_shard_clips_match_the_video_pipeline(prepared, crops):
    """The same test clips (frames, labels, videos) as decoding the videos, to JPEG's error; with 3 crops, the
    same views in the same order."""
    spec, out, _, _ = prepared
    config = ClipConfig(clip_len=6, resize=SIZE, crop=32, test_clips=3, test_crops=crops)
    source, shards = load_dataset(spec, "train"), load_dataset(f"shards:{out}", "train")
    by_video = {}
    for name, dataset in (("videos", source), ("shards", shards)):
        for clips, labels, ids in eval_dataset(dataset, 4, config, bad_videos=BadVideoLog()):
            for clip, label, video in zip(clips.numpy(), labels.numpy(), ids.numpy()):
                by_video.setdefault(dataset.paths[video], {}).setdefault(name, []).append((label, clip))
    assert sorted(by_video) == sorted(p for p in source.paths if not p.endswith("broken.avi"))
    worst = 0.0
    for pair in by_video.values():
        assert len(pair["videos"]) == len(pair["shards"]) == 3 * crops
        assert [label for label, _ in pair["videos"]] == [label for label, _ in pair["shards"]]
        a = np.stack([clip for _, clip in pair["videos"]])
        b = np.stack([clip for _, clip in pair["shards"]])
        worst = max(worst, float(np.abs(a - b).mean()))
    # JPEG at quality 90 on these sharp synthetic frames: about 1 grey level on average (0.02 normalized).
    assert worst < 0.06, worst


def _frame_numbers(clips):
    """The ramp's frame number of every frame of normalized clips (-1: a black frame)."""
    grey = clips[..., 0].mean(axis=(-1, -2)) * STD[0] + MEAN[0]
    return np.where(grey < 8 / 255, -1, np.round((grey * 255 - 20) / RAMP_STEP)).astype(int)


def test_sampling_is_the_video_pipelines(prepared):
    _, out, _, _ = prepared
    test = load_dataset(f"shards:{out}", "test")
    ramp = test.paths.index(next(p for p in test.paths if p.endswith("ramp.avi")))
    clips = [c for c, _, v in _unbatched(eval_dataset(test, 8, CONFIG)) if v == ramp]
    starts = sampling.uniform_clip_starts(24, 6, 3).numpy()
    assert _frame_numbers(np.stack(clips)).tolist() == [list(range(s, s + 6)) for s in starts]
    # target_fps 12.5 on a 25 fps video: stride 2, as `sampling.stride_for` says.
    halved = ClipConfig(**{**CONFIG.__dict__, "target_fps": 12.5, "test_clips": 1})
    [clip] = [c for c, _, v in _unbatched(eval_dataset(test, 8, halved)) if v == ramp]
    first = (24 - sampling.clip_span(6, 2)) // 2
    assert _frame_numbers(clip).tolist() == list(range(first, first + 12, 2))
    # Training: a random start, consecutive frames, the same window in every epoch's range.
    only_ramp = test.subset([ramp])
    starts = set()
    for clips, _ in train_dataset(only_ramp, 1, CONFIG, seed=3, repeat=True).take(12):
        numbers = _frame_numbers(clips.numpy()[0])
        assert numbers.tolist() == list(range(numbers[0], numbers[0] + 6)) and 0 <= numbers[0] <= 18
        starts.add(int(numbers[0]))
    assert len(starts) > 3  # temporal jitter


def _unbatched(ds):
    for clips, labels, ids in ds:
        yield from zip(clips.numpy(), labels.numpy(), ids.numpy())


def test_short_video_policies(prepared):
    _, out, _, _ = prepared
    test = load_dataset(f"shards:{out}", "test")
    short = test.paths.index(next(p for p in test.paths if p.endswith("short.avi")))
    padded = ClipConfig(**{**CONFIG.__dict__, "short_policy": "pad", "test_clips": 1})
    [clip] = [c for c, _, v in _unbatched(eval_dataset(test, 8, padded)) if v == short]
    assert _frame_numbers(clip).tolist() == [0, 1, 2, 3, -1, -1]
    looped = ClipConfig(**{**CONFIG.__dict__, "test_clips": 1})
    [clip] = [c for c, _, v in _unbatched(eval_dataset(test, 8, looped)) if v == short]
    assert _frame_numbers(clip).tolist() == [0, 1, 2, 3, 0, 1]
    log = BadVideoLog()
    skipping = ClipConfig(**{**CONFIG.__dict__, "short_policy": "skip"})
    ids = {int(v) for _, _, v in _unbatched(eval_dataset(test, 8, skipping, bad_videos=log))}
    assert short not in ids and ids
    assert "too short: 4 frames, a clip needs 6" in log.failures[test.paths[short]]


def test_the_shard_pipelines_run_no_python(prepared):
    """tf.data service runs only graph ops: the shard pipelines hold no py_function (the video pipeline does)."""
    spec, out, _, _ = prepared
    shards = load_dataset(f"shards:{out}", "train")
    assert python_ops(train_dataset(shards, 2, CONFIG, seed=0, repeat=True)) == []
    assert python_ops(eval_dataset(shards, 2, CONFIG)) == []
    assert python_ops(eval_dataset(load_dataset(spec, "train"), 2, CONFIG)) == ["EagerPyFunc"]


def test_damaged_shards_are_refused(prepared, tmp_path):
    _, out, manifest, _ = prepared
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", out, str(copy)], check=True)
    first = copy / manifest["splits"]["train"]["shards"][0]["file"]
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0xFF
    first.write_bytes(bytes(data))
    result = subprocess.run([sys.executable, "-m", "keras_r21d", "check-videos", f"shards:{copy}", "--subset",
                             "train", "--frames", "6", "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    reasons = [v["reason"] for v in report["videos"] if not v["ok"]]
    assert sum("SHA-256 differs" in r and first.name in r for r in reasons) == 2
    assert sum("broken.avi" in v["path"] for v in report["videos"] if not v["ok"]) == 1
    first.write_bytes(bytes(data[:-10]))
    with pytest.raises(ShardFormatError, match=f"{first.name}: .* bytes, the manifest says"):
        load_dataset(f"shards:{copy}", "train")
    os.remove(copy / "manifest.json")
    with pytest.raises(ShardFormatError, match="unfinished keras-r21d prepare run"):
        load_dataset(f"shards:{copy}", "test")
    with pytest.raises(ValueError, match="a shards: spec takes none"):
        load_dataset(f"shards:{copy}:split=2", "test")


def test_out_folder_mistakes(prepared, tmp_path):
    spec, out, _, _ = prepared
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(PrepareError, match="not empty and was not written by keras-r21d prepare"):
        prepare(spec, str(foreign), size=SIZE)
    assert os.listdir(foreign) == ["notes.txt"]
    with pytest.raises(PrepareError, match="quality=90 there, 80 now"):
        prepare(spec, out, size=SIZE, quality=80, videos_per_shard=2)
    source = spec.split(":", 1)[1]
    extra = os.path.join(source, "test", "a", "extra.avi")
    os.link(os.path.join(source, "test", "a", "ramp.avi"), extra)
    try:
        with pytest.raises(PrepareError, match="videos=.*test.*3 videos"):
            prepare(spec, out, size=SIZE, videos_per_shard=2)
    finally:
        os.remove(extra)
    (tmp_path / "file").write_text("")
    with pytest.raises(PrepareError, match="is a file"):
        prepare(spec, str(tmp_path / "file"), size=SIZE)

    # A folder this user may not write (simulated: the tests run as root here, whom permissions do not stop).
    denied = tmp_path / "read_only"
    real_makedirs = os.makedirs

    def makedirs(path, *args, **kwargs):
        if str(path).startswith(str(denied)):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_makedirs(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "makedirs", makedirs)
        with pytest.raises(PrepareError, match=f"cannot write to --out {denied}: Permission denied"):
            prepare(spec, str(denied), size=SIZE)
    assert not denied.exists()


def test_disk_full_stops_cleanly_and_resumes(prepared, tmp_path, monkeypatch):
    spec, _, reference, _ = prepared
    out = tmp_path / "out"
    calls = []
    real = prepare_module._example

    def full_on_the_fourth(*args):
        calls.append(1)
        if len(calls) == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args)

    monkeypatch.setattr(prepare_module, "_example", full_on_the_fourth)
    with pytest.raises(PrepareError, match=r"disk full while writing .*train-00001-of-00003.tfrecord.*1 finished "
                                           r"shard\(s\) are kept; free space and rerun the same command"):
        prepare(spec, str(out), size=SIZE, videos_per_shard=2, workers=1)
    assert sorted(os.listdir(out)) == [".prepare.json", "train-00000-of-00003.tfrecord",
                                       "train-00000-of-00003.tfrecord.json"]
    kept = os.stat(out / "train-00000-of-00003.tfrecord")
    monkeypatch.setattr(prepare_module, "_example", real)
    manifest = prepare(spec, str(out), size=SIZE, videos_per_shard=2, workers=1)
    assert os.stat(out / "train-00000-of-00003.tfrecord").st_ino == kept.st_ino
    assert [s["sha256"] for s in manifest["splits"]["train"]["shards"]] == [
        s["sha256"] for s in reference["splits"]["train"]["shards"]]


def test_prepare_killed_resumes(prepared, tmp_path):
    """SIGKILL mid-run: no torn shard reads as valid, and the same command resumes, keeping finished shards."""
    spec, _, reference, _ = prepared
    out = tmp_path / "out"
    command = [sys.executable, "-m", "keras_r21d", "prepare", spec, "--out", str(out), "--size", "48x64",
               "--videos-per-shard", "1", "--workers", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "train-00001-of-00006.tfrecord.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, "prepare ended before it could be killed"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    with pytest.raises(ShardFormatError, match="unfinished"):
        load_dataset(f"shards:{out}", "train")
    finished = {name: os.stat(out / name).st_ino for name in os.listdir(out) if name.endswith(".tfrecord")
                and (out / f"{name}.json").exists()}
    assert len(finished) >= 2
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr  # one video could not be written: reported, exit 1
    assert "skipped" in result.stderr and "broken.avi" in result.stderr
    assert "train: 6 videos in, 5 written, 1 failed" in result.stdout
    for name, inode in finished.items():
        assert os.stat(out / name).st_ino == inode
    assert load_dataset(f"shards:{out}", "train").paths == load_dataset(f"shards:{prepared[1]}", "train").paths
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["train"]["frames"] == reference["splits"]["train"]["frames"]


def test_train_evaluate_extract_from_shards(prepared, tmp_path):
    """The commands take shards:DIR: a run trains on them, reports prepare's failure, and evaluates and extracts
    without the source videos."""
    _, out, _, _ = prepared
    run = tmp_path / "run"
    cli = [sys.executable, "-m", "keras_r21d"]
    result = subprocess.run(cli + ["train", "--data", f"shards:{out}", "--out", str(run), "--depth", "10",
                                   "--frames", "6", "--size", "32", "--batch-size", "2",
                                   "--epochs", "1", "--width-multiplier", "0.25", "--test-clips", "2",
                                   "--no-tensorboard"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run / "run.json").read_text())
    assert record["split"]["kind"] == "shards" and record["train_videos"] == 5
    [(path, reason)] = record["skipped_videos"].items()
    assert path.endswith("broken.avi") and reason.startswith("not in the shards: cannot open")
    result = subprocess.run(cli + ["evaluate", "--model", str(run / "model.keras"), "--data", f"shards:{out}",
                                   "--clips", "3", "--json"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert (report["videos"], report["clips"]) == (2, 6)
    result = subprocess.run(cli + ["extract", "--model", str(run / "model.keras"), "--data", f"shards:{out}",
                                   "--out", str(tmp_path / "features"), "--clips", "2"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "7 feature files" in result.stdout and "skipped" in result.stderr
    features = np.load(tmp_path / "features" / "test" / "a" / "ramp.avi.npy")
    assert features.shape[0] == 2 and np.isfinite(features).all()


def test_tune_and_study_from_shards(prepared, tmp_path):
    """`tune` and the study take shards:DIR as any spec: their trials train on the shard pipeline (the clip
    length of each trial) and evaluate on the shards' test videos."""
    from keras_r21d.study import run_study
    from keras_r21d.tuning import SearchSpace, tune

    _, out, _, _ = prepared
    space = SearchSpace(variants=("r2plus1d",), depths=(10,), frames=(4,), width_multipliers=(0.125,),
                        lr=(0.01, 0.01), weight_decay=(1e-4, 1e-4), warmup_epochs=(0,))
    rows = tune(f"shards:{out}", str(tmp_path / "search"), space, max_trials=1, epochs=1, seed=0, size=32,
                batch_size=2, test_clips=2, flip=False, resize_to=SIZE)
    assert [row["status"] for row in rows] == ["COMPLETED"]
    record = json.loads((tmp_path / "search" / "trials" / f"trial_{rows[0]['trial_id']}" / "trial.json").read_text())
    assert record["train_clip_shape"] == [4, 32, 32, 3] and 0.0 <= record["video_top1"] <= 1.0
    study = run_study(out=str(tmp_path / "study"), data=f"shards:{out}", variants=("r2plus1d",), frames=(4,),
                      seeds=(0,), curve_depths=(10,), clip_lengths=(4,), epochs=1, batch_size=2, size=32,
                      resize_to=SIZE, width_multiplier=0.125, test_clips=2, log=lambda line: None)
    runs = study["runs"]
    assert sorted(run["arch"] for run in runs) == ["r2plus1d", "r3d"]  # the table's run and the depth curve's R3D
    for run in runs:
        record = json.loads((tmp_path / "study" / run["run_dir"] / "run.json").read_text())
        assert record["split"]["kind"] == "shards" and record["train_videos"] == 5
