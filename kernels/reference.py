"""Plain PyTorch reference ops for ILA's alignment and inter-frame correlation.

These are dtype-generic and written for clarity: the model's ``kernels="reference"``
path uses them, and the fused Triton ops in this package are tested against them
(and both against float64). Every op is a function of tensors; nothing here knows
about modules, configs or training.

Shapes: B clips, T frames, L = G*G + 1 tokens (class token first), D channels.
Points P are (B, T-1, 4) = (x_pre, y_pre, x_cur, y_cur) in grid coordinates [-1, 1].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# The 9 jitter offsets (in units of delta) averaged in training mode.
TRAIN_OFFSETS = ((0, 0), (0, 1), (1, 0), (0, -1), (-1, 0), (1, 1), (-1, -1), (1, -1), (-1, 1))
# Mask shape: flat (weight 1) within this distance of the point, then a ramp of this slope.
MASK_FLAT_RADIUS = 0.25
MASK_RAMP_SLOPE = 1.5


def grid_coordinates(grid_size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(G,) coordinates -1 + 2k/(G-1) of the token grid."""
    k = torch.arange(grid_size, device=device, dtype=dtype)
    return -1.0 + 2.0 * k / (grid_size - 1)


def mask_weight_1d(distance: torch.Tensor) -> torch.Tensor:
    """1-D alignment weight: 1 within 0.25 of the point, then a linear ramp down to 0."""
    ramp = (1.0 - MASK_RAMP_SLOPE * (distance.abs() - MASK_FLAT_RADIUS)).clamp(min=0.0)
    return torch.where(distance.abs() <= MASK_FLAT_RADIUS, torch.ones_like(ramp), ramp)


def alignment_masks(points: torch.Tensor, grid_size: int, delta: torch.Tensor | float,
                    training: bool) -> torch.Tensor:
    """Masks (B, T-1, 2, G, G) for the pre (index 0) and cur (index 1) frame of every pair.

    Rows follow y, columns follow x. In training the mask is the mean over the 9 points
    ``point + offset * delta``; in evaluation it is the single mask at the point.
    """
    b, pairs, _ = points.shape
    xy = points.view(b, pairs, 2, 2)  # (..., frame{pre,cur}, {x,y})
    g = grid_coordinates(grid_size, points.device, points.dtype)
    offsets = TRAIN_OFFSETS if training else ((0, 0),)
    total = 0
    for ox, oy in offsets:
        px = xy[..., 0] + ox * delta
        py = xy[..., 1] + oy * delta
        wy = mask_weight_1d(g - py[..., None])  # (B, T-1, 2, G)
        wx = mask_weight_1d(g - px[..., None])
        total = total + wy[..., :, None] * wx[..., None, :]
    return total / len(offsets)


def align_frames(z: torch.Tensor, points: torch.Tensor, delta: torch.Tensor | float,
                 training: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Aligned frames and pooled pair tokens.

    z: (B, T, L, D) projected tokens; points: (B, T-1, 4).
    Returns aligned (B, T, L, D): patch tokens of frame t times the mean of the masks that
    apply to it (pre-mask of pair t, cur-mask of pair t-1; one of them at either end),
    class tokens unchanged; and pooled (B, T-1, 2, D): sum over the grid of
    Z[t] * M_pre[t] (index 0) and Z[t+1] * M_cur[t] (index 1).
    """
    b, t, l, d = z.shape
    g = int(round((l - 1) ** 0.5))
    masks = alignment_masks(points.to(torch.float32) if z.dtype != torch.float64 else points,
                            g, delta, training).to(z.dtype).flatten(-2)  # (B, T-1, 2, G*G)
    m_pre, m_cur = masks[:, :, 0], masks[:, :, 1]
    zeros = torch.zeros_like(m_pre[:, :1])
    # Per-frame mask sum and count: frame t gets pre[t] (t < T-1) and cur[t-1] (t > 0).
    mask_sum = torch.cat([m_pre, zeros], 1) + torch.cat([zeros, m_cur], 1)  # (B, T, G*G)
    count = torch.full((t,), 2.0, dtype=z.dtype, device=z.device)
    count[0] = count[-1] = 1.0
    frame_mask = mask_sum / count[:, None]
    patches = z[:, :, 1:]
    aligned = torch.cat([z[:, :, :1], patches * frame_mask[..., None]], dim=2)
    pooled_pre = (patches[:, :-1] * m_pre[..., None]).sum(2)
    pooled_cur = (patches[:, 1:] * m_cur[..., None]).sum(2)
    return aligned, torch.stack([pooled_pre, pooled_cur], dim=2)


def pair_maps(z: torch.Tensor) -> torch.Tensor:
    """(B*(T-1), 2D, G, G): patch tokens of frames t and t+1 as maps, concatenated on channels."""
    b, t, l, d = z.shape
    g = int(round((l - 1) ** 0.5))
    maps = z[:, :, 1:].transpose(2, 3).reshape(b, t, d, g, g)
    return torch.cat([maps[:, :-1], maps[:, 1:]], dim=2).reshape(b * (t - 1), 2 * d, g, g)


def pair_correlation(z: torch.Tensor,
                     dw_weight: torch.Tensor, dw_bias: torch.Tensor,
                     dw_bn_weight: torch.Tensor, dw_bn_bias: torch.Tensor,
                     dw_bn_mean: torch.Tensor, dw_bn_var: torch.Tensor,
                     pw_weight: torch.Tensor, pw_bias: torch.Tensor,
                     pw_bn_weight: torch.Tensor, pw_bn_bias: torch.Tensor,
                     pw_bn_mean: torch.Tensor, pw_bn_var: torch.Tensor,
                     training: bool, momentum: float, eps: float) -> torch.Tensor:
    """Kinetics interactive-block front: depthwise 3x3 + BN + ReLU, 1x1 conv + BN + ReLU.

    z: (B, T, L, D). dw_weight: (2D, 1, 3, 3); pw_weight: (C, 2D, 1, 1).
    Returns (B*(T-1), C, G, G). In training, BatchNorm uses batch statistics and updates
    the running statistics in place (as nn.BatchNorm2d does); in evaluation it uses them.
    """
    x = pair_maps(z)
    x = F.conv2d(x, dw_weight, dw_bias, padding=1, groups=x.shape[1])
    x = F.relu(batch_norm(x, dw_bn_mean, dw_bn_var, dw_bn_weight, dw_bn_bias, training, momentum, eps))
    x = F.conv2d(x, pw_weight, pw_bias)
    return F.relu(batch_norm(x, pw_bn_mean, pw_bn_var, pw_bn_weight, pw_bn_bias, training, momentum, eps))


def pair_correlation_dense(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                           bn_weight: torch.Tensor, bn_bias: torch.Tensor,
                           bn_mean: torch.Tensor, bn_var: torch.Tensor,
                           training: bool, momentum: float, eps: float) -> torch.Tensor:
    """SSv2 interactive-block front: dense 3x3 conv 2D -> C + BN + ReLU. Returns (B*(T-1), C, G, G)."""
    x = F.conv2d(pair_maps(z), weight, bias, padding=1)
    return F.relu(batch_norm(x, bn_mean, bn_var, bn_weight, bn_bias, training, momentum, eps))


def batch_norm(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
               training: bool, momentum: float, eps: float) -> torch.Tensor:
    """``F.batch_norm``; with mixed dtypes computed in at least fp32 and returned in x's dtype.

    Under FSDP's bf16 parameters the affine weights arrive in bf16 while the running statistics
    stay fp32, which ``F.batch_norm`` refuses to mix on a CPU; the fused ops also normalise in fp32.
    When input, weights and statistics share one dtype this is exactly ``F.batch_norm`` in it.
    """
    if mean.dtype == weight.dtype == x.dtype:  # one dtype throughout: exactly F.batch_norm in it
        return F.batch_norm(x, mean, var, weight, bias, training, momentum, eps)
    dtype = torch.promote_types(x.dtype, torch.float32)
    stats_cast = mean.dtype != dtype
    m, v = (mean.to(dtype), var.to(dtype)) if stats_cast else (mean, var)
    out = F.batch_norm(x.to(dtype), m, v, weight.to(dtype), bias.to(dtype), training, momentum, eps)
    if stats_cast and training:  # F.batch_norm updated the copies: write them back
        mean.copy_(m)
        var.copy_(v)
    return out.to(x.dtype)
