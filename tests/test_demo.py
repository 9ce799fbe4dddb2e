"""The learning claim at a smaller size than the demo: on videos whose classes differ only by
motion direction, the demo's tiny ILA model trained from random weights beats chance and the
frame-only baseline (same tower, same steps, same clips) by a wide margin. Fixed seeds, CPU.

The clips are decoded once by the real loader (training augmentation of configs/demo.toml, two
epochs' draws) and both models train on the same batches with a plain AdamW loop; evaluation is
the real multi-view ``evaluate``. The demo itself (``ila-fast demo``) runs the same models
through the trainer at full size.
"""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("av")

# 600 steps: over 4 datasets x 2 model seeds ILA scored 0.69-0.83 top-1 on 64 videos; at 450 steps
# one run of the 8 was still on its plateau (0.28; frame-only 0.09-0.22).
STEPS, BATCH, LR = 600, 32, 3e-3


def decoded_clips(loader, epochs):
    videos, labels = [], []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:
            videos.append(batch.video)
            labels.append(batch.label)
    return torch.cat(videos), torch.cat(labels)


def train(model, videos, labels):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.98), weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, total_steps=STEPS, pct_start=0.1)
    order = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(STEPS):
        pick = torch.randint(0, len(videos), (BATCH,), generator=order)
        out = model(videos[pick])
        loss = F.cross_entropy(out.logits, labels[pick]) + out.aux_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return loss.item()


def test_ila_learns_motion_direction_that_frame_averaging_cannot(tmp_path):
    from ila_fast.config import load_config
    from ila_fast.data import build_loader
    from ila_fast.data.synthetic import make_synthetic
    from ila_fast.model import build_model
    from ila_fast.train.evaluate import evaluate

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: a second thread only spins
    try:
        paths = make_synthetic(tmp_path, train_per_class=48, val_per_class=8, frames=16, size=(80, 64), seed=0)
        cfg = load_config("demo", {"data.root": str(tmp_path), "data.train_list": str(paths["train"]),
                                   "data.val_list": str(paths["val"]), "data.labels": str(paths["labels"]),
                                   "data.num_workers": 0})
        m = cfg.model
        videos, labels = decoded_clips(build_loader(cfg.data, "train", m.frames, m.input_size, m.num_classes), 2)
        val = build_loader(cfg.data, "val", m.frames, m.input_size, m.num_classes, mode="test")
        top1 = {}
        for ila in (True, False):
            torch.manual_seed(0)
            model = build_model(dataclasses.replace(m, ila=ila))
            train(model, videos, labels)
            result = evaluate(model, val, m.num_classes)
            assert result.scored == result.listed == 64 and result.views == 6
            top1[ila] = result.top1
    finally:
        torch.set_num_threads(threads)
    # Frame-only sees each pair of classes (forwards / backwards) identically: at most 50 % in
    # expectation. ILA beats that ceiling, which only the frames' order can do, and the baseline.
    assert top1[True] >= 0.55, top1
    assert top1[True] >= top1[False] + 0.3, top1
