"""List / label parsing errors, the cached probe index, the data config section."""
import os

import pytest
from ila_fast.data.dataset import DatasetError, VideoDataset, read_labels, read_list
from video_fixtures import fixture_videos

from ila_fast.config import Config, ConfigError, build_dataclass


def test_list_errors_name_file_and_line(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    bad = tmp_path / "bad.txt"
    bad.write_text("a.mp4 0\njust_a_path\n")
    with pytest.raises(DatasetError, match=r"bad.txt:2: expected 'relative/path label'"):
        read_list(bad, tmp_path)
    bad.write_text("a.mp4 zero\n")
    with pytest.raises(DatasetError, match=r"bad.txt:1: label 'zero' is not an integer"):
        read_list(bad, tmp_path)
    bad.write_text("a.mp4 0\n\na.mp4 7\n")
    with pytest.raises(DatasetError, match=r"bad.txt:3: label 7 is out of range \(0..4\)"):
        read_list(bad, tmp_path, num_classes=5)
    bad.write_text("a.mp4 -1\n")
    with pytest.raises(DatasetError, match=r"bad.txt:1: label -1 is out of range"):
        read_list(bad, tmp_path)


def test_missing_files_reported_once_with_count(tmp_path, caplog):
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "folder.mp4").mkdir()
    (tmp_path / "dangling.mp4").symlink_to(tmp_path / "nowhere.mp4")
    lst = tmp_path / "list.txt"
    lst.write_text("a.mp4 0\n" + "".join(f"gone/{i}.mp4 1\n" for i in range(5)) + "with space.mp4 1\n"
                   "folder.mp4 0\ndangling.mp4 1\n")
    with pytest.raises(DatasetError) as e:  # data.missing = "error": the strict behaviour
        read_list(lst, tmp_path, missing_policy="error")
    msg = str(e.value)
    assert "8 of 9 listed videos are missing" in msg and "line 2: gone/0.mp4 (no such file)" in msg
    assert msg.count("\n") == 0 and "data.missing" in msg
    # the default ("skip"): one warning up front, every entry kept for the probe to mark bad
    assert len(read_list(lst, tmp_path)) == 9
    assert sum("8 of 9 listed videos are missing" in r.message for r in caplog.records) == 1
    lst.write_text("folder.mp4 0\ndangling.mp4 1\n")
    with pytest.raises(DatasetError, match=r"line 1: folder.mp4 \(a directory\); line 2: dangling.mp4 "
                                           r"\(dangling symlink to .*nowhere.mp4\)"):
        read_list(lst, tmp_path, missing_policy="error")
    (tmp_path / "with space.mp4").write_bytes(b"x")
    lst.write_text("a.mp4 0\nwith space.mp4 1\n")
    assert [e.path for e in read_list(lst, tmp_path)] == ["a.mp4", "with space.mp4"]


def test_lists_with_a_bom_and_bytes_that_are_not_utf8(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "caf\u00e9.mp4").write_bytes(b"x")
    lst = tmp_path / "list.txt"
    lst.write_bytes(b"\xef\xbb\xbfa.mp4 0\r\ncaf\xc3\xa9.mp4 1\r\n")  # BOM, CRLF, UTF-8 name
    assert [(e.path, e.label) for e in read_list(lst, tmp_path, missing_policy="error")] == \
        [("a.mp4", 0), ("caf\u00e9.mp4", 1)]
    lst.write_bytes(b"a.mp4 0\ncaf\xe9.mp4 1\n")  # Latin-1 bytes
    with pytest.raises(DatasetError, match=r"list.txt:2: byte 0xe9 at column 4 is not UTF-8"):
        read_list(lst, tmp_path)
    csv = tmp_path / "labels.csv"
    csv.write_bytes(b"\xef\xbb\xbf0,abseiling\n1,air drumming\n")  # BOM and no header: row 1 is data
    assert read_labels(csv) == ["abseiling", "air drumming"]
    csv.write_bytes(b"\xef\xbb\xbfid,name\n0,abseiling\n1,air drumming\n")
    assert read_labels(csv) == ["abseiling", "air drumming"]
    csv.write_bytes(b"0,a\n1,\xff\n")
    with pytest.raises(DatasetError, match=r"labels.csv:2: byte 0xff"):
        read_labels(csv)


def test_missing_videos_are_bad_videos_in_the_index(tmp_path):
    v = fixture_videos()
    (tmp_path / "good.webm").write_bytes(v["painted_vp9"].read_bytes())
    (tmp_path / "dir.webm").mkdir()
    (tmp_path / "link.webm").symlink_to(tmp_path / "gone.webm")
    lst = tmp_path / "train.txt"
    lst.write_text("good.webm 0\ngone.webm 1\ndir.webm 0\nlink.webm 1\n")
    ds = VideoDataset.load(lst, tmp_path)
    assert [i.bad for i in ds.infos] == [None, "missing", "missing", "missing"]
    assert [i.detail for i in ds.infos[1:]] == ["no such file", "a directory", f"dangling symlink to {tmp_path}/gone.webm"]
    with pytest.raises(DatasetError, match="3 of 4 listed videos are missing"):
        VideoDataset.load(lst, tmp_path, missing="error")


def test_labels_csv(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("id,name\n0,abseiling\n1,\"air drumming, fast\"\n")
    assert read_labels(csv) == ["abseiling", "air drumming, fast"]
    csv.write_text("id,name\n0,a\n2,c\n")
    with pytest.raises(DatasetError, match="without gaps"):
        read_labels(csv)
    csv.write_text("0,a\nx1,b\n")
    with pytest.raises(DatasetError, match=r"labels.csv:2: class id 'x1' is not an integer"):
        read_labels(csv)


def test_probe_index_is_cached_and_invalidated(tmp_path):
    v = fixture_videos()
    root = tmp_path
    for name in ("painted_vp9", "motion_vp9_0", "rotated"):
        (root / v[name].name).write_bytes(v[name].read_bytes())
    lst = root / "train.txt"
    lst.write_text("painted_vp9.webm 0\nmotion_vp9_0.webm 1\n")
    first = VideoDataset.load(lst, root)
    assert first.index.probed == 2 and first.index.path.name == "train.txt.index.json"
    assert first.infos[0].num_frames == 24 and first.infos[0].codec == "vp9"
    assert VideoDataset.load(lst, root).index.probed == 0           # no probing again
    lst.write_text("painted_vp9.webm 0\nmotion_vp9_0.webm 1\nrotated.webm 1\n")
    again = VideoDataset.load(lst, root)
    assert again.index.probed == 1 and again.infos[2].rotation == 90  # only the new file
    st = os.stat(root / "painted_vp9.webm")
    os.utime(root / "painted_vp9.webm", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert VideoDataset.load(lst, root).index.probed == 1           # a touched file is probed again
    other = VideoDataset.load(lst, root, index_dir=tmp_path / "cache")
    assert other.index.probed == 3 and other.index.path.parent == tmp_path / "cache"


def test_data_config_is_strict():
    cfg = build_dataclass(Config, {"data": {"batch_size": 4, "backend": "cpu"}}, "run.toml")
    assert cfg.data.batch_size == 4 and cfg.data.max_bad_fraction == 0.01
    with pytest.raises(ConfigError, match=r"run.toml: unknown key 'data.max_bad_fracton' \(did you mean "
                                          r"'max_bad_fraction'\?\)"):
        build_dataclass(Config, {"data": {"max_bad_fracton": 0.1}}, "run.toml")
    with pytest.raises(ConfigError, match=r"data.backend: 'gpu' is not one of"):
        build_dataclass(Config, {"data": {"backend": "gpu"}}, "run.toml")
    with pytest.raises(ConfigError, match=r"data.grayscale_p = 1.5 is a probability"):
        build_dataclass(Config, {"data": {"grayscale_p": 1.5}}, "run.toml")


def test_a_cpu_decoder_that_cannot_work_is_refused_at_build(tmp_path, monkeypatch):
    import ila_fast.data.decode as decode
    from ila_fast.data.loader import build_loader

    from ila_fast.config import DataConfig

    if decode.torchcodec_available():  # simulate the broken install a CPU machine without FFmpeg 5 has
        monkeypatch.setattr(decode, "_torchcodec_error",
                            lambda: "OSError: libavutil.so.57: cannot open shared object file")
    v = fixture_videos()
    lst = tmp_path / "list.txt"
    lst.write_text(f"{v['painted_vp9']} 0\n")
    cfg = DataConfig(root="/", train_list=str(lst), cpu_decoder="torchcodec", num_workers=0)
    with pytest.raises(ConfigError, match=r"data.cpu_decoder = 'torchcodec', but torchcodec does not load "
                                          r"\((ModuleNotFoundError|OSError): .*pip install torchcodec.*"
                                          r"data.cpu_decoder = 'pyav'"):
        build_loader(cfg, "train", frames=8, input_size=32, num_classes=2, backend="cpu")
