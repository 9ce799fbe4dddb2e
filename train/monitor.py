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

# The scalars shown in the bar / plain lines, in order, with their format.
SHOWN = (("loss", "{:.4f}"), ("lr", "{:.2e}"), ("clips_per_s", "{:.1f}"), ("data_wait", "{:.0%}"))


class Monitor:
    def __init__(self, output: str | Path, enabled: bool, total_steps: int, start_step: int = 0,
                 steps_per_epoch: int = 1, tensorboard: bool = True):
        self.enabled, self.output = enabled, Path(output)
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

                self.writer = SummaryWriter(str(self.output / "tb"), purge_step=start_step or None)
            except ImportError:  # tensorboard is a core dependency; keep training if it is broken
                print("ila-fast: tensorboard is not importable; TensorBoard scalars are off", file=sys.stderr)
        if sys.stdout.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                            desc="train")

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
        if self.bar is not None:
            self.bar.set_description(f"epoch {epoch}")
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(advanced)
        else:
            done = step - self.start_step
            rate = done / max(1e-9, time.time() - self.start_time)
            eta = (self.total_steps - step) / rate if rate > 0 else float("nan")
            text = " ".join(f"{k} {v}" for k, v in shown.items())
            print(f"epoch {epoch} step {step}/{self.total_steps} {text} eta {_duration(eta)}", flush=True)

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
        (self.output / "summary.json").write_text(json.dumps(summary, indent=1))
        self.curves()


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
            (train if record.get("kind") == "train" else evals)[record["step"]] = record
    return [train[k] for k in sorted(train)], [evals[k] for k in sorted(evals)]


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
    for ax, title, xlabel in zip(axes, ("training loss", "learning rate (message_ group)", "eval top-1 (%)"),
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
