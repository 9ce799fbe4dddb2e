"""Refusals before a run starts that would otherwise train on nonsense, silently.

* No weights to start from: a config without ``model.clip_weights`` and no ``--init`` would train
  CLIP's tower from random numbers; training from scratch must be asked for (``clip_weights = "random"``).
* A text head (``model.dataset = "k400"``) without class names would learn to match placeholder texts
  ("class 0", "class 1", ...), which mean nothing at evaluation or to any other label set.
"""
from __future__ import annotations

from ila_fast.errors import UserError


def check_start(cfg, init, class_names: list[str] | None, resuming: bool) -> None:
    """Refuse a fresh run without initial weights, and a text-head run without class names (one line each)."""
    if not resuming and not init and not cfg.model.clip_weights:
        raise UserError(f"model.clip_weights is not set: {cfg.name} would train from random weights; set it to a "
                        "CLIP file (OpenAI's ViT-B-16.pt or an open_clip checkpoint), pass --init FILE, or set "
                        "model.clip_weights = \"random\" to train from scratch on purpose")
    if cfg.model.dataset == "k400" and class_names is None:
        raise UserError(f"{cfg.name} classifies by the text of its class names (model.dataset = 'k400') and has "
                        "none: it would train against placeholders ('class 0', ...); set data.labels to a label CSV "
                        "(id,name) or a bundled set (kinetics400, kinetics600, kinetics700, ucf101, hmdb51)")
