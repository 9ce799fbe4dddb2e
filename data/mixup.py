"""Mixup / cutmix and label smoothing on the device (spec section 4, timm's 'batch' mode).

The plan draws the parameters (``SamplePlan.mix``); these functions apply them to a batch
wherever it lives. The partner of clip i is clip B-1-i (the batch reversed); cutmix pastes
the same box into every frame.
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
    if mix.mode == "mixup":
        video = video.mul(lam).add_(video.flip(0), alpha=1.0 - lam)
    elif mix.mode == "cutmix":
        y0, y1, x0, x1 = mix.box
        video = video.clone()
        video[..., y0:y1, x0:x1] = video.flip(0)[..., y0:y1, x0:x1]
    else:
        raise ValueError(f"unknown mix mode {mix.mode!r}")
    return video, target * lam + target.flip(0) * (1.0 - lam)


def soft_target_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_k target_k log softmax(logits)_k."""
    return torch.sum(-target * torch.log_softmax(logits.float(), dim=-1), dim=-1).mean()
