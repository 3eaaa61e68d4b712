import os
import shutil

import pytest
import videos

from keras_r21d.data import DatasetFormatError, load_dataset, parse_spec


@pytest.fixture(scope="module")
def a_video(tmp_path_factory):
    return videos.write_opencv(tmp_path_factory.mktemp("src") / "v.avi", videos.moving_frames(10), "mp4v")


def _place(src, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shutil.copy(src, path)


def _ucf101(root, a_video, lists_dir=None, videos_dir=None):
    lists = os.path.join(root, lists_dir) if lists_dir else root
    vids = os.path.join(root, videos_dir) if videos_dir else root
    os.makedirs(lists, exist_ok=True)
    open(os.path.join(lists, "classInd.txt"), "w").write("1 ApplyEyeMakeup\n2 Archery\n")
    open(os.path.join(lists, "trainlist01.txt"), "w").write(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nArchery/v_Archery_g08_c01.avi 2\n")
    open(os.path.join(lists, "testlist01.txt"), "w").write(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\nArchery/v_Archery_g01_c01.avi\n")
    for name in ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "Archery/v_Archery_g08_c01.avi",
                 "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "Archery/v_Archery_g01_c01.avi"]:
        _place(a_video, os.path.join(vids, name))
    return str(root)


@pytest.mark.parametrize("layout", [(None, None), ("ucfTrainTestlist", "UCF-101")])
def test_ucf101(tmp_path, a_video, layout):
    root = _ucf101(tmp_path, a_video, *layout)
    train = load_dataset(f"ucf101:{root}")
    assert train.class_names == ["ApplyEyeMakeup", "Archery"]
    assert train.labels == [0, 1]
    assert train.paths[1].endswith(os.path.join("Archery", "v_Archery_g08_c01.avi"))
    test = load_dataset(f"ucf101:{root}:split=1", subset="test")
    assert test.labels == [0, 1] and "g01" in test.paths[0]


@pytest.mark.parametrize(
    "file,content,message",
    [
        ("trainlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nBowling/v_Bowling_g01_c01.avi 3\n",
         r"trainlist01.txt:2: unknown class 'Bowling'"),
        ("trainlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi\n", r"trainlist01.txt:1: expected"),
        ("trainlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 2\n",
         r"trainlist01.txt:1: label '2' does not match"),
        ("trainlist01.txt", "ApplyEyeMakeup/v_missing.avi 1\n", r"trainlist01.txt:1: video file not found"),
        ("classInd.txt", "1 ApplyEyeMakeup\nArchery\n", r"classInd.txt:2: expected '<index> <ClassName>'"),
        ("trainlist01.txt", "../../etc/passwd 1\n", r"trainlist01.txt:1: unknown class '\.\.' \(not in .*classInd"),
        ("trainlist01.txt", "ApplyEyeMakeup/../../../outside.avi 1\n", r"trainlist01.txt:1: path .* outside"),
    ],
)
def test_ucf101_errors_name_file_and_line(tmp_path, a_video, file, content, message):
    root = _ucf101(tmp_path, a_video)
    open(os.path.join(root, file), "w").write(content)
    with pytest.raises(DatasetFormatError, match=message):
        load_dataset(f"ucf101:{root}")


def test_missing_files_can_be_skipped(tmp_path, a_video):
    root = _ucf101(tmp_path, a_video)
    os.remove(os.path.join(root, "Archery", "v_Archery_g08_c01.avi"))
    dataset = load_dataset(f"ucf101:{root}:missing=skip")
    assert len(dataset) == 1 and dataset.skipped[0].endswith("v_Archery_g08_c01.avi")


def test_hmdb51(tmp_path, a_video):
    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    for cls, lines in {"brush_hair": ["a.avi 1", "b.avi 2", "c.avi 0"], "cartwheel": ["d.avi 2", "e.avi 1"]}.items():
        for split in (1, 2, 3):
            (splits / f"{cls}_test_split{split}.txt").write_text("\n".join(lines) + "\n")
        for line in lines:
            _place(a_video, str(tmp_path / cls / line.split()[0]))
    train = load_dataset(f"hmdb51:{tmp_path}:split=2")
    assert train.class_names == ["brush_hair", "cartwheel"]
    assert [os.path.basename(p) for p in train.paths] == ["a.avi", "e.avi"] and train.labels == [0, 1]
    test = load_dataset(f"hmdb51:{tmp_path}", subset="test")
    assert [os.path.basename(p) for p in test.paths] == ["b.avi", "d.avi"]
    (splits / "cartwheel_test_split1.txt").write_text("d.avi 2\ne.avi train\n")
    with pytest.raises(DatasetFormatError, match=r"cartwheel_test_split1.txt:2: expected 'video.avi 0\|1\|2'"):
        load_dataset(f"hmdb51:{tmp_path}")


def test_kinetics(tmp_path, a_video):
    (tmp_path / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "abseiling,aaa,10,20,train\n"
        '"air drumming",bbb,0,10,train\n'
        "abseiling,gone,5,15,train\n")
    (tmp_path / "validate.csv").write_text(
        "label,youtube_id,time_start,time_end,split\nair drumming,ccc,30,40,val\n")
    _place(a_video, str(tmp_path / "train" / "abseiling" / "aaa_000010_000020.mp4"))
    _place(a_video, str(tmp_path / "train" / "air drumming" / "bbb_000000_000010.mp4"))
    _place(a_video, str(tmp_path / "val" / "air drumming" / "ccc_000030_000040.mp4"))
    train = load_dataset(f"kinetics:{tmp_path}")
    assert train.class_names == ["abseiling", "air drumming"]
    assert train.labels == [0, 1]
    assert len(train.skipped) == 1 and "gone_000005_000015.mp4" in train.skipped[0]
    test = load_dataset(f"kinetics:{tmp_path}", subset="test")
    assert test.labels == [1] and test.paths[0].endswith("ccc_000030_000040.mp4")
    (tmp_path / "validate.csv").write_text(
        "label,youtube_id,time_start,time_end,split\nbowling,ddd,1,2,val\n")
    with pytest.raises(DatasetFormatError, match=r"validate.csv:2: unknown class 'bowling'"):
        load_dataset(f"kinetics:{tmp_path}", subset="test")
    (tmp_path / "validate.csv").write_text("label,youtube_id,time_start,time_end,split\nabseiling,x,a,b,val\n")
    with pytest.raises(DatasetFormatError, match=r"validate.csv:2: time_start/time_end must be numbers"):
        load_dataset(f"kinetics:{tmp_path}", subset="test")


def test_folder(tmp_path, a_video):
    for name in ["walk/a.mp4", "walk/b.avi", "run/c.mkv", "run/notes.txt"]:
        _place(a_video, str(tmp_path / name))
    # No train/ and test/: a stratified hold-out; a class of one video stays in training.
    train = load_dataset(f"folder:{tmp_path}")
    test = load_dataset(f"folder:{tmp_path}", "test")
    assert train.class_names == test.class_names == ["run", "walk"]
    assert sorted(os.path.basename(p) for p in train.paths + test.paths) == ["a.mp4", "b.avi", "c.mkv"]
    assert len(test) == 1 and test.labels == [1] and not set(train.paths) & set(test.paths)
    everything = load_dataset(f"folder:{tmp_path}:holdout=0")  # asked for by name: no hold-out
    assert [os.path.basename(p) for p in everything.paths] == ["c.mkv", "a.mp4", "b.avi"]
    assert everything.labels == [0, 1, 1]
    assert load_dataset(f"folder:{tmp_path}:holdout=0", "test").paths == everything.paths


def test_holdout_is_stratified_deterministic_and_seeded(tmp_path, a_video):
    for label in ("a", "b", "c"):
        for i in range(10):
            _place(a_video, str(tmp_path / label / f"{i:02d}.avi"))
    spec = f"folder:{tmp_path}"
    train, test = load_dataset(spec), load_dataset(spec, "test")
    assert len(train) == 24 and len(test) == 6
    assert sorted(test.labels) == [0, 0, 1, 1, 2, 2]  # 20% of each class
    assert not set(train.paths) & set(test.paths)
    assert load_dataset(spec, "test").paths == test.paths  # the same split every time
    other = load_dataset(f"{spec}:holdout_seed=3", "test")
    assert sorted(other.labels) == [0, 0, 1, 1, 2, 2] and other.paths != test.paths
    assert len(load_dataset(f"{spec}:holdout=0.5", "test")) == 15
    # The split is a property of the files, not of where they are: a copy splits the same way.
    shutil.copytree(tmp_path, tmp_path.parent / "copy")
    copy = load_dataset(f"folder:{tmp_path.parent / 'copy'}", "test")
    assert [os.path.relpath(p, tmp_path.parent / "copy") for p in copy.paths] == [
        os.path.relpath(p, tmp_path) for p in test.paths]
    for bad in ("holdout=1", "holdout=-0.1", "holdout=x"):
        with pytest.raises(ValueError, match="holdout must be a fraction in"):
            load_dataset(f"{spec}:{bad}")
    with pytest.raises(ValueError, match="holdout_seed must be a non-negative integer"):
        load_dataset(f"{spec}:holdout_seed=-1")
    with pytest.raises(ValueError, match=r"Unknown option\(s\) \['holdout'\]"):
        load_dataset("ucf101:/nowhere:holdout=0.2")  # the lists split UCF101 already
    # A folder with train/ and test/ uses them.
    for subset in ("train", "test"):
        _place(a_video, str(tmp_path / "split" / subset / "x" / "v.avi"))
    assert len(load_dataset(f"folder:{tmp_path / 'split'}", "test")) == 1


def test_csv_manifest(tmp_path, a_video):
    _place(a_video, str(tmp_path / "clips" / "x.avi"))
    _place(a_video, str(tmp_path / "clips" / "y.avi"))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label\nclips/x.avi,jump\nclips/y.avi,clap\n")
    dataset = load_dataset(f"csv:{manifest}:holdout=0")
    assert dataset.class_names == ["clap", "jump"] and dataset.labels == [1, 0]
    # Without a split column, the same stratified hold-out as folder: (one video per class: all train).
    assert len(load_dataset(f"csv:{manifest}")) == 2 and len(load_dataset(f"csv:{manifest}", "test")) == 0
    manifest.write_text("path,label,split\nclips/x.avi,jump,train\nclips/y.avi,jump,test\n")
    assert [os.path.basename(p) for p in load_dataset(f"csv:{manifest}", "test").paths] == ["y.avi"]
    manifest.write_text("path,label\nclips/x.avi,jump,extra\n")
    with pytest.raises(DatasetFormatError, match=r"manifest.csv:2: expected 2 fields, got 3"):
        load_dataset(f"csv:{manifest}")
    manifest.write_text("path,label\n/etc/passwd,jump\n")
    with pytest.raises(DatasetFormatError, match=r"manifest.csv:2: absolute path"):
        load_dataset(f"csv:{manifest}")
    manifest.write_text("file,class\n")
    with pytest.raises(DatasetFormatError, match=r"manifest.csv:1: the header must start with 'path,label'"):
        load_dataset(f"csv:{manifest}")


def test_csv_manifest_outside_root_when_allowed(tmp_path, a_video):
    _place(a_video, str(tmp_path / "elsewhere" / "x.avi"))
    (tmp_path / "m").mkdir()
    manifest = tmp_path / "m" / "manifest.csv"
    manifest.write_text("path,label\n../elsewhere/x.avi,jump\n")
    with pytest.raises(DatasetFormatError, match="outside the dataset root .*: append :allow_outside=yes to the "
                                                 r"dataset spec \(allow_outside=True in Python\)"):
        load_dataset(f"csv:{manifest}")
    assert len(load_dataset(f"csv:{manifest}", allow_outside=True)) == 1
    assert len(load_dataset(f"csv:{manifest}:allow_outside=yes")) == 1  # the same from a command's spec
    with pytest.raises(ValueError, match="allow_outside must be 'yes' or 'no'"):
        load_dataset(f"csv:{manifest}:allow_outside=1")


def test_spec_parsing():
    assert parse_spec("ucf101:/data/ucf:split=2") == ("ucf101", "/data/ucf", {"split": "2"})
    assert parse_spec("folder:/data/v") == ("folder", "/data/v", {})
    for bad in ["ucf101", "youtube:/x", "ucf101:"]:
        with pytest.raises(ValueError, match="Bad dataset spec"):
            parse_spec(bad)
    with pytest.raises(ValueError, match="split must be 1, 2 or 3"):
        load_dataset("ucf101:/nowhere:split=4")
    with pytest.raises(ValueError, match="Unknown option"):
        load_dataset("ucf101:/nowhere:fold=1")
    with pytest.raises(DatasetFormatError, match="/nowhere/classInd.txt: file not found"):
        load_dataset("ucf101:/nowhere")
    with pytest.raises(DatasetFormatError, match="/nowhere: not a directory"):
        load_dataset("folder:/nowhere")


def test_one_rule_for_links_in_every_layout(tmp_path, a_video):
    """A link inside the root (e.g. a folder of links to the videos) is the owner's choice: every layout follows it;
    a path that leaves the root as written is refused in every layout."""
    _place(a_video, str(tmp_path / "store" / "real.avi"))
    root = tmp_path / "data"
    (root / "jump").mkdir(parents=True)
    os.symlink(tmp_path / "store" / "real.avi", root / "jump" / "linked.avi")
    (root / "manifest.csv").write_text("path,label\njump/linked.avi,jump\n")
    by_folder = load_dataset(f"folder:{root}")
    by_csv = load_dataset(f"csv:{root / 'manifest.csv'}")
    assert [os.path.basename(p) for p in by_folder.paths] == [os.path.basename(p) for p in by_csv.paths] == [
        "linked.avi"]
    (root / "manifest.csv").write_text("path,label\n../store/real.avi,jump\n")
    with pytest.raises(DatasetFormatError, match="manifest.csv:2: path '../store/real.avi' resolves outside"):
        load_dataset(f"csv:{root / 'manifest.csv'}")
