"""Per-frame colour jitter and grayscale with the numbers of torchvision on 8-bit PIL images, batched.

The official training pipeline calls torchvision's ``ColorJitter(0.4, 0.4, 0.2, 0.1)`` on every
frame (a PIL image) and then ``Grayscale(3)``. Each frame draws its own four factors and its own
order of the four operations (the plan draws them: ``plan.FrameJitter``), and every operation
returns an 8-bit image. This module computes the same on a batch of frames held as float tensors of
whole levels 0..255, on any device, one operation at a time over all the frames that apply it at
that position of their order (so the work is one pass of each operation per frame, with no Python
loop over frames or pixels):

* brightness ``f``: PIL blends with a black image: ``trunc(f * x)``, clipped to 0..255;
* contrast ``f``: blend with the frame's mean grey ``m`` = round-half-up of the mean of its
  8-bit luma image: ``trunc(m + f * (x - m))``, clipped;
* saturation ``f``: blend with the frame's luma image ``g``: ``trunc(g + f * (x - g))``, clipped;
* hue ``h``: PIL's RGB -> HSV (8-bit H, S, V), ``H += trunc(255 h)`` modulo 256, HSV -> RGB;
* grayscale: PIL's integer luma ``(19595 R + 38470 G + 7471 B + 2^15) >> 16`` (= R 299/1000 +
  G 587/1000 + B 114/1000, rounded), copied to the three channels.

PIL computes a blend in single precision (the factor is a C ``float``) and truncates; the HSV
conversions mix single and double precision. Each step below rounds where PIL's C code does, so
the results agree with PIL to the level (``tests/test_recipe_color.py`` measures it).
"""
from __future__ import annotations

import torch

OPS = ("brightness", "contrast", "saturation", "hue")  # torchvision's fn_idx 0..3


def luma(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) whole levels -> (..., 1, H, W) PIL's integer luma (exact in float32: every
    partial sum stays below 2^24)."""
    r, g, b = x[..., 0:1, :, :], x[..., 1:2, :, :], x[..., 2:3, :, :]
    y = r * 19595.0 + g * 38470.0 + b * 7471.0 + 32768.0
    return torch.floor(y * (1.0 / 65536.0))


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ``Image.blend(degenerate, x, factor)`` on whole levels: single precision, truncated, clipped."""
    out = (x - degenerate).mul_(factor).add_(degenerate)
    return out.floor_().clamp_(0.0, 255.0)


def brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W), factor (N,) -> PIL ``ImageEnhance.Brightness``."""
    return (x * factor.view(-1, 1, 1, 1)).floor_().clamp_(0.0, 255.0)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageEnhance.Contrast``: towards the frame's mean grey level (an integer)."""
    total = luma(x).sum(dim=(-3, -2, -1), dtype=torch.float64)
    mean = torch.floor(total / (x.shape[-1] * x.shape[-2]) + 0.5).to(x.dtype)
    return _blend(mean.view(-1, 1, 1, 1), x, factor.view(-1, 1, 1, 1))


def saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageEnhance.Color``: towards the frame's luma image."""
    return _blend(luma(x), x, factor.view(-1, 1, 1, 1))


def _rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PIL's RGB -> HSV on whole levels: (N, 3, H, W) -> H, S, V (N, H, W) as whole levels.

    PIL divides in single precision and combines / scales in double, truncating to 8 bits."""
    f32, f64 = torch.float32, torch.float64
    r, g, b = x[:, 0].to(f32), x[:, 1].to(f32), x[:, 2].to(f32)
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    grey = maxc == minc
    cr = torch.where(grey, torch.ones_like(maxc), maxc - minc)
    s = cr / torch.where(grey, torch.ones_like(maxc), maxc)
    rc, gc, bc = (maxc - r) / cr, (maxc - g) / cr, (maxc - b) / cr
    h_r = (bc - gc).to(f64)                                       # float - float, in float
    h_g = (2.0 + rc.to(f64) - bc.to(f64)).to(f32).to(f64)         # double sums, stored as float
    h_b = (4.0 + gc.to(f64) - rc.to(f64)).to(f32).to(f64)
    h = torch.where(r == maxc, h_r, torch.where(g == maxc, h_g, h_b))
    h = torch.fmod(h / 6.0 + 1.0, 1.0).to(f32).to(f64)
    hue = torch.where(grey, 0.0, torch.trunc(h * 255.0).clamp_(0, 255))
    sat = torch.where(grey, 0.0, torch.trunc(s.to(f64) * 255.0).clamp_(0, 255))
    return hue, sat, maxc.to(f64)


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """PIL's HSV -> RGB on whole levels (float64 inputs) -> (N, 3, H, W) float64 whole levels."""
    f32, f64 = torch.float32, torch.float64
    h6 = h * 6.0 / 255.0
    i = torch.floor(h6)
    f = (h6 - i).to(f32)
    fs = (s / 255.0).to(f32)
    p = torch.floor(v * (1.0 - fs.to(f64)) + 0.5)                       # C round(), values >= 0
    q = torch.floor(v * (1.0 - (fs * f).to(f64)) + 0.5)                 # float * float, in float
    t = torch.floor(v * (1.0 - fs.to(f64) * (1.0 - f.to(f64))) + 0.5)
    p, q, t = (c.clamp_(0, 255) for c in (p, q, t))
    sector = torch.remainder(i, 6)

    def pick(*by_sector):  # the channel's value in each of the six sectors
        out = by_sector[5]
        for k in range(4, -1, -1):
            out = torch.where(sector == k, by_sector[k], out)
        return out

    rgb = torch.stack([pick(v, q, p, p, t, v), pick(t, v, v, q, p, p), pick(p, p, t, v, v, q)], dim=1)
    return torch.where((s == 0).unsqueeze(1), v.unsqueeze(1), rgb)


def hue(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision ``adjust_hue`` on a PIL image: the 8-bit hue shifted by ``trunc(255 factor)``, wrapping."""
    h, s, v = _rgb_to_hsv(x)
    shift = torch.trunc(factor.to(torch.float64) * 255.0).view(-1, 1, 1)
    h = torch.remainder(h + shift, 256.0)
    return _hsv_to_rgb(h, s, v).to(x.dtype)


_OP_FNS = {"brightness": brightness, "contrast": contrast, "saturation": saturation, "hue": hue}


def jitter_frames(frames: torch.Tensor, order: torch.Tensor, factors: torch.Tensor,
                  active: list[int]) -> torch.Tensor:
    """Per-frame colour jitter in place on ``frames`` (N, 3, H, W), float whole levels.

    ``order`` (N, 4) int: the operation (index into ``OPS``) each frame applies at each position;
    ``factors`` (N, 4): each frame's brightness, contrast, saturation and hue factors (CPU tensors:
    the plan lives on the host, so choosing the frames costs no device sync); ``active``: the
    frames to jitter. Each position k applies each operation once to all its frames.
    """
    if not active:
        return frames
    active_t = torch.as_tensor(active, dtype=torch.int64)
    sub_order = order[active_t]
    for k in range(len(OPS)):
        for op_id, name in enumerate(OPS):
            rows = active_t[sub_order[:, k] == op_id]
            if rows.numel() == 0:
                continue
            idx = rows.to(frames.device, non_blocking=True)
            factor = factors[rows, op_id].to(device=frames.device, dtype=frames.dtype, non_blocking=True)
            frames[idx] = _OP_FNS[name](frames[idx], factor)
    return frames


def grayscale_frames(frames: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """PIL's ``convert('L')`` copied to 3 channels, in place, on the given frames of (N, 3, H, W)."""
    if rows:
        idx = torch.as_tensor(rows, dtype=torch.int64).to(frames.device, non_blocking=True)
        frames[idx] = luma(frames[idx]).expand(-1, 3, -1, -1)
    return frames
