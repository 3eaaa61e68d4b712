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
        ("trainlist01.txt", "../../etc/passwd 1\n", r"trainlist01.txt:1: (unknown class|path)"),
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
    dataset = load_dataset(f"folder:{tmp_path}")
    assert dataset.class_names == ["run", "walk"]
    assert [os.path.basename(p) for p in dataset.paths] == ["c.mkv", "a.mp4", "b.avi"]
    assert dataset.labels == [0, 1, 1]


def test_csv_manifest(tmp_path, a_video):
    _place(a_video, str(tmp_path / "clips" / "x.avi"))
    _place(a_video, str(tmp_path / "clips" / "y.avi"))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label\nclips/x.avi,jump\nclips/y.avi,clap\n")
    dataset = load_dataset(f"csv:{manifest}")
    assert dataset.class_names == ["clap", "jump"] and dataset.labels == [1, 0]
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
    with pytest.raises(DatasetFormatError, match="outside"):
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
