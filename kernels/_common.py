"""Helpers shared by the two correlation fronts, ``correlation.py`` (Kinetics) and
``dense_correlation.py`` (SSv2): the pair- and frame-pixel index maps used inside their kernels, the
input geometry check, the accumulator and dot types and the autocast input cast."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .alignment import INTERPRET


@triton.jit
def _pair_pixels(m, T, G, Q):
    """Flattened pair pixel m = n * Q + q -> (frame-t row base index, i, j)."""
    n = m // Q
    q = m % Q
    b = n // (T - 1)
    t = n % (T - 1)
    return b * T + t, q // G, q % G


@triton.jit
def _frame_pixels(m, T, G, Q):
    """Flattened frame pixel m = f * Q + q -> (f as int64, q, b, t, i, j): the dZ kernels' rows."""
    f = (m // Q).to(tl.int64)
    q = m % Q
    return f, q, f // T, f % T, q // G, q % G


@triton.jit
def _pair_source(b, t, i, j, half, tap, T, G):
    """Where frame pixel (t, i, j) meets ``tap`` of its pair as channel block ``half`` (0: the pair
    starting at t, 1: the pair ending at t): (pair n, source row si, source column sj, in range)."""
    has_pair = tl.where(half == 0, t < T - 1, t > 0)
    si = i - (tap // 3 - 1)
    sj = j - (tap % 3 - 1)
    return b * (T - 1) + t - half, si, sj, has_pair & (si >= 0) & (si < G) & (sj >= 0) & (sj < G)


def _geometry(z: torch.Tensor):
    if z.dim() != 4:
        raise ValueError(f"pair_correlation: z must be (B, T, L, D), got shape {tuple(z.shape)}")
    b, t, l, d = z.shape
    g = int(round((l - 1) ** 0.5))
    if g * g + 1 != l or t < 2:
        raise ValueError(f"pair_correlation: need L = G*G + 1 and T >= 2, got z of shape {tuple(z.shape)}")
    return b, t, l, d, g


def _acc_types(z: torch.Tensor):
    """(accumulator dtype, torch accumulator dtype, dot operand dtype, dot precision)."""
    if z.dtype == torch.float64:
        return tl.float64, torch.float64, tl.float64, "ieee"
    if INTERPRET:  # the interpreter's tl.dot on bf16 operands is wrong: dot in fp32
        return tl.float32, torch.float32, tl.float32, "ieee"
    if z.dtype in (torch.bfloat16, torch.float16):
        return tl.float32, torch.float32, (tl.bfloat16 if z.dtype == torch.bfloat16 else tl.float16), "ieee"
    # fp32 follows PyTorch's own switch for the cuDNN convolutions these kernels replace.
    return tl.float32, torch.float32, tl.float32, ("tf32" if torch.backends.cudnn.allow_tf32 else "ieee")


def _autocast_input(z: torch.Tensor) -> torch.Tensor:
    """Under autocast the reference's convolutions run in the autocast dtype (LayerNorm hands
    them fp32): cast Z the same way, so the kernels read half the bytes and use bf16 / fp16
    tensor cores. Weights stay as they are; the kernels cast their tiles in registers."""
    if z.device.type in ("cuda", "cpu") and torch.is_autocast_enabled(z.device.type) and z.dtype == torch.float32:
        return z.to(torch.get_autocast_dtype(z.device.type))
    return z
