"""Frame shards: a dataset decoded once into TFRecord files of JPEG frames (`keras-r21d prepare`).

A shard folder holds, per split (`train`, `test`), files
`SPLIT-00000-of-000NN.tfrecord` of one `tf.train.Example` per video (its
frames as JPEG strings, label, class name, position in the source list, frame
rate, frame count, source path), each with a `.json` sidecar (its videos,
SHA-256 and size) written after the shard's rename; `SPLIT-videos.jsonl`
listing the written videos; and `manifest.json`, written last, which makes
the folder readable: classes in the model-contract order, splits, per-shard
video counts and SHA-256, the preprocessing, the tool version, and every
video that could not be written with its reason.

`load_dataset("shards:DIR", "train" | "test")` reads it as a
`ShardDataset`: the pipelines (`data/pipeline.py`) then read clips with
TensorFlow ops only (`data/shard_pipeline.py`), which tf.data service can run.
This module reads the folder's JSON only: it imports no TensorFlow.
"""

import json
import os

import numpy as np

from keras_r21d.data.video_dataset import VideoDataset

FORMAT = "keras_r21d.shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SETTINGS = ".prepare.json"
PARTIAL = ".partial"
SPLITS = ("train", "test")


class ShardFormatError(ValueError):
    """A shard folder that cannot be read; the message names the file."""


def shard_name(split, number, count):
    return f"{split}-{number:05d}-of-{count:05d}.tfrecord"


def videos_file(split):
    return f"{split}-videos.jsonl"


def read_manifest(root):
    """The manifest of a finished shard folder, checked; raises `ShardFormatError` naming the problem."""
    path = os.path.join(root, MANIFEST)
    if not os.path.isdir(root):
        raise ShardFormatError(f"{root}: no such folder (a shards: spec names the --out folder of "
                               "keras-r21d prepare)")
    if not os.path.isfile(path):
        hint = ("an unfinished keras-r21d prepare run: rerun the same prepare command to finish it"
                if os.path.exists(os.path.join(root, SETTINGS)) else "not the output folder of keras-r21d prepare")
        raise ShardFormatError(f"{path}: not found ({hint})")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ShardFormatError(f"{path}: cannot read the manifest ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ShardFormatError(f"{path}: not a keras_r21d shard manifest (format {FORMAT!r} expected)")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise ShardFormatError(f"{path}: shard format version {manifest['format_version']} is newer than this "
                               f"keras_r21d reads ({FORMAT_VERSION}): upgrade keras_r21d")
    return manifest


class ShardDataset(VideoDataset):
    """The videos of one split of a shard folder: a `VideoDataset` whose clips are read from the shards.

    Attributes (beyond `VideoDataset`'s `name`, `paths`, `labels`,
    `class_names`, where `paths` are the source videos):
        root: the shard folder.
        split: `"train"` or `"test"`.
        files: the split's shard files.
        indices: each video's position in the source list (the `index`
            field of its record).
        frames, fps: each video's stored frame count and frame rate.
        shard_files: each video's shard (file name).
        all_indices: the `index` of every video in the shards, sorted
            (a `subset` keeps fewer videos than its shards hold).
        failed: `{path: reason}` of the split's videos that `prepare` could
            not write.
        manifest: the folder's manifest.
        service, job_name: the tf.data service dispatcher (`HOST:PORT`) the
            pipelines send their work to, or `None` (`with_service`).
    """

    def __init__(self, name, paths, labels, class_names, root, split, files, indices, frames, fps, shard_files,
                 all_indices, failed, manifest):
        super().__init__(name, paths, labels, class_names)
        self.root, self.split, self.files = root, split, list(files)
        self.indices = np.asarray(indices, np.int64)
        self.frames = np.asarray(frames, np.int64)
        self.fps = np.asarray(fps, np.float64)
        self.shard_files = list(shard_files)
        self.all_indices = np.asarray(all_indices, np.int64)
        self.failed = dict(failed)
        self.manifest = manifest
        self.skipped = []
        self.service = None
        self.job_name = None

    def with_service(self, address, job_name=None):
        """A copy read through the tf.data service dispatcher at `address` (`HOST:PORT`; `None`: read here).

        `job_name`: trainer processes that share it share one pass over the
        data (a multi-worker run); see `data/service.py`.
        """
        copy = self.subset(range(len(self)))
        copy.service, copy.job_name = address, job_name
        return copy

    def subset(self, indices):
        indices = list(indices)
        copy = ShardDataset(self.name, [self.paths[i] for i in indices], [self.labels[i] for i in indices],
                            list(self.class_names), self.root, self.split, self.files, self.indices[indices],
                            self.frames[indices], self.fps[indices], [self.shard_files[i] for i in indices],
                            self.all_indices, self.failed, self.manifest)
        copy.service, copy.job_name = self.service, self.job_name
        return copy


def load_shards(root, subset="train", name=None):
    """The `subset` split of a shard folder as a `ShardDataset`.

    Raises:
        ShardFormatError: no finished manifest, a split the folder lacks, a
            shard file missing or of another size than the manifest says (a
            torn or replaced file), or a malformed video list (file and line).
    """
    manifest = read_manifest(root)
    splits = manifest.get("splits", {})
    if subset not in splits:
        raise ShardFormatError(f"{os.path.join(root, MANIFEST)}: no {subset!r} split (it has "
                               f"{sorted(splits)})")
    split = splits[subset]
    files = []
    for shard in split["shards"]:
        path = os.path.join(root, shard["file"])
        if not os.path.isfile(path):
            raise ShardFormatError(f"{path}: shard file missing (listed in {MANIFEST})")
        if os.path.getsize(path) != shard["bytes"]:
            raise ShardFormatError(f"{path}: {os.path.getsize(path)} bytes, the manifest says {shard['bytes']}: "
                                   "the file was cut or replaced (keras-r21d check-videos shards:DIR checks every "
                                   "hash; rerun prepare into a new folder to rebuild it)")
        if shard["videos"]:
            files.append(path)
    listing = os.path.join(root, videos_file(subset))
    paths, labels, indices, frames, fps, shard_files = [], [], [], [], [], []
    classes = manifest["classes"]
    try:
        with open(listing, encoding="utf-8") as f:
            for line_number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    video = json.loads(line)
                    paths.append(video["path"])
                    labels.append(int(video["label"]))
                    indices.append(int(video["index"]))
                    frames.append(int(video["frames"]))
                    fps.append(float(video["fps"]))
                    shard_files.append(str(video["shard"]))
                except (ValueError, KeyError, TypeError) as error:
                    raise ShardFormatError(f"{listing}:{line_number}: malformed video entry ({error})") from None
                if not 0 <= labels[-1] < len(classes):
                    raise ShardFormatError(f"{listing}:{line_number}: label {labels[-1]} is not one of the "
                                           f"{len(classes)} classes of {MANIFEST}")
    except OSError as error:
        raise ShardFormatError(f"{listing}: cannot read the video list ({error.strerror})") from None
    order = np.argsort(indices, kind="stable")
    failed = {entry["path"]: f"not in the shards: {entry['reason']} (keras-r21d prepare)"
              for entry in manifest.get("failed", []) if entry.get("split") == subset}
    return ShardDataset(name or f"shards:{root}", [paths[i] for i in order], [labels[i] for i in order],
                        list(classes), root, subset, files, np.asarray(indices, np.int64)[order],
                        np.asarray(frames)[order], np.asarray(fps)[order], [shard_files[i] for i in order],
                        np.asarray(indices, np.int64)[order],
                        failed, manifest)
