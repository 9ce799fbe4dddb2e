"""The paper's optimisation recipe (spec section 4): AdamW parameter groups and the lr schedule.

Groups, by the trainable parameter's name (first match wins, so the ILA module's own
``message_ila.temporal_*`` layers belong to ``message``, and ``temporal`` is exactly the two
zero-initialised residual Linears):

    message   name contains "message_"                     lr 5e-4  wd 1e-2
    temporal  name contains "temporal_"                    lr 8e-5  wd 1e-3
    mit       the integration transformer ("mit.") and
              the SSv2 classifier (official: mit.classify_head)  lr 4e-4  wd 3e-3
    other     anything else that trains                    lr 8e-6  wd 1e-3

Each group is split in two: biases, 1-D parameters and positional embeddings get no weight decay.
The schedule is per optimizer step: linear warm-up from ``warmup_lr`` over the warm-up epochs, then
a cosine from each group's lr to ``min_lr`` at the last step, evaluated at the absolute step as
X-CLIP's timm scheduler does (``t_initial`` = all steps).
"""
from __future__ import annotations

import math

from torch import nn

from ila_fast.config import TrainConfig

GROUPS = ("message", "temporal", "mit", "other")


def group_of(name: str) -> str:
    if "message_" in name:
        return "message"
    if "temporal_" in name:
        return "temporal"
    if name.startswith("mit.") or ".mit." in name or "classifier." in name:
        return "mit"
    return "other"


def no_decay(name: str, param) -> bool:
    return param.ndim <= 1 or name.endswith(".bias") or "positional_embedding" in name


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """AdamW groups of the trainable parameters; each dict carries its ``name`` and base ``initial_lr``."""
    buckets: dict[tuple[str, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            buckets.setdefault((group_of(name), no_decay(name, p)), []).append(p)
    groups = []
    for group in GROUPS:
        lr, wd = getattr(cfg, f"lr_{group}"), getattr(cfg, f"wd_{group}")
        for decay_off in (False, True):
            params = buckets.get((group, decay_off))
            if params:
                groups.append({"params": params, "name": f"{group}{'_no_decay' if decay_off else ''}",
                               "lr": lr, "initial_lr": lr, "weight_decay": 0.0 if decay_off else wd})
    return groups


def lr_at(step: int, base_lr: float, total_steps: int, warmup_steps: int, min_lr: float,
          warmup_lr: float = 0.0) -> float:
    """Learning rate of a group with ``base_lr`` at optimizer step ``step`` (0-based)."""
    if step < warmup_steps:
        return warmup_lr + (base_lr - warmup_lr) * step / warmup_steps
    t = min(step, total_steps)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * t / max(1, total_steps)))


class Schedule:
    """Sets every group's lr for a step; a function of the step alone, so resuming needs no state."""

    def __init__(self, optimizer, cfg: TrainConfig, steps_per_epoch: int):
        self.optimizer, self.cfg = optimizer, cfg
        self.total_steps = cfg.epochs * steps_per_epoch
        self.warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)

    def set(self, step: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(step, group["initial_lr"], self.total_steps, self.warmup_steps,
                                self.cfg.min_lr, self.cfg.warmup_lr)

    def lrs(self) -> dict[str, float]:
        return {g["name"]: g["lr"] for g in self.optimizer.param_groups}
