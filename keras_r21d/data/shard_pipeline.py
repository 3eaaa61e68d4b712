"""Clips from frame shards with TensorFlow ops only: what tf.data service can run on other machines.

The same sampling (`sampling`: temporal jitter, stride or target fps,
short-video policies, uniform test clips) and the same preprocessing
(`ClipPreprocessor`) as the video pipeline; only the frames a clip needs are
JPEG-decoded. No `py_function`, `numpy_function` or `from_generator`:
`service.python_ops(dataset)` lists any, and the tests assert there are none.
"""

from functools import partial

import numpy as np

from keras_r21d._files import sha256_of
from keras_r21d._tensorflow import tf
from keras_r21d.data import sampling

FEATURES = {
    "frames": tf.io.VarLenFeature(tf.string),
    "index": tf.io.FixedLenFeature([], tf.int64),
    "fps": tf.io.FixedLenFeature([], tf.float32),
}
# Records held for shuffling in training (each is a whole video's JPEG frames, about 1 MB for 10 s at 128x171).
SHUFFLE_RECORDS = 256
# Shards read at once.
CYCLE_LENGTH = 8
# Frames a clip decodes without a loop (`decode_frames`).
UNROLL = 64


def _note_unusable(dataset, config, log):
    """Reports, once, the videos `prepare` could not write and those the `skip` policy leaves out.

    Returns the ids (positions in `dataset.paths`) to read.
    """
    if log is not None:
        for path, reason in dataset.failed.items():
            log.note(path, reason)
    keep = np.ones(len(dataset.paths), bool)
    if config.short_policy == "skip":
        for i, (frames, fps) in enumerate(zip(dataset.frames, dataset.fps)):
            stride = sampling.stride_for(fps, config.frame_stride, config.target_fps)
            if sampling.too_short(frames, config.clip_len, stride):
                keep[i] = False
                if log is not None:
                    span = sampling.clip_span(config.clip_len, stride)
                    log.note(dataset.paths[i], f"too short: {frames} frames, a clip needs {span} (policy 'skip')")
    if not keep.any():
        raise ValueError(f"dataset {dataset.name!r}: no video has a clip's frames (short_policy='skip')")
    return keep


def _records(dataset, keep, shuffle, seed, deterministic):
    """`(jpegs, id, fps)` per video of `dataset` (ids index `dataset.paths`), from its shards."""
    files = tf.data.Dataset.from_tensor_slices(dataset.files)
    if shuffle:
        files = files.shuffle(len(dataset.files), seed=seed, reshuffle_each_iteration=True)
    records = files.interleave(tf.data.TFRecordDataset, cycle_length=min(CYCLE_LENGTH, len(dataset.files)),
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    # A record's `index` is its place in the source list; the ids are positions in this dataset (a subset reads
    # fewer videos than its shards hold).
    all_indices = tf.constant(dataset.all_indices, tf.int64)
    ids = np.full(len(dataset.all_indices), -1, np.int64)
    ids[np.searchsorted(dataset.all_indices, dataset.indices[keep])] = np.flatnonzero(keep)
    ids = tf.constant(ids)

    def parse(record):
        example = tf.io.parse_single_example(record, FEATURES)
        index = tf.reshape(example["index"], (1,))
        position = tf.minimum(tf.searchsorted(all_indices, index, out_type=tf.int64)[0], tf.size(ids, tf.int64) - 1)
        video = tf.where(tf.gather(all_indices, position) == index[0], tf.gather(ids, position), -1)
        return example["frames"].values, video, example["fps"]

    records = records.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    return records.filter(lambda jpegs, video, fps: video >= 0)


def _stride(fps, config):
    """`sampling.stride_for` in the graph."""
    if not config.target_fps:
        return tf.constant(config.frame_stride, tf.int64)
    by_rate = tf.maximum(tf.cast(tf.round(tf.cast(fps, tf.float64) / config.target_fps), tf.int64), 1)
    return tf.where(fps > 0, by_rate, tf.constant(config.frame_stride, tf.int64))


def decode_frames(jpegs, indices):
    """The uint8 RGB frames at `indices` (`-1`: a black frame) of a video's JPEG strings.

    With a static count of at most `UNROLL` indices (a training clip), one
    `decode_jpeg` per index in the graph: no loop, and tf.data's threads can
    run them in parallel (BENCHMARKS.md, "Frame shards"); a frame repeated by a
    short video's policy is decoded again. Otherwise (test clips) each
    distinct frame is decoded once in a loop.
    """
    indices = tf.reshape(tf.cast(indices, tf.int64), (-1,))
    count = indices.shape[0]
    if count is not None and count <= UNROLL:
        selected = tf.gather(jpegs, tf.maximum(indices, 0))
        frames = tf.stack([_decode(selected[i]) for i in range(count)])
    else:
        distinct, where = tf.unique(tf.maximum(indices, 0))
        frames = tf.map_fn(_decode, tf.gather(jpegs, distinct),
                           fn_output_signature=tf.TensorSpec((None, None, 3), tf.uint8))
        frames = tf.gather(frames, where)
    return frames * tf.cast(indices >= 0, tf.uint8)[:, tf.newaxis, tf.newaxis, tf.newaxis]


def _decode(data):
    return tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")


def _geometry(preprocessor, frames, dataset, crops=None, **kwargs):
    """The clips' resize, crops and flip: normalized here, or as uint8 when tf.data service sends them (a
    quarter of float32's bytes; exact when no resize is needed) to be normalized on the trainer (`_finish`).
    `crops`: test clips, with that many spatial views each (`ClipPreprocessor.views`)."""
    if crops is not None:
        geometry, full = partial(preprocessor.view_geometry, crops=crops), partial(preprocessor.views, crops=crops)
    else:
        geometry, full = partial(preprocessor.geometry, **kwargs), partial(preprocessor, **kwargs)
    if dataset.service:
        return tf.cast(tf.round(geometry(frames)), tf.uint8)
    return full(frames)


def _finish(ds, dataset, preprocessor, deterministic):
    """Sends the batched pipeline to tf.data service when the dataset names a dispatcher; prefetch; options."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    if dataset.service:
        from keras_r21d.data import service

        ds = service.distribute(ds, dataset.service, dataset.job_name)
        ds = ds.map(lambda clips, *rest: (preprocessor.normalize(clips), *rest), num_parallel_calls=tf.data.AUTOTUNE)
        # The service splits the data between its consumers already: tf.distribute must not shard it again.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    if deterministic is not None:
        options.deterministic = deterministic
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def train_dataset(dataset, batch_size, config, shuffle=True, seed=None, deterministic=None, cache=None,
                  bad_videos=None, repeat=False, drop_remainder=False):
    """`pipeline.train_dataset` for a `ShardDataset`: `(clips, labels)` batches, graph ops only.

    `cache` caches the parsed records (the temporal jitter stays random).
    """
    keep = _note_unusable(dataset, config, bad_videos)
    labels = tf.constant(np.asarray(dataset.labels, np.int32))
    records = _records(dataset, keep, shuffle, seed, deterministic)
    if cache is not None:
        records = records.cache(cache)
    if shuffle:
        records = records.shuffle(min(SHUFFLE_RECORDS, len(dataset.paths)), seed=seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    preprocessor = config.preprocessor

    def clip(record, element_seed):
        jpegs, video, fps = record
        num_frames = tf.size(jpegs, tf.int64)
        stride = _stride(fps, config)
        room = tf.maximum(num_frames - sampling.clip_span(config.clip_len, stride), 0)
        pair = tf.stack([element_seed, tf.constant(0x5EED, tf.int64)])
        start = tf.random.stateless_uniform((), pair + [0, 7], 0, room + 1, dtype=tf.int64)
        indices = sampling.clip_indices(start, num_frames, config.clip_len, stride, config.short_policy)
        clip = _geometry(preprocessor, decode_frames(jpegs, indices), dataset, training=True, seed=pair)
        return tf.ensure_shape(clip, (config.clip_len, config.crop, config.crop, 3)), tf.gather(labels, video)

    ds = tf.data.Dataset.zip(records, seeds).map(clip, num_parallel_calls=tf.data.AUTOTUNE,
                                                  deterministic=deterministic)
    if repeat:
        ds = ds.repeat()
    return _finish(ds.batch(batch_size, drop_remainder=drop_remainder), dataset, preprocessor, deterministic)


def eval_dataset(dataset, batch_size, config, with_video_id=True, deterministic=True, cache=None, bad_videos=None):
    """`pipeline.eval_dataset` for a `ShardDataset`: `config.test_clips` uniform clips per video (`test_crops`
    views each), graph ops only."""
    keep = _note_unusable(dataset, config, bad_videos)
    labels = tf.constant(np.asarray(dataset.labels, np.int32))
    records = _records(dataset, keep, False, None, deterministic)
    if cache is not None:
        records = records.cache(cache)
    preprocessor = config.preprocessor

    def clips(jpegs, video, fps):
        num_frames = tf.size(jpegs, tf.int64)
        stride = _stride(fps, config)
        starts = sampling.uniform_clip_starts(num_frames, config.clip_len, config.test_clips, stride)
        indices = sampling.clip_indices(starts, num_frames, config.clip_len, stride, config.short_policy)
        frames = decode_frames(jpegs, indices)
        shape = tf.shape(frames)
        frames = tf.reshape(frames, (config.test_clips, config.clip_len, shape[1], shape[2], 3))
        out = tf.ensure_shape(_geometry(preprocessor, frames, dataset, crops=config.test_crops),
                              (config.test_views, config.clip_len, config.crop, config.crop, 3))
        label = tf.fill((config.test_views,), tf.gather(labels, video))
        ids = tf.fill((config.test_views,), tf.cast(video, tf.int32))
        return (out, label, ids) if with_video_id else (out, label)

    ds = records.map(clips, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic).unbatch()
    return _finish(ds.batch(batch_size), dataset, preprocessor, deterministic)


def check_shards(dataset, clip_len=16, frame_stride=1, progress=None):
    """`check_videos` for a `ShardDataset`: each shard's SHA-256 against the manifest, each record parsed, its
    first and last frames decoded, its length against a clip's; then the videos `prepare` could not write.

    Returns `{"path", "ok", "frames", "reason"}` per video of the dataset, then per failed one.
    """
    import os

    from keras_r21d.data.check import judge

    position = {int(index): i for i, index in enumerate(dataset.indices)}
    by_shard = {}
    for i, name in enumerate(dataset.shard_files):
        by_shard.setdefault(name, []).append(i)
    results = {}
    for shard in dataset.manifest["splits"][dataset.split]["shards"]:
        file = os.path.join(dataset.root, shard["file"])
        mine = by_shard.get(shard["file"])
        if not mine:
            continue
        problem = None if sha256_of(file) == shard["sha256"] else (
            f"{shard['file']}: SHA-256 differs from the manifest's (the shard changed after prepare)")
        try:
            for record in tf.data.TFRecordDataset(file) if problem is None else ():
                example = tf.io.parse_single_example(record, FEATURES)
                i = position.get(int(example["index"]))
                if i is None:
                    continue
                jpegs = example["frames"].values
                count = int(tf.size(jpegs))
                try:
                    decode_frames(jpegs, [0, count - 1])
                except tf.errors.OpError as error:
                    results[i] = {"path": dataset.paths[i], "ok": False, "frames": count,
                                  "reason": f"{shard['file']}: bad JPEG frame ({error.message})"}
                    continue
                stride = sampling.stride_for(dataset.fps[i], frame_stride)
                results[i] = judge(dataset.paths[i], count, clip_len, stride)
        except tf.errors.OpError as error:
            problem = f"{shard['file']}: unreadable shard ({error.message})"
        for i in mine:
            if i not in results:
                results[i] = {"path": dataset.paths[i], "ok": False, "frames": None,
                              "reason": problem or f"not found in {shard['file']}"}
        if progress is not None:
            progress(len(results), len(dataset.paths))
    return [results[i] for i in range(len(dataset.paths))] + [
        {"path": path, "ok": False, "frames": None, "reason": reason} for path, reason in dataset.failed.items()]
