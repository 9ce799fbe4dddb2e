"""``ila-fast demo``: the zoo table, then a small ILA model trained for a few steps on real videos.

By default it writes a tiny synthetic motion dataset (H.264 files whose 8 classes differ only
by motion) to a temporary folder, loads training clips with the CPU backend (ILA's sampling,
augmentation, mixup / cutmix and label smoothing), and runs forward + backward + AdamW steps
of the bundled tiny model, whose Kinetics-style text head uses the dataset's class names.
Runs on a CPU in under a minute, with no downloads.
"""
from __future__ import annotations

import tempfile
import time

import torch

from ila_fast import zoo


def run(args) -> int:
    from ila_fast.config import load_config

    if not args.no_zoo:
        zoo.run(args)
        print()
    cfg = load_config(args.config or zoo.config_path("tiny"))
    if args.data:
        return _train_steps(cfg, args.data, args.steps)
    with tempfile.TemporaryDirectory(prefix="ila-fast-demo-") as folder:
        return _train_steps(cfg, folder, args.steps, write=True)


def _train_steps(cfg, folder: str, steps: int, write: bool = False) -> int:
    from dataclasses import replace
    from pathlib import Path

    from ila_fast.data import build_loader, read_labels, soft_target_cross_entropy
    from ila_fast.data.synthetic import CLASSES, make_synthetic
    from ila_fast.model import build_model, count_parameters

    m = cfg.model
    if m.num_classes != len(CLASSES):
        print(f"demo: the synthetic dataset has {len(CLASSES)} classes; model.num_classes is {m.num_classes}")
        return 2
    start = time.perf_counter()
    if write:
        make_synthetic(folder, train_per_class=2, val_per_class=1, frames=24, size=(128, 96))
    root = Path(folder)
    data = replace(cfg.data, root=str(root), train_list=str(root / "train.txt"), labels=str(root / "labels.csv"),
                   backend="cpu", num_workers=0, batch_size=4)
    loader = build_loader(data, "train", m.frames, m.input_size, m.num_classes)
    names = read_labels(data.labels)
    print(f"demo: {len(loader) * data.batch_size} training clips from {root} ({len(names)} motion classes), "
          f"prepared in {time.perf_counter() - start:.1f} s")

    torch.manual_seed(0)
    model = build_model(m, class_names=names).train()
    total, trainable = count_parameters(model)
    print(f"  model: {m.arch} ILA, {m.frames} frames at {m.input_size}px, {m.dataset} head, kernels={m.kernels}: "
          f"{total:,} parameters ({trainable:,} trainable)")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3,
                                  betas=(0.9, 0.98), eps=1e-8)
    done = 0
    while done < steps:
        for batch in loader:
            tick = time.perf_counter()
            out = model(batch.video)
            cls_loss = soft_target_cross_entropy(out.logits, batch.target)
            loss = cls_loss + out.aux_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            print(f"  step {done}: clips {tuple(batch.video.shape)}, classification loss {cls_loss.item():.4f}, "
                  f"alignment loss {out.aux_loss.item():.4f}, {time.perf_counter() - tick:.2f} s")
            if done == steps:
                break
    print(f"  bad videos: {loader.bad_log.summary()}")
    return 0
