"""The GPU suite's training check: 50 steps of ILA B/16 8f on synthetic videos, then a resume.

Asserts on the GPU, with the defaults a user gets there (bf16, compile, fused kernels, DALI when
installed, else the CPU loader): the loss falls, no step is non-finite, a checkpoint is written,
and a second run started on the same output resumes from it and continues to step 60.
Random CLIP weights (no downloads on the machine); lr raised so 50 steps move the loss.

    python bench/gpu_train_check.py OUT_DIR [CONFIG]    (CONFIG tiny checks the script itself on a CPU)
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(out: str, config: str = "k400_b16_8f") -> int:
    from ila_fast.config import load_config
    from ila_fast.data.synthetic import make_synthetic
    from ila_fast.train import Trainer
    from ila_fast.train.monitor import read_metrics

    out = Path(out)
    data = out / "videos"
    if not (data / "train.txt").exists():
        make_synthetic(data, train_per_class=12, val_per_class=2, frames=32, size=(320, 240))
    overrides = {"data.root": str(data), "data.train_list": str(data / "train.txt"),
                 "data.val_list": str(data / "val.txt"), "data.labels": str(data / "labels.csv"),
                 "model.num_classes": 8, "data.batch_size": 8, "data.num_workers": 8, "train.total_batch": 8,
                 "train.epochs": 10, "train.warmup_epochs": 1.0, "train.max_steps": 50,
                 "train.log_every_steps": 5, "train.checkpoint_every_steps": 25, "train.eval_every_epochs": 0,
                 "train.lr_message": 2e-3, "train.lr_temporal": 2e-3, "train.lr_mit": 2e-3}
    cfg = load_config(config, overrides)
    tick = time.time()
    first = Trainer(cfg, out / "run").fit()
    first_s = time.time() - tick
    overrides["train.max_steps"] = 60
    second = Trainer(load_config(config, overrides), out / "run").fit()
    train, _ = read_metrics(out / "run")
    losses = [r["loss"] for r in train]
    report = {"first": first, "second": second, "first_run_s": first_s, "losses": losses,
              "clips_per_s": [r.get("clips_per_s") for r in train], "data_wait": [r.get("data_wait") for r in train],
              "gpu_mem_gib": max((r.get("gpu_mem_gib", 0) for r in train), default=None)}
    checks = {
        "completed_50": first["status"] == "completed" and first["step"] == 50,
        "resumed_to_60": second["status"] == "completed" and second["step"] == 60 and len(train) >= 12,
        "no_non_finite": first["skipped_steps"] == 0 and second["skipped_steps"] == 0,
        "loss_falls": sum(losses[-3:]) / 3 < sum(losses[:3]) / 3,
        "checkpoint_written": bool(second["last_checkpoint"]) and Path(second["last_checkpoint"]).is_dir(),
    }
    report["checks"] = checks
    (out / "train_check.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(checks, indent=1))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
