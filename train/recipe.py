"""The paper's optimisation recipe (docs/recipe.md): AdamW parameter groups and the lr schedule.

Groups, by the trainable parameter's name (first match wins, so the ILA module's own
``message_ila.temporal_*`` layers belong to ``message``, and ``temporal`` is exactly the two
zero-initialised residual Linears):

    message   name contains "message_"                     lr 5e-4  wd 1e-2
    temporal  name contains "temporal_"                    lr 8e-5  wd 1e-3
    mit       the integration transformer ("mit.") and
              the SSv2 classifier (official: mit.classify_head)  lr 4e-4  wd 3e-3
    other     anything else that trains                    lr 8e-6  wd 1e-3

Each group is split in two: biases, 1-D parameters and positional embeddings get no weight decay.

The schedule (``train.lr_schedule``):

* ``"micro_batch"`` (the recipe): timm's ``CosineLRScheduler`` itself, built as the official code
  builds it, in micro-batches (M per epoch: ``t_initial = int(epochs * M)``, ``warmup_t =
  int(warmup_epochs * M)``, warm-up from ``warmup_lr``, cosine at the absolute index down to
  ``min_lr``), and driven as the official loop drives it: after each optimizer step it is told the
  index of that step's last micro-batch, ``epoch * M + idx``, and the lr it sets is the lr of the
  NEXT step. So the first step runs at ``warmup_lr``, with A micro-batches per step the lr lags the
  per-step formula, and an epoch's leftover micro-batches (M mod A) still move the index on.
  ``Schedule.set(step)`` recomputes that value from the step alone (no scheduler state to save).
* ``"per_step"``: the same warm-up and cosine evaluated at the optimizer step itself (``lr_at``).
"""
from __future__ import annotations

import math

from torch import nn

from ila_fast.compat import guard_torchvision
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


def cosine_lr_scheduler_class():
    """timm's ``CosineLRScheduler`` (timm comes with open_clip); imported behind the torchvision guard,
    since importing timm imports torchvision."""
    guard_torchvision()
    try:
        from timm.scheduler.cosine_lr import CosineLRScheduler  # noqa: PLC0415
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("train.lr_schedule = 'micro_batch' uses timm's CosineLRScheduler: "
                          "pip install timm") from e
    return CosineLRScheduler


def official_update_index(step: int, steps_per_epoch: int, micro_batches_per_epoch: int,
                          accumulation: int) -> int | None:
    """The index the official loop passes to ``step_update`` after optimizer step ``step - 1`` (global,
    0-based), i.e. the index whose lr optimizer step ``step`` runs at; None for the first step."""
    if step <= 0:
        return None
    epoch, in_epoch = divmod(step - 1, steps_per_epoch)
    return epoch * micro_batches_per_epoch + (in_epoch + 1) * accumulation - 1


class Schedule:
    """Sets every group's lr for a step; a function of the step alone, so resuming needs no state.

    ``micro_batches_per_epoch`` (the loader's batches per epoch on a rank) and ``accumulation``
    (micro-batches per optimizer step) index the "micro_batch" schedule; default: exactly
    ``steps_per_epoch * accumulation``.
    """

    def __init__(self, optimizer, cfg: TrainConfig, steps_per_epoch: int,
                 micro_batches_per_epoch: int | None = None, accumulation: int = 1):
        self.optimizer, self.cfg = optimizer, cfg
        self.steps_per_epoch, self.accumulation = steps_per_epoch, accumulation
        self.micro_batches_per_epoch = micro_batches_per_epoch or steps_per_epoch * accumulation
        if self.micro_batches_per_epoch < steps_per_epoch * accumulation:
            raise ValueError(f"{self.micro_batches_per_epoch} micro-batches per epoch cannot make "
                             f"{steps_per_epoch} steps of {accumulation}")
        self.total_steps = cfg.epochs * steps_per_epoch
        self.warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
        self.timm, self.timm_base_lrs = None, None

    def official_scheduler(self):
        """timm's scheduler, built as the official build_scheduler does, in micro-batches. It keeps each
        group's base lr from when it was built, so it is built again when a group's ``initial_lr``
        changed since (a resume with another lr applies it)."""
        base_lrs = tuple(g["initial_lr"] for g in self.optimizer.param_groups)
        if self.timm is None or base_lrs != self.timm_base_lrs:
            m, cfg = self.micro_batches_per_epoch, self.cfg
            self.timm = cosine_lr_scheduler_class()(
                self.optimizer, t_initial=int(cfg.epochs * m), lr_min=cfg.min_lr, warmup_lr_init=cfg.warmup_lr,
                warmup_t=int(cfg.warmup_epochs * m), cycle_limit=1, t_in_epochs=False)
            self.timm_base_lrs = base_lrs
        return self.timm

    def update_index(self, step: int) -> int | None:
        """The micro-batch index whose lr optimizer step ``step`` uses (None: the first step)."""
        return official_update_index(step, self.steps_per_epoch, self.micro_batches_per_epoch,
                                     self.accumulation)

    def set(self, step: int) -> None:
        if self.cfg.lr_schedule == "micro_batch":
            timm = self.official_scheduler()
            index = self.update_index(step)
            if index is None:  # before the first update: timm's initial lr (the warm-up start)
                for group in self.optimizer.param_groups:
                    group["lr"] = self.cfg.warmup_lr if timm.warmup_t else group["initial_lr"]
            else:
                timm.step_update(index)
            return
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(step, group["initial_lr"], self.total_steps, self.warmup_steps,
                                self.cfg.min_lr, self.cfg.warmup_lr)

    def lrs(self) -> dict[str, float]:
        return {g["name"]: g["lr"] for g in self.optimizer.param_groups}
