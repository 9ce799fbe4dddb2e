"""Fused SSv2 inter-frame correlation front (``reference.pair_correlation_dense``) without the
pair tensor.

For pair n = (b, t) the input is the 2D-channel map cat(Z[b, t], Z[b, t+1]); as in
``correlation.py`` (the Kinetics front) no kernel builds it: every kernel reads frames t and
t+1 of Z (B, T, L, D) in place, channel c < D from frame t and c >= D from frame t+1.

The dense 3x3 conv 2D -> C is an implicit GEMM over frames t and t+1 (K = 9 x 2D), with its
transposed GEMM for dZ and a split-K weight-gradient kernel, each one software-pipelined
loop over (tap, channel block); BatchNorm + ReLU on its C-channel output stay in PyTorch.
The output is channels-last in memory, as in ``correlation.py``.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from . import alignment  # noqa: F401 - sets the interpreter fallback before triton loads

import triton  # noqa: E402
import triton.language as tl

from . import reference
from ._common import _acc_types, _autocast_input, _frame_pixels, _geometry, _pair_pixels, _pair_source
from .alignment import INTERPRET, autotune, autotune_configs, empty_output, store_cast, use_reference


# Tuned (H100 / H200) and interpreter sets. Pipelined GEMMs: shared memory is about
# stages x (A tile + B tile) x element size, so the larger tiles are tagged for 2-byte
# inputs only (ConfigList.prune); the defaults fit fp32 too. tests/test_kernels_compile.py
# compiles every config for sm_90 against the limit.
_B16, _B32 = (2,), (4,)
_DENSE_FWD_CONFIGS = autotune_configs(
    gpu=[({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, w, s, *sizes)
         for bm, bn, bk, w, s, *sizes in ((128, 128, 32, 8, 3), (128, 128, 64, 8, 3, _B16),
                                          (128, 256, 64, 8, 3, _B16), (64, 256, 64, 8, 3, _B16),
                                          (128, 256, 32, 8, 3, _B32), (128, 128, 64, 8, 2, _B32))],
    interp=[({"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": 32}, 4, 1)], default=0)
_DENSE_DX_CONFIGS = autotune_configs(
    gpu=[({"BLOCK_M": bm, "BLOCK_D": bd, "BLOCK_O": bo}, w, s, *sizes)
         for bm, bd, bo, w, s, *sizes in ((128, 128, 32, 8, 3), (128, 64, 32, 8, 3), (64, 128, 32, 8, 3),
                                          (128, 64, 64, 8, 3, _B16), (128, 128, 64, 8, 3, _B16))],
    interp=[({"BLOCK_M": 64, "BLOCK_D": 32, "BLOCK_O": 32}, 4, 1)], default=0)
_DENSE_DW_CONFIGS = autotune_configs(
    gpu=[({"BLOCK_M": bm, "BLOCK_K": bk}, w, s, *sizes)
         for bm, bk, w, s, *sizes in ((32, 64, 8, 3), (64, 64, 8, 3, _B16), (64, 32, 8, 2, _B32))],
    interp=[({"BLOCK_M": 64, "BLOCK_K": 32}, 4, 1)], default=0)


# ---------------------------------------------------------------------------------------
# Kernels


@triton.jit
def _pair_tap_rows(m, mmask, tap, T, L, D, G, Q):
    """Row offsets (token index * D, frame t) of pair pixel m shifted by a 3x3 tap, and validity."""
    frame, i, j = _pair_pixels(m, T, G, Q)
    ii = i + (tap // 3 - 1)
    jj = j + (tap % 3 - 1)
    valid = mmask & (ii >= 0) & (ii < G) & (jj >= 0) & (jj < G)
    return (frame.to(tl.int64) * L + 1 + ii * G + jj) * D, valid


@autotune(_DENSE_FWD_CONFIGS, key=["K2", "C", "Q"])
@triton.jit
def _dense_fwd_kernel(z_ptr, w_ptr, bias_ptr, y_ptr, T, L, D, G, Q, M, K2, C,
                      ACC: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr, FIX_BF16: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Implicit GEMM: y[n, o, q] = b[o] + sum_{tap, c} W[tap, c, o] x[n, c, q + tap], with
    channel c < D read from frame t and c >= D from frame t+1 (no pair tensor)."""
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    mmask = m < M
    o = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    omask = o < C
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    # One pipelined loop over (tap, channel block): K = 9 x 2D in a single software pipeline.
    nk = tl.cdiv(K2, BLOCK_K)
    for it in range(9 * nk):
        tap = it // nk
        rows, valid = _pair_tap_rows(m, mmask, tap, T, L, D, G, Q)
        c = (it % nk) * BLOCK_K + tl.arange(0, BLOCK_K)
        cmask = c < K2
        half = (c >= D).to(tl.int64)
        col = half * L * D + (c - half * D)
        x = tl.load(z_ptr + rows[:, None] + col[None, :], mask=valid[:, None] & cmask[None, :], other=0.0)
        w = tl.load(w_ptr + (tap * K2 + c[:, None]).to(tl.int64) * C + o[None, :],
                    mask=cmask[:, None] & omask[None, :], other=0.0)
        acc += tl.dot(x.to(DOT), w.to(DOT), input_precision=PREC, out_dtype=ACC)
    y = acc + tl.load(bias_ptr + o, mask=omask, other=0.0).to(ACC)[None, :]
    offs = m.to(tl.int64)[:, None] * C + o[None, :]  # channels-last output: 16-byte stores along o
    tl.store(y_ptr + offs, store_cast(y, y_ptr.dtype.element_ty, FIX_BF16), mask=mmask[:, None] & omask[None, :])


@autotune(_DENSE_DX_CONFIGS, key=["D", "C", "Q"])
@triton.jit
def _dense_dx_kernel(gy_ptr, w_ptr, dz_ptr, T, L, D, G, Q, MF, K2, C,
                     ACC: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr, FIX_BF16: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_O: tl.constexpr):
    """dZ[f, p, d] = sum over the two pairs holding frame f, taps and o of
    dy[pair, o, p - tap] W[tap, half * D + d, o] (the transposed implicit GEMM)."""
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    mmask = m < MF
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < D
    f, q, b, t, i, j = _frame_pixels(m, T, G, Q)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=ACC)
    # One pipelined loop over (half, tap, output-channel block).
    no = tl.cdiv(C, BLOCK_O)
    for it in range(18 * no):
        half = it // (9 * no)
        tap = (it // no) % 9
        o = (it % no) * BLOCK_O + tl.arange(0, BLOCK_O)
        omask = o < C
        n, si, sj, inside = _pair_source(b, t, i, j, half, tap, T, G)
        c = half * D + d
        valid = mmask & inside
        rows = (n * Q + si * G + sj) * C  # dy channels-last: contiguous along o
        dy = tl.load(gy_ptr + rows[:, None] + o[None, :], mask=valid[:, None] & omask[None, :], other=0.0)
        w = tl.load(w_ptr + (tap * K2 + c[None, :]).to(tl.int64) * C + o[:, None],
                    mask=omask[:, None] & dmask[None, :], other=0.0)
        acc += tl.dot(dy.to(DOT), w.to(DOT), input_precision=PREC, out_dtype=ACC)
    offs = ((f * L + 1 + q) * D)[:, None] + d[None, :]
    tl.store(dz_ptr + offs, store_cast(acc, dz_ptr.dtype.element_ty, FIX_BF16), mask=mmask[:, None] & dmask[None, :])


@autotune(_DENSE_DW_CONFIGS, key=["K2", "C", "Q"])
@triton.jit
def _dense_dw_kernel(z_ptr, gy_ptr, part_ptr, T, L, D, G, Q, M, K2, C, SPLIT,
                     ACC: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr, BLOCK_C: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """Split-K over pixels: dW[tap, c, o] partial = sum_m x[m + tap, c] dy[m, o]."""
    c = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    cmask = c < K2
    tap = tl.program_id(1)
    s = tl.program_id(2)
    o = tl.arange(0, BLOCK_C)
    omask = o < C
    half = (c >= D).to(tl.int64)
    col = half * L * D + (c - half * D)
    acc = tl.zeros((BLOCK_K, BLOCK_C), dtype=ACC)
    for mt in range(s, tl.cdiv(M, BLOCK_M), SPLIT):
        m = mt * BLOCK_M + tl.arange(0, BLOCK_M)
        mmask = m < M
        rows, valid = _pair_tap_rows(m, mmask, tap, T, L, D, G, Q)
        x = tl.load(z_ptr + rows[:, None] + col[None, :], mask=valid[:, None] & cmask[None, :], other=0.0)
        dy = tl.load(gy_ptr + m.to(tl.int64)[:, None] * C + o[None, :],  # channels-last dy
                     mask=mmask[:, None] & omask[None, :], other=0.0)
        acc += tl.dot(tl.trans(x.to(DOT)), dy.to(DOT), input_precision=PREC, out_dtype=ACC)
    base = part_ptr + ((s * 9 + tap) * K2).to(tl.int64) * C
    tl.store(base + c[:, None].to(tl.int64) * C + o[None, :], acc, mask=cmask[:, None] & omask[None, :])


# ---------------------------------------------------------------------------------------
# Launchers


def dense_forward(z, w_t, bias):
    """y (N, C, G, G) = dense 3x3 conv of the pair maps; w_t (9, 2D, C), bias (C,)."""
    b, t, l, d, g = _geometry(z)
    q, k2, c = g * g, 2 * d, w_t.shape[2]
    m = b * (t - 1) * q
    acc, _, dot, prec = _acc_types(z)
    y = empty_output((b * (t - 1), c, g, g), z, channels_last=True)
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(c, meta["BLOCK_N"]))  # noqa: E731
    _dense_fwd_kernel[grid](z, w_t, bias, y, t, l, d, g, q, m, k2, c, ACC=acc, DOT=dot, PREC=prec,
                            FIX_BF16=INTERPRET)
    return y


def dense_backward(gy, z, w_t):
    """(dz, dw_t (9, 2D, C), db) of dense_forward."""
    b, t, l, d, g = _geometry(z)
    q, k2, c = g * g, 2 * d, w_t.shape[2]
    m, mf = b * (t - 1) * q, b * t * q
    acc, acc_torch, dot, prec = _acc_types(z)
    gy = gy.to(z.dtype).contiguous(memory_format=torch.channels_last)
    dz = empty_output(z.shape, z)
    dz[:, :, 0].zero_()  # class tokens: no gradient (zero_: no tensor from a Python 0)
    grid = lambda meta: (triton.cdiv(mf, meta["BLOCK_M"]), triton.cdiv(d, meta["BLOCK_D"]))  # noqa: E731
    _dense_dx_kernel[grid](gy, w_t, dz, t, l, d, g, q, mf, k2, c, ACC=acc, DOT=dot, PREC=prec, FIX_BF16=INTERPRET)
    if INTERPRET or z.device.type != "cuda":
        split = 2
    else:
        sms = torch.cuda.get_device_properties(z.device).multi_processor_count
        split = max(1, min(16, triton.cdiv(2 * sms, 9 * triton.cdiv(k2, 64)), triton.cdiv(m, 128)))
    part = empty_output((split, 9, k2, c), z, dtype=acc_torch)
    grid = lambda meta: (triton.cdiv(k2, meta["BLOCK_K"]), 9, split)  # noqa: E731
    _dense_dw_kernel[grid](z, gy, part, t, l, d, g, q, m, k2, c, split, ACC=acc, DOT=dot, PREC=prec,
                           BLOCK_C=max(16, triton.next_power_of_2(c)))
    return dz, part.sum(0), gy.sum((0, 2, 3), dtype=acc_torch)


# ---------------------------------------------------------------------------------------
# Custom op, autograd and the public function (signature of reference.py)


@torch.library.custom_op("ila_fast::pair_conv3x3", mutates_args=())
def pair_conv3x3_op(z: torch.Tensor, w_t: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return dense_forward(z.contiguous(), w_t.contiguous(), bias.contiguous())


@pair_conv3x3_op.register_fake
def _(z, w_t, bias):
    b, t, l, d = z.shape
    g = int(round((l - 1) ** 0.5))
    return torch.empty((b * (t - 1), w_t.shape[2], g, g), dtype=z.dtype, device=z.device,
                       memory_format=torch.channels_last)


@torch.library.custom_op("ila_fast::pair_conv3x3_backward", mutates_args=())
def pair_conv3x3_backward_op(gy: torch.Tensor, z: torch.Tensor,
                             w_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dz, dw, db = dense_backward(gy, z.contiguous(), w_t.contiguous())
    return dz, dw.to(w_t.dtype), db.to(w_t.dtype)


@pair_conv3x3_backward_op.register_fake
def _(gy, z, w_t):
    return z.new_empty(z.shape), w_t.new_empty(w_t.shape), w_t.new_empty((w_t.shape[2],))


def _dense_setup_context(ctx, inputs, output):
    z, w_t, bias = inputs
    ctx.save_for_backward(z, w_t)
    ctx.bias_dtype = bias.dtype


def _dense_backward(ctx, gy):
    z, w_t = ctx.saved_tensors
    dz, dw, db = pair_conv3x3_backward_op(gy, z, w_t)
    return dz, dw, db.to(ctx.bias_dtype)


pair_conv3x3_op.register_autograd(_dense_backward, setup_context=_dense_setup_context)

# "triton": the implicit GEMM above; "cudnn": the reference (pair tensor + cuDNN). To be
# decided by measurement on the GPU (bench: ila-fast bench kernels --ops dense_train).
DENSE_IMPL = os.environ.get("ILA_FAST_DENSE", "triton")


def pair_correlation_dense(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                           bn_weight: torch.Tensor, bn_bias: torch.Tensor,
                           bn_mean: torch.Tensor, bn_var: torch.Tensor,
                           training: bool, momentum: float, eps: float) -> torch.Tensor:
    """SSv2 front: dense 3x3 conv 2D -> C (implicit GEMM over frames t and t+1, no pair
    tensor, one fp32 accumulation over all 9 x 2D inputs like cuDNN's) + BN + ReLU (PyTorch,
    on the C-channel output: BatchNorm and its running statistics exactly as the reference).

    Saved for backward: Z and the weights (instead of the 2D-channel pair tensor), plus
    BatchNorm's input and ReLU's output (C channels, as in the reference).

    Why not split the conv by linearity into one cuDNN conv over all frames with the two
    weight halves stacked on the output channels (no pair tensor, T/(T-1) of the FLOPs):
    it rounds the two halves separately in bf16 before adding them, so values near the
    ReLU threshold flip far more often than in the reference (measured: ~10x the
    reference's gradient error in bf16). ``ILA_FAST_DENSE=cudnn`` selects the reference
    path (pair tensor + cuDNN), the choice to make if the GPU shows cuDNN faster.
    """
    if DENSE_IMPL == "cudnn" or use_reference(z, "pair_correlation_dense"):
        return reference.pair_correlation_dense(z, weight, bias, bn_weight, bn_bias, bn_mean, bn_var,
                                                training, momentum, eps)
    w_t = weight.permute(2, 3, 1, 0).reshape(9, weight.shape[1], weight.shape[0])  # (9, 2D, C)
    y = pair_conv3x3_op(_autocast_input(z), w_t, bias)
    return F.relu(reference.batch_norm(y, bn_mean, bn_var, bn_weight, bn_bias, training, momentum, eps))
