"""What a user watching a run sees: a progress bar (or plain lines), TensorBoard, metrics.jsonl,
the curves PNG and summary.json. Rank 0 only; other ranks get a Monitor that does nothing.

    monitor = Monitor(output, enabled=env.is_main, total_steps=..., start_step=...)
    monitor.step(step, epoch, {"loss": ..., "lr/message": ..., "clips_per_s": ...})
    monitor.eval(step, epoch, {"top1": ..., "top5": ...})
    monitor.close(summary)
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from .run_log import has_terminal

# The scalars shown in the bar / plain lines, in order, with their format.
SHOWN = (("loss", "{:.4f}"), ("lr", "{:.2e}"), ("clips_per_s", "{:.1f}"), ("data_wait", "{:.0%}"))


class Monitor:
    def __init__(self, output: str | Path, enabled: bool, total_steps: int, start_step: int = 0,
                 steps_per_epoch: int = 1, tensorboard: bool = True, run_log=None):
        self.enabled, self.output = enabled, Path(output)
        self.run_log = run_log  # train.log (run_log.RunLog): gets the bar's steps as plain lines
        self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch
        self.history: list[dict] = []
        self.evals: list[dict] = []
        self.bar = self.writer = None
        self.start_time, self.start_step = time.time(), start_step
        if not enabled:
            return
        self.output.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(self.output / "metrics.jsonl", "a")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # a resumed (or restarted) run logs again from start_step + 1: TensorBoard drops the
                # earlier event files' points from there, so curves never overlap
                self.writer = SummaryWriter(str(self.output / "tb"), purge_step=start_step + 1)
            except ImportError:  # tensorboard is a core dependency; keep training if it is broken
                print("ila-fast: tensorboard is not importable; TensorBoard scalars are off", file=sys.stderr)
        if has_terminal(sys.stdout):  # a tty of size 0 x 0 would show no bar at all: plain lines there
            from tqdm import tqdm

            # the bar draws on the real stream, not into train.log's tee
            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                            desc="train", file=run_log.stderr if run_log is not None else sys.stderr)

    def _write(self, record: dict) -> None:
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()

    def step(self, step: int, epoch: int, scalars: dict[str, float], advanced: int = 1) -> None:
        if not self.enabled:
            return
        record = {"kind": "train", "step": step, "epoch": epoch, "time": time.time(), **scalars}
        self.history.append(record)
        self._write(record)
        if self.writer is not None:
            for key, value in scalars.items():
                self.writer.add_scalar(f"train/{key}", value, step)
        shown = {k: fmt.format(scalars[k]) for k, fmt in SHOWN if k in scalars}
        done = step - self.start_step
        rate = done / max(1e-9, time.time() - self.start_time)
        eta = (self.total_steps - step) / rate if rate > 0 else float("nan")
        text = " ".join(f"{k} {v}" for k, v in shown.items())
        line = f"epoch {epoch} step {step}/{self.total_steps} {text} eta {_duration(eta)}"
        if self.bar is not None:
            self.bar.set_description(f"epoch {epoch}")
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(advanced)
            if self.run_log is not None:
                self.run_log.write_only(line)
        else:
            print(line, flush=True)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        (self.bar.write if self.bar is not None else print)(text)

    def eval(self, step: int, epoch: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"kind": "eval", "step": step, "epoch": epoch, "time": time.time(), **scalars}
        self.evals.append(record)
        self._write(record)
        if self.writer is not None:
            for key, value in scalars.items():
                self.writer.add_scalar(f"eval/{key}", value, step)
        self.message(f"eval epoch {epoch} step {step}: " + " ".join(f"{k} {v:.4f}" for k, v in scalars.items()))
        self.curves()

    def curves(self) -> Path | None:
        """Write curves.png from metrics.jsonl (the whole run, resumed parts included)."""
        if not self.enabled:
            return None
        return plot_curves([self.output], self.output / "curves.png")

    def close(self, summary: dict) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        self.jsonl.close()
        # A full disk must neither leave summary.json empty (it is replaced whole, or kept) nor hide
        # the error that stopped the run behind its own.
        try:
            write_atomic(self.output / "summary.json", json.dumps(summary, indent=1))
            self.curves()
        except OSError as e:
            print(f"ila-fast: could not write {self.output / 'summary.json'} or curves.png ({e})", file=sys.stderr)

    def record(self, kind: str, step: int, fields: dict) -> None:
        """A metrics.jsonl line other than a train or eval record (e.g. kind "config_change")."""
        if self.enabled:
            self._write({"kind": kind, "step": step, "time": time.time(), **fields})


def write_atomic(path: Path, text: str) -> None:
    """``path`` holds ``text`` whole, or what it held before: written beside it, then renamed."""
    import os

    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_metrics(output: str | Path) -> tuple[list[dict], list[dict]]:
    """(train records, eval records) of a run's metrics.jsonl; a resumed run's repeats keep the last."""
    path = Path(output) / "metrics.jsonl"
    train, evals = {}, {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill: skip it
                continue
            kind = record.get("kind")
            if kind in ("train", "eval"):  # other kinds (config_change, ...) are not curves
                (train if kind == "train" else evals)[record["step"]] = record
    return [train[k] for k in sorted(train)], [evals[k] for k in sorted(evals)]


EVAL_PROTOCOL = ("single view: one centre clip per video of data.val_list (`ila-fast eval` runs the "
                 "multi-view test protocol)")


def eval_summary(output: str | Path) -> dict:
    """The final and the best evaluation of a run (resumed parts included), for summary.json.

    Best = highest top-1, ties broken by top-5, then the earlier step."""
    _, evals = read_metrics(output)
    out: dict = {"eval_protocol": EVAL_PROTOCOL, "evaluations": len(evals)}
    for key in ("final", "best"):
        out.update({f"{key}_top1": None, f"{key}_top5": None, f"{key}_eval_step": None, f"{key}_eval_epoch": None})
    if not evals:
        return out
    best = max(evals, key=lambda r: (r.get("top1", -1.0), r.get("top5", -1.0), -r["step"]))
    for key, record in (("final", evals[-1]), ("best", best)):
        out.update({f"{key}_top1": record.get("top1"), f"{key}_top5": record.get("top5"),
                    f"{key}_eval_step": record["step"], f"{key}_eval_epoch": record.get("epoch")})
    return out


def plot_curves(outputs: list[str | Path], path: str | Path, labels: list[str] | None = None) -> Path:
    """Loss and lr over steps, eval top-1 over epochs, for one or several runs in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for i, output in enumerate(outputs):
        label = labels[i] if labels else Path(output).name
        train, evals = read_metrics(output)
        if train:
            axes[0].plot([r["step"] for r in train], [r.get("loss", float("nan")) for r in train], label=label)
            axes[1].plot([r["step"] for r in train], [r.get("lr", float("nan")) for r in train], label=label)
        if evals:
            axes[2].plot([r["epoch"] + 1 for r in evals], [100 * r.get("top1", float("nan")) for r in evals],
                         marker="o", label=label)
    # the evaluation during training scores one centre view per video (not the multi-view test protocol)
    titles = ("training loss", "learning rate (message_ group)", "val top-1 (%), single view")
    for ax, title, xlabel in zip(axes, titles,
                                 ("step", "step", "epoch")):
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[1].ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    if len(outputs) > 1:
        axes[0].legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"
