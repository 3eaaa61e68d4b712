"""Dataset list files and manifests fuzzed with hypothesis.

Whatever the content of a UCF101, HMDB51, Kinetics or CSV list file, loading
it either gives a consistent dataset whose every video lies inside the
dataset root, or raises `DatasetFormatError` naming the file (and the line,
for a bad entry); never another exception, never a hang.
"""

import os
import tempfile

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from keras_r21d.data.datasets import DatasetFormatError, load_dataset

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLASSES = ["Walk", "Run"]
VIDEOS = {"Walk": ["v_Walk_g01_c01.avi", "v_Walk_g02_c01.avi"], "Run": ["v_Run_g01_c01.avi"]}

# Pieces that reach deep into the parsers: real names, traversal, absolute paths, odd numbers and characters.
names = st.sampled_from(CLASSES + ["Swim", "..", ".", "", "Walk/..", "../Walk", "/etc", "C:\\x", "Wa lk", "wälk"])
files = st.sampled_from([v for vs in VIDEOS.values() for v in vs]
                        + ["../../etc/passwd", "/etc/passwd", "..", "a\x00b.avi", "x.avi", "", " ", "é.avi"])
numbers = st.one_of(st.integers(-3, 5).map(str),
                    st.sampled_from(["", "1.5", "1e308", "inf", "nan", "-inf", "٣", "²", "0x1", "99999999999999999999",
                                     "1 2", "+1", " 1"]))
noise = st.text(max_size=40)


def _lines(line):
    return st.lists(st.one_of(line, noise), max_size=8).map("\n".join)


def _content(line):
    """Text made of structured lines and garbage, sometimes as raw bytes (not UTF-8, NUL, CR)."""
    text = _lines(line).map(lambda s: s.encode("utf-8"))
    return st.one_of(text, text.map(lambda b: b.replace(b"\n", b"\r\n")), st.binary(max_size=200))


ucf_class_line = st.tuples(numbers, names).map(" ".join)
ucf_list_line = st.tuples(names, files, numbers).map(lambda t: f"{t[0]}/{t[1]} {t[2]}")
hmdb_line = st.tuples(files, numbers).map(" ".join)
kinetics_line = st.tuples(names, st.sampled_from(["abc", "", "../x", "a/b", ".x", "abc,def", '"a'] ), numbers,
                          numbers, st.sampled_from(["train", "", "..", "val/x"])).map(",".join)
kinetics_header = st.sampled_from(["label,youtube_id,time_start,time_end,split", "label,youtube_id,time_start",
                                   "youtube_id,label,time_end,time_start", "label,youtube_id,time_start,time_end,is_cc",
                                   ""])
csv_line = st.tuples(st.tuples(names, files).map("/".join), names, st.sampled_from(["train", "test", "", "x"])).map(
    ",".join)
csv_header = st.sampled_from(["path,label,split", "path,label", "label,path", "path", ""])


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _videos(root):
    for name, videos in VIDEOS.items():
        for video in videos:
            _write(os.path.join(root, name, video), b"\x00")


def _check(spec, root, fuzzed_files):
    """Loads both subsets; asserts the contract on the result or on the error."""
    real_root = os.path.realpath(root)
    for subset in ("train", "test"):
        try:
            dataset = load_dataset(spec, subset)
        except DatasetFormatError as error:
            message = str(error)
            assert any(message.startswith(f) for f in fuzzed_files + [root]), message
            assert error.path in fuzzed_files + [root] or error.path.startswith(root), error.path
            if error.line is not None:
                assert message.startswith(f"{error.path}:{error.line}: ")
                assert error.line >= 1
            continue
        assert len(dataset.paths) == len(dataset.labels)
        assert all(0 <= label < dataset.num_classes for label in dataset.labels)
        for path in dataset.paths:
            assert os.path.commonpath([real_root, os.path.realpath(path)]) == real_root, path
            assert os.path.isfile(path)


@SETTINGS
@example(class_ind=b"\xc2\xb2 Walk", trainlist=b"", testlist=b"", keep_class_ind=False)  # "²".isdigit() is True
@example(class_ind=b"", trainlist=b"Walk/v_Walk_g01_c01.avi \xc2\xb2", testlist=b"", keep_class_ind=True)
@example(class_ind=b"", trainlist=b"Walk/../../x.avi 1\x0cRun/v_Run_g01_c01.avi 2", testlist=b"", keep_class_ind=True)
@given(class_ind=_content(ucf_class_line), trainlist=_content(ucf_list_line), testlist=_content(ucf_list_line),
       keep_class_ind=st.booleans())
def test_ucf101_lists(class_ind, trainlist, testlist, keep_class_ind):
    with tempfile.TemporaryDirectory() as root:
        _videos(root)
        files = {"classInd.txt": b"1 Walk\n2 Run\n" if keep_class_ind else class_ind,
                 "trainlist01.txt": trainlist, "testlist01.txt": testlist}
        for name, data in files.items():
            _write(os.path.join(root, name), data)
        _check(f"ucf101:{root}", root, [os.path.join(root, name) for name in files])


@SETTINGS
@given(walk=_content(hmdb_line), run=_content(hmdb_line))
def test_hmdb51_splits(walk, run):
    with tempfile.TemporaryDirectory() as root:
        _videos(root)
        files = [os.path.join(root, "splits", f"{name}_test_split1.txt") for name in CLASSES]
        _write(files[0], walk)
        _write(files[1], run)
        _check(f"hmdb51:{root}", root, files)


@SETTINGS
@example(header="label,youtube_id,time_start,time_end,split", rows=b"Walk,abc,0,inf,train", raw=False)
@example(header="label,youtube_id,time_start,time_end,split", rows=b"Walk,abc,1,11,train\rRun,x,1,2", raw=False)
@given(header=kinetics_header, rows=_content(kinetics_line), raw=st.booleans())
def test_kinetics_csv(header, rows, raw):
    with tempfile.TemporaryDirectory() as root:
        _write(os.path.join(root, "train", "Walk", "abc_000001_000011.mp4"), b"\x00")
        path = os.path.join(root, "train.csv")
        _write(path, rows if raw else header.encode() + b"\n" + rows)
        _check(f"kinetics:{root}", root, [path])


@SETTINGS
@example(header="path,label", rows=b'"Walk/v_Walk_g01_c01.avi\x00",Walk', raw=False)
@example(header="path,label", rows=b"Walk/v_Walk_g01_c01.avi,Walk\rRun/v_Run_g01_c01.avi,Run", raw=False)
@given(header=csv_header, rows=_content(csv_line), raw=st.booleans())
def test_csv_manifest(header, rows, raw):
    with tempfile.TemporaryDirectory() as root:
        _videos(root)
        path = os.path.join(root, "list.csv")
        _write(path, rows if raw else header.encode() + b"\n" + rows)
        _check(f"csv:{path}", root, [path])
