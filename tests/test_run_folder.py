"""What a researcher finds after a run: summary.json, checkpoints/best, train.log, eval from the run
folder alone, score tables and their ensemble. Real videos (the tiny synthetic set), the tiny model."""
from __future__ import annotations

import json
import os
import pty
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import train_helpers as h  # noqa: E402

from ila_fast.cli import main  # noqa: E402
from ila_fast.train import Trainer  # noqa: E402
from ila_fast.train.checkpoint import BEST, complete_checkpoints  # noqa: E402

pytest.importorskip("av")

# scripted evaluations: the first is the best, so checkpoints/best must outlive keep_last = 1
SCRIPT = [(0.5, 0.75), (0.25, 1.0)]
PROBE = torch.randn(2, 4, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return h.make_dataset(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):
    """2 epochs of 4 steps, a checkpoint every step (keep_last 1) and scripted evaluations, each of
    which also records the model's logits on PROBE (the reference for checkpoints/best)."""
    import ila_fast.train.evaluate as evaluate_module

    output = tmp_path_factory.mktemp("run") / "run"
    seen = []

    def scripted(model, loader, num_classes, env=None, **kwargs):
        with torch.no_grad():
            seen.append(model(PROBE).logits.detach().clone())
        top1, top5 = SCRIPT[len(seen) - 1]
        return SimpleNamespace(top1=top1, top5=top5, mean_class_acc=top1, scored=8)

    real = evaluate_module.evaluate
    evaluate_module.evaluate = scripted
    try:
        cfg = h.tiny_config(dataset, train__eval_every_epochs=1, train__checkpoint_every_steps=1,
                            train__keep_last=1, train__log_samples=False)
        summary = Trainer(cfg, output).fit()
    finally:
        evaluate_module.evaluate = real
    return SimpleNamespace(output=output, summary=summary, logits=seen)


def test_summary_has_the_numbers(run):
    s = json.loads((run.output / "summary.json").read_text())
    assert s == json.loads(json.dumps(run.summary))  # the file is what fit() returned
    assert s["status"] == "completed" and s["step"] == 8 and s["total_steps"] == 8
    assert s["epochs"] == 2 and s["epochs_done"] == 2.0 and s["clips_seen"] == 32
    assert s["wall_time_s"] > 0 and s["wall_time_s"] >= s["wall_time_this_process_s"] > 0
    assert s["clips_per_s"] > 0
    assert (s["final_top1"], s["final_top5"], s["final_eval_step"], s["final_eval_epoch"]) == (0.25, 1.0, 8, 1)
    assert (s["best_top1"], s["best_top5"], s["best_eval_step"], s["best_eval_epoch"]) == (0.5, 0.75, 4, 0)
    assert s["evaluations"] == 2 and "single view" in s["eval_protocol"]
    assert s["best_checkpoint"] == str(run.output / "checkpoints" / BEST)


def test_best_checkpoint_survives_pruning_and_loads(run, tmp_path):
    from ila_fast.model.convert import load_checkpoint
    from ila_fast.train.export import export_model

    folders = sorted(p.name for p in (run.output / "checkpoints").iterdir())
    assert folders == [BEST, "step_00000008"]  # keep_last = 1 pruned steps 1-7, not the best
    assert [p.name for p in complete_checkpoints(run.output)] == ["step_00000008"]  # never resumed from
    meta = json.loads((run.output / "checkpoints" / BEST / "trainer.json").read_text())
    assert meta["step"] == 4 and meta["eval"] == {"top1": 0.5, "top5": 0.75, "epoch": 0, "step": 4}
    export_model(run.output / "checkpoints" / BEST, tmp_path / "best.pth")
    best = load_checkpoint(tmp_path / "best.pth").eval()
    with torch.no_grad():
        got = best(PROBE).logits
    at_step_4, at_step_8 = run.logits
    assert torch.allclose(got, at_step_4, atol=1e-5), (got - at_step_4).abs().max()
    assert not torch.allclose(got, at_step_8, atol=1e-3)  # the run moved on after its best


def test_train_log_holds_the_console_as_plain_lines(run):
    text = (run.output / "train.log").read_text()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0].startswith("--- ")
    assert any(line.startswith("ila-fast ") and "steps per epoch" in line for line in lines)
    steps = [line for line in lines if line.startswith("epoch ") and " step " in line]
    assert [line.split()[3] for line in steps] == [f"{i}/8" for i in range(1, 9)]
    assert sum(line.startswith("eval epoch") for line in lines) == 2
    assert any(line.startswith("best top-1 so far (50.00 %)") for line in lines)


def test_a_bar_on_the_terminal_still_logs_plain_lines(tmp_path, monkeypatch):
    import ila_fast.train.monitor as monitor_module
    from ila_fast.train.run_log import RunLog

    monkeypatch.setattr(monitor_module, "has_terminal", lambda stream: True)
    log = RunLog(tmp_path / "train.log")
    try:
        monitor = monitor_module.Monitor(tmp_path, True, 3, tensorboard=False, run_log=log)
        assert monitor.bar is not None
        for step in (1, 2, 3):
            monitor.step(step, 0, {"loss": 1.0 / step, "lr": 1e-3})
        print("a line printed by anyone")
        monitor.close({"status": "completed"})
    finally:
        log.close()
    lines = (tmp_path / "train.log").read_text().splitlines()
    assert [line.split(" eta ")[0] for line in lines if line.startswith("epoch")] == [
        "epoch 0 step 1/3 loss 1.0000 lr 1.00e-03", "epoch 0 step 2/3 loss 0.5000 lr 1.00e-03",
        "epoch 0 step 3/3 loss 0.3333 lr 1.00e-03"]
    assert "a line printed by anyone" in lines
    assert sys.stdout is not None and not type(sys.stdout).__name__ == "_Tee"  # streams given back


def test_a_terminal_of_size_zero_gets_plain_lines():
    import fcntl
    import struct
    import termios

    from ila_fast.train.run_log import has_terminal

    leader, follower = pty.openpty()
    try:
        with open(follower, "w", closefd=False) as stream:
            fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
            assert stream.isatty() and not has_terminal(stream)  # a tty that reports 0 x 0: no bar
            fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
            assert has_terminal(stream)
    finally:
        os.close(leader)
        os.close(follower)


# ---------------------------------------------------------------- eval / export from the run folder

def test_eval_and_export_of_a_run_folder_need_no_config(run, dataset, tmp_path, capsys):
    from ila_fast.data import read_labels
    from ila_fast.model.convert import load_checkpoint

    out = tmp_path / "eval"
    assert main(["eval", str(run.output), "--mode", "val", "--save-scores", "--output", str(out)]) == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["config"] == str(run.output / "checkpoints" / "step_00000008" / "config.toml")
    scores = np.load(out / "scores.npy")
    assert scores.shape == (8, 8) == tuple(report["scores"]["shape"]) and scores.dtype == np.float64
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-9)  # one view: one softmax per row
    labels = np.array(report["scores"]["labels"])
    assert report["scores"]["videos"] == [line.split()[0] for line in (dataset / "val.txt").read_text().splitlines()]
    assert report["top1"] == pytest.approx(float((scores.argmax(axis=1) == labels).mean()))
    # --set still overrides the saved config: another list
    short = tmp_path / "three.txt"
    short.write_text("".join((dataset / "val.txt").read_text().splitlines(keepends=True)[:3]))
    assert main(["eval", str(run.output), "--mode", "val", "--output", str(tmp_path / "e3"),
                 "--set", f"data.val_list={json.dumps(str(short))}"]) == 0
    assert json.loads((tmp_path / "e3" / "eval.json").read_text())["listed"] == 3
    # export: the run folder alone
    assert main(["export", str(run.output), str(tmp_path / "model.pth")]) == 0
    model = load_checkpoint(tmp_path / "model.pth")
    assert model.class_names == read_labels(dataset / "labels.csv")
    capsys.readouterr()


def test_summed_score_files_equal_a_two_model_ensemble(run, dataset, tmp_path, capsys):
    """Two models' --save-scores tables through `ila-fast ensemble` = evaluating the averaged model."""
    from ila_fast.config import load_config
    from ila_fast.data import build_loader
    from ila_fast.model.convert import load_checkpoint
    from ila_fast.train.evaluate import evaluate
    from ila_fast.train.export import export_model

    views = ["--set", "data.test_clips=2", "--set", "data.test_crops=1"]  # 2 views: the sum is over views too
    paths = {}
    for name, source in (("a", run.output / "checkpoints" / BEST), ("b", run.output)):
        assert main(["eval", str(source), "--save-scores", "--output", str(tmp_path / name), *views]) == 0
        export_model(source, tmp_path / f"{name}.pth")
        paths[name] = tmp_path / f"{name}.pth"
    assert main(["ensemble", str(tmp_path / "a"), str(tmp_path / "b" / "eval.json"),
                 "--output", str(tmp_path / "ab")]) == 0
    printed = capsys.readouterr().out
    combined = np.load(tmp_path / "ab" / "scores.npy")

    class Averaged(torch.nn.Module):
        """The two-model ensemble as one model: softmax of its logits = the mean of the two softmaxes."""

        def __init__(self, a, b):
            super().__init__()
            self.a, self.b = a, b

        def forward(self, video):
            p = (self.a(video).logits.double().softmax(-1) + self.b(video).logits.double().softmax(-1)) / 2
            return p.log()

    model = Averaged(load_checkpoint(paths["a"]), load_checkpoint(paths["b"])).eval()
    cfg = load_config(run.output / "config.toml", {"data.test_clips": 2, "data.test_crops": 1})
    loader = build_loader(cfg.data, "val", 4, 64, 8, mode="test")
    expected = evaluate(model, loader, 8).scores  # sum over the 2 views of (pA + pB) / 2
    # the ensemble adds each table's mean per view: S_A / 2 + S_B / 2 = sum over views of (pA + pB) / 2
    np.testing.assert_allclose(combined, expected, atol=1e-6)
    a, b = np.load(tmp_path / "a" / "scores.npy"), np.load(tmp_path / "b" / "scores.npy")
    np.testing.assert_allclose(combined, (a + b) / 2, atol=1e-12)  # and that is simply the sum of the files
    result = json.loads((tmp_path / "ab" / "eval.json").read_text())
    labels = np.array(json.loads((tmp_path / "a" / "eval.json").read_text())["scores"]["labels"])
    assert result["top1"] == pytest.approx(float((expected.argmax(axis=1) == labels).mean()))
    assert printed.splitlines()[-2].startswith("ensemble")


def test_train_log_ends_with_the_reason_a_run_stopped(dataset, tmp_path):
    from ila_fast.errors import UserError

    output = tmp_path / "run"
    with pytest.raises(UserError, match="less than one optimizer step"):
        Trainer(h.tiny_config(dataset, train__total_batch=64), output).fit()
    last = (output / "train.log").read_text().splitlines()[-1]
    assert last.startswith("ila-fast train: stopped by UserError: ") and "lower train.total_batch" in last
