"""Video datasets from their real on-disk formats, selected by a spec string.

`load_dataset("ucf101:/data/UCF101:split=2", subset="test")` and likewise
`hmdb51:ROOT[:split=N]`, `kinetics:ROOT[:split=train]`, `folder:ROOT`,
`csv:FILE`, and `shards:DIR` (frame shards written by `keras-r21d prepare`).
Every error in a list file names the file and the line.
"""

import csv
import glob
import os
import random

from keras_r21d.data.video_dataset import VideoDataset  # noqa: F401 - defined there, imported from here too

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")
SUBSETS = ("train", "test")
# Layouts without a train/test split of their own (`folder:` without train/ and test/, `csv:` without a
# split column) hold out this share of each class's videos for testing, chosen by `HOLDOUT_SEED`.
HOLDOUT = 0.2
HOLDOUT_SEED = 0


class DatasetFormatError(ValueError):
    """A malformed dataset file; the message starts with `FILE:LINE:`."""

    def __init__(self, path, line, message):
        location = f"{path}:{line}" if line else str(path)
        super().__init__(f"{location}: {message}")
        self.path = str(path)
        self.line = line


OUTSIDE_HINT = "append :allow_outside=yes to the dataset spec (allow_outside=True in Python) to accept it"


def _inside(root, relative, list_file, line, allow_outside):
    """Joins `relative` to `root`, refusing paths that leave it unless allowed.

    One rule for every layout: the path as the list (or folder) names it,
    normalized, must stay inside the root; symbolic links on disk are
    followed (they are the dataset owner's, e.g. a folder of links to the
    videos).
    """
    if "\x00" in relative:
        raise DatasetFormatError(list_file, line, f"path {relative!r} contains a NUL character")
    if os.path.isabs(relative) and not allow_outside:
        raise DatasetFormatError(list_file, line, f"absolute path {relative!r} is not allowed: {OUTSIDE_HINT}")
    path = os.path.normpath(os.path.join(root, relative))
    if not allow_outside:
        base = os.path.abspath(root)
        if os.path.commonpath([base, os.path.abspath(path)]) != base:
            raise DatasetFormatError(
                list_file, line, f"path {relative!r} resolves outside the dataset root {root}: {OUTSIDE_HINT}"
            )
    return path


def _read_lines(path):
    try:
        with open(path, encoding="utf-8", newline="") as f:
            # Lines end at "\n" (or "\r\n") only, so FILE:LINE is the line an editor shows
            # (str.splitlines would also split at \f, \x1c, \u2028, ...).
            return f.read().replace("\r\n", "\n").split("\n")
    except FileNotFoundError:
        raise DatasetFormatError(path, None, "file not found") from None
    except UnicodeDecodeError as error:
        raise DatasetFormatError(path, None, f"not UTF-8 text ({error.reason})") from None
    except OSError as error:
        raise DatasetFormatError(path, None, f"cannot read ({error.strerror})") from None


def _check_exists(path, list_file, line, missing, skipped):
    if os.path.isfile(path):
        return True
    if missing == "skip":
        skipped.append(path)
        return False
    raise DatasetFormatError(list_file, line, f"video file not found: {path}")


def _first_existing(candidates):
    for path in candidates:
        if os.path.exists(path):
            return path
    return None


def load_ucf101(root, subset="train", split=1, missing="error", allow_outside=False):
    """UCF101: `classInd.txt`, `trainlist0N.txt` (`Class/v_x.avi 1`), `testlist0N.txt` (`Class/v_x.avi`).

    The list files are looked for in `ROOT/ucfTrainTestlist/` and `ROOT/`;
    videos under `ROOT/UCF-101/` or `ROOT/`.
    """
    lists = _first_existing([os.path.join(root, "ucfTrainTestlist")]) or root
    class_file = os.path.join(lists, "classInd.txt")
    class_names, class_index = [], {}
    for number, raw in enumerate(_read_lines(class_file), 1):
        if not raw.strip():
            continue
        parts = raw.split()
        if len(parts) != 2 or not parts[0].isdecimal():
            raise DatasetFormatError(class_file, number, f"expected '<index> <ClassName>', got {raw!r}")
        if int(parts[0]) != len(class_names) + 1:
            raise DatasetFormatError(class_file, number, f"class index {parts[0]} out of order")
        class_index[parts[1]] = len(class_names)
        class_names.append(parts[1])
    if not class_names:
        raise DatasetFormatError(class_file, None, "no classes")
    list_file = os.path.join(lists, f"{'trainlist' if subset == 'train' else 'testlist'}{split:02d}.txt")
    videos = _first_existing([os.path.join(root, "UCF-101")]) or root
    paths, labels, skipped = [], [], []
    for number, raw in enumerate(_read_lines(list_file), 1):
        if not raw.strip():
            continue
        parts = raw.split()
        if len(parts) not in (1, 2) or (subset == "train" and len(parts) != 2):
            raise DatasetFormatError(list_file, number, f"expected 'Class/video.avi [label]', got {raw!r}")
        relative = parts[0]
        class_name = relative.replace("\\", "/").split("/")[0]
        if class_name not in class_index:
            raise DatasetFormatError(list_file, number, f"unknown class {class_name!r} (not in {class_file})")
        label = class_index[class_name]
        if len(parts) == 2:
            if not parts[1].isdecimal() or int(parts[1]) - 1 != label:
                raise DatasetFormatError(
                    list_file, number, f"label {parts[1]!r} does not match class {class_name!r} ({label + 1})"
                )
        path = _inside(videos, relative, list_file, number, allow_outside)
        if _check_exists(path, list_file, number, missing, skipped):
            paths.append(path)
            labels.append(label)
    return paths, labels, class_names, skipped


def load_hmdb51(root, subset="train", split=1, missing="error", allow_outside=False):
    """HMDB51: per-class `<class>_test_split{1,2,3}.txt` with `video.avi 1|2|0` (train, test, unused).

    Split files are looked for in `ROOT/testTrainMulti_7030_splits/`,
    `ROOT/splits/` and `ROOT/`; videos under `ROOT/<class>/`.
    """
    pattern = f"*_test_split{split}.txt"
    lists = None
    for candidate in [os.path.join(root, "testTrainMulti_7030_splits"), os.path.join(root, "splits"), root]:
        if glob.glob(os.path.join(glob.escape(candidate), pattern)):
            lists = candidate
            break
    if lists is None:
        raise DatasetFormatError(root, None, f"no HMDB51 split files {pattern}")
    files = sorted(glob.glob(os.path.join(glob.escape(lists), pattern)))
    suffix = f"_test_split{split}.txt"
    class_names = [os.path.basename(f)[: -len(suffix)] for f in files]
    wanted = "1" if subset == "train" else "2"
    paths, labels, skipped = [], [], []
    for label, (class_name, list_file) in enumerate(zip(class_names, files)):
        for number, raw in enumerate(_read_lines(list_file), 1):
            if not raw.strip():
                continue
            parts = raw.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise DatasetFormatError(list_file, number, f"expected 'video.avi 0|1|2', got {raw!r}")
            if parts[1] != wanted:
                continue
            path = _inside(os.path.join(root, class_name), parts[0], list_file, number, allow_outside)
            if _check_exists(path, list_file, number, missing, skipped):
                paths.append(path)
                labels.append(label)
    return paths, labels, class_names, skipped


KINETICS_SPLITS = {"train": ("train",), "test": ("validate", "val", "test")}


def load_kinetics(root, subset="train", split=None, missing="skip", allow_outside=False):
    """Kinetics: CSV `label,youtube_id,time_start,time_end,split` and videos
    `{youtube_id}_{start:06d}_{end:06d}.mp4` under `label/` folders.

    The CSV is `ROOT/{split}.csv` or `ROOT/annotations/{split}.csv` (split
    `train`, or for testing `validate`/`val`/`test`); videos are looked for in
    `ROOT/{split}/{label}/` and `ROOT/{label}/`. Class names are the sorted
    labels of the training CSV when there is one. Missing videos are skipped
    and counted by default (Kinetics copies always miss some).
    """
    names = (split,) if split else KINETICS_SPLITS[subset]
    candidates = [os.path.join(root, d, f"{n}.csv") for n in names for d in ("", "annotations")]
    csv_file = _first_existing(candidates)
    if csv_file is None:
        raise DatasetFormatError(root, None, f"no Kinetics CSV among {', '.join(candidates)}")
    train_csv = _first_existing([os.path.join(root, d, "train.csv") for d in ("", "annotations")])
    rows = _kinetics_rows(csv_file)
    class_rows = rows if train_csv in (None, csv_file) else _kinetics_rows(train_csv)
    class_names = sorted({row[1] for row in class_rows if row[1]})
    class_index = {name: i for i, name in enumerate(class_names)}
    paths, labels, skipped = [], [], []
    for number, label, youtube_id, start, end, row_split in rows:
        if label not in class_index:
            raise DatasetFormatError(csv_file, number, f"unknown class {label!r}")
        name = f"{youtube_id}_{start:06d}_{end:06d}.mp4"
        folders = [os.path.join(root, row_split or "", label), os.path.join(root, label)]
        path = _first_existing([os.path.join(f, name) for f in folders]) or os.path.join(folders[-1], name)
        path = _inside(root, os.path.relpath(path, root), csv_file, number, allow_outside)
        if _check_exists(path, csv_file, number, missing, skipped):
            paths.append(path)
            labels.append(class_index[label])
    return paths, labels, class_names, skipped


def _csv_records(path, lines):
    """`(line_number, fields)` of each line after the header; a line the csv module rejects names its line."""
    for number, line in enumerate(lines[1:], 2):
        try:
            records = list(csv.reader([line], strict=True))
        except csv.Error as error:
            raise DatasetFormatError(path, number, f"bad CSV line ({error})") from None
        yield number, records[0] if records else []


def _kinetics_rows(csv_file):
    lines = _read_lines(csv_file)
    if not lines:
        raise DatasetFormatError(csv_file, 1, "empty CSV")
    header = [h.strip() for h in lines[0].split(",")]
    needed = ["label", "youtube_id", "time_start", "time_end"]
    if any(h not in header for h in needed):
        raise DatasetFormatError(csv_file, 1, f"header must have columns {needed}, got {header}")
    rows = []
    for number, record in _csv_records(csv_file, lines):
        if not record:
            continue
        if len(record) < len(header) - (1 if header[-1] == "is_cc" else 0):
            raise DatasetFormatError(csv_file, number, f"expected {len(header)} fields, got {len(record)}")
        item = dict(zip(header, record))
        try:
            start, end = int(float(item["time_start"])), int(float(item["time_end"]))
        except (ValueError, OverflowError):  # not a number, nan, inf
            times = f"{item['time_start']!r}, {item['time_end']!r}"
            raise DatasetFormatError(csv_file, number, f"time_start/time_end must be numbers, got {times}") from None
        youtube_id = item["youtube_id"].strip()
        if not youtube_id or "/" in youtube_id or "\\" in youtube_id or youtube_id.startswith("."):
            raise DatasetFormatError(csv_file, number, f"bad youtube_id {youtube_id!r}")
        label = item["label"].strip()
        if "/" in label or "\\" in label or label in (".", ".."):
            raise DatasetFormatError(csv_file, number, f"bad label {label!r}")
        row_split = item.get("split", "").strip()
        if "/" in row_split or "\\" in row_split or row_split in (".", ".."):
            raise DatasetFormatError(csv_file, number, f"bad split {row_split!r}")
        rows.append((number, label, youtube_id, start, end, row_split))
    return rows


def holdout_indices(paths, labels, subset, fraction=HOLDOUT, seed=HOLDOUT_SEED):
    """The indices of `subset` in a deterministic, stratified hold-out split.

    In each class (videos sorted by path, then shuffled with a generator
    seeded by `seed` and the class), `round(n * fraction)` videos go to
    `"test"` (at least one, at most `n - 1`, for a class of two or more
    videos) and the rest to `"train"`. The same files and arguments always
    give the same split, on any machine. `fraction=0` is no split: both
    subsets are all the videos (validation on the training videos, as asked).
    """
    if fraction == 0:
        return list(range(len(paths)))
    by_class = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    chosen = []
    for label, indices in sorted(by_class.items()):
        indices = sorted(indices, key=lambda i: paths[i])
        random.Random(f"{seed}:{label}:{len(indices)}").shuffle(indices)
        held = min(max(round(len(indices) * fraction), 1), len(indices) - 1) if len(indices) > 1 else 0
        chosen += indices[:held] if subset == "test" else indices[held:]
    return sorted(chosen)


def _apply_holdout(paths, labels, subset, holdout):
    fraction, seed = holdout
    keep = holdout_indices(paths, labels, subset, fraction, seed)
    return [paths[i] for i in keep], [labels[i] for i in keep]


def load_folder(root, subset="train", split=None, missing="error", allow_outside=False, holdout=(HOLDOUT,
                                                                                                 HOLDOUT_SEED)):
    """A folder per class: `ROOT/<class>/*.mp4`. If `ROOT/train/` and `ROOT/test/` exist they are the subsets.

    Without them, a stratified hold-out (`holdout=(fraction, seed)`, default
    20% of each class, seed 0) is the test subset and the rest the training
    subset. Files (or links) resolving outside `ROOT` are refused unless
    `allow_outside`, as in every other layout.
    """
    if not os.path.isdir(root):
        raise DatasetFormatError(root, None, "not a directory")
    has_subsets = all(os.path.isdir(os.path.join(root, s)) for s in SUBSETS)
    base = os.path.join(root, subset) if has_subsets else root
    class_names = sorted(d for d in os.listdir(base) if os.path.isdir(os.path.join(base, d)))
    if not class_names:
        raise DatasetFormatError(base, None, "no class folders")
    paths, labels = [], []
    for label, name in enumerate(class_names):
        folder = os.path.join(base, name)
        for file in sorted(os.listdir(folder)):
            if file.lower().endswith(VIDEO_EXTENSIONS) and os.path.isfile(os.path.join(folder, file)):
                paths.append(_inside(root, os.path.join(os.path.relpath(folder, root), file), folder, None,
                                     allow_outside))
                labels.append(label)
    if not has_subsets:
        paths, labels = _apply_holdout(paths, labels, subset, holdout)
    return paths, labels, class_names, []


def load_csv(path, subset="train", split=None, missing="error", allow_outside=False, holdout=(HOLDOUT,
                                                                                             HOLDOUT_SEED)):
    """A CSV manifest with a header `path,label[,split]`; paths relative to the CSV's folder.

    Labels are class names (sorted to indices). With a `split` column, only
    rows of the requested subset are used; without one, a stratified
    hold-out (`holdout=(fraction, seed)`, as for `folder:`) is the test subset.
    """
    lines = _read_lines(path)
    if not lines or [h.strip() for h in lines[0].split(",")][:2] != ["path", "label"]:
        raise DatasetFormatError(path, 1, "the header must start with 'path,label'")
    header = [h.strip() for h in lines[0].split(",")]
    root = os.path.dirname(os.path.abspath(path))
    records = []
    for number, record in _csv_records(path, lines):
        if not record or not any(field.strip() for field in record):
            continue
        if len(record) != len(header):
            raise DatasetFormatError(path, number, f"expected {len(header)} fields, got {len(record)}")
        item = dict(zip(header, (field.strip() for field in record)))
        if not item["path"] or not item["label"]:
            raise DatasetFormatError(path, number, "empty path or label")
        records.append((number, item))
    class_names = sorted({item["label"] for _, item in records})
    class_index = {name: i for i, name in enumerate(class_names)}
    paths, labels, skipped = [], [], []
    for number, item in records:
        if "split" in item and item["split"] != subset:
            continue
        video = _inside(root, item["path"], path, number, allow_outside)
        if _check_exists(video, path, number, missing, skipped):
            paths.append(video)
            labels.append(class_index[item["label"]])
    if "split" not in header:
        paths, labels = _apply_holdout(paths, labels, subset, holdout)
    return paths, labels, class_names, skipped


LOADERS = {
    "ucf101": load_ucf101,
    "hmdb51": load_hmdb51,
    "kinetics": load_kinetics,
    "folder": load_folder,
    "csv": load_csv,
}


HOLDOUT_LOADERS = ("folder", "csv")


def parse_spec(spec):
    """Splits `"ucf101:/data/ucf:split=2"` into `("ucf101", "/data/ucf", {"split": "2"})`."""
    kind, sep, rest = str(spec).partition(":")
    if not sep or kind not in (*LOADERS, "shards") or not rest:
        raise ValueError(
            f"Bad dataset spec {spec!r}: expected KIND:PATH[:key=value...] with KIND one of "
            f"{sorted([*LOADERS, 'shards'])}, "
            "e.g. 'ucf101:/data/UCF101:split=1' or 'folder:/data/videos'."
        )
    parts = rest.split(":")
    options = {}
    while len(parts) > 1 and "=" in parts[-1]:
        key, _, value = parts.pop().partition("=")
        options[key] = value
    return kind, ":".join(parts), options


def load_dataset(spec, subset="train", missing=None, allow_outside=False):
    """Loads a dataset from a spec string.

    Args:
        spec: `ucf101:ROOT[:split=N]`, `hmdb51:ROOT[:split=N]`,
            `kinetics:ROOT[:split=NAME]`, `folder:ROOT`, `csv:FILE` or
            `shards:DIR` (a `ShardDataset`, written by `prepare`); a
            trailing `:missing=skip|error` sets the missing-file policy and
            `:allow_outside=yes` accepts entries outside the root (for
            commands that take a spec).
        subset: `"train"` or `"test"`.
        missing: `"error"` (default; `"skip"` for Kinetics) or `"skip"`: what
            a list entry without a video file does. Skipped files are listed
            in the result's `skipped` attribute.
        allow_outside: accept list entries that resolve outside the root.

    Returns:
        A `VideoDataset` (with an extra `skipped` list attribute).

    Raises:
        DatasetFormatError: naming the file and line of the first problem.
        ValueError: for a bad spec or option.
    """
    if subset not in SUBSETS:
        raise ValueError(f"`subset` must be one of {SUBSETS}. Received: subset={subset!r}")
    kind, path, options = parse_spec(spec)
    if kind == "shards":
        if options:
            raise ValueError(f"Unknown option(s) {sorted(options)} in dataset spec {spec!r} (a shards: spec takes "
                             "none: its splits and preprocessing are the folder's)")
        from keras_r21d.data.shards import load_shards

        return load_shards(path, subset, name=str(spec))
    known = {"split", "missing", "allow_outside"} | ({"holdout", "holdout_seed"} if kind in HOLDOUT_LOADERS else set())
    if set(options) - known:
        raise ValueError(f"Unknown option(s) {sorted(set(options) - known)} in dataset spec {spec!r} "
                         f"(a {kind}: spec takes {', '.join(sorted(known))})")
    if "allow_outside" in options:
        if options["allow_outside"] not in ("yes", "no"):
            raise ValueError(f"allow_outside must be 'yes' or 'no'. Received: {options['allow_outside']!r}")
        allow_outside = allow_outside or options["allow_outside"] == "yes"
    missing = options.get("missing", missing) or ("skip" if kind == "kinetics" else "error")
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip'. Received: missing={missing!r}")
    split = options.get("split")
    if kind in ("ucf101", "hmdb51"):
        if split is None:
            split = 1
        elif split not in ("1", "2", "3"):
            raise ValueError(f"{kind} split must be 1, 2 or 3. Received: split={split!r}")
        split = int(split)
    extra = {}
    if kind in HOLDOUT_LOADERS:
        extra["holdout"] = _holdout_option(spec, options)
    paths, labels, class_names, skipped = LOADERS[kind](
        path, subset=subset, split=split, missing=missing, allow_outside=allow_outside, **extra
    )
    dataset = VideoDataset(str(spec), paths, labels, class_names)
    dataset.skipped = skipped
    return dataset


def _holdout_option(spec, options):
    """`(fraction, seed)` from a spec's `holdout=` and `holdout_seed=` options."""
    try:
        fraction = float(options.get("holdout", HOLDOUT))
        if not 0 <= fraction < 1:
            raise ValueError
    except ValueError:
        raise ValueError(f"holdout must be a fraction in [0, 1) (0: validate on the training videos). "
                         f"Received: holdout={options['holdout']!r} in {spec!r}") from None
    seed = options.get("holdout_seed", str(HOLDOUT_SEED))
    if not seed.isdecimal():
        raise ValueError(f"holdout_seed must be a non-negative integer. Received: {seed!r} in {spec!r}")
    return fraction, int(seed)


def split_description(spec):
    """How a spec's videos are split into train and test, for the run record."""
    kind, path, options = parse_spec(spec)
    if kind == "shards":
        from keras_r21d.data.shards import read_manifest

        return {"kind": "shards", "detail": f"the splits of {read_manifest(path)['source']} (keras-r21d prepare)"}
    if kind == "folder" and all(os.path.isdir(os.path.join(path, s)) for s in SUBSETS):
        return {"kind": "folders", "detail": "ROOT/train/ and ROOT/test/"}
    if kind == "csv":
        try:
            header = _read_lines(path)[0]
        except (DatasetFormatError, IndexError):
            header = ""
        if "split" in [h.strip() for h in header.split(",")]:
            return {"kind": "column", "detail": "the CSV's split column"}
    if kind in HOLDOUT_LOADERS:
        fraction, seed = _holdout_option(spec, options)
        return {"kind": "holdout", "fraction": fraction, "seed": seed}
    return {"kind": "lists", "detail": f"the {kind} split files"}
