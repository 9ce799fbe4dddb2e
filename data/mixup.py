"""Mixup / cutmix and label smoothing on the device (docs/recipe.md; mmaction's CutmixMixupBlending).

The plan draws the parameters (``SamplePlan.mix``); these functions apply them to a batch
wherever it lives. Clip i mixes with clip ``mix.partner[i]`` (a random permutation of the batch by
default, as the official ``torch.randperm``; the batch reversed when the spec has no partner);
cutmix pastes the same box into every frame.
"""
from __future__ import annotations

import torch

from .plan import MixSpec


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float = 0.1) -> torch.Tensor:
    """(B,) int -> (B, K): 1 - smoothing + smoothing / K on the label, smoothing / K elsewhere."""
    off = smoothing / num_classes
    out = torch.full((labels.shape[0], num_classes), off, device=labels.device, dtype=torch.float32)
    return out.scatter_(1, labels.view(-1, 1), 1.0 - smoothing + off)


def mix_batch(video: torch.Tensor, labels: torch.Tensor, mix: MixSpec, num_classes: int,
              smoothing: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """video (B, T, C, H, W), labels (B,) -> mixed video, soft targets (B, K)."""
    target = smooth_one_hot(labels, num_classes, smoothing)
    if mix.mode == "none":
        return video, target
    lam = mix.lam
    b = video.shape[0]
    partner = list(mix.partner) if mix.partner is not None else list(range(b - 1, -1, -1))
    if len(partner) != b:
        raise ValueError(f"mix partner of {len(partner)} clips for a batch of {b}")
    index = torch.tensor(partner, dtype=torch.long).to(video.device, non_blocking=True)
    if mix.mode == "mixup":
        video = video.mul(lam).add_(video.index_select(0, index), alpha=1.0 - lam)
    elif mix.mode == "cutmix":
        y0, y1, x0, x1 = mix.box
        video = video.clone()
        # index_select copies: every box is read before any is written
        video[..., y0:y1, x0:x1] = video[..., y0:y1, x0:x1].index_select(0, index)
    else:
        raise ValueError(f"unknown mix mode {mix.mode!r}")
    return video, target * lam + target.index_select(0, index.to(target.device)) * (1.0 - lam)


def soft_target_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_k target_k log softmax(logits)_k."""
    return torch.sum(-target * torch.log_softmax(logits.float(), dim=-1), dim=-1).mean()
