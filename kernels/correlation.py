"""Fused Kinetics inter-frame correlation (the interactive block's depthwise + pointwise
front) without the pair tensor.

Kinetics variant (``reference.pair_correlation``): for pair n = (b, t) the input is the
2D-channel map cat(Z[b, t], Z[b, t+1]) (patch tokens as G x G maps). Here no kernel ever
builds that map: every kernel reads frames t and t+1 of Z (B, T, L, D) in place, with
channel c < D taken from frame t and c >= D from frame t+1.

    u = dwconv3x3(x; w1) + b1            (N, 2D, G, G), N = B (T-1)
    h = relu(BN1(u))
    y = W h + b2                         1x1 conv 2D -> C, a GEMM over the 2D channels
    out = relu(BN2(y))

Evaluation: BN1 and BN2 are folded into (w1, b1) and (W, b2) in PyTorch (differentiable,
so the BN affine parameters get their gradients through the fold), and one kernel
computes out: h is produced tile by tile in registers from Z and fed straight to the
tensor-core GEMM, so the depthwise output never touches memory.

Training: a statistics kernel computes u on the fly and reduces per-channel (mean, M2)
per tile (combined with Chan's formula, so no E[x^2] - E[x]^2 cancellation); the GEMM
kernel then recomputes u, normalises with the batch statistics and writes y (N, C, G, G),
C = 256 channels instead of 2D = 1536. BN2 + ReLU on y is plain PyTorch (a small
tensor), which also updates BN2's running statistics exactly as the reference does.
The custom op returns BN1's batch mean and biased variance; the wrapper updates the
running statistics (unbiased variance, momentum) as nn.BatchNorm2d does.

Backward (both modes): (1) a split-K kernel recomputes h and reduces dW = dy^T h, the
bias gradient and, in training, BN1's sums (sum g, sum g * xhat) with g = (dy W) * [h > 0];
(2) a kernel recomputes h and dh and writes du (the only 2D-channel tensor that makes a
round trip through memory, once); (3) a stencil kernel per frame gathers du of the two
pairs the frame belongs to and produces dZ, dw1 and db1 (one partial per program). Saved for backward: Z (which
the block holds anyway), the small parameters and BN1's statistics; nothing 2D-sized.

Memory layout: the (N, C, G, G) outputs are channels-last in memory (pixel-major), so the
output stores and the loads of the incoming gradient are contiguous along the channels
(16-byte accesses) instead of strided by G*G; values and shapes are the reference's.
Shared memory, registers and spills of every kernel x config x dtype on sm_90:
``python -m ila_fast.kernels.compile_report`` (offline, tests/test_kernels_compile.py).

Not done yet (speed, to measure on a GPU first): the training path still recomputes the
depthwise conv from Z in four kernels (statistics, forward, weight gradient, du) and
reads Z once more for dZ / dw1, and runs the dy W GEMM twice (for BN1's backward sums,
then for du); fusing them needs either u saved (a 2D-channel tensor) or a grid-wide
barrier between the BN1 sums and du.

The SSv2 front (``pair_correlation_dense``) is in ``dense_correlation.py``; the helpers both
fronts use are in ``_common.py``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import alignment  # noqa: F401 - sets the interpreter fallback before triton loads

import triton  # noqa: E402
import triton.language as tl

from . import reference
from ._common import _acc_types, _autocast_input, _frame_pixels, _geometry, _pair_pixels, _pair_source
from .alignment import INTERPRET, autotune, autotune_configs, empty_output, store_cast, use_reference


# Tuned (H100 / H200) and interpreter sets. Block sizes that set the number of partial
# results (STATS_BLOCK_M, the split counts) are fixed by the launcher. Every config fits
# sm_90's shared memory in fp32 and in bf16 / fp16 (the depthwise taps are a loop, not
# unrolled, so they are not multi-buffered); the defaults spill nothing (checked offline
# by tests/test_kernels_compile.py). 8 warps for the GEMM kernels: with 4, a 128-wide
# accumulator and the tap tiles exceed 255 registers.
_STATS_CONFIGS = autotune_configs(
    gpu=[({"BLOCK_K": bk}, w, 2) for bk, w in ((64, 4), (32, 4), (128, 8))],
    interp=[({"BLOCK_K": 64}, 4, 1)], default=0)
_FWD_CONFIGS = autotune_configs(
    gpu=[({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, w, s)
         for bm, bn, bk, w, s in ((128, 128, 32, 8, 2), (64, 128, 32, 8, 2), (128, 128, 64, 8, 2),
                                  (64, 128, 64, 8, 2))],
    interp=[({"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": 32}, 4, 1)], default=0)
_WGRAD_CONFIGS = autotune_configs(
    gpu=[({"BLOCK_M": bm, "BLOCK_K": bk}, w, s)
         for bm, bk, w, s in ((32, 16, 8, 2), (16, 32, 8, 2), (32, 32, 8, 2), (32, 64, 8, 2))],
    interp=[({"BLOCK_M": 64, "BLOCK_K": 32}, 4, 1)], default=0)
_DU_CONFIGS = autotune_configs(
    gpu=[({"BLOCK_M": bm, "BLOCK_K": bk}, w, s)
         for bm, bk, w, s in ((32, 32, 8, 2), (32, 32, 4, 2), (32, 16, 4, 2), (64, 32, 8, 2))],
    interp=[({"BLOCK_M": 64, "BLOCK_K": 32}, 4, 1)], default=0)
# Default: the 64 x 32 tile on 8 warps. On 4 warps triton 3.6.0 (the GPU machine's) spills
# 16 B in bf16 (ptxas caps it at 96 registers); 3.7.1 does not. 8 warps spill in neither.
_DZ_CONFIGS = autotune_configs(
    gpu=[({"BLOCK_M": bm, "BLOCK_D": bd}, w, 2)
         for bm, bd, w in ((64, 32, 8), (64, 32, 4), (64, 64, 4), (128, 32, 4))],
    interp=[({"BLOCK_M": 64, "BLOCK_D": 32}, 4, 1)], default=0)
STATS_BLOCK_M = 64 if INTERPRET else 128


# ---------------------------------------------------------------------------------------
# Tile helpers


@triton.jit
def _dw_tile(z_ptr, w_ptr, bias_ptr, m, mmask, c, cmask, T, L, D, G, Q,
             ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """u[m, c] = depthwise 3x3 conv of pair pixel m, pair channel c (zero padding) + bias."""
    frame, i, j = _pair_pixels(m, T, G, Q)
    half = (c >= D).to(tl.int64)
    col = half * L * D + (c - half * D)           # channel c: frame t or t+1, channel c mod D
    row0 = (frame.to(tl.int64) * L + 1) * D       # first patch token of frame t
    acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=ACC)
    # A loop, not unrolled: one tap's tile and its 64-bit addresses live at a time (unrolled,
    # the compiler hoists all nine loads and spills).
    for tap in range(9):
        ii = i + (tap // 3 - 1)
        jj = j + (tap % 3 - 1)
        valid = mmask & (ii >= 0) & (ii < G) & (jj >= 0) & (jj < G)
        x = tl.load(z_ptr + (row0 + (ii * G + jj) * D)[:, None] + col[None, :],
                    mask=valid[:, None] & cmask[None, :], other=0.0).to(ACC)
        w = tl.load(w_ptr + c * 9 + tap, mask=cmask, other=0.0).to(ACC)
        acc += x * w[None, :]
    bias = tl.load(bias_ptr + c, mask=cmask, other=0.0).to(ACC)
    return acc + bias[None, :]


@triton.jit
def _h_tile(z_ptr, w_ptr, bias_ptr, mean_ptr, rstd_ptr, gamma_ptr, beta_ptr, m, mmask, c, cmask,
            T, L, D, G, Q, NORM: tl.constexpr, ACC: tl.constexpr,
            BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """(h, xhat): h = relu(BN1(u)) in training (NORM), relu(u) with folded weights in eval."""
    u = _dw_tile(z_ptr, w_ptr, bias_ptr, m, mmask, c, cmask, T, L, D, G, Q, ACC, BLOCK_M, BLOCK_K)
    if NORM:
        mean = tl.load(mean_ptr + c, mask=cmask, other=0.0).to(ACC)
        rstd = tl.load(rstd_ptr + c, mask=cmask, other=0.0).to(ACC)
        gamma = tl.load(gamma_ptr + c, mask=cmask, other=0.0).to(ACC)
        beta = tl.load(beta_ptr + c, mask=cmask, other=0.0).to(ACC)
        xhat = (u - mean[None, :]) * rstd[None, :]
        h = tl.maximum(xhat * gamma[None, :] + beta[None, :], 0.0)
    else:
        xhat = u
        h = tl.maximum(u, 0.0)
    h = tl.where(mmask[:, None] & cmask[None, :], h, 0.0)
    return h, xhat


@triton.jit
def _load_dy(gy_ptr, out_ptr, m, mmask, o, omask, C, Q, GATE: tl.constexpr, ACC: tl.constexpr):
    """dy tile (BLOCK_M, BLOCK_C) from (N, C, G, G) channels-last (pixel m, channel o at
    m * C + o: contiguous along o, so 16-byte loads); GATE: times [out > 0] (eval's ReLU)."""
    offs = m.to(tl.int64)[:, None] * C + o[None, :]
    mask = mmask[:, None] & omask[None, :]
    dy = tl.load(gy_ptr + offs, mask=mask, other=0.0).to(ACC)
    if GATE:
        out = tl.load(out_ptr + offs, mask=mask, other=0.0)
        dy = tl.where(out > 0, dy, 0.0)
    return dy


# ---------------------------------------------------------------------------------------
# Kernels


@autotune(_STATS_CONFIGS, key=["K2", "D", "Q"])
@triton.jit
def _dw_stats_kernel(z_ptr, w_ptr, bias_ptr, mean_part_ptr, m2_part_ptr, T, L, D, G, Q, M, K2,
                     ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """Per tile of BLOCK_M pair pixels: per-channel mean and M2 of u (Chan-combinable)."""
    pm = tl.program_id(0)
    m = pm * BLOCK_M + tl.arange(0, BLOCK_M)
    mmask = m < M
    c = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    cmask = c < K2
    u = _dw_tile(z_ptr, w_ptr, bias_ptr, m, mmask, c, cmask, T, L, D, G, Q, ACC, BLOCK_M, BLOCK_K)
    count = tl.minimum(M - pm * BLOCK_M, BLOCK_M).to(ACC)
    u = tl.where(mmask[:, None], u, 0.0)
    mean = tl.sum(u, axis=0) / count
    dev = tl.where(mmask[:, None], u - mean[None, :], 0.0)
    tl.store(mean_part_ptr + pm.to(tl.int64) * K2 + c, mean, mask=cmask)
    tl.store(m2_part_ptr + pm.to(tl.int64) * K2 + c, tl.sum(dev * dev, axis=0), mask=cmask)


@autotune(_FWD_CONFIGS, key=["K2", "C", "Q", "NORM"])
@triton.jit
def _corr_fwd_kernel(z_ptr, w_ptr, bias_ptr, mean_ptr, rstd_ptr, gamma_ptr, beta_ptr, pw_ptr, pb_ptr, out_ptr,
                     T, L, D, G, Q, M, K2, C,
                     NORM: tl.constexpr, RELU_OUT: tl.constexpr, ACC: tl.constexpr, DOT: tl.constexpr,
                     PREC: tl.constexpr, FIX_BF16: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """out[n, o, q] = (relu)(sum_c W[o, c] h[m, c] + b2[o]), h made in registers per K tile."""
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    mmask = m < M
    o = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    omask = o < C
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for k0 in range(0, K2, BLOCK_K):
        c = k0 + tl.arange(0, BLOCK_K)
        cmask = c < K2
        h, _ = _h_tile(z_ptr, w_ptr, bias_ptr, mean_ptr, rstd_ptr, gamma_ptr, beta_ptr, m, mmask, c, cmask,
                       T, L, D, G, Q, NORM, ACC, BLOCK_M, BLOCK_K)
        wt = tl.load(pw_ptr + o[None, :].to(tl.int64) * K2 + c[:, None],
                     mask=cmask[:, None] & omask[None, :], other=0.0)
        acc += tl.dot(h.to(DOT), wt.to(DOT), input_precision=PREC, out_dtype=ACC)
    y = acc + tl.load(pb_ptr + o, mask=omask, other=0.0).to(ACC)[None, :]
    if RELU_OUT:
        y = tl.maximum(y, 0.0)
    offs = m.to(tl.int64)[:, None] * C + o[None, :]  # channels-last output: 16-byte stores along o
    tl.store(out_ptr + offs, store_cast(y, out_ptr.dtype.element_ty, FIX_BF16),
             mask=mmask[:, None] & omask[None, :])


@autotune(_WGRAD_CONFIGS, key=["K2", "C", "Q", "NORM", "GATE"])
@triton.jit
def _corr_wgrad_kernel(z_ptr, w_ptr, bias_ptr, mean_ptr, rstd_ptr, gamma_ptr, beta_ptr, pw_ptr,
                       gy_ptr, out_ptr, dw_part_ptr, bn_part_ptr, db_part_ptr,
                       T, L, D, G, Q, M, K2, C, SPLIT,
                       NORM: tl.constexpr, GATE: tl.constexpr, ACC: tl.constexpr, DOT: tl.constexpr,
                       PREC: tl.constexpr, BLOCK_C: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """Split-K over pixels: dW[:, cblock] partial = dy^T h; training: BN1 sums of g, g * xhat."""
    c = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    cmask = c < K2
    s = tl.program_id(1)
    o = tl.arange(0, BLOCK_C)
    omask = o < C
    wt = tl.load(pw_ptr + o[:, None].to(tl.int64) * K2 + c[None, :],
                 mask=omask[:, None] & cmask[None, :], other=0.0).to(DOT)  # (BLOCK_C, BLOCK_K)
    acc_dw = tl.zeros((BLOCK_C, BLOCK_K), dtype=ACC)
    sum_g = tl.zeros((BLOCK_K,), dtype=ACC)
    sum_gx = tl.zeros((BLOCK_K,), dtype=ACC)
    sum_dy = tl.zeros((BLOCK_C,), dtype=ACC)
    for mt in range(s, tl.cdiv(M, BLOCK_M), SPLIT):
        m = mt * BLOCK_M + tl.arange(0, BLOCK_M)
        mmask = m < M
        h, xhat = _h_tile(z_ptr, w_ptr, bias_ptr, mean_ptr, rstd_ptr, gamma_ptr, beta_ptr, m, mmask, c, cmask,
                          T, L, D, G, Q, NORM, ACC, BLOCK_M, BLOCK_K)
        dy = _load_dy(gy_ptr, out_ptr, m, mmask, o, omask, C, Q, GATE, ACC)
        sum_dy += tl.sum(dy, axis=0)
        dy_dot = dy.to(DOT)
        acc_dw += tl.dot(tl.trans(dy_dot), h.to(DOT), input_precision=PREC, out_dtype=ACC)
        if NORM:
            dh = tl.dot(dy_dot, wt, input_precision=PREC, out_dtype=ACC)
            g = tl.where(h > 0, dh, 0.0)
            sum_g += tl.sum(g, axis=0)
            sum_gx += tl.sum(g * xhat, axis=0)
    part = dw_part_ptr + s.to(tl.int64) * C * K2
    tl.store(part + o[:, None].to(tl.int64) * K2 + c[None, :], acc_dw, mask=omask[:, None] & cmask[None, :])
    if NORM:
        tl.store(bn_part_ptr + (s * 2 + 0) * K2 + c, sum_g, mask=cmask)
        tl.store(bn_part_ptr + (s * 2 + 1) * K2 + c, sum_gx, mask=cmask)
    first = (tl.zeros_like(o) + tl.program_id(0)) == 0  # block-shaped (Triton 3.9's interpreter)
    tl.store(db_part_ptr + s * C + o, sum_dy, mask=omask & first)


@autotune(_DU_CONFIGS, key=["K2", "C", "Q", "NORM", "GATE"])
@triton.jit
def _corr_du_kernel(z_ptr, w_ptr, bias_ptr, mean_ptr, rstd_ptr, gamma_ptr, beta_ptr, pw_ptr,
                    gy_ptr, out_ptr, a_ptr, mg_ptr, mgx_ptr, du_ptr,
                    T, L, D, G, Q, M, K2, C,
                    NORM: tl.constexpr, GATE: tl.constexpr, ACC: tl.constexpr, DOT: tl.constexpr,
                    PREC: tl.constexpr, FIX_BF16: tl.constexpr, BLOCK_C: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """du[m, c] = d loss / d u: (dy W) * [h > 0], then BN1's backward in training."""
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    mmask = m < M
    c = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    cmask = c < K2
    o = tl.arange(0, BLOCK_C)
    omask = o < C
    h, xhat = _h_tile(z_ptr, w_ptr, bias_ptr, mean_ptr, rstd_ptr, gamma_ptr, beta_ptr, m, mmask, c, cmask,
                      T, L, D, G, Q, NORM, ACC, BLOCK_M, BLOCK_K)
    dy = _load_dy(gy_ptr, out_ptr, m, mmask, o, omask, C, Q, GATE, ACC)
    wt = tl.load(pw_ptr + o[:, None].to(tl.int64) * K2 + c[None, :],
                 mask=omask[:, None] & cmask[None, :], other=0.0)
    dh = tl.dot(dy.to(DOT), wt.to(DOT), input_precision=PREC, out_dtype=ACC)
    du = tl.where(h > 0, dh, 0.0)
    if NORM:
        a = tl.load(a_ptr + c, mask=cmask, other=0.0).to(ACC)
        mg = tl.load(mg_ptr + c, mask=cmask, other=0.0).to(ACC)
        mgx = tl.load(mgx_ptr + c, mask=cmask, other=0.0).to(ACC)
        du = a[None, :] * (du - mg[None, :] - xhat * mgx[None, :])
    tl.store(du_ptr + m[:, None].to(tl.int64) * K2 + c[None, :], store_cast(du, du_ptr.dtype.element_ty, FIX_BF16),
             mask=mmask[:, None] & cmask[None, :])


@autotune(_DZ_CONFIGS, key=["D", "Q"])
@triton.jit
def _corr_dz_kernel(z_ptr, du_ptr, w_ptr, dz_ptr, part_ptr, T, L, D, G, Q, MF, K2,
                    ACC: tl.constexpr, FIX_BF16: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """Per frame pixel: dZ = sum over the (up to) two pairs holding the frame of the
    transposed depthwise conv of du; dw1 (9 taps) and db1 partial sums per program.

    Frame t is channel block 0 ("pre") of pair t (t < T-1) and block 1 of pair t-1 (t > 0).
    Programs stride over the pixel tiles, so there is one partial per program, kept in
    registers: part[s, half * 10 + tap, d] = sum_p du[pair, half*D + d, p - tap] * Z[t, p, d];
    slot half * 10 + 9: sum du (db1).
    """
    s = tl.program_id(0)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < D
    slot = tl.arange(0, 32)
    acc_w = tl.zeros((32, BLOCK_D), dtype=ACC)
    for mt in range(s, tl.cdiv(MF, BLOCK_M), tl.num_programs(0)):
        m = mt * BLOCK_M + tl.arange(0, BLOCK_M)
        mmask = m < MF
        f, q, b, t, i, j = _frame_pixels(m, T, G, Q)
        offs = ((f * L + 1 + q) * D)[:, None] + d[None, :]
        x = tl.load(z_ptr + offs, mask=mmask[:, None] & dmask[None, :], other=0.0).to(ACC)
        dz = tl.zeros((BLOCK_M, BLOCK_D), dtype=ACC)
        # (half, tap) as a loop, not unrolled: one du tile and its addresses live at a time.
        for k in range(18):
            half = k // 9
            tap = k % 9
            n, si, sj, inside = _pair_source(b, t, i, j, half, tap, T, G)
            c = half * D + d
            valid = mmask & inside
            du = tl.load(du_ptr + ((n * Q + si * G + sj) * K2)[:, None] + c[None, :],
                         mask=valid[:, None] & dmask[None, :], other=0.0).to(ACC)
            w = tl.load(w_ptr + c * 9 + tap, mask=dmask, other=0.0).to(ACC)
            dz += du * w[None, :]
            acc_w += tl.where(slot[:, None] == half * 10 + tap, tl.sum(du * x, axis=0)[None, :], 0.0)
            bias_slot = tl.where(tap == 4, half * 10 + 9, -1)  # the centre tap sees every pixel once
            acc_w += tl.where(slot[:, None] == bias_slot, tl.sum(du, axis=0)[None, :], 0.0)
        tl.store(dz_ptr + offs, store_cast(dz, dz_ptr.dtype.element_ty, FIX_BF16), mask=mmask[:, None] & dmask[None, :])
    tl.store(part_ptr + (s * 32 + slot[:, None]).to(tl.int64) * D + d[None, :], acc_w,
             mask=(slot < 20)[:, None] & dmask[None, :])


# ---------------------------------------------------------------------------------------
# Launchers


def _split_count(z: torch.Tensor, k2: int, m: int) -> int:
    """Split-K factor of the weight-gradient kernel: enough programs to fill the GPU."""
    if INTERPRET or z.device.type != "cuda":
        return 2
    sms = torch.cuda.get_device_properties(z.device).multi_processor_count
    return max(1, min(64, triton.cdiv(2 * sms, triton.cdiv(k2, 64)), triton.cdiv(m, 128)))


def _dz_split(z: torch.Tensor, mf: int, d: int) -> int:
    """Programs along the pixels in the dZ kernel (each strides over the pixel tiles and
    keeps one dw1 / db1 partial): ~8 per SM across the channel blocks."""
    if INTERPRET or z.device.type != "cuda":
        return 2
    sms = torch.cuda.get_device_properties(z.device).multi_processor_count
    return max(1, min(triton.cdiv(mf, 32), triton.cdiv(8 * sms, triton.cdiv(d, 32))))


def _dw_batch_stats(z, w1, b1):
    """BN1 batch mean and biased variance of u over (N, G, G), per pair channel (2D,)."""
    b, t, l, d, g = _geometry(z)
    q, k2 = g * g, 2 * d
    m = b * (t - 1) * q
    acc, acc_torch, _, _ = _acc_types(z)
    tiles = triton.cdiv(m, STATS_BLOCK_M)
    mean_p = empty_output((tiles, k2), z, dtype=acc_torch)
    m2_p = empty_output((tiles, k2), z, dtype=acc_torch)
    grid = lambda meta: (tiles, triton.cdiv(k2, meta["BLOCK_K"]))  # noqa: E731
    _dw_stats_kernel[grid](z, w1, b1, mean_p, m2_p, t, l, d, g, q, m, k2, ACC=acc, BLOCK_M=STATS_BLOCK_M)
    # Chan's parallel combination, in float64 (tiles x 2D values: negligible).
    counts = (m - torch.arange(tiles, device=z.device, dtype=torch.float64) * STATS_BLOCK_M).clamp(max=STATS_BLOCK_M)
    mean_p, m2_p = mean_p.double(), m2_p.double()
    mean = (counts[:, None] * mean_p).sum(0) / m
    m2 = m2_p.sum(0) + (counts[:, None] * (mean_p - mean) ** 2).sum(0)
    return mean.to(acc_torch), (m2 / m).to(acc_torch)


def correlation_forward(z, w1, b1, pw, pb, norm=None, relu_out=False):
    """y (N, C, G, G) = (relu)(W h + b2). norm = (mean, rstd, gamma, beta) of BN1 (training)
    or None (evaluation: w1, b1, pw, pb already hold the folded BatchNorms)."""
    b, t, l, d, g = _geometry(z)
    q, k2, c = g * g, 2 * d, pw.shape[0]
    m = b * (t - 1) * q
    acc, _, dot, prec = _acc_types(z)
    out = empty_output((b * (t - 1), c, g, g), z, channels_last=True)
    nargs = norm if norm is not None else (b1, b1, b1, b1)  # unused pointers when not NORM
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(c, meta["BLOCK_N"]))  # noqa: E731
    _corr_fwd_kernel[grid](z, w1, b1, *nargs, pw, pb, out, t, l, d, g, q, m, k2, c,
                           NORM=norm is not None, RELU_OUT=relu_out, ACC=acc, DOT=dot, PREC=prec,
                           FIX_BF16=INTERPRET)
    return out


def correlation_backward(gy, out, z, w1, b1, pw, norm=None):
    """Gradients of correlation_forward. gy: d loss / d y (training) or / d out (eval, with
    out given so the fused ReLU gates it). Returns dz, dw1 (2D, 9), db1, dW (C, 2D), db2 and,
    with norm, (dgamma1, dbeta1)."""
    b, t, l, d, g = _geometry(z)
    q, k2, c = g * g, 2 * d, pw.shape[0]
    m = b * (t - 1) * q
    acc, acc_torch, dot, prec = _acc_types(z)
    # Incoming gradients may be stride-0 expansions or NCHW: channels-last like the output.
    gy = gy.to(z.dtype).contiguous(memory_format=torch.channels_last)
    block_c = max(16, triton.next_power_of_2(c))
    gate = out is not None
    out_arg = out if gate else gy
    nargs = norm if norm is not None else (b1, b1, b1, b1)
    split = _split_count(z, k2, m)
    dw_part = empty_output((split, c, k2), z, dtype=acc_torch)
    bn_part = empty_output((split, 2, k2), z, dtype=acc_torch)
    db_part = empty_output((split, c), z, dtype=acc_torch)
    grid = lambda meta: (triton.cdiv(k2, meta["BLOCK_K"]), split)  # noqa: E731
    _corr_wgrad_kernel[grid](z, w1, b1, *nargs, pw, gy, out_arg, dw_part, bn_part, db_part,
                             t, l, d, g, q, m, k2, c, split, NORM=norm is not None, GATE=gate,
                             ACC=acc, DOT=dot, PREC=prec, BLOCK_C=block_c)
    d_pw = dw_part.sum(0)
    d_pb = db_part.sum(0)
    extra = ()
    if norm is not None:
        mean, rstd, gamma, beta = norm
        sums = bn_part.sum(0)
        a, mg, mgx = gamma.to(acc_torch) * rstd, sums[0] / m, sums[1] / m
        extra = (sums[1].clone(), sums[0].clone())  # dgamma1 = sum g * xhat, dbeta1 = sum g
    else:
        a = mg = mgx = b1
    du = empty_output((m, k2), z)
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(k2, meta["BLOCK_K"]))  # noqa: E731
    _corr_du_kernel[grid](z, w1, b1, *nargs, pw, gy, out_arg, a, mg, mgx, du, t, l, d, g, q, m, k2, c,
                          NORM=norm is not None, GATE=gate, ACC=acc, DOT=dot, PREC=prec,
                          FIX_BF16=INTERPRET, BLOCK_C=block_c)
    mf = b * t * q
    split = _dz_split(z, mf, d)
    dz = empty_output(z.shape, z)
    dz[:, :, 0].zero_()  # class tokens do not enter the correlation (zero_: no tensor from a Python 0)
    part = empty_output((split, 32, d), z, dtype=acc_torch)
    grid = lambda meta: (split, triton.cdiv(d, meta["BLOCK_D"]))  # noqa: E731
    _corr_dz_kernel[grid](z, du, w1, dz, part, t, l, d, g, q, mf, k2, ACC=acc, FIX_BF16=INTERPRET)
    part = part.sum(0)[:20].view(2, 10, d)
    d_w1 = part[:, :9].permute(0, 2, 1).reshape(k2, 9)
    d_b1 = part[:, 9].reshape(k2)
    return (dz, d_w1, d_b1, d_pw, d_pb, *extra)


def _channels_last_like(z: torch.Tensor, shape) -> torch.Tensor:
    """The fake (meta) output: (N, C, G, G) channels-last, as the kernels write it."""
    return torch.empty(shape, dtype=z.dtype, device=z.device, memory_format=torch.channels_last)


# ---------------------------------------------------------------------------------------
# Custom ops and autograd. Training: (z, w1, b1, gamma1, beta1, W, b2) -> (y, mean1, var1);
# evaluation: (z, folded w1, b1, W, b2) -> out.


@torch.library.custom_op("ila_fast::pair_correlation_train", mutates_args=())
def pair_correlation_train_op(z: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, gamma1: torch.Tensor,
                              beta1: torch.Tensor, pw: torch.Tensor, pb: torch.Tensor,
                              eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    z = z.contiguous()
    mean, var = _dw_batch_stats(z, w1.contiguous(), b1.contiguous())
    rstd = torch.rsqrt(var + eps)
    y = correlation_forward(z, w1.contiguous(), b1.contiguous(), pw.contiguous(), pb.contiguous(),
                            norm=(mean, rstd, gamma1.contiguous(), beta1.contiguous()))
    return y, mean, var


@pair_correlation_train_op.register_fake
def _(z, w1, b1, gamma1, beta1, pw, pb, eps):
    b, t, l, d = z.shape
    g = int(round((l - 1) ** 0.5))
    stat = torch.float64 if z.dtype == torch.float64 else torch.float32
    return (_channels_last_like(z, (b * (t - 1), pw.shape[0], g, g)), z.new_empty((2 * d,), dtype=stat),
            z.new_empty((2 * d,), dtype=stat))


@torch.library.custom_op("ila_fast::pair_correlation_train_backward", mutates_args=())
def pair_correlation_train_backward_op(
        gy: torch.Tensor, z: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, gamma1: torch.Tensor,
        beta1: torch.Tensor, pw: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
        eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                             torch.Tensor, torch.Tensor]:
    norm = (mean, torch.rsqrt(var + eps), gamma1.contiguous(), beta1.contiguous())
    dz, dw1, db1, dpw, dpb, dgamma, dbeta = correlation_backward(
        gy, None, z.contiguous(), w1.contiguous(), b1.contiguous(), pw.contiguous(), norm=norm)
    return (dz, dw1.to(w1.dtype), db1.to(b1.dtype), dgamma.to(gamma1.dtype), dbeta.to(beta1.dtype),
            dpw.to(pw.dtype), dpb.to(pw.dtype))


@pair_correlation_train_backward_op.register_fake
def _(gy, z, w1, b1, gamma1, beta1, pw, mean, var, eps):
    return (z.new_empty(z.shape), w1.new_empty(w1.shape), b1.new_empty(b1.shape), gamma1.new_empty(gamma1.shape),
            beta1.new_empty(beta1.shape), pw.new_empty(pw.shape), pw.new_empty((pw.shape[0],)))


def _train_setup_context(ctx, inputs, output):
    z, w1, b1, gamma1, beta1, pw, pb, eps = inputs
    _, mean, var = output
    ctx.save_for_backward(z, w1, b1, gamma1, beta1, pw, mean, var)
    ctx.eps = eps
    ctx.pb_dtype = pb.dtype
    ctx.mark_non_differentiable(mean, var)


def _train_backward(ctx, gy, _gmean, _gvar):
    z, w1, b1, gamma1, beta1, pw, mean, var = ctx.saved_tensors
    dz, dw1, db1, dgamma, dbeta, dpw, dpb = pair_correlation_train_backward_op(
        gy, z, w1, b1, gamma1, beta1, pw, mean, var, ctx.eps)
    return dz, dw1, db1, dgamma, dbeta, dpw, dpb.to(ctx.pb_dtype), None


pair_correlation_train_op.register_autograd(_train_backward, setup_context=_train_setup_context)


@torch.library.custom_op("ila_fast::pair_correlation_eval", mutates_args=())
def pair_correlation_eval_op(z: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, pw: torch.Tensor,
                             pb: torch.Tensor) -> torch.Tensor:
    return correlation_forward(z.contiguous(), w1.contiguous(), b1.contiguous(), pw.contiguous(),
                               pb.contiguous(), norm=None, relu_out=True)


@pair_correlation_eval_op.register_fake
def _(z, w1, b1, pw, pb):
    b, t, l, d = z.shape
    g = int(round((l - 1) ** 0.5))
    return _channels_last_like(z, (b * (t - 1), pw.shape[0], g, g))


@torch.library.custom_op("ila_fast::pair_correlation_eval_backward", mutates_args=())
def pair_correlation_eval_backward_op(
        gout: torch.Tensor, out: torch.Tensor, z: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
        pw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    dz, dw1, db1, dpw, dpb = correlation_backward(gout, out.contiguous(memory_format=torch.channels_last),
                                                  z.contiguous(), w1.contiguous(),
                                                  b1.contiguous(), pw.contiguous(), norm=None)
    return dz, dw1.to(w1.dtype), db1.to(b1.dtype), dpw.to(pw.dtype), dpb.to(pw.dtype)


@pair_correlation_eval_backward_op.register_fake
def _(gout, out, z, w1, b1, pw):
    return (z.new_empty(z.shape), w1.new_empty(w1.shape), b1.new_empty(b1.shape), pw.new_empty(pw.shape),
            pw.new_empty((pw.shape[0],)))


def _eval_setup_context(ctx, inputs, output):
    z, w1, b1, pw, pb = inputs
    ctx.save_for_backward(output, z, w1, b1, pw)
    ctx.pb_dtype = pb.dtype


def _eval_backward(ctx, gout):
    out, z, w1, b1, pw = ctx.saved_tensors
    dz, dw1, db1, dpw, dpb = pair_correlation_eval_backward_op(gout, out, z, w1, b1, pw)
    return dz, dw1, db1, dpw, dpb.to(ctx.pb_dtype)


pair_correlation_eval_op.register_autograd(_eval_backward, setup_context=_eval_setup_context)


# ---------------------------------------------------------------------------------------
# Public functions (signatures of reference.py)


def _fold(weight, bias, bn_weight, bn_bias, bn_mean, bn_var, eps, dtype):
    """BatchNorm (running statistics) folded into the preceding conv: (W * s, (b - mean) s + beta)."""
    scale = bn_weight.to(dtype) * torch.rsqrt(bn_var.to(dtype) + eps)
    w = weight.to(dtype) * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    return w, (bias.to(dtype) - bn_mean.to(dtype)) * scale + bn_bias.to(dtype)


def _update_running(running_mean, running_var, mean, var, count, momentum):
    """As nn.BatchNorm2d: running = (1 - momentum) running + momentum batch (unbiased variance)."""
    if running_mean is None or momentum is None:
        return
    with torch.no_grad():
        running_mean.mul_(1.0 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
        unbiased = var * (count / max(count - 1, 1))
        running_var.mul_(1.0 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)


def pair_correlation(z: torch.Tensor,
                     dw_weight: torch.Tensor, dw_bias: torch.Tensor,
                     dw_bn_weight: torch.Tensor, dw_bn_bias: torch.Tensor,
                     dw_bn_mean: torch.Tensor, dw_bn_var: torch.Tensor,
                     pw_weight: torch.Tensor, pw_bias: torch.Tensor,
                     pw_bn_weight: torch.Tensor, pw_bn_bias: torch.Tensor,
                     pw_bn_mean: torch.Tensor, pw_bn_var: torch.Tensor,
                     training: bool, momentum: float, eps: float) -> torch.Tensor:
    """Fused ``reference.pair_correlation``: (B*(T-1), C, G, G) from z (B, T, L, D)."""
    b, t, l, d, g = _geometry(z)
    if use_reference(z, "pair_correlation"):
        return reference.pair_correlation(z, dw_weight, dw_bias, dw_bn_weight, dw_bn_bias, dw_bn_mean, dw_bn_var,
                                          pw_weight, pw_bias, pw_bn_weight, pw_bn_bias, pw_bn_mean, pw_bn_var,
                                          training, momentum, eps)
    z = _autocast_input(z)
    k2, c = 2 * d, pw_weight.shape[0]
    stat = torch.float64 if z.dtype == torch.float64 else torch.float32
    w1 = dw_weight.reshape(k2, 9)
    pw = pw_weight.reshape(c, k2)
    if training:
        y, mean, var = pair_correlation_train_op(z, w1, dw_bias, dw_bn_weight, dw_bn_bias, pw, pw_bias, float(eps))
        _update_running(dw_bn_mean, dw_bn_var, mean, var, b * (t - 1) * g * g, momentum)
        # BN2 on the C-channel output exactly as the reference does it (fp32 compute, running
        # statistics updated in place).
        return F.relu(reference.batch_norm(y, pw_bn_mean, pw_bn_var, pw_bn_weight, pw_bn_bias, True, momentum, eps))
    w1f, b1f = _fold(w1, dw_bias, dw_bn_weight, dw_bn_bias, dw_bn_mean, dw_bn_var, eps, stat)
    pwf, pbf = _fold(pw, pw_bias, pw_bn_weight, pw_bn_bias, pw_bn_mean, pw_bn_var, eps, stat)
    return pair_correlation_eval_op(z, w1f, b1f, pwf, pbf)
