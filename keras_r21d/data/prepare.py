"""`prepare`: decode a dataset once into frame shards (`keras-r21d prepare SPEC --out DIR`).

Every video of both splits is decoded in worker processes
(`IsolatedDecoder`, so a file that crashes or hangs the native decoder costs
that file), its frames resized to the pre-crop size and JPEG-encoded, and
written as one `tf.train.Example` into the split's shards (`data/shards.py`
describes the folder). Each shard is written under a temporary name, fsynced
and renamed, then its `.json` sidecar; the manifest comes last. Rerunning
the same command resumes: finished shards whose hash checks are kept, the
rest are written again. Nothing is lost silently: videos in = videos written
+ videos reported with their reason (`manifest.json`'s `failed`).
"""

import collections
import concurrent.futures
import datetime
import errno
import json
import logging
import os
import shutil
import threading

from keras_r21d._files import atomic_write_text, sha256_of
from keras_r21d.data import shards
from keras_r21d.data.datasets import load_dataset
from keras_r21d.data.defaults import RESIZE
from keras_r21d.data.isolated import IsolatedDecoder
from keras_r21d.data.video import MAX_DECODE_PIXELS, read_jpeg_frames
from keras_r21d.version import __version__

logger = logging.getLogger("keras_r21d.data")

# JPEG quality of the stored frames: chosen by measurement (BENCHMARKS.md, "Frame shards").
QUALITY = 90
VIDEOS_PER_SHARD = 64


class PrepareError(ValueError):
    """`prepare` cannot go on (a foreign or unwritable `--out`, other settings than the folder's, a full disk)."""


def _settings(spec, size, fps, quality, videos_per_shard):
    return {"spec": str(spec), "size": size if isinstance(size, int) else list(size), "fps": fps,
            "quality": int(quality), "videos_per_shard": int(videos_per_shard)}


def _check_out(out, settings):
    """Creates `out` or checks that it is this command's own earlier output; clears the partial files."""
    state = os.path.join(out, shards.SETTINGS)
    if os.path.exists(out) and not os.path.isdir(out):
        raise PrepareError(f"--out {out} is a file, not a folder")
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.isfile(state):
            raise PrepareError(f"--out {out} is not empty and was not written by keras-r21d prepare: choose a new "
                               "or empty folder (nothing in it was touched)")
        try:
            with open(state, encoding="utf-8") as f:
                previous = json.load(f)["settings"]
        except (OSError, ValueError, KeyError) as error:
            raise PrepareError(f"{state}: unreadable ({error}): choose a new --out folder") from None
        changed = [f"{key}={previous.get(key)!r} there, {value!r} now" for key, value in settings.items()
                   if previous.get(key) != value]
        if changed:
            raise PrepareError(f"--out {out} was prepared with other settings ({'; '.join(changed)}): rerun with "
                               "its settings to resume it, or choose a new --out folder")
    try:
        os.makedirs(out, exist_ok=True)
        partial = os.path.join(out, shards.PARTIAL)
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)
        if not os.path.isfile(state):
            _write_json(state, {"format": shards.FORMAT, "settings": settings})
    except OSError as error:
        raise PrepareError(f"cannot write to --out {out}: {error.strerror or error}") from None
    return partial


def _write_json(path, value):
    atomic_write_text(path, json.dumps(value, indent=1))


def _finished(path):
    """The sidecar of a finished shard whose file is intact, else `None` (the shard is written again)."""
    try:
        with open(path + ".json", encoding="utf-8") as f:
            sidecar = json.load(f)
        if os.path.getsize(path) == sidecar["bytes"] and sha256_of(path) == sidecar["sha256"]:
            return sidecar
        logger.warning("%s does not match its sidecar's hash: writing it again", path)
    except (OSError, ValueError, KeyError):
        pass
    return None


def _example(frames, video, class_name, index, answer):
    from keras_r21d._tensorflow import tf

    def ints(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))

    def strings(values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    feature = {
        "frames": strings(frames),
        "label": ints(video["label"]),
        "class": strings([class_name.encode("utf-8")]),
        "index": ints(index),
        "video_id": strings([video["video_id"].encode("utf-8", "surrogateescape")]),
        "source": strings([video["path"].encode("utf-8", "surrogateescape")]),
        "fps": tf.train.Feature(float_list=tf.train.FloatList(value=[answer["fps"]])),
        "num_frames": ints(len(frames)),
        "height": ints(answer["height"]),
        "width": ints(answer["width"]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


class _Decoders:
    """One `IsolatedDecoder` per thread of the pool; `close()` ends them all."""

    def __init__(self, timeout, max_pixels):
        self.timeout, self.max_pixels = timeout, max_pixels
        self.local = threading.local()
        self.all = []
        self.lock = threading.Lock()

    def get(self):
        decoder = getattr(self.local, "decoder", None)
        if decoder is None:
            decoder = self.local.decoder = IsolatedDecoder(self.timeout, self.max_pixels)
            with self.lock:
                self.all.append(decoder)
        return decoder

    def close(self):
        for decoder in self.all:
            decoder.close()


def _jobs(dataset, split, videos_per_shard, out):
    """The split's shards as `(file, [(index, video), ...])`, in order."""
    count = max(1, -(-len(dataset.paths) // videos_per_shard))
    common = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in dataset.paths]) if dataset.paths else ""
    videos = [(index, {"path": path, "label": int(label), "video_id": os.path.relpath(os.path.abspath(path), common)})
              for index, (path, label) in enumerate(zip(dataset.paths, dataset.labels))]
    return [(os.path.join(out, shards.shard_name(split, n, count)),
             videos[n * videos_per_shard:(n + 1) * videos_per_shard]) for n in range(count)]


def prepare(spec, out, size=RESIZE, fps=None, quality=QUALITY, workers=None, videos_per_shard=VIDEOS_PER_SHARD,
            timeout=600.0, max_pixels=MAX_DECODE_PIXELS, progress=None, report=None):
    """Decodes every video of a dataset spec once into frame shards in `out`.

    Args:
        spec: any dataset spec (`ucf101:ROOT`, `folder:ROOT`, `csv:FILE`, ...).
            Both splits are written, as the spec splits them.
        out: the shard folder: new, empty, or this command's earlier output
            (resumed).
        size: `(height, width)` frames are stored at, or an int short side
            (default the paper's pre-crop 128x171).
        fps: resample every video to this frame rate (default: keep all
            frames at the source rate).
        quality: JPEG quality (1..100).
        workers: decoding processes (default: the cores).
        videos_per_shard: videos per TFRecord file.
        timeout: seconds one video may take in its worker.
        max_pixels: a video's frames x height x width above which it is
            refused before decoding (`None`: no limit).
        progress: `f(done, total)` after each video.
        report: `f(path, reason)` for each video that could not be written.

    Returns:
        The manifest (also written to `out/manifest.json`).

    Raises:
        PrepareError: a foreign or unwritable `out`, other settings than the
            folder was prepared with, a full disk (finished shards are kept:
            rerun the same command to resume).
    """
    from keras_r21d._tensorflow import tf

    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100. Received: {quality!r}")
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive. Received: {fps!r}")
    if int(videos_per_shard) < 1:
        raise ValueError(f"videos_per_shard must be a positive integer. Received: {videos_per_shard!r}")
    datasets = {split: load_dataset(spec, split) for split in shards.SPLITS}
    classes = list(datasets["train"].class_names)
    if list(datasets["test"].class_names) != classes:
        raise ValueError(f"{spec}: the train and test splits list different classes")
    settings = _settings(spec, size, fps, quality, videos_per_shard)
    # The video lists too: a shard's videos are its place in them, so a resumed run must see the same lists.
    settings["videos"] = {split: datasets[split].fingerprint() for split in shards.SPLITS}
    partial = _check_out(out, settings)
    workers = workers or os.cpu_count() or 1
    jobs = {split: _jobs(datasets[split], split, int(videos_per_shard), out) for split in shards.SPLITS}
    total = sum(len(d.paths) for d in datasets.values())
    done = collections.Counter()
    sidecars = {}
    todo = []
    for split in shards.SPLITS:
        for path, videos in jobs[split]:
            sidecar = _finished(path)
            if sidecar is None:
                todo.append((split, path, videos))
            else:
                sidecars[path] = sidecar
                done["videos"] += len(videos)
                for failure in sidecar["failed"] if report is not None else ():
                    report(failure["path"], f"{failure['reason']} (in an earlier run of this command)")
    if progress is not None:  # the work resumed from an earlier run, before any decoding (a rate starts here)
        progress(done["videos"], total)
    request = {"size": size if isinstance(size, int) else list(size), "quality": int(quality), "fps": fps}
    decoders = _Decoders(timeout, max_pixels)

    def decode(split, index, video):
        tmp = os.path.join(partial, f"{split}-{index}.jpeg")
        return tmp, decoders.get().decode(video["path"], mode="jpeg", out=tmp, **request)

    window = 4 * workers
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="keras_r21d-prepare") as pool:
        queue = collections.deque()
        flat = iter([(split, path, index, video) for split, path, videos in todo for index, video in videos])

        def refill():
            while len(queue) < window:
                job = next(flat, None)
                if job is None:
                    return
                queue.append((job, pool.submit(decode, job[0], job[2], job[3])))

        try:
            refill()
            for split, path, videos in todo:
                tmp = os.path.join(partial, os.path.basename(path) + ".tmp")
                written, failed = [], []
                try:
                    with tf.io.TFRecordWriter(tmp) as writer:
                        for _ in videos:
                            (_, _, index, video), future = queue.popleft()
                            frames_file, answer = future.result()
                            refill()
                            if answer["ok"]:
                                frames = read_jpeg_frames(frames_file)
                                writer.write(_example(frames, video, classes[video["label"]], index, answer))
                                written.append({"index": index, "path": video["path"], "video_id": video["video_id"],
                                                "label": video["label"], "frames": len(frames),
                                                "fps": answer["fps"], "source_fps": answer["source_fps"],
                                                "source_size": [answer["source_height"], answer["source_width"]]})
                            else:
                                failed.append({"split": split, "index": index, "path": video["path"],
                                               "reason": answer["reason"]})
                                if report is not None:
                                    report(video["path"], answer["reason"])
                            if os.path.exists(frames_file):
                                os.remove(frames_file)
                            done["videos"] += 1
                            if progress is not None:
                                progress(done["videos"], total)
                    with open(tmp, "rb+") as f:
                        os.fsync(f.fileno())
                    os.replace(tmp, path)
                    sidecar = {"file": os.path.basename(path), "bytes": os.path.getsize(path),
                               "sha256": sha256_of(path), "videos": written, "failed": failed}
                    _write_json(path + ".json", sidecar)
                except (OSError, tf.errors.OpError) as error:
                    code = getattr(error, "errno", None)
                    full = code == errno.ENOSPC or "No space left" in str(error)
                    finished = len(sidecars)
                    raise PrepareError(
                        f"{'disk full' if full else 'cannot write'} while writing {path} ({error}): "
                        f"{finished} finished shard(s) are kept; {'free space and ' if full else ''}rerun the same "
                        "command to resume") from None
                sidecars[path] = sidecar
        finally:
            for _, future in queue:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            decoders.close()
            shutil.rmtree(partial, ignore_errors=True)
    return _finish(out, spec, settings, classes, datasets, jobs, sidecars)


def _finish(out, spec, settings, classes, datasets, jobs, sidecars):
    """Writes the video lists and then the manifest: the folder is readable from here on."""
    splits, failed = {}, []
    for split in shards.SPLITS:
        listing = []
        entries = []
        for path, _ in jobs[split]:
            sidecar = sidecars[path]
            listing += [dict(video, shard=sidecar["file"]) for video in sidecar["videos"]]
            failed += sidecar["failed"]
            entries.append({"file": sidecar["file"], "videos": len(sidecar["videos"]), "bytes": sidecar["bytes"],
                            "sha256": sidecar["sha256"]})
        atomic_write_text(os.path.join(out, shards.videos_file(split)),
                          "".join(json.dumps(video) + "\n" for video in listing))
        videos_in = len(datasets[split].paths)
        splits[split] = {"videos_in": videos_in, "written": len(listing), "failed": videos_in - len(listing),
                         "frames": sum(v["frames"] for v in listing),
                         "bytes": sum(e["bytes"] for e in entries), "shards": entries,
                         "source": datasets[split].fingerprint()}
    manifest = {
        "format": shards.FORMAT, "format_version": shards.FORMAT_VERSION, "tool": f"keras_r21d {__version__}",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": str(spec), "classes": classes,
        "preprocessing": {"size": settings["size"], "fps": settings["fps"], "quality": settings["quality"],
                          "encoding": "jpeg", "resize": "bilinear (OpenCV INTER_LINEAR)"},
        "videos_per_shard": settings["videos_per_shard"], "splits": splits, "failed": failed,
    }
    _write_json(os.path.join(out, shards.MANIFEST), manifest)
    return manifest
