"""The GPU suite's training check: N steps of ILA B/16 8f on synthetic videos, a checkpoint, a resume.

Asserts on the GPU, with the defaults a user gets there (bf16, compile, fused kernels, DALI when
installed, else the CPU loader): the loss falls, no step is non-finite, a checkpoint is written,
and a second run started on the same output resumes from it and continues for more steps.
Random CLIP weights (no downloads on the machine); lr raised so a few dozen steps move the loss.
The report (OUT_DIR/train_check.json) is rewritten after each phase, so a run cut short keeps
what finished; videos and checkpoints stay in OUT_DIR (the suite never sends them back).

    python bench/gpu_train_check.py OUT_DIR [--config NAME] [--steps 30] [--resume-steps 10]
    (--config tiny --steps 4 --resume-steps 2 checks the script itself on a CPU)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--config", default="k400_b16_8f")
    parser.add_argument("--steps", type=int, default=30, help="steps of the first run (checkpoint at its end)")
    parser.add_argument("--resume-steps", type=int, default=10, help="steps the resumed run adds")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--size", default="320x240", help="synthetic video WIDTHxHEIGHT")
    parser.add_argument("--json", default=None, help="the report (default: OUT_DIR/train_check.json)")
    args = parser.parse_args(argv)

    from ila_fast.bench.rows import SavedRows
    from ila_fast.config import load_config
    from ila_fast.data.synthetic import make_synthetic
    from ila_fast.train import Trainer
    from ila_fast.train.monitor import read_metrics

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = SavedRows(args.json or out / "train_check.json", config=args.config, steps=args.steps,
                       resume_steps=args.resume_steps, phases=[])
    report.write()
    data = out / "videos"
    tick = time.time()
    if not (data / "train.txt").exists():
        width, height = (int(v) for v in args.size.split("x"))
        make_synthetic(data, train_per_class=max(2, args.batch * 3 // 2), val_per_class=1, frames=32,
                       size=(width, height))
    report.data["phases"].append({"phase": "videos", "seconds": time.time() - tick})
    report.write()
    total = args.steps + args.resume_steps
    overrides = {"data.root": str(data), "data.train_list": str(data / "train.txt"),
                 "data.val_list": str(data / "val.txt"), "data.labels": str(data / "labels.csv"),
                 "model.num_classes": 8, "model.clip_weights": "random", "data.batch_size": args.batch,
                 "data.num_workers": args.workers, "train.total_batch": args.batch,
                 "train.epochs": 10, "train.warmup_epochs": 1.0, "train.max_steps": args.steps,
                 "train.log_every_steps": max(1, min(5, args.steps // 2)),
                 "train.checkpoint_every_steps": args.steps, "train.eval_every_epochs": 0,
                 "train.lr_message": 2e-3, "train.lr_temporal": 2e-3, "train.lr_mit": 2e-3}
    tick = time.time()
    first = Trainer(load_config(args.config, overrides), out / "run").fit()
    report.data["phases"].append({"phase": "first", "seconds": time.time() - tick, "result": first})
    report.write()
    overrides["train.max_steps"] = total
    tick = time.time()
    second = Trainer(load_config(args.config, overrides), out / "run").fit()
    report.data["phases"].append({"phase": "resumed", "seconds": time.time() - tick, "result": second})
    train, _ = read_metrics(out / "run")
    losses = [r["loss"] for r in train]
    k = max(1, min(3, len(losses) // 2))
    checks = {
        f"completed_{args.steps}": first["status"] == "completed" and first["step"] == args.steps,
        f"resumed_to_{total}": second["status"] == "completed" and second["step"] == total,
        "no_non_finite": first["skipped_steps"] == 0 and second["skipped_steps"] == 0,
        # a handful of steps (a CPU rehearsal) says nothing about the loss: not judged then
        "loss_falls": sum(losses[-k:]) / k < sum(losses[:k]) / k if total >= 10 else None,
        "checkpoint_written": bool(first.get("last_checkpoint")) and Path(first["last_checkpoint"]).is_dir(),
    }
    report.finish(losses=losses, clips_per_s=[r.get("clips_per_s") for r in train],
                  data_wait=[r.get("data_wait") for r in train],
                  gpu_mem_gib=max((r.get("gpu_mem_gib") or 0 for r in train), default=None), checks=checks)
    for name, ok in checks.items():
        print(f"{name:24s} {'n/a' if ok is None else 'ok' if ok else 'FAILED'}")
    return 0 if all(ok is not False for ok in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
