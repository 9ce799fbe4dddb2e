"""``ila-fast prepare-dataset``: a miniature HMDB51 download -> list files, labels.csv, the probe index and a
report naming each missing or unreadable video by its annotation row; resumable after an interruption."""
from __future__ import annotations

import json

import pytest

import dataset_layouts as layouts
from ila_fast.cli import main
from ila_fast.data import VideoDataset, read_labels
from ila_fast.data import dataset as dataset_module
from ila_fast.data.datasets import bundled_names, video_files

pytest.importorskip("av")


def run(ann, videos, out, *extra) -> int:
    return main(["prepare-dataset", "hmdb51", "--annotations", str(ann), "--videos", str(videos), "--out", str(out),
                 "--split", "1", "--jobs", "1", *extra])


def test_prepare_dataset_hmdb51(tmp_path, capsys, monkeypatch):
    video_files.cache_clear()
    ann, videos = layouts.hmdb51(tmp_path / "download")
    (videos / "kick_ball" / "Amazing_Soccer_kick_ball_f_cm_np1_ba_med_0.avi").write_bytes(b"")  # unreadable
    out = tmp_path / "lists"
    # interrupted after the first probe: what was probed is already in the index
    real_probe, calls = dataset_module.probe_video, []

    def interrupted(path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_probe(path)

    monkeypatch.setattr(dataset_module, "probe_video", interrupted)
    monkeypatch.setattr(dataset_module, "SAVE_EVERY_S", 0.0)
    assert run(ann, videos, out) != 0
    assert "ila-fast prepare-dataset: interrupted" in capsys.readouterr().err
    monkeypatch.setattr(dataset_module, "probe_video", real_probe)
    assert run(ann, videos, out) == 0
    printed = capsys.readouterr().out
    assert (out / "hmdb51_train_split1.txt").read_text() == (
        "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi 0\n"
        "kick_ball/Amazing_Soccer_kick_ball_f_cm_np1_ba_med_0.avi 20\n"
        "wave/21_wave_u_nm_np1_fr_goo_5.avi 50\n")
    assert (out / "hmdb51_test_split1.txt").read_text() == (
        "brush_hair/Brushing_Hair_with_Beth_brush_hair_h_nm_np1_le_goo_0.avi 0\n"
        "wave/20060723sfjffbartsinger_wave_f_cm_np1_ba_med_0.avi 50\n")
    assert read_labels(out / "labels.csv") == bundled_names("hmdb51")
    report = json.loads((out / "prepare_dataset.json").read_text())
    train, test = report["lists"]
    assert train["probed_now"] == 1 and test["probed_now"] == 2   # the first probe was kept
    assert [(b["row"], b["reason"]) for b in train["missing"]] == [("wave_test_split1.txt:2", "missing")]
    assert [(b["row"], b["reason"]) for b in train["unreadable"]] == [("kick_ball_test_split1.txt:1", "empty_file")]
    assert "kick_ball_test_split1.txt:1: kick_ball/Amazing_Soccer_kick_ball_f_cm_np1_ba_med_0.avi (empty_file" in printed
    assert f"--set data.train_list={out / 'hmdb51_train_split1.txt'}" in printed
    # a second run probes nothing, and training's loader finds the same index
    assert run(ann, videos, out) == 0
    assert [e["probed_now"] for e in json.loads((out / "prepare_dataset.json").read_text())["lists"]] == [0, 0]
    ds = VideoDataset.load(out / "hmdb51_test_split1.txt", videos, out / "labels.csv", 51)
    assert ds.index.probed == 0 and ds.labels == [0, 50]


def test_prepare_dataset_refuses_a_bad_row(tmp_path, capsys):
    video_files.cache_clear()
    ann, videos = layouts.hmdb51(tmp_path / "download")
    (ann / "wave_test_split1.txt").write_text("21_wave_u_nm_np1_fr_goo_5.avi\n")
    assert run(ann, videos, tmp_path / "lists") == 2
    assert "wave_test_split1.txt:1: expected 'video.avi 0|1|2'" in capsys.readouterr().err
    assert not (tmp_path / "lists").exists()
