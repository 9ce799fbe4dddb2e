"""The learning-rate schedule and the optimisation defaults (docs/recipe.md).

Three renderings agree at every optimizer step and for every parameter group:
* ours (``recipe.Schedule``, as the trainer calls it: ``set(step)`` before each step);
* timm's ``CosineLRScheduler`` driven the official way: built in micro-batches, ``step_update(epoch *
  M + idx)`` after each optimizer step, ``idx`` the step's last micro-batch;
* a float64 formula written from the recipe's text (first step at 0; then warm-up / cosine at the
  index set by the step before).
"""
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from ila_fast.config import TrainConfig, load_config
from ila_fast.train.recipe import Schedule, cosine_lr_scheduler_class, param_groups

ZOO_CONFIGS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.toml")
                     if p.stem.startswith(("k400_", "ssv2_")))


class Parts(nn.Module):
    """One parameter for each recipe group, with and without weight decay."""

    def __init__(self):
        super().__init__()
        self.message_fc = nn.Linear(2, 2)
        self.temporal_fc = nn.Linear(2, 2)
        self.mit = nn.Module()
        self.mit.fc = nn.Linear(2, 2)


def official_lrs(cfg: TrainConfig, micro_batches: int, accumulation: int) -> list[list[float]]:
    """The lrs each optimizer step runs at, in the official training loop's order of calls."""
    optimizer = torch.optim.AdamW(param_groups(Parts(), cfg))
    scheduler = cosine_lr_scheduler_class()(
        optimizer, t_initial=int(cfg.epochs * micro_batches), lr_min=cfg.min_lr, warmup_lr_init=0,
        warmup_t=int(cfg.warmup_epochs * micro_batches), cycle_limit=1, t_in_epochs=False)
    used = []
    for epoch in range(cfg.epochs):
        for idx in range(micro_batches):
            if accumulation == 1 or (idx + 1) % accumulation == 0:  # an optimizer step
                used.append([g["lr"] for g in optimizer.param_groups])
                scheduler.step_update(epoch * micro_batches + idx)
    return used


def formula_lrs(cfg: TrainConfig, micro_batches: int, accumulation: int) -> list[list[float]]:
    """The recipe's text in float64: lr of step s = the warm-up / cosine at the index set after step s-1."""
    bases = [g["initial_lr"] for g in param_groups(Parts(), cfg)]
    total, warm = int(cfg.epochs * micro_batches), int(cfg.warmup_epochs * micro_batches)
    steps = micro_batches // accumulation
    out, index = [], None
    for epoch in range(cfg.epochs):
        for j in range(steps):
            if index is None:
                out.append([0.0] * len(bases))
            elif index < warm:
                out.append([b * index / warm for b in bases])
            else:
                out.append([cfg.min_lr + 0.5 * (b - cfg.min_lr) * (1 + math.cos(math.pi * index / total))
                            for b in bases])
            index = epoch * micro_batches + (j + 1) * accumulation - 1
    return out


def ours(cfg: TrainConfig, micro_batches: int, accumulation: int) -> list[list[float]]:
    optimizer = torch.optim.AdamW(param_groups(Parts(), cfg))
    steps = micro_batches // accumulation
    schedule = Schedule(optimizer, cfg, steps, micro_batches_per_epoch=micro_batches,
                        accumulation=accumulation)
    used = []
    for step in range(cfg.epochs * steps):
        schedule.set(step)
        used.append([g["lr"] for g in optimizer.param_groups])
    return used


@pytest.mark.parametrize("accumulation,micro_batches", [(1, 7), (4, 10), (4, 12)])
def test_every_group_at_every_step_matches_timm_driven_the_official_way(accumulation, micro_batches):
    cfg = TrainConfig(epochs=6, warmup_epochs=2.0)
    got = ours(cfg, micro_batches, accumulation)
    official = official_lrs(cfg, micro_batches, accumulation)
    formula = formula_lrs(cfg, micro_batches, accumulation)
    assert len(got) == len(official) == len(formula) == 6 * (micro_batches // accumulation)
    assert len(got[0]) == 6  # message, temporal, mit: with and without decay
    assert got == official  # the same scheduler, the same calls: bit for bit
    for step, (a, b) in enumerate(zip(got, formula)):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-20), step
    assert got[0] == [0.0] * 6  # the first step runs at the warm-up's start
    assert max(max(g) for g in got) <= 5e-4 and min(got[-1]) >= cfg.min_lr


def test_the_lag_and_an_epochs_leftover_micro_batches():
    cfg = TrainConfig(epochs=6, warmup_epochs=2.0)
    m, a = 10, 4  # 2 steps an epoch and 2 leftover micro-batches
    got = ours(cfg, m, a)
    base = 5e-4  # the message_ group, with decay (first group)
    warm = int(2.0 * m)
    # step 1 runs at the index of step 0's last micro-batch (3), not at "step 1" of a per-step schedule
    assert got[1][0] == pytest.approx(base * 3 / warm, rel=1e-12)
    # step 2 opens epoch 1 at step 1's index (7); step 3 at epoch 1's first step index 10 + 3: the two
    # leftover micro-batches (8, 9) advanced the index without a step
    assert got[2][0] == pytest.approx(base * 7 / warm, rel=1e-12)
    assert got[3][0] == pytest.approx(base * 13 / warm, rel=1e-12)
    per_step = ours(TrainConfig(epochs=6, warmup_epochs=2.0, lr_schedule="per_step"), m, a)
    assert per_step[1][0] == pytest.approx(base * 1 / 4, rel=1e-12)  # the per-step formula: no lag
    assert per_step[0][0] == 0.0


def test_resumed_schedule_needs_no_state():
    cfg = TrainConfig(epochs=4, warmup_epochs=1.0)
    optimizer = torch.optim.AdamW(param_groups(Parts(), cfg))
    schedule = Schedule(optimizer, cfg, 3, micro_batches_per_epoch=13, accumulation=4)
    schedule.set(7)
    at_seven = [g["lr"] for g in optimizer.param_groups]
    fresh = torch.optim.AdamW(param_groups(Parts(), cfg))
    Schedule(fresh, cfg, 3, micro_batches_per_epoch=13, accumulation=4).set(7)
    assert [g["lr"] for g in fresh.param_groups] == at_seven and at_seven[0] > 0


def test_a_changed_base_lr_takes_effect_at_the_next_step():
    """A resume with another lr sets the groups' initial_lr (train/resume_check.py); timm's scheduler
    keeps the base lrs it was built with, so the schedule must follow the new ones."""
    cfg = TrainConfig(epochs=4, warmup_epochs=1.0)
    optimizer = torch.optim.AdamW(param_groups(Parts(), cfg))
    schedule = Schedule(optimizer, cfg, 3, micro_batches_per_epoch=13, accumulation=4)
    schedule.set(7)
    before = [g["lr"] for g in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["initial_lr"] /= 10
    schedule.set(7)
    index = 2 * 13 + 4 - 1  # the index set after step 6, the first step of epoch 2 (3 steps an epoch)
    total = cfg.epochs * 13
    expected = [cfg.min_lr + 0.5 * (g["initial_lr"] - cfg.min_lr) * (1 + math.cos(math.pi * index / total))
                for g in optimizer.param_groups]
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(expected, rel=1e-12)
    assert all(a > 5 * b for a, b in zip(before, expected))


@pytest.mark.parametrize("name", ZOO_CONFIGS)
def test_zoo_configs_run_the_recipe(name):
    cfg = load_config(name)
    assert cfg.train.grad_clip == 0.0 and cfg.train.lr_schedule == "micro_batch"
    assert cfg.train.min_lr == 8e-8 and cfg.train.warmup_lr == 0.0 and cfg.train.warmup_epochs == 5.0
    d = cfg.data
    options = (d.color_jitter, d.erase_fill, d.mix_partner, d.test_clip_frames)
    assert options == ("per_frame", "zeros", "randperm", "official")
    assert (d.color_jitter_p, d.brightness, d.contrast, d.saturation, d.hue) == (0.8, 0.4, 0.4, 0.2, 0.1)
    assert (d.grayscale_p, d.erasing_p, d.mixup_alpha, d.cutmix_alpha, d.mix_switch_p, d.label_smoothing) == \
        (0.2, 0.25, 0.8, 1.0, 0.5, 0.1)


def test_defaults_do_not_clip():
    assert TrainConfig().grad_clip == 0.0 and len(ZOO_CONFIGS) == 10


def test_the_trainer_runs_each_step_at_the_official_lr(tmp_path):
    """The trainer wires the schedule to its loader: 16 videos in micro-batches of 2 (M = 8) and 3 per
    step (2 steps an epoch, 2 micro-batches left over); the lr each step used, as logged."""
    import train_helpers as h

    from ila_fast.train.monitor import read_metrics
    from ila_fast.train.trainer import Trainer

    root = h.make_dataset(tmp_path / "videos")
    cfg = h.tiny_config(root, train__total_batch=6, train__epochs=2, train__warmup_epochs=1.0,
                        train__log_samples=False)
    Trainer(cfg, tmp_path / "run").fit()
    rows, _ = read_metrics(tmp_path / "run")
    used = {r["step"] - 1: r["lr/message"] for r in rows}  # logged after the step: the lr it ran at
    base, low = cfg.train.lr_message, cfg.train.min_lr
    cosine = low + 0.5 * (base - low) * (1 + math.cos(math.pi * 10 / 16))
    expected = {0: 0.0, 1: base * 2 / 8, 2: base * 5 / 8, 3: cosine}  # indices -, 2, 5, 8 + 2 of 16
    assert used.keys() == expected.keys()
    for step, lr in expected.items():
        assert used[step] == pytest.approx(lr, rel=1e-9, abs=1e-15), step
