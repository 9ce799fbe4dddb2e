"""`ila-fast eval` on an official-layout checkpoint, `predict` with a broken file among good ones,
`show-alignment` writing a picture of the expected size."""
import json
import struct

import numpy as np
import pytest
import torch
from test_model import SMALL, official_layout, random_official

from ila_fast.cli import main

pytest.importorskip("av")
CLASSES = 8


@pytest.fixture(scope="module")
def motion(tmp_path_factory):
    from ila_fast.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("motion")
    make_synthetic(root, train_per_class=0, val_per_class=1, frames=10, size=(48, 32))
    return root


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """An SSv2 checkpoint in the official layout (as the converter tests build it): 3 frames at 32 px."""
    state = random_official(official_layout(**SMALL, dataset="ssv2", channels=32, classes=CLASSES), seed=3)
    path = tmp_path_factory.mktemp("official") / "official.pth"
    torch.save({"model": {"module." + k: v for k, v in state.items()}, "epoch": 4}, path)
    return path


def write_config(tmp_path, root, clips=2, crops=3):
    path = tmp_path / "eval.toml"
    path.write_text(f"""
[model]
arch = "custom"
dataset = "ssv2"
patch_size = 8
width = 64
layers = 2
heads = 1
embed_dim = 64
frames = 3
input_size = 32
num_classes = {CLASSES}
correlation_channels = 32
[data]
root = "{root}"
val_list = "{root / 'val.txt'}"
labels = "{root / 'labels.csv'}"
backend = "cpu"
num_workers = 0
batch_size = 4
test_clips = {clips}
test_crops = {crops}
""")
    return path


def test_eval_of_an_official_checkpoint_end_to_end(tmp_path, motion, official):
    from ila_fast.config import load_config
    from ila_fast.data import build_loader
    from ila_fast.model.convert import load_official

    config = write_config(tmp_path, motion)
    out = tmp_path / "eval"
    assert main(["eval", "--config", str(config), "--checkpoint", str(official), "--output", str(out)]) == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["listed"] == report["scored"] == 8 and report["views_per_video"] == 6
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert "official ILA checkpoint" in report["model"]
    # Independently: the mean softmax over each video's 6 views, batch by batch from the loader.
    cfg = load_config(config)
    model = load_official(official, cfg.model).eval()
    loader = build_loader(cfg.data, "val", 3, 32, CLASSES, mode="test")
    sums = np.zeros((8, CLASSES))
    with torch.no_grad():
        for batch in loader:
            probs = model(batch.video).logits.double().softmax(-1).numpy()
            for v, p in zip(batch.video_index.tolist(), probs):
                sums[v] += p
    labels = [int(line.split()[1]) for line in (motion / "val.txt").read_text().splitlines()]
    assert report["top1"] == pytest.approx(np.mean(sums.argmax(1) == labels))
    for video in report["per_video"]:
        top = video["top5"][0]
        assert top[0] == int(sums[video["index"]].argmax())
        assert top[1] == pytest.approx(sums[video["index"]].max() / 6, abs=1e-5)


def test_predict_reports_a_broken_file_and_scores_the_others(tmp_path, motion, official, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 40)  # an MP4 header and nothing else
    good = sorted((motion / "videos" / "val").glob("*.mp4"))[:2]
    videos = [str(good[0]), str(broken), str(good[1])]
    argv = ["predict", *videos, "--checkpoint", str(official), "--labels", str(motion / "labels.csv"),
            "--clips", "2", "--crops", "1"]
    assert main(argv + ["--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [v["ok"] for v in report["videos"]] == [True, False, True] and report["failed"] == 1
    names = (motion / "labels.csv").read_text().splitlines()[1:]
    for v in (report["videos"][0], report["videos"][2]):
        assert v["views"] == 2 and len(v["top"]) == 5
        assert all(t["name"] == names[t["class"]].split(",", 1)[1] for t in v["top"])
        scores = [t["score"] for t in v["top"]]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
    assert main(argv) == 1
    captured = capsys.readouterr()
    bad_lines = [line for line in captured.err.splitlines() if line.startswith(str(broken))]
    assert len(bad_lines) == 1 and "cannot read" in bad_lines[0]
    assert captured.out.count("(2 views)") == 2


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_show_alignment_writes_a_picture_of_the_expected_size(tmp_path, motion, official):
    from ila_fast.alignment_picture import CELL_INCHES, DPI, TITLE_INCHES

    video = sorted((motion / "videos" / "val").glob("*.mp4"))[0]
    out = tmp_path / "align.png"
    argv = ["show-alignment", str(video), "--checkpoint", str(official), "--out", str(out)]
    assert main(argv + ["--labels", str(motion / "labels.csv")]) == 0
    # 3 frames: 2 pairs (rows); 1 block: pre and cur (2 columns).
    assert png_size(out) == (round(2 * CELL_INCHES * DPI), round((2 * CELL_INCHES + TITLE_INCHES) * DPI))
    assert main(argv + ["--blocks", "0,1"]) == 0
    assert png_size(out) == (round(4 * CELL_INCHES * DPI), round((2 * CELL_INCHES + TITLE_INCHES) * DPI))
    assert main(argv + ["--blocks", "5"]) == 2  # a block that does not exist: one line, exit 2


def test_converted_file_carries_its_class_names_to_predict(tmp_path, motion, official, capsys):
    """convert --labels stores the names: predict needs no CSV, and a file without names shows ids."""
    names = [line.split(",", 1)[1] for line in (motion / "labels.csv").read_text().splitlines()[1:]]
    named, bare = tmp_path / "named.pth", tmp_path / "bare.pth"
    assert main(["convert", str(official), str(named), "--labels", str(motion / "labels.csv")]) == 0
    assert main(["convert", str(official), str(bare)]) == 0
    assert "no class names stored" in capsys.readouterr().out
    video = str(sorted((motion / "videos" / "val").glob("*.mp4"))[0])
    tops = {}
    for path in (named, bare):
        assert main(["predict", video, "--checkpoint", str(path), "--clips", "1", "--crops", "1", "--json"]) == 0
        tops[path] = json.loads(capsys.readouterr().out)["videos"][0]["top"]
    assert [t["class"] for t in tops[named]] == [t["class"] for t in tops[bare]]
    assert [t["name"] for t in tops[named]] == [names[t["class"]] for t in tops[named]]
    assert [t["name"] for t in tops[bare]] == [str(t["class"]) for t in tops[bare]]
    # a label CSV of the wrong size is refused by name, not silently mislabelled
    short = tmp_path / "short.csv"
    short.write_text("id,name\n0,a\n1,b\n")
    assert main(["predict", video, "--checkpoint", str(named), "--labels", str(short)]) == 2
    assert f"{short}: 2 classes, the model in {named} has 8" in capsys.readouterr().err
    for argv in (["predict", video, "--checkpoint", str(official)], ["convert", str(official), str(tmp_path / "x.pth")]):
        assert main(argv + ["--labels", str(short)]) == 2
        assert f"{short}: 2 classes, the model in {official} has 8" in capsys.readouterr().err
    assert not (tmp_path / "x.pth").exists()


def test_a_text_head_without_class_names_is_refused_before_scoring(tmp_path, motion, capsys):
    state = random_official(official_layout(**SMALL, dataset="k400", channels=32, classes=CLASSES), seed=4)
    source = tmp_path / "k400.pth"
    torch.save({"model": state}, source)
    assert main(["convert", str(source), str(tmp_path / "k400_ila.pth")]) == 0
    video = str(sorted((motion / "videos" / "val").glob("*.mp4"))[0])
    assert main(["predict", video, "--checkpoint", str(tmp_path / "k400_ila.pth")]) == 2
    assert "stores no class names" in capsys.readouterr().err
