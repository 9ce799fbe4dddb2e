"""Dataset adapters on miniatures of the real layouts (tests/dataset_layouts.py): the (path, label) rows,
the class names, the missing video kept and reported, and refusals that name the file and row."""
from __future__ import annotations

import json
import logging

import pytest

import dataset_layouts as layouts
from ila_fast.config import DATASET_ADAPTERS, ConfigError, load_config
from ila_fast.data import DatasetError, build_loader, read_list
from ila_fast.data.datasets import ADAPTERS, load_dataset, read_split, video_files
from ila_fast.data.datasets.names import LABELS_DIR


@pytest.fixture(autouse=True)
def fresh_walks():
    video_files.cache_clear()  # each test writes its own folders


def rows(split):
    return [(s.path, s.label) for s in split.samples]


def wheres(split):
    return [s.where for s in split.samples]


def test_config_and_registry_name_the_same_adapters():
    assert set(DATASET_ADAPTERS) == set(ADAPTERS)
    with pytest.raises(ConfigError, match=r"data.dataset: 'kinetic400' .*did you mean 'kinetics400'"):
        load_config("tiny", {"data.dataset": "kinetic400"})
    with pytest.raises(ConfigError, match="data.split = 0"):
        load_config("tiny", {"data.split": 0})


def test_kinetics_cvdf_csv(tmp_path):
    ann, videos = layouts.kinetics_cvdf(tmp_path)
    train = read_split("kinetics400", ann, videos, "train")
    # ids of the official label order (abseiling 0, air drumming 1, zumba 399); the absent video kept
    assert rows(train) == [("train/--07WQ2iBlw_000001_000011.mp4", 0), ("train/-0NbRyEP2vo_000053_000063.mp4", 1),
                           ("train/zzzzzzzzzzz_000010_000020.mp4", 399)]
    assert wheres(train) == ["train.csv:2", "train.csv:3", "train.csv:4"]
    assert len(train.class_names) == 400 and train.class_names[:2] == ["abseiling", "air drumming"]
    assert rows(read_split("kinetics400", ann, videos, "val")) == [("val/yoga0000001_000000_000010.mp4", 398)]


def test_kinetics_older_layouts_and_per_class_folders(tmp_path):
    ann, videos = layouts.kinetics_old_per_class(tmp_path)
    train = read_split("kinetics400", ann, videos, "train")
    assert rows(train) == [("playing_bagpipes/bagpipes001.webm", 219), ("massaging person's head/massage0001.mp4", 196),
                           ("abseil00001_000001_000011.mp4", 0)]  # absent: where the CVDF name would be


def test_kinetics_quoted_names_with_commas_and_own_labels(tmp_path):
    ann, videos, labels = layouts.kinetics_custom_names(tmp_path)
    train = read_split("kinetics700", ann, videos, "train", labels=str(labels))
    assert train.class_names == ["cooking, stirring", "juggling balls", "running, jumping, falling"]
    assert rows(train) == [("train/runjump0001_000000_000010.mp4", 2), ("train/cook0000001_000030_000040.mp4", 0),
                           ("train/juggle00001_000002_000012.mp4", 1)]


def test_kinetics_mmaction_lists_and_names_only_map(tmp_path):
    ann, videos = layouts.kinetics_mmaction(tmp_path)
    train = read_split("kinetics400", ann, videos, "train")
    assert rows(train) == [("videos_train/abseiling/--07WQ2iBlw_000001_000011.mp4", 0),
                           ("videos_train/zumba/zzzzzzzzzzz_000010_000020.mp4", 399),
                           ("videos_train/yoga/yoga0000001_000000_000010.mp4", 398)]
    assert rows(read_split("kinetics400", ann, videos, "val")) == [
        ("videos_val/air_drumming/-0NbRyEP2vo_000053_000063.mp4", 1)]
    # a names-only map in another order is refused at its first disagreeing line
    names = (ann / "label_map_k400.txt").read_text().splitlines()
    names[0], names[1] = names[1], names[0]
    (ann / "label_map_k400.txt").write_text("\n".join(names) + "\n")
    with pytest.raises(DatasetError, match=r"label_map_k400.txt:1: label id 0 is 'air drumming' here but 'abseiling'"):
        read_split("kinetics400", ann, videos, "train")
    (ann / "label_map_k400.txt").unlink()
    # a row whose id is not its class folder's
    (ann / "kinetics400_train_list_videos.txt").write_text("abseiling/a_000001_000011.mp4 0\nzumba/b.mp4 398\n")
    with pytest.raises(DatasetError, match=r"kinetics400_train_list_videos.txt:2: label id 398 is 'zumba' here but "
                                           "'yoga'"):
        read_split("kinetics400", ann, videos, "train")


def test_kinetics_refusals_name_file_and_row(tmp_path):
    ann, videos = layouts.kinetics_cvdf(tmp_path)
    text = (ann / "train.csv").read_text().replace("\"air drumming\"", "\"air drums\"")
    (ann / "train.csv").write_text(text)
    with pytest.raises(DatasetError, match=r"train.csv:3: class 'air drums' is not one of the 400 class names of the "
                                           r"bundled kinetics400 class names \(nearest: 'air drumming'\)"):
        read_split("kinetics400", ann, videos, "train")
    (ann / "train.csv").write_text("youtube_id,time_start,time_end,split\nabc,0,10,test\n")
    with pytest.raises(DatasetError, match=r"train.csv:1: expected a header with label, youtube_id.*without labels"):
        read_split("kinetics400", ann, videos, "train")
    (ann / "train.csv").write_text("label,youtube_id,time_start,time_end,split\nabseiling,abc,ten,20,train\n")
    with pytest.raises(DatasetError, match=r"train.csv:2: time_start / time_end 'ten' / '20' are not numbers"):
        read_split("kinetics400", ann, videos, "train")
    with pytest.raises(DatasetError, match=r"no test annotations for kinetics400 \(looked for test.csv"):
        read_split("kinetics400", ann, videos, "test")
    with pytest.raises(DatasetError, match="data.split = 2: kinetics400 has the official split"):
        read_split("kinetics400", ann, videos, "train", split=2)


def test_ssv2_json(tmp_path):
    ann, videos = layouts.ssv2(tmp_path)
    train = read_split("ssv2", ann, videos, "train")
    # template with the brackets removed -> the labels JSON's id (42326's "[Something]" as "something");
    # 42326.webm is not on disk
    assert rows(train) == [("78687.webm", 19), ("42326.webm", 141), ("100904.webm", 120)]
    assert train.class_names[19] == "Holding something next to something"
    assert train.class_names[120] == "Putting something, something and something on the table"
    assert wheres(train)[1] == "something-something-v2-train.json: entry 2 (id 42326)"
    assert rows(read_split("ssv2", ann, videos, "val")) == [("74225.webm", 140)]


def test_ssv2_refusals(tmp_path):
    ann, videos = layouts.ssv2(tmp_path)
    train = json.loads((ann / "something-something-v2-train.json").read_text())
    train[1]["template"] = "Spreading [something] onto [somethin]"  # a typo: refused
    (ann / "something-something-v2-train.json").write_text(json.dumps(train))
    with pytest.raises(DatasetError, match=r"something-something-v2-train.json: entry 2 \(id 42326\): class "
                                           r"'Spreading something onto somethin' is not in something-something-v2-"
                                           r"labels.json \(nearest: 'Spreading something onto something'\)"):
        read_split("ssv2", ann, videos, "train")
    labels = json.loads((ann / "something-something-v2-labels.json").read_text())
    labels["Approaching something with your camera"], labels["Attaching something to something"] = "1", "0"
    (ann / "something-something-v2-labels.json").write_text(json.dumps(labels))
    with pytest.raises(DatasetError, match=r"something-something-v2-labels.json: entry \d+ \('Attaching something to "
                                           r"something'\): label id 0 is 'Attaching something to something' here but "
                                           r"'Approaching something with your camera'"):
        read_split("ssv2", ann, videos, "train")


def test_ucf101_official_splits(tmp_path):
    ann, videos = layouts.ucf101(tmp_path)
    expected = {1: ([("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0), ("YoYo/v_YoYo_g09_c02.avi", 100),
                     ("Archery/v_Archery_g10_c01.avi", 2)],
                    [("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", 0), ("YoYo/v_YoYo_g01_c03.avi", 100)]),
                2: ([("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", 0), ("YoYo/v_YoYo_g01_c03.avi", 100)],
                    [("Archery/v_Archery_g10_c01.avi", 2), ("YoYo/v_YoYo_g09_c02.avi", 100)]),
                3: ([("YoYo/v_YoYo_g01_c03.avi", 100), ("Archery/v_Archery_g10_c01.avi", 2)],
                    [("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0),
                     ("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", 0)])}
    for split, (train, test) in expected.items():
        assert rows(read_split("ucf101", ann.parent, videos, "train", split)) == train
        got = read_split("ucf101", ann, videos, "val", split)
        assert rows(got) == test and got.name == f"ucf101_test_split{split}"
    assert got.class_names[0] == "ApplyEyeMakeup" and got.class_names[100] == "YoYo"


def test_ucf101_refusals(tmp_path):
    ann, videos = layouts.ucf101(tmp_path)
    (ann / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nYoYo/v_YoYo_g09_c02.avi 100\n")
    with pytest.raises(DatasetError, match=r"trainlist01.txt:2: class number 100 disagrees with classInd.txt, where "
                                           "YoYo is 101"):
        read_split("ucf101", ann, videos, "train", 1)
    (ann / "testlist01.txt").write_text("YoYo/v_YoYo_g01_c03.avi\nYoyoing/v_Yoyoing_g01_c01.avi\n")
    with pytest.raises(DatasetError, match=r"testlist01.txt:2: folder 'Yoyoing' is not a class of classInd.txt"):
        read_split("ucf101", ann, videos, "val", 1)
    lines = (ann / "classInd.txt").read_text().splitlines()
    lines[0] = "1 ApplyLipstick"
    (ann / "classInd.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"classInd.txt:1: label id 0 is 'ApplyLipstick' here but 'ApplyEyeMakeup'"):
        read_split("ucf101", ann, videos, "val", 2)


def test_hmdb51_split_files(tmp_path):
    ann, videos = layouts.hmdb51(tmp_path)
    train = read_split("hmdb51", ann.parent, videos, "train", 1)
    assert rows(train) == [("brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi", 0),
                           ("kick_ball/Amazing_Soccer_kick_ball_f_cm_np1_ba_med_0.avi", 20),
                           ("wave/21_wave_u_nm_np1_fr_goo_5.avi", 50)]   # absent from the disk, kept
    assert wheres(train) == ["brush_hair_test_split1.txt:1", "kick_ball_test_split1.txt:1", "wave_test_split1.txt:2"]
    test = read_split("hmdb51", ann, videos, "val", 1)
    assert rows(test) == [("brush_hair/Brushing_Hair_with_Beth_brush_hair_h_nm_np1_le_goo_0.avi", 0),
                          ("wave/20060723sfjffbartsinger_wave_f_cm_np1_ba_med_0.avi", 50)]
    assert test.class_names[0] == "brush hair" and "1 videos marked 0" in test.notes[0]
    with pytest.raises(DatasetError, match=r"no HMDB51 split files \(\*_test_split2.txt"):
        read_split("hmdb51", ann, videos, "val", 2)
    (ann / "wave_test_split1.txt").write_text("21_wave_u_nm_np1_fr_goo_5.avi 3\n")
    with pytest.raises(DatasetError, match=r"wave_test_split1.txt:1: expected 'video.avi 0\|1\|2'"):
        read_split("hmdb51", ann, videos, "val", 1)
    (ann / "wave_test_split1.txt").rename(ann / "waving_test_split1.txt")
    with pytest.raises(DatasetError, match=r"waving_test_split1.txt: the file's class 'waving': class 'waving' is not "
                                           r"one of the 51 class names .*\(nearest: 'wave'\)"):
        read_split("hmdb51", ann, videos, "val", 1)


def test_loader_reads_an_adapter_and_reports_the_missing_video(tmp_path, caplog):
    ann, videos = layouts.ucf101(tmp_path)
    cfg = load_config("tiny", {"data.dataset": "ucf101", "data.annotations": str(ann), "data.root": str(videos),
                               "data.split": 2, "data.backend": "cpu", "data.num_workers": 0,
                               "model.num_classes": 101})
    with caplog.at_level(logging.WARNING, logger="ila_fast.data"):
        ds = load_dataset(cfg.data, "val", num_classes=101)
    assert [(e.path, e.label) for e in ds.entries] == [("Archery/v_Archery_g10_c01.avi", 2),
                                                       ("YoYo/v_YoYo_g09_c02.avi", 100)]
    assert [i.bad for i in ds.infos] == ["missing", None]
    assert "testlist02.txt:1: Archery/v_Archery_g10_c01.avi (no such file)" in caplog.text
    loader = build_loader(cfg.data, "val", 4, 32, 101, mode="val")
    assert len(loader.plan.bad) == 1
    with pytest.raises(DatasetError, match="model.num_classes = 8; set model.num_classes = 101"):
        load_dataset(cfg.data, "val", num_classes=8)
    with pytest.raises(DatasetError, match=r"testlist02.txt: 1 of 2 listed videos are missing .*data.missing = 'skip'"):
        load_dataset(load_config("tiny", {"data.dataset": "ucf101", "data.annotations": str(ann),
                                          "data.root": str(videos), "data.split": 2, "data.missing": "error"}).data,
                     "val")


def test_list_file_with_a_nul_byte_names_file_and_line(tmp_path):
    path = tmp_path / "train.txt"
    path.write_bytes(b"a.mp4 0\nb.mp4\x00 1\n")
    with pytest.raises(DatasetError, match=r"train.txt:2: contains a NUL byte at column 6"):
        read_list(path, tmp_path, check_files=False)
    path.write_bytes("a.mp4 0\n".encode("utf-16"))  # UTF-16: NULs from the first line
    with pytest.raises(DatasetError, match=r"train.txt:1: contains a NUL byte"):
        read_list(path, tmp_path, check_files=False)


def test_bundled_label_sets_are_package_data():
    assert sorted(p.stem for p in LABELS_DIR.glob("*.csv")) == sorted(n for n in ADAPTERS if n != "list")


def test_too_many_bad_videos_names_the_missing_files(tmp_path):
    from ila_fast.data import TooManyBadVideos
    from ila_fast.errors import one_line

    ann, videos = layouts.ucf101(tmp_path)
    (videos / "YoYo" / "v_YoYo_g09_c02.avi").unlink()
    (videos / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g08_c01.avi").write_bytes(b"")  # unreadable: empty
    cfg = load_config("tiny", {"data.dataset": "ucf101", "data.annotations": str(ann), "data.root": str(videos),
                               "data.backend": "cpu", "data.num_workers": 0, "model.num_classes": 101,
                               "data.max_bad_fraction": 0.0, "data.report_dir": str(tmp_path)})
    with pytest.raises(TooManyBadVideos) as e:
        build_loader(cfg.data, "train", 4, 32, 101)
    assert one_line(e.value).startswith(
        f"{ann / 'ucf101_train_split1'}: 3 of 3 videos cannot be used (2 missing: YoYo/v_YoYo_g09_c02.avi, "
        "Archery/v_Archery_g10_c01.avi; 1 unreadable), more than max_bad_fraction = 0.0 allows (0 videos)")


def test_renamed_ssv2_files_beside_the_loaders_own_files(tmp_path):
    ann, videos = layouts.ssv2(tmp_path)
    for kind in ("train", "validation"):
        (ann / f"something-something-v2-{kind}.json").rename(ann / f"sthv2_{kind}.json")
    cfg = load_config("ssv2_b16_8f", {"data.dataset": "ssv2", "data.annotations": str(ann), "data.root": str(videos),
                                      "data.num_workers": 0})
    load_dataset(cfg.data, "train", 174)  # writes ssv2_train.index.json beside the annotations
    (ann / "ssv2_val.bad_videos.rank0.json").write_text("{}")
    assert rows(read_split("ssv2", ann, videos, "train")) == [("78687.webm", 19), ("42326.webm", 141),
                                                              ("100904.webm", 120)]
    assert rows(read_split("ssv2", ann, videos, "val")) == [("74225.webm", 140)]
