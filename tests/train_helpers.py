"""Shared pieces of the trainer tests: a tiny synthetic video dataset and tiny run configs.

Also a worker entry point: ``python tests/train_helpers.py OUT KEY=VALUE ...`` trains the tiny
config (under torchrun for several ranks), so tests can run, kill and restart real processes.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

if __name__ == "__main__" and not os.environ.get("CUDA_VISIBLE_DEVICES") and "TRITON_INTERPRET" not in os.environ:
    os.environ["TRITON_INTERPRET"] = "1"

REPO = Path(__file__).resolve().parent.parent


def make_dataset(folder: Path) -> Path:
    """16 training and 8 validation videos (8 motion classes), small and short: quick to decode."""
    from ila_fast.data.synthetic import make_synthetic

    if not (folder / "train.txt").exists():
        make_synthetic(folder, train_per_class=2, val_per_class=1, frames=12, size=(80, 64))
    return folder


def overrides(root: Path, **extra) -> dict:
    """The tiny config on the dataset: 2 clips per micro-step, 4 per step, fp32, no mixing noise."""
    values = {"data.root": str(root), "data.train_list": str(root / "train.txt"),
              "data.val_list": str(root / "val.txt"), "data.labels": str(root / "labels.csv"),
              "data.backend": "cpu", "data.num_workers": 0, "data.batch_size": 2,
              "model.input_size": 64, "train.total_batch": 4, "train.epochs": 2, "train.warmup_epochs": 1.0,
              "train.log_every_steps": 1, "train.eval_every_epochs": 0, "train.checkpoint_every_steps": 0,
              "train.checkpoint_every_minutes": 0.0, "train.log_samples": True, "train.compile": False,
              "train.precision": "fp32",
              # larger lrs than the recipe's, so a few steps move the weights measurably
              "train.lr_message": 1e-2, "train.lr_temporal": 1e-2, "train.lr_mit": 1e-2}
    values.update({k.replace("__", "."): v for k, v in extra.items()})
    return values


def tiny_config(root: Path, **extra):
    from ila_fast.config import load_config

    return load_config(REPO / "configs" / "tiny.toml", overrides(root, **extra))


def losses(output: Path) -> dict[int, float]:
    from ila_fast.train.monitor import read_metrics

    train, _ = read_metrics(output)
    return {r["step"]: r["loss"] for r in train}


def samples(output: Path, rank: int = 0) -> list[tuple]:
    """(step, micro, video ids) per micro-step, in order, the last record of a step kept."""
    records = {}
    path = output / f"samples.rank{rank}.jsonl"
    for line in path.read_text().splitlines():
        r = json.loads(line)
        records[(r["step"], r["micro"])] = tuple(r["video_index"])
    return [(s, m, v) for (s, m), v in sorted(records.items())]


def trainable_state(output: Path) -> dict:
    """The newest checkpoint's trainable parameters and BN statistics, full tensors."""
    from ila_fast.model import is_trainable
    from ila_fast.train.checkpoint import latest_checkpoint, load_model_state

    state, _ = load_model_state(latest_checkpoint(output))
    return {k: v for k, v in state.items() if is_trainable(k) or "running_" in k}


def main(argv: list[str]) -> int:
    from ila_fast.config import load_config, parse_overrides
    from ila_fast.train import Trainer

    output, items = Path(argv[0]), argv[1:]
    root = Path(next(i.split("=", 1)[1] for i in items if i.startswith("data.root=")))
    values = overrides(root)
    values.update(parse_overrides(items))
    cfg = load_config(REPO / "configs" / "tiny.toml", values)
    summary = Trainer(cfg, output).fit()
    print("SUMMARY", json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
