"""The error walk: every expected user error ends in one line on stderr and exit code 2.

Each case goes through ``ila_fast.cli.main`` as a user would type it; the line must name
what is wrong (the file, the key or the argument). Real bugs keep their traceback, and
``--debug`` / ``ILA_FAST_DEBUG=1`` keep it for user errors too.
"""
from __future__ import annotations

import sys

import pytest
import torch

from ila_fast.cli import main
from ila_fast.data.synthetic import CLASSES


def run_cli(argv, capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own exits
        code = e.code
    err = capsys.readouterr().err
    return code, err


def assert_one_line(code, err, *needles):
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in err


def dataset_folder(tmp_path, lines: list[str], videos: dict[str, bytes] | None = None):
    tmp_path.mkdir(parents=True)
    (tmp_path / "labels.csv").write_text("id,name\n" + "".join(f"{i},{c[0]}\n" for i, c in enumerate(CLASSES)))
    (tmp_path / "train.txt").write_text("".join(line + "\n" for line in lines))
    for rel, data in (videos or {}).items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    return tmp_path


def test_argument_values_are_checked(capsys):
    for argv, needle in [
        (["train", "--config", "tiny", "--output", "x", "--max-steps", "0"], "--max-steps: 0 must be >= 1"),
        (["bench", "kernels", "--iters", "-1"], "--iters: -1 must be >= 0"),
        (["bench", "data", "--videos", "two"], "'two' is not an integer"),
        (["make-synthetic", "--out", "x", "--train-per-class", "0"], "--train-per-class: 0 must be >= 1"),
        (["make-synthetic", "--out", "x", "--frames", "1"], "--frames: 1 must be >= 2"),
        (["make-synthetic", "--out", "x", "--size", "128by96"], "WIDTHxHEIGHT"),
        (["bench", "data", "--workers", "1,x"], "comma-separated integers"),
        (["bench", "kernels", "--ops", "align,nope"], "unknown nope"),
        (["trian"], "did you mean 'train'?"),
        (["bench"], "required"),
    ]:
        assert_one_line(*run_cli(argv, capsys), needle)


def test_config_errors_name_the_file_and_key(tmp_path, capsys):
    assert_one_line(*run_cli(["config", "show", "k400_b16_8g"], capsys), "k400_b16_8g", "did you mean 'k400_b16_8f'?")
    assert_one_line(*run_cli(["train", "--config", "k400_b16_8g", "--output", str(tmp_path / "run")], capsys),
                    "k400_b16_8g")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nframse = 8\n")
    assert_one_line(*run_cli(["config", "show", str(bad)], capsys), str(bad), "frames")
    assert_one_line(*run_cli(["config", "show", "tiny", "--set", "model.frame=3"], capsys), "model.frame",
                    "did you mean 'frames'?")
    assert_one_line(*run_cli(["config", "show", "tiny", "--set", "model.frames"], capsys), "KEY=VALUE")


def test_convert_errors(tmp_path, capsys):
    missing = tmp_path / "missing.pth"
    assert_one_line(*run_cli(["convert", str(missing), str(tmp_path / "out.pth")], capsys),
                    str(missing), "no such file")
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    assert_one_line(*run_cli(["convert", str(text), str(tmp_path / "out.pth")], capsys),
                    str(text), "cannot read as a checkpoint")
    torch.save({"model": {"unrelated": torch.zeros(2)}}, tmp_path / "other.pth")
    assert_one_line(*run_cli(["convert", str(tmp_path / "other.pth"), str(tmp_path / "out.pth")], capsys),
                    str(tmp_path / "other.pth"))
    exists = tmp_path / "exists.pth"
    exists.write_bytes(b"")
    assert_one_line(*run_cli(["convert", str(tmp_path / "other.pth"), str(exists)], capsys),
                    str(exists), "already exists", "--force")
    assert not (tmp_path / "out.pth").exists()


def train_on(folder, tmp_path):
    return ["train", "--config", "tiny", "--output", str(tmp_path / "run"), "--set", f"data.root={folder}",
            "--set", f"data.train_list={folder / 'train.txt'}", "--set", f"data.labels={folder / 'labels.csv'}",
            "--set", "data.num_workers=0", "--set", "data.backend=cpu", "--max-steps", "1"]


def test_data_errors(tmp_path, capsys):
    nope = tmp_path / "nope"
    assert_one_line(*run_cli(train_on(nope, tmp_path), capsys), str(nope))
    folder = dataset_folder(tmp_path / "badline", ["videos/a.mp4 0", "videos/b.mp4"])
    assert_one_line(*run_cli(train_on(folder, tmp_path), capsys), "train.txt:2")
    garbage = {f"videos/v{i}.mp4": b"not a video" * 10 for i in range(8)}
    folder = dataset_folder(tmp_path / "garbage", [f"videos/v{i}.mp4 {i}" for i in range(8)], garbage)
    assert_one_line(*run_cli(train_on(folder, tmp_path), capsys), "train.txt", "8 of 8 videos", "max_bad_fraction")


def test_existing_output_and_missing_dependency(tmp_path, capsys, monkeypatch):
    out = tmp_path / "synthetic"
    out.mkdir()
    (out / "train.txt").write_text("")
    assert_one_line(*run_cli(["make-synthetic", "--out", str(out)], capsys), str(out), "--force")
    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    assert_one_line(*run_cli(["make-synthetic", "--out", str(tmp_path / "new"), "--train-per-class", "1",
                              "--val-per-class", "0", "--frames", "2", "--size", "32x32"], capsys),
                    "PyAV", "pip install -e '.[cpu-video]'")


def test_debug_keeps_the_traceback_and_bugs_are_not_hidden(tmp_path, capsys, monkeypatch):
    missing = ["config", "show", str(tmp_path / "missing.toml")]
    from ila_fast.config import ConfigError

    with pytest.raises(ConfigError):
        main([*missing, "--debug"])
    with pytest.raises(ConfigError):
        main(["--debug", *missing])
    monkeypatch.setenv("ILA_FAST_DEBUG", "1")
    with pytest.raises(ConfigError):
        main(missing)
    monkeypatch.delenv("ILA_FAST_DEBUG")
    import ila_fast.commands.zoo as zoo_command

    def bug(args):
        raise ZeroDivisionError("a real bug")
    monkeypatch.setattr(zoo_command, "run", bug)
    with pytest.raises(ZeroDivisionError):
        main(["zoo"])
