"""Faults around resuming, as a user meets them: a config changed between restarts, dropout and
drop-path across a resume, damaged checkpoints, a rollback, and the bookkeeping after a resume.
Real videos (the tiny synthetic dataset), the tiny model, a few steps each."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import train_helpers as h  # noqa: E402

from ila_fast.cli import main  # noqa: E402
from ila_fast.errors import UserError  # noqa: E402
from ila_fast.train import Trainer  # noqa: E402
from ila_fast.train.checkpoint import complete_checkpoints, latest_checkpoint, load_model_state  # noqa: E402


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return h.make_dataset(tmp_path_factory.mktemp("videos"))


def run(root, output, resume="auto", **extra) -> dict:
    return Trainer(h.tiny_config(root, **extra), output, resume=resume).fit()


def trainable(folder: Path) -> dict:
    from ila_fast.model import is_trainable

    state, _ = load_model_state(folder)
    return {k: v for k, v in state.items() if is_trainable(k) and not k.endswith(BN_BUFFERS)}


BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")  # updated by forwards, not by the optimizer


def metric_lines(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def three_saves(dataset, tmp_path_factory):
    """A run of 3 steps with a checkpoint at each (copied by the tests that damage or change it)."""
    out = tmp_path_factory.mktemp("base") / "run"
    run(dataset, out, train__max_steps=3, train__checkpoint_every_steps=1, train__keep_last=3)
    assert [p.name for p in complete_checkpoints(out)] == ["step_00000001", "step_00000002", "step_00000003"]
    return out


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------- exact resume with dropout and drop-path

def test_resume_with_dropout_and_drop_path_is_bit_identical(dataset, tmp_path):
    # the SSv2 head: classifier dropout 0.5, and drop-path in every block; the DataLoader draws its
    # workers' seed when an iterator starts, with or without workers (without its own generator this
    # fails from step 4 on: the resumed iterator shifted the global RNG)
    ssv2 = dict(model__dataset="ssv2", model__num_classes=8, model__drop_path=0.2, model__ssv2_dropout=0.5,
                data__num_workers=0)
    run(dataset, tmp_path / "straight", train__max_steps=6, **ssv2)
    run(dataset, tmp_path / "split", train__max_steps=3, **ssv2)
    run(dataset, tmp_path / "split", train__max_steps=6, **ssv2)
    straight, split = h.losses(tmp_path / "straight"), h.losses(tmp_path / "split")
    assert straight.keys() == split.keys() == set(range(1, 7))
    assert [split[s] for s in range(1, 7)] == [straight[s] for s in range(1, 7)]  # bit for bit
    a, b = trainable(latest_checkpoint(tmp_path / "straight")), trainable(latest_checkpoint(tmp_path / "split"))
    assert a.keys() == b.keys() and any("classifier" in k for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), (k, (a[k] - b[k]).abs().max())


# ---------------------------------------------------------------- a config changed between restarts

def test_keys_that_cannot_change_are_refused_by_name(dataset, three_saves, tmp_path):
    out = copy_run(three_saves, tmp_path / "run")
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    with pytest.raises(UserError) as refused:
        run(dataset, out, train__max_steps=4, model__drop_path=0.1, train__epochs=3, data__seed=5)
    message = str(refused.value)
    assert "\n" not in message
    for needle in ("step_00000003", "model.drop_path 0.0 -> 0.1", "train.epochs 2 -> 3", "data.seed 0 -> 5",
                   "--set model.drop_path=0.0", "--resume none", "--output"):
        assert needle in message, (needle, message)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before  # nothing touched
    # the same through the command line: one line, exit 2
    code, err = cli_train(dataset, out, {"train.total_batch": 8})
    assert code == 2 and "train.total_batch 4 -> 8" in err and "Traceback" not in err


def cli_train(root, out, extra: dict, resume: str | None = None) -> tuple[int, str]:
    import subprocess

    values = h.overrides(root, **{"train__max_steps": 4})
    values.update(extra)
    sets = [f'{k}="{v}"' if isinstance(v, str) else f"{k}={str(v).lower() if isinstance(v, bool) else v}"
            for k, v in values.items()]
    cmd = [sys.executable, "-m", "ila_fast.cli", "train", "--config", "tiny", "--output", str(out)]
    cmd += [a for s in sets for a in ("--set", s)] + (["--resume", resume] if resume else [])
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


def test_changed_lr_and_weight_decay_drive_the_next_update(dataset, three_saves, tmp_path):
    step3 = trainable(three_saves / "checkpoints" / "step_00000003")
    # every lr 0 from the resumed step on: the next update leaves every trainable weight as it was
    # (the loaded optimizer state used to put the old lrs back)
    keep = dict(train__checkpoint_every_steps=1, train__keep_last=3)  # as three_saves: not a change
    frozen = copy_run(three_saves, tmp_path / "lr0")
    zero = {f"train__lr_{g}": 0.0 for g in ("message", "temporal", "mit", "other")}
    run(dataset, frozen, train__max_steps=4, train__min_lr=0.0, train__warmup_lr=0.0, **zero, **keep)
    after = trainable(frozen / "checkpoints" / "step_00000004")
    for k in step3:
        assert torch.equal(after[k], step3[k]), k
    # weight decay: two resumes that differ only in wd_message; AdamW's decoupled decay makes the
    # decayed message_ weights differ by exactly p * lr * (wd_b - wd_a) after one step
    a = copy_run(three_saves, tmp_path / "wd_a")
    b = copy_run(three_saves, tmp_path / "wd_b")
    run(dataset, a, train__max_steps=4, **keep)
    run(dataset, b, train__max_steps=4, train__wd_message=0.5, **keep)
    lr = [r for r in metric_lines(b) if r["kind"] == "train" and r["step"] == 4][0]["lr/message"]
    assert lr > 0
    pa, pb = trainable(a / "checkpoints" / "step_00000004"), trainable(b / "checkpoints" / "step_00000004")
    decayed = [k for k in step3 if "message_" in k and step3[k].ndim > 1 and not k.endswith(".bias")]
    assert decayed
    for k in decayed:
        expected = step3[k].double() * lr * (0.5 - 1e-2)  # tiny's wd_message is the recipe's 1e-2
        got = pa[k].double() - pb[k].double()
        assert torch.allclose(got, expected, rtol=1e-3, atol=1e-9), (k, (got - expected).abs().max())
        assert expected.abs().max() > 1e-5
    # the change is recorded: metrics.jsonl and config.toml's history
    changes = [r for r in metric_lines(b) if r["kind"] == "config_change"]
    assert changes == [{**changes[0], "step": 3, "changes": {"train.max_steps": [3, 4],
                                                             "train.wd_message": [0.01, 0.5]}}]
    text = (b / "config.toml").read_text()
    assert "wd_message = 0.5" in text
    history = text.split("# ---- history")[1]
    assert "resumed at step 3" in history and "train.wd_message 0.01 -> 0.5" in history


def test_another_version_and_a_changed_config_are_named_in_one_line_each(dataset, three_saves, tmp_path, capsys):
    import ila_fast

    out = copy_run(three_saves, tmp_path / "run")
    meta_file = out / "checkpoints" / "step_00000003" / "trainer.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "version": "0.0.1"}))
    capsys.readouterr()
    run(dataset, out, train__max_steps=4, train__checkpoint_every_steps=1, train__keep_last=3,
        train__log_every_steps=2, data__num_workers=1)
    printed = capsys.readouterr().out.splitlines()
    version = [line for line in printed if "written by ila-fast" in line]
    assert len(version) == 1 and f"written by ila-fast 0.0.1, this is ila-fast {ila_fast.__version__}" in version[0]
    changed = [line for line in printed if "config changed since this checkpoint" in line]
    assert len(changed) == 1 and f"(hash {meta['config_hash']} -> " in changed[0]
    for needle in ("data.num_workers 0 -> 1", "train.log_every_steps 1 -> 2", "train.max_steps 3 -> 4"):
        assert needle in changed[0], (needle, changed[0])


# ---------------------------------------------------------------- damaged checkpoints

def _truncate_shard(folder: Path) -> None:
    shard = max(folder.glob("*.distcp"), key=lambda p: p.stat().st_size)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage, what", [
    (_truncate_shard, "bytes .metadata says"),
    (lambda f: (f / ".metadata").unlink(), "no .metadata"),
    (lambda f: (f / "trainer.json").write_text("{garbage"), "trainer.json does not parse"),
])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(dataset, three_saves, tmp_path, capsys,
                                                                 damage, what):
    out = copy_run(three_saves, tmp_path / "run")
    newest = out / "checkpoints" / "step_00000003"
    damage(newest)
    # read-only commands (export, eval, predict) refuse it in one line, exit 2, naming the folder and
    # what is wrong
    code, err = _cli(["export", str(out), str(tmp_path / "m.pth")], capsys)
    _one_line(code, err, str(newest), what, "step_00000002")
    code, err = _cli(["export", str(newest), str(tmp_path / "m.pth")], capsys)
    _one_line(code, err, str(newest), what)
    sets = [a for k, v in h.overrides(dataset).items() if k.startswith("data.") and isinstance(v, str)
            for a in ("--set", f'{k}="{v}"')]
    code, err = _cli(["eval", "--config", "tiny", "--checkpoint", str(out), *sets], capsys)
    _one_line(code, err, str(newest), what)
    video = next((dataset / "videos").rglob("*.mp4"))
    code, err = _cli(["predict", "--checkpoint", str(newest), str(video)], capsys)
    _one_line(code, err, str(newest), what)
    # training falls back to step 2, renames the damaged one aside and says so
    summary = run(dataset, out, train__max_steps=4, train__checkpoint_every_steps=1, train__keep_last=3)
    printed = capsys.readouterr().out
    assert f"{newest}: damaged checkpoint" in printed and what in printed, printed
    assert (out / "checkpoints" / "step_00000003.damaged").is_dir()
    assert summary["status"] == "completed" and summary["resumed_from"].endswith("step_00000002")
    assert [p.name for p in complete_checkpoints(out)] == ["step_00000002", "step_00000003", "step_00000004"]


def _cli(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def _one_line(code, err, *needles):
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_no_good_checkpoint_anywhere_is_refused_with_the_choices(dataset, three_saves, tmp_path):
    out = copy_run(three_saves, tmp_path / "run")
    for folder in (out / "checkpoints").glob("step_*"):
        (folder / "COMPLETE").unlink()
    with pytest.raises(UserError, match=r"no good checkpoint.*--resume PATH.*--resume none.*--output"):
        run(dataset, out, train__max_steps=4)
    damaged = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert damaged == ["step_00000001.damaged", "step_00000002.damaged", "step_00000003.damaged"]
    with pytest.raises(UserError, match="no good checkpoint"):  # and again: never a silent start at step 0
        run(dataset, out, train__max_steps=4)
    # --resume none starts over and keeps them, moved aside
    summary = run(dataset, out, resume=None, train__max_steps=1)
    assert summary["status"] == "completed" and summary["step"] == 1
    aside = list((out / "checkpoints").glob("superseded_*"))
    assert len(aside) == 1 and {p.name for p in aside[0].iterdir()} == {*damaged, "metrics.dropped.jsonl"}
    assert [r["step"] for r in metric_lines(out) if r["kind"] == "train"] == [1]


# ---------------------------------------------------------------- rollback and bookkeeping

def test_rollback_keeps_the_superseded_checkpoints_and_later_restarts_follow_it(dataset, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    keep = dict(train__checkpoint_every_steps=1, train__keep_last=2)
    run(dataset, out, train__max_steps=4, **keep)
    assert [p.name for p in complete_checkpoints(out)] == ["step_00000003", "step_00000004"]
    summary = run(dataset, out, resume=out / "checkpoints" / "step_00000003", train__max_steps=5, **keep)
    assert summary["step"] == 5
    printed = capsys.readouterr().out
    assert "moved 1 checkpoint(s) newer than the resumed step 3 into superseded_" in printed, printed
    aside = list((out / "checkpoints").glob("superseded_*"))
    assert len(aside) == 1 and (aside[0] / "step_00000004" / "COMPLETE").is_file()
    assert [json.loads(line)["step"] for line in (aside[0] / "metrics.dropped.jsonl").read_text().splitlines()] == [4]
    # a plain restart continues the rolled-back line (step 5), not the superseded step 4
    summary = run(dataset, out, train__max_steps=6, **keep)
    assert summary["resumed_from"].endswith("step_00000005") and summary["step"] == 6
    assert (aside[0] / "step_00000004" / "COMPLETE").is_file()
    # metrics.jsonl: each step once, in order; TensorBoard: the purged curves do not overlap either
    steps = [r["step"] for r in metric_lines(out) if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    straight = tmp_path / "straight"
    run(dataset, straight, train__max_steps=6)
    assert h.losses(out)[6] == pytest.approx(h.losses(straight)[6], rel=1e-6)


def test_bad_videos_are_reported_per_epoch_for_training_and_validation(dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    # one training and one validation video go missing: skipped, replaced, and counted per epoch
    train_video = (data / "train.txt").read_text().split()[0]
    val_video = (data / "val.txt").read_text().split()[0]
    (data / train_video).unlink()
    (data / val_video).unlink()
    common = dict(train__eval_every_epochs=1, data__max_bad_fraction=0.2, data__index_dir=str(tmp_path / "index"))
    reports = {}
    for name, stops in (("straight", (8,)), ("resumed", (3, 8))):  # the second resumes mid-epoch 0
        folder = tmp_path / f"reports_{name}"
        for stop in stops:
            run(data, tmp_path / name, train__max_steps=stop, data__report_dir=str(folder), **common)
        reports[name] = [json.loads((folder / f"{split}.bad_videos.rank0.json").read_text())
                         for split in ("train", "val")]
    train, val = reports["straight"]
    assert train["bad_videos"] == 1 and train["by_reason"]["missing"] == 1
    # the missing video's position is replaced once in each epoch: counts per epoch, not cumulative
    assert [(e["epoch"], e["replacements"]) for e in train["per_epoch"]] == [(0, 1), (1, 1)]
    assert train["epoch"] == 1 and train["replacements_total"] == 2
    assert [e["epoch"] for e in val["per_epoch"]] == [0, 1] and val["epoch"] == 1
    # a resume carries the counts on: the same report as the straight run's
    assert reports["resumed"][0]["per_epoch"] == train["per_epoch"]
    assert reports["resumed"][0]["replacements_total"] == 2
