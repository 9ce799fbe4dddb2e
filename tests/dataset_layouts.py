"""Miniatures of the layouts datasets are downloaded in, written by the tests: the real annotation file
formats (CVDF CSV, mmaction2 lists and names-only map, SSv2 JSON, UCF101 and HMDB51 split files) and real
encoded videos (copies of tests/video_fixtures.py's files: H.264 .mp4, VP9 .webm, MJPEG .avi).

Each builder returns (annotations folder, videos folder) and leaves one annotated video off the disk.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from video_fixtures import fixture_videos

from ila_fast.data.datasets import bundled_names


def _video(dst: Path, kind: str) -> Path:
    src = fixture_videos()[{"mp4": "painted_h264", "webm": "painted_vp9", "avi": "motion_mjpeg"}[kind]]
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def kinetics_cvdf(root: Path) -> tuple[Path, Path]:
    """CVDF Kinetics-400: annotations/{train,val}.csv, videos/{train,val}/<id>_<start>_<end>.mp4.

    train.csv quotes a name (``"air drumming"``) and lists ``zumba``'s video, which is not on disk."""
    ann, videos = root / "annotations", root / "k400"
    ann.mkdir(parents=True)
    (ann / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split,is_cc\n"
        "abseiling,--07WQ2iBlw,1,11,train,0\n"
        "\"air drumming\",-0NbRyEP2vo,53,63,train,0\n"
        "zumba,zzzzzzzzzzz,10,20,train,0\n")
    (ann / "val.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "yoga,yoga0000001,0,10,val\n")
    _video(videos / "train" / "--07WQ2iBlw_000001_000011.mp4", "mp4")
    _video(videos / "train" / "-0NbRyEP2vo_000053_000063.mp4", "mp4")
    _video(videos / "val" / "yoga0000001_000000_000010.mp4", "mp4")
    return ann, videos


def kinetics_old_per_class(root: Path) -> tuple[Path, Path]:
    """An older download: kinetics_400_train.csv, videos/<class>/<youtube_id>.mkv|.webm, one video absent."""
    ann, videos = root / "annotations", root / "videos"
    ann.mkdir(parents=True)
    (ann / "kinetics_400_train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "\"playing bagpipes\",bagpipes001,5.0,15.0,train\n"
        "\"massaging person's head\",massage0001,0.0,10.0,train\n"
        "abseiling,abseil00001,1.0,11.0,train\n")
    _video(videos / "playing_bagpipes" / "bagpipes001.webm", "webm")
    _video(videos / "massaging person's head" / "massage0001.mp4", "mp4")
    return ann, videos


def kinetics_custom_names(root: Path) -> tuple[Path, Path, Path]:
    """A CVDF CSV whose class names hold commas (quoted), with its own label CSV: (annotations, videos, labels)."""
    ann, videos = root / "annotations", root / "videos"
    ann.mkdir(parents=True)
    labels = root / "labels.csv"
    with open(labels, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerows([["id", "name"], [0, "cooking, stirring"], [1, "juggling balls"], [2, "running, jumping, falling"]])
    (ann / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "\"running, jumping, falling\",runjump0001,0,10,train\n"
        "\"cooking, stirring\",cook0000001,30,40,train\n"
        "juggling balls,juggle00001,2,12,train\n")
    for name in ("runjump0001_000000_000010", "cook0000001_000030_000040", "juggle00001_000002_000012"):
        _video(videos / "train" / f"{name}.mp4", "mp4")
    return ann, videos, labels


def kinetics_mmaction(root: Path) -> tuple[Path, Path]:
    """mmaction2: kinetics400_{train,val}_list_videos.txt, label_map_k400.txt, videos_train/<class>/..."""
    ann = root / "data" / "kinetics400"
    ann.mkdir(parents=True)
    (ann / "label_map_k400.txt").write_text("\n".join(bundled_names("kinetics400")) + "\n")
    (ann / "kinetics400_train_list_videos.txt").write_text(
        "abseiling/--07WQ2iBlw_000001_000011.mp4 0\n"
        "zumba/zzzzzzzzzzz_000010_000020.mp4 399\n"
        "yoga/yoga0000001_000000_000010.mp4 398\n")
    (ann / "kinetics400_val_list_videos.txt").write_text("air_drumming/-0NbRyEP2vo_000053_000063.mp4 1\n")
    _video(ann / "videos_train" / "abseiling" / "--07WQ2iBlw_000001_000011.mp4", "mp4")
    _video(ann / "videos_train" / "yoga" / "yoga0000001_000000_000010.mp4", "mp4")
    _video(ann / "videos_val" / "air_drumming" / "-0NbRyEP2vo_000053_000063.mp4", "mp4")
    return ann, ann


def ssv2(root: Path) -> tuple[Path, Path]:
    """The official files: labels JSON (keys in reverse order, ids as strings), train / validation JSON, <id>.webm."""
    ann, videos = root / "labels", root / "20bn-something-something-v2"
    ann.mkdir(parents=True)
    names = bundled_names("ssv2")
    labels = {name: str(i) for i, name in reversed(list(enumerate(names)))}
    (ann / "something-something-v2-labels.json").write_text(json.dumps(labels, indent=1))
    train = [
        {"id": "78687", "label": "holding potato next to vicks vaporub bottle",
         "template": "Holding [something] next to [something]", "placeholders": ["potato", "vicks vaporub bottle"]},
        {"id": "42326", "label": "spreading margarine onto bread",
         "template": "Spreading [Something] onto [something]", "placeholders": ["margarine", "bread"]},
        {"id": "100904", "label": "putting pen, pencil and eraser on the table",
         "template": "Putting [something], [something] and [something] on the table",
         "placeholders": ["pen", "pencil", "eraser"]},
    ]
    (ann / "something-something-v2-train.json").write_text(json.dumps(train))
    (ann / "something-something-v2-validation.json").write_text(json.dumps([
        {"id": "74225", "label": "spinning cube that quickly stops spinning",
         "template": "Spinning [something] that quickly stops spinning", "placeholders": ["cube"]}]))
    for vid in ("78687", "100904", "74225"):
        _video(videos / f"{vid}.webm", "webm")
    return ann, videos


UCF_SPLITS = {  # split -> (train rows, test rows): (class folder, group, clip)
    1: ([("ApplyEyeMakeup", 8, 1), ("YoYo", 9, 2), ("Archery", 10, 1)], [("ApplyEyeMakeup", 1, 1), ("YoYo", 1, 3)]),
    2: ([("ApplyEyeMakeup", 1, 1), ("YoYo", 1, 3)], [("Archery", 10, 1), ("YoYo", 9, 2)]),
    3: ([("YoYo", 1, 3), ("Archery", 10, 1)], [("ApplyEyeMakeup", 8, 1), ("ApplyEyeMakeup", 1, 1)]),
}


def ucf_file(folder: str, group: int, clip: int) -> str:
    return f"{folder}/v_{folder}_g{group:02d}_c{clip:02d}.avi"


def ucf101(root: Path, missing: bool = True) -> tuple[Path, Path]:
    """ucfTrainTestlist/{classInd,trainlist0N,testlist0N}.txt and UCF-101/<Class>/v_<Class>_gXX_cYY.avi
    (CRLF line ends as in the release); v_Archery_g10_c01.avi is absent when ``missing``."""
    ann, videos = root / "ucfTrainTestlist", root / "UCF-101"
    ann.mkdir(parents=True)
    (ann / "classInd.txt").write_bytes("".join(f"{i + 1} {n}\r\n" for i, n in
                                               enumerate(bundled_names("ucf101"))).encode())
    number = {n: i + 1 for i, n in enumerate(bundled_names("ucf101"))}
    for split, (train, test) in UCF_SPLITS.items():
        (ann / f"trainlist0{split}.txt").write_bytes(
            "".join(f"{ucf_file(*r)} {number[r[0]]}\r\n" for r in train).encode())
        (ann / f"testlist0{split}.txt").write_bytes("".join(f"{ucf_file(*r)}\r\n" for r in test).encode())
    rows = {r for train, test in UCF_SPLITS.values() for r in train + test}
    for r in sorted(rows):
        if not (missing and r == ("Archery", 10, 1)):
            _video(videos / ucf_file(*r), "avi")
    return ann, videos


HMDB_ROWS = {  # class folder -> [(video file, role in split 1)]
    "brush_hair": [("April_09_brush_hair_u_nm_np1_ba_goo_0.avi", 1), ("Brushing_Hair_with_Beth_brush_hair_h_nm_np1_le_goo_0.avi", 2),
                   ("Aussie_Brush_hair_u_nm_np1_fr_med_1.avi", 0)],
    "kick_ball": [("Amazing_Soccer_kick_ball_f_cm_np1_ba_med_0.avi", 1)],
    "wave": [("20060723sfjffbartsinger_wave_f_cm_np1_ba_med_0.avi", 2), ("21_wave_u_nm_np1_fr_goo_5.avi", 1)],
}


def hmdb51(root: Path) -> tuple[Path, Path]:
    """testTrainMulti_7030_splits/<class>_test_split1.txt for all 51 classes, hmdb51_org/<class>/<video>.avi;
    the wave class's training video is absent."""
    ann, videos = root / "testTrainMulti_7030_splits", root / "hmdb51_org"
    ann.mkdir(parents=True)
    for name in bundled_names("hmdb51"):
        folder = name.replace(" ", "_")
        rows = HMDB_ROWS.get(folder, [])
        (ann / f"{folder}_test_split1.txt").write_text("".join(f"{v} {role} \n" for v, role in rows))
        for video, _ in rows:
            if video != "21_wave_u_nm_np1_fr_goo_5.avi":
                _video(videos / folder / video, "avi")
    return ann, videos
