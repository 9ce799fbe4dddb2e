"""``ila-fast demo``: ILA learns motion that a frame-averaging model cannot see (CPU, no downloads).

1. ``make-synthetic`` writes a motion dataset whose 8 classes differ only by motion direction:
   the second class of each pair is the first played backwards, so single frames (and any
   average of them) carry no information about the direction;
2. the tiny ILA model of ``configs/demo.toml`` trains from random weights through the trainer
   (``ila_fast.train.Trainer``: the same loop, checkpoints and metrics as a real run);
3. the frame-only baseline (``model.ila = false``: plain CLIP blocks, frame features averaged,
   the same classifier) trains under the same budget;
4. both are evaluated with the multi-view test protocol (``ila_fast.train.evaluate``), and the
   demo prints a table (model, top-1, top-5, chance, training time), writes both runs' curves
   in one PNG and the alignment picture of one validation video.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

# The dataset; the model and recipe (640 steps of 32 clips: 40 epochs of 16 steps) are configs/demo.toml.
DATASET = dict(train_per_class=64, val_per_class=8, frames=16, size=(80, 64))
RUNS = (("ILA", "ila", True), ("frame-only", "frame_only", False))


def run(args) -> int:
    from ila_fast.config import load_config

    import torch

    # The model's ops are tiny: one thread computes them as fast as two, and the data workers
    # decoding the next batches get the other core.
    torch.set_num_threads(1)
    size = DATASET
    load_config(args.config, {"model.ila": False})  # a bad config stops here, before any work
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = Path(args.data) if args.data else out / "data"
    if not args.data:
        from ila_fast.data.synthetic import CLASSES, make_synthetic

        if data.exists():
            shutil.rmtree(data)
        make_synthetic(data, train_per_class=size["train_per_class"], val_per_class=size["val_per_class"],
                       frames=size["frames"], size=size["size"], seed=args.seed)
        print(f"demo: wrote {len(CLASSES) * (size['train_per_class'] + size['val_per_class'])} videos "
              f"({len(CLASSES)} motion classes, {size['train_per_class']} + {size['val_per_class']} per class) "
              f"to {data} in {time.perf_counter() - start:.1f} s")
    overrides = {"data.root": str(data), "data.train_list": str(data / "train.txt"),
                 "data.val_list": str(data / "val.txt"), "data.labels": str(data / "labels.csv"),
                 "train.seed": args.seed}
    if args.epochs:
        overrides["train.epochs"] = args.epochs
    rows = []
    for title, folder, ila in RUNS:
        cfg = load_config(args.config, {**overrides, "model.ila": ila})
        rows.append(train_and_evaluate(title, cfg, out / folder))
    chance = 1.0 / cfg.model.num_classes
    from ila_fast.train.monitor import plot_curves

    curves = plot_curves([out / folder for _, folder, _ in RUNS], out / "curves.png", [t for t, _, _ in RUNS])
    picture = alignment_of_one_video(out / RUNS[0][1], cfg, data, out / "alignment.png")
    table = format_table(rows, chance)
    print("\n" + table)
    wall = time.perf_counter() - start
    gap = rows[0]["top1"] - rows[1]["top1"]
    print(f"\nILA - frame-only: {100 * gap:+.1f} points of top-1 (chance {100 * chance:.1f} %); "
          f"demo wall time {wall:.0f} s\ncurves: {curves}\nalignment picture: {picture}")
    (out / "table.md").write_text(table + "\n")
    (out / "demo.json").write_text(json.dumps({"runs": rows, "chance": chance, "wall_s": wall, "seed": args.seed},
                                              indent=1))
    return 0


def train_and_evaluate(title: str, cfg, output: Path) -> dict:
    """Train one model through the trainer, then evaluate its final checkpoint multi-view."""
    from ila_fast.data import build_loader, read_labels
    from ila_fast.model import count_parameters
    from ila_fast.train import Trainer
    from ila_fast.train.eval_command import load_model
    from ila_fast.train.evaluate import evaluate, write_confusion

    if output.exists():
        shutil.rmtree(output)  # a fresh run every time: the demo shows training from random weights
    kind = "ILA branch in every block" if cfg.model.ila else "plain CLIP blocks, frame features averaged"
    print(f"\ndemo: training {title} ({kind}) -> {output}")
    tick = time.perf_counter()
    summary = Trainer(cfg, output, resume=None).fit()
    train_s = time.perf_counter() - tick
    names = read_labels(cfg.data.labels)
    model, _ = load_model(summary["last_checkpoint"], cfg.model, names)
    loader = build_loader(cfg.data, "val", cfg.model.frames, cfg.model.input_size, cfg.model.num_classes,
                          mode="test")
    result = evaluate(model, loader, cfg.model.num_classes, class_names=names)
    (output / "eval.json").write_text(result.to_json())
    write_confusion(result, output / "confusion.png")
    total, trainable = count_parameters(model)
    return {"model": title, "top1": result.top1, "top5": result.top5, "scored": result.scored,
            "listed": result.listed, "views": result.views, "train_s": train_s, "steps": summary["step"],
            "parameters": total, "trainable": trainable, "output": str(output)}


def format_table(rows: list[dict], chance: float) -> str:
    lines = ["| model | top-1 | top-5 | chance | training time | trainable / all parameters |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {100 * r['top1']:.1f} % | {100 * r['top5']:.1f} % | {100 * chance:.1f} % | "
                     f"{r['train_s']:.0f} s ({r['steps']} steps) | {r['trainable']:,} / {r['parameters']:,} |")
    views = rows[0]["views"]
    lines.append(f"\n{rows[0]['scored']} validation videos of {rows[0]['listed']}, {views} views each "
                 "(softmax summed over the views)")
    return "\n".join(lines)


def alignment_of_one_video(run_dir: Path, cfg, data: Path, out: Path) -> Path:
    """The ILA run's alignment picture for the first 'moving right' validation video (or the first)."""
    import tempfile

    from ila_fast.alignment_picture import show_alignment
    from ila_fast.data import read_labels
    from ila_fast.predict import videos_loader
    from ila_fast.train.checkpoint import latest_checkpoint
    from ila_fast.train.eval_command import load_model

    names = read_labels(cfg.data.labels)
    lines = [line.rsplit(None, 1) for line in (data / "val.txt").read_text().splitlines() if line.strip()]
    wanted = names.index("moving right") if "moving right" in names else 0
    path = next((p for p, label in lines if int(label) == wanted), lines[0][0])
    model, _ = load_model(latest_checkpoint(run_dir), cfg.model, names)
    with tempfile.TemporaryDirectory(prefix="ila-fast-demo-") as work:
        batch = next(iter(videos_loader(cfg, [str(data / path)], work, "val", "cpu")))
    show_alignment(model, batch.video, out, None, names)
    return out
