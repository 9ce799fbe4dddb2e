"""Refusals that name the config key to change and the fix, all path problems of a config at once,
`predict` on an unreadable file, `submit --dry-run`'s overrides. Through ``ila_fast.cli.main``."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import train_helpers as h  # noqa: E402

from ila_fast.cli import main  # noqa: E402

pytest.importorskip("av")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return h.make_dataset(tmp_path_factory.mktemp("videos"))


def run_cli(argv, capsys) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own exits
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line(code, err) -> str:
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def train(dataset, output, *sets):
    argv = ["train", "--config", "tiny", "--output", output, "--max-steps", "1"]
    for key, value in {**h.overrides(dataset), **dict(sets)}.items():
        text = f'"{value}"' if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else value
        argv += ["--set", f"{key}={text}"]
    return argv


def test_a_label_csv_of_another_size_names_model_num_classes(dataset, tmp_path, capsys):
    four = tmp_path / "four.csv"
    four.write_text("".join(f"{i},class {i}\n" for i in range(4)))
    line = one_line(*run_cli(train(dataset, tmp_path / "run", ("data.labels", str(four))), capsys)[::2])
    assert line == (f"ila-fast train: data.labels = '{four}' has 4 classes, but model.num_classes = 8: set "
                    "model.num_classes = 4 (--set model.num_classes=4) or give the label CSV of the model's 8 classes")


def test_a_missing_clip_file_names_model_clip_weights(dataset, tmp_path, capsys):
    nope = tmp_path / "ViT-B-16.pt"
    line = one_line(*run_cli(train(dataset, tmp_path / "run", ("model.clip_weights", str(nope))), capsys)[::2])
    assert line.startswith(f"ila-fast train: model.clip_weights = '{nope}' does not exist: set it to a local OpenAI "
                           "or open_clip CLIP file (`ila-fast zoo` lists where each config's CLIP weights come from)")
    # the same for a model built by hand from such a config
    from ila_fast.config import load_config
    from ila_fast.model import build_model
    from ila_fast.model.weights import WeightsError

    with pytest.raises(WeightsError, match=r"^model\.clip_weights = '.*ViT-B-16\.pt': no such file; set it"):
        build_model(load_config("tiny", {"model.clip_weights": str(nope)}).model)


def test_a_missing_data_root_is_named_as_such(dataset, tmp_path, capsys):
    nope = tmp_path / "no_videos_here"
    line = one_line(*run_cli(train(dataset, tmp_path / "run", ("data.root", str(nope))), capsys)[::2])
    assert line == (f"ila-fast train: data.root = '{nope}' does not exist: set data.root to the folder that the "
                    "list files' paths are relative to (--set data.root=DIR)")
    # the data pipeline alone says the same (not "24 of 24 videos cannot be used")
    from ila_fast.data.dataset import DatasetError, read_list

    with pytest.raises(DatasetError, match=r"^data\.root = '.*no_videos_here' does not exist: set data\.root"):
        read_list(dataset / "train.txt", nope)


def test_every_path_problem_of_a_config_is_reported_at_once(dataset, tmp_path, capsys):
    gone = tmp_path / "gone"
    sets = [("data.root", str(gone)), ("data.train_list", str(gone / "train.txt")),
            ("data.val_list", str(gone / "val.txt")), ("data.labels", str(gone / "labels.csv")),
            ("model.clip_weights", str(gone / "ViT-B-16.pt"))]
    evaluating = ("train.eval_every_epochs", 1)  # else the validation list is not read, nor checked
    line = one_line(*run_cli(train(dataset, tmp_path / "run", *sets, evaluating), capsys)[::2])
    assert line.startswith("ila-fast train: 5 paths of the config do not exist: (1) data.root = ")
    for number, (key, value) in enumerate(sets, 1):
        assert f"({number}) {key} = '{value}' does not exist: " in line
    # refused before any work: nothing written into the run folder but its lock
    assert not (tmp_path / "run").exists() or [p.name for p in (tmp_path / "run").iterdir()] in ([], ["run.lock"])


def test_eval_of_a_model_file_asks_for_a_config(tmp_path, capsys):
    model_file = tiny_model_file(tmp_path)
    line = one_line(*run_cli(["eval", model_file], capsys)[::2])
    assert line == (f"ila-fast eval: eval {model_file}: a model file carries no data settings; give --config "
                    "NAME|TOML (e.g. the run's config.toml), or a run folder / training checkpoint, which bring theirs")


def tiny_model_file(tmp_path) -> Path:
    from ila_fast.config import load_config
    from ila_fast.model import build_model
    from ila_fast.model.convert import save_checkpoint

    path = tmp_path / "tiny.pth"
    save_checkpoint(build_model(load_config("tiny").model, class_names=[f"class {i}" for i in range(8)]), path)
    return path


def test_predict_on_a_missing_file_prints_one_line_and_exits_2(tmp_path, capsys):
    missing = tmp_path / "missing.mp4"
    code, out, err = run_cli(["predict", missing, "--checkpoint", tiny_model_file(tmp_path)], capsys)
    assert code == 2 and out == ""
    assert err.splitlines() == [f"{missing}: cannot read (missing: no such file)"], err


def test_submit_dry_run_shows_the_overrides(tmp_path, capsys):
    pytest.importorskip("submitit")
    code, out, err = run_cli(["submit", "--config", "tiny", "--output", tmp_path / "run", "--dry-run",
                              "--set", "train.epochs=7", "--set", "data.batch_size=4", "--nodes", "2",
                              "--sweep", "train.lr_mit=1e-4,2e-4"], capsys)
    assert code == 0, err
    runs = [line for line in out.splitlines() if line.startswith("# run ")]
    assert len(runs) == 2
    for line, lr in zip(runs, ("0.0001", "0.0002")):
        assert line.endswith(f"overrides: train.epochs=7 data.batch_size=4 slurm.nodes=2 train.lr_mit={lr}"), line
