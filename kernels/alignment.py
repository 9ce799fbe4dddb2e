"""Fused ILA alignment: aligned frames and pooled pair tokens from Z and the points P.

One forward kernel reads Z (B, T, L, D) once and writes the aligned frames once, with
the pooled pair tokens reduced on the fly; the alignment masks are computed in
registers from P and never stored. One backward kernel reads Z and the incoming
gradient once, writes dZ once and reduces dP per token block.

Math (reference: ``reference.align_frames``). Per point coordinate p and grid
coordinate g the 1-D weight is w(g - p) (flat 1 within 0.25, ramp of slope 1.5 to 0).
The mask is M[i, j] = Wy[i] * Wx[j]. In training the mask is the mean over the 9
offsets {-1, 0, 1}^2 * delta; since the 9 offsets are the full product of the x and
y offsets, the mean factorises: Wx = mean_ox w(g - (px + ox delta)), likewise Wy.
The derivative follows torch autograd of the reference formula exactly: w' = 0 where
|d| <= 0.25 (``torch.where`` picks the constant), -1.5 sign(d) where the ramp input is
>= 0 (``clamp(min=0)`` passes the gradient at 0) and 0 beyond.
"""
from __future__ import annotations

import os
import warnings

import torch

# Without a GPU, Triton can only run kernels in its interpreter (slow; tests and smoke
# benchmarks). Choose it before triton is imported, unless the user chose.
if not torch.cuda.is_available() and "TRITON_INTERPRET" not in os.environ:
    os.environ["TRITON_INTERPRET"] = "1"

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from . import reference  # noqa: E402
from .reference import MASK_FLAT_RADIUS, MASK_RAMP_SLOPE  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def _refuse_broken_interpreter() -> None:
    """Triton 3.6's CPU interpreter fails on numpy >= 2.4 deep inside a launch ("only
    0-dimensional arrays can be converted to Python scalars"): say so in one line instead."""
    if not INTERPRET:
        return
    import numpy

    def version(text: str) -> tuple[int, ...]:
        return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())

    if version(triton.__version__) < (3, 7) and version(numpy.__version__) >= (2, 4):
        from ila_fast.errors import MissingDependency

        raise MissingDependency(
            f"Triton {triton.__version__}'s CPU interpreter (TRITON_INTERPRET=1) fails with numpy "
            f"{numpy.__version__}: pip install 'numpy<2.4', or triton==3.7.1")


_refuse_broken_interpreter()


def _triton_mode_mismatch() -> bool:
    """True when our kernels would be interpreted but triton itself was imported in compiled
    mode (something, e.g. open_clip, imported triton before us without TRITON_INTERPRET=1):
    triton's own library functions (tl.zeros, tl.sum, ...) are then compiled-mode objects
    that the interpreter cannot call, so every kernel would fail."""
    if not INTERPRET:
        return False
    from triton.runtime.interpreter import InterpretedFunction

    return not isinstance(tl.standard.zeros, InterpretedFunction)


# Without a GPU and with triton loaded in the wrong mode the fused ops run the reference
# ops instead (same signatures, same results up to rounding), with one warning.
USE_REFERENCE = _triton_mode_mismatch()
_warned: set[str] = set()


def use_reference(z: torch.Tensor, op: str) -> bool:
    """Whether the fused op ``op`` hands this call to the reference op (warned once per reason):
    triton in the wrong mode (see above), or float64 on a GPU (no tensor-core path and tiles
    sized for 2-4 byte elements; float64 is for tests, where the interpreter runs it)."""
    reason = None
    if USE_REFERENCE:
        reason = ("triton was imported before ila_fast.kernels without TRITON_INTERPRET=1 on a machine "
                  "without a GPU; the fused ops run the reference ops (import ila_fast first, or set "
                  "TRITON_INTERPRET=1)")
    elif z.dtype == torch.float64 and not INTERPRET:
        reason = "float64 inputs: the fused ops run the reference ops on the GPU"
    if reason and reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"ila_fast.kernels ({op}): {reason}", RuntimeWarning, stacklevel=3)
    return reason is not None


_GRIDS: dict = {}


def grid_coordinates(g: int, device, dtype) -> torch.Tensor:
    """The (G,) grid coordinates, made once per (G, device, dtype) and kept: no new tensor per
    call (a CUDA-graph capture must not allocate from Python values)."""
    key = (g, str(device), dtype)
    if key not in _GRIDS:
        _GRIDS[key] = reference.grid_coordinates(g, device, dtype)
    return _GRIDS[key]


def empty_output(shape, like: torch.Tensor, dtype=None, channels_last=False) -> torch.Tensor:
    """torch.empty, NaN-filled when ILA_FAST_NAN_FILL=1 so that unwritten elements fail tests."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty(shape, dtype=dtype or like.dtype, device=like.device, memory_format=layout)
    if os.environ.get("ILA_FAST_NAN_FILL") == "1" and out.is_floating_point():
        out.fill_(float("nan"))
    return out


def autotune_configs(gpu, interp, default=0):
    """triton.Configs: the H100 / H200 sweep, or one small config under the interpreter.

    gpu entries are (meta, num_warps, num_stages) or (meta, num_warps, num_stages, sizes):
    a config tagged with element sizes is tried only for inputs of those sizes in bytes
    (shared memory grows with the element size: a tile that fits in bf16 may not in fp32).
    ``ConfigList.prune`` (the autotuner's early_config_prune) applies the tags, and
    tests/test_kernels_compile.py compiles every config for sm_90 and checks it against the
    shared-memory limit for each size it is tagged with. gpu[default] must suit every dtype:
    ILA_FAST_AUTOTUNE=0 keeps only it (no tuning: fast first launches, e.g. for the tests
    on a GPU)."""
    if INTERPRET:
        chosen, index = interp, 0
    elif os.environ.get("ILA_FAST_AUTOTUNE", "1") == "0":
        chosen, index = gpu[default:default + 1], 0
    else:
        chosen, index = gpu, default
    configs = []
    for meta, warps, stages, *sizes in chosen:
        config = triton.Config(meta, num_warps=warps, num_stages=stages)
        config.element_sizes = tuple(sizes[0]) if sizes else (2, 4, 8)
        configs.append(config)
    return ConfigList(configs, default=index)


def autotune(configs: "ConfigList", key: list[str]):
    """triton.autotune over ``configs`` with their element-size pruning."""
    return triton.autotune(configs=configs, key=key, prune_configs_by={"early_config_prune": configs.prune})


class ConfigList(list):
    """triton.Configs that know their default (the one ILA_FAST_AUTOTUNE=0 keeps; the
    offline compile report marks it) and prune themselves by the input's element size."""

    def __init__(self, configs, default=0):
        super().__init__(configs)
        self.default = default

    def prune(self, configs, named_args, **kwargs):
        size = next(a.element_size() for a in named_args.values() if isinstance(a, torch.Tensor))
        return [c for c in configs if size in c.element_sizes] or [self[self.default]]


# H100 / H200: memory-bound, so the sweep is over tile shape and warps only; a few KB of
# shared memory in every dtype (the compile report shows it).
_FWD_CONFIGS = autotune_configs(
    gpu=[({"BLOCK_L": bl, "BLOCK_D": bd}, w, 2) for bl, bd, w in ((32, 128, 4), (16, 256, 4), (32, 256, 8),
                                                                   (16, 128, 4))],
    interp=[({"BLOCK_L": 64, "BLOCK_D": 64}, 4, 1)], default=0)
_BWD_CONFIGS = autotune_configs(
    gpu=[({"BLOCK_D": bd}, w, 2) for bd, w in ((64, 4), (128, 8), (64, 8), (256, 8))],
    interp=[({"BLOCK_D": 64}, 4, 1)], default=0)
# Token block of the backward kernel: fixed (not tuned) because it sets the number of dP partials.
BWD_BLOCK_L = 64 if INTERPRET else 32


@triton.jit
def store_cast(x, dtype: tl.constexpr, FIX_BF16: tl.constexpr):
    """Cast for a store. The interpreter truncates fp32 -> bf16 (a GPU rounds to nearest
    even), so there we round to nearest even on the fp32 bits first; the cast is then exact."""
    if FIX_BF16 and dtype == tl.bfloat16:
        bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.to(tl.float32, bitcast=True).to(dtype)
    else:
        return x.to(dtype)


@triton.jit
def _w(d, FLAT: tl.constexpr, SLOPE: tl.constexpr):
    """w(d) with the reference's operation order: where(|d| <= r, 1, max(1 - s (|d| - r), 0))."""
    a = tl.abs(d)
    ramp = tl.maximum(1.0 - SLOPE * (a - FLAT), 0.0)
    return tl.where(a <= FLAT, 1.0, ramp)


@triton.jit
def _dw_dp(d, FLAT: tl.constexpr, SLOPE: tl.constexpr):
    """d w(g - p) / dp, as autograd of the reference gives it (see module docstring)."""
    a = tl.abs(d)
    ramp_in = 1.0 - SLOPE * (a - FLAT)
    sign = tl.where(d > 0, 1.0, tl.where(d < 0, -1.0, 0.0))
    dw_dd = tl.where(ramp_in >= 0.0, -SLOPE * sign, 0.0)
    return tl.where(a <= FLAT, 0.0, -dw_dd)


@triton.jit
def _axis(g, p, delta, TRAIN: tl.constexpr, FLAT: tl.constexpr, SLOPE: tl.constexpr):
    """Per-axis weight (and its derivative wrt p) at grid coordinates g for point coordinate p."""
    if TRAIN:
        # p + ox * delta, for ox = 0, 1, -1, exactly as the reference forms it.
        d0 = g - p
        d1 = g - (p + delta)
        d2 = g - (p + (-delta))
        w = (_w(d0, FLAT, SLOPE) + _w(d1, FLAT, SLOPE) + _w(d2, FLAT, SLOPE)) / 3.0
        dw = (_dw_dp(d0, FLAT, SLOPE) + _dw_dp(d1, FLAT, SLOPE) + _dw_dp(d2, FLAT, SLOPE)) / 3.0
    else:
        d0 = g - p
        w = _w(d0, FLAT, SLOPE)
        dw = _dw_dp(d0, FLAT, SLOPE)
    return w, dw


@triton.jit
def _frame_masks(p_ptr, g_ptr, delta_ptr, delta_value, b, t, T, l, G, lmask, ACC: tl.constexpr,
                 DELTA_PTR: tl.constexpr, TRAIN: tl.constexpr, FLAT: tl.constexpr, SLOPE: tl.constexpr):
    """Masks of the tokens l of frame (b, t): pre-mask of pair t and cur-mask of pair t-1.

    Returns (m_pre, m_cur, and the four factors' weights and derivatives) with zeros where
    the pair does not exist or the token is the class token.
    """
    has_pre = t < T - 1
    has_cur = t > 0
    pre = p_ptr + (b * (T - 1) + t) * 4
    cur = p_ptr + (b * (T - 1) + t - 1) * 4
    px_pre = tl.load(pre + 0, mask=has_pre, other=0.0).to(ACC)
    py_pre = tl.load(pre + 1, mask=has_pre, other=0.0).to(ACC)
    px_cur = tl.load(cur + 2, mask=has_cur, other=0.0).to(ACC)
    py_cur = tl.load(cur + 3, mask=has_cur, other=0.0).to(ACC)
    if DELTA_PTR:
        delta = tl.load(delta_ptr).to(ACC)
    else:
        delta = delta_value  # an fp32 scalar argument (float64 callers pass a tensor)
    patch = (l >= 1) & lmask
    q = tl.maximum(l - 1, 0)
    gy = tl.load(g_ptr + q // G, mask=lmask, other=0.0)
    gx = tl.load(g_ptr + q % G, mask=lmask, other=0.0)
    wy_pre, dwy_pre = _axis(gy, py_pre, delta, TRAIN, FLAT, SLOPE)
    wx_pre, dwx_pre = _axis(gx, px_pre, delta, TRAIN, FLAT, SLOPE)
    wy_cur, dwy_cur = _axis(gy, py_cur, delta, TRAIN, FLAT, SLOPE)
    wx_cur, dwx_cur = _axis(gx, px_cur, delta, TRAIN, FLAT, SLOPE)
    keep_pre = patch & has_pre
    keep_cur = patch & has_cur
    m_pre = tl.where(keep_pre, wy_pre * wx_pre, 0.0)
    m_cur = tl.where(keep_cur, wy_cur * wx_cur, 0.0)
    return (m_pre, m_cur, keep_pre, keep_cur, patch,
            wy_pre, dwy_pre, wx_pre, dwx_pre, wy_cur, dwy_cur, wx_cur, dwx_cur)


@autotune(_FWD_CONFIGS, key=["L", "D", "TRAIN"])
@triton.jit
def _align_fwd_kernel(z_ptr, p_ptr, delta_ptr, delta_value, g_ptr, out_ptr, pooled_ptr, T, L, D, G,
                      ACC: tl.constexpr, DELTA_PTR: tl.constexpr, TRAIN: tl.constexpr, FLAT: tl.constexpr,
                      SLOPE: tl.constexpr,
                      FIX_BF16: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
    """One program: one frame (b, t) x BLOCK_D channels, looping over the L tokens."""
    f = tl.program_id(0).to(tl.int64)
    b = f // T
    t = f % T
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < D
    has_pre = t < T - 1
    has_cur = t > 0
    inv_count = tl.where(has_pre & has_cur, 0.5, 1.0)
    acc_pre = tl.zeros((BLOCK_D,), dtype=ACC)
    acc_cur = tl.zeros((BLOCK_D,), dtype=ACC)
    base = f * L * D
    for l0 in range(0, L, BLOCK_L):
        l = l0 + tl.arange(0, BLOCK_L)
        lmask = l < L
        m_pre, m_cur, _, _, patch, _, _, _, _, _, _, _, _ = _frame_masks(
            p_ptr, g_ptr, delta_ptr, delta_value, b, t, T, l, G, lmask, ACC, DELTA_PTR, TRAIN, FLAT, SLOPE)
        frame_mask = tl.where(patch, (m_pre + m_cur) * inv_count, 1.0)
        offs = base + l[:, None].to(tl.int64) * D + d[None, :]
        mask = lmask[:, None] & dmask[None, :]
        z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(ACC)
        tl.store(out_ptr + offs, store_cast(z * frame_mask[:, None], out_ptr.dtype.element_ty, FIX_BF16), mask=mask)
        acc_pre += tl.sum(z * m_pre[:, None], axis=0)
        acc_cur += tl.sum(z * m_cur[:, None], axis=0)
    # pooled (B, T-1, 2, D): [b, t, 0] from this frame as pre, [b, t-1, 1] as cur.
    pre_offs = ((b * (T - 1) + t) * 2 + 0) * D + d
    cur_offs = ((b * (T - 1) + t - 1) * 2 + 1) * D + d
    # Block-shaped conditions (Triton 3.9's interpreter refuses a block mask & a scalar).
    tt = tl.zeros_like(d) + t
    tl.store(pooled_ptr + pre_offs, store_cast(acc_pre, pooled_ptr.dtype.element_ty, FIX_BF16),
             mask=dmask & (tt < T - 1))
    tl.store(pooled_ptr + cur_offs, store_cast(acc_cur, pooled_ptr.dtype.element_ty, FIX_BF16),
             mask=dmask & (tt > 0))


@autotune(_BWD_CONFIGS, key=["L", "D", "TRAIN"])
@triton.jit
def _align_bwd_kernel(z_ptr, p_ptr, delta_ptr, delta_value, g_ptr, ga_ptr, gs_ptr, dz_ptr, dp_part_ptr,
                      T, L, D, G, NLB,
                      ACC: tl.constexpr, DELTA_PTR: tl.constexpr, TRAIN: tl.constexpr, FLAT: tl.constexpr,
                      SLOPE: tl.constexpr,
                      FIX_BF16: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
    """One program: one frame (b, t) x BLOCK_L tokens, looping over the D channels.

    dZ = dA * frame_mask + dS_pre[t] * M_pre[t] + dS_cur[t-1] * M_cur[t-1];
    dM_pre[t] = sum_d Z[t] (dA[t] / count_t + dS_pre[t]), dM_cur[t-1] likewise with dS_cur[t-1];
    the dP partials of this token block go to dp_part[f, lblock, 0:4] =
    (dx_pre[t], dy_pre[t], dx_cur[t-1], dy_cur[t-1]).
    """
    f = tl.program_id(0).to(tl.int64)
    lb = tl.program_id(1)
    b = f // T
    t = f % T
    l = lb * BLOCK_L + tl.arange(0, BLOCK_L)
    lmask = l < L
    has_pre = t < T - 1
    has_cur = t > 0
    inv_count = tl.where(has_pre & has_cur, 0.5, 1.0)
    (m_pre, m_cur, keep_pre, keep_cur, patch, wy_pre, dwy_pre, wx_pre, dwx_pre,
     wy_cur, dwy_cur, wx_cur, dwx_cur) = _frame_masks(
        p_ptr, g_ptr, delta_ptr, delta_value, b, t, T, l, G, lmask, ACC, DELTA_PTR, TRAIN, FLAT, SLOPE)
    frame_mask = tl.where(patch, (m_pre + m_cur) * inv_count, 1.0)
    dm_pre = tl.zeros((BLOCK_L,), dtype=ACC)
    dm_cur = tl.zeros((BLOCK_L,), dtype=ACC)
    base = f * L * D
    gs_pre = gs_ptr + ((b * (T - 1) + t) * 2 + 0) * D
    gs_cur = gs_ptr + ((b * (T - 1) + t - 1) * 2 + 1) * D
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        dmask = d < D
        offs = base + l[:, None].to(tl.int64) * D + d[None, :]
        mask = lmask[:, None] & dmask[None, :]
        z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(ACC)
        ga = tl.load(ga_ptr + offs, mask=mask, other=0.0).to(ACC)
        tt = tl.zeros_like(d) + t  # block-shaped: Triton 3.9's interpreter refuses block & scalar masks
        s_pre = tl.load(gs_pre + d, mask=dmask & (tt < T - 1), other=0.0).to(ACC)
        s_cur = tl.load(gs_cur + d, mask=dmask & (tt > 0), other=0.0).to(ACC)
        dz = ga * frame_mask[:, None] + m_pre[:, None] * s_pre[None, :] + m_cur[:, None] * s_cur[None, :]
        tl.store(dz_ptr + offs, store_cast(dz, dz_ptr.dtype.element_ty, FIX_BF16), mask=mask)
        common = ga * inv_count
        dm_pre += tl.sum(z * (common + s_pre[None, :]), axis=1)
        dm_cur += tl.sum(z * (common + s_cur[None, :]), axis=1)
    dm_pre = tl.where(keep_pre, dm_pre, 0.0)
    dm_cur = tl.where(keep_cur, dm_cur, 0.0)
    part = dp_part_ptr + (f * NLB + lb) * 4
    tl.store(part + 0, tl.sum(dm_pre * wy_pre * dwx_pre, axis=0))
    tl.store(part + 1, tl.sum(dm_pre * dwy_pre * wx_pre, axis=0))
    tl.store(part + 2, tl.sum(dm_cur * wy_cur * dwx_cur, axis=0))
    tl.store(part + 3, tl.sum(dm_cur * dwy_cur * wx_cur, axis=0))


# ---------------------------------------------------------------------------------------
# Launchers


def _check(z: torch.Tensor, points: torch.Tensor):
    if z.dim() != 4:
        raise ValueError(f"align_frames: z must be (B, T, L, D), got shape {tuple(z.shape)}")
    b, t, l, d = z.shape
    g = int(round((l - 1) ** 0.5))
    if g * g + 1 != l or t < 2:
        raise ValueError(f"align_frames: need L = G*G + 1 and T >= 2, got z of shape {tuple(z.shape)}")
    if tuple(points.shape) != (b, t - 1, 4):
        raise ValueError(f"align_frames: points must be {(b, t - 1, 4)}, got {tuple(points.shape)}")
    return b, t, l, d, g


def _acc(z):
    return tl.float64 if z.dtype == torch.float64 else tl.float32


def _prepare(z, points, delta):
    """Dense inputs, the grid, and delta as (pointer, value): a tensor delta (a model buffer)
    is read by the kernel on the device, a float one is a kernel argument (no tensor)."""
    acc_torch = torch.float64 if z.dtype == torch.float64 else torch.float32
    g = grid_coordinates(int(round((z.shape[2] - 1) ** 0.5)), z.device, acc_torch)
    delta_arg = g if delta is None else delta.reshape(()).to(acc_torch)  # g: an unused pointer
    return z.contiguous(), points.contiguous(), delta_arg, delta is not None, g


def align_frames_forward(z: torch.Tensor, points: torch.Tensor, delta: torch.Tensor | None,
                         delta_value: float, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward kernel. Returns aligned (B, T, L, D) and pooled (B, T-1, 2, D).
    delta: 0-d tensor, or None to use the float delta_value."""
    b, t, l, d, g_size = _check(z, points)
    z, points, delta, delta_ptr, g = _prepare(z, points, delta)
    out = empty_output(z.shape, z)
    pooled = empty_output((b, t - 1, 2, d), z)
    grid = lambda meta: (b * t, triton.cdiv(d, meta["BLOCK_D"]))  # noqa: E731
    _align_fwd_kernel[grid](z, points, delta, float(delta_value), g, out, pooled, t, l, d, g_size,
                            ACC=_acc(z), DELTA_PTR=delta_ptr, TRAIN=bool(training), FLAT=MASK_FLAT_RADIUS,
                            SLOPE=MASK_RAMP_SLOPE, FIX_BF16=INTERPRET, enable_fp_fusion=False)
    return out, pooled


def align_frames_backward(z: torch.Tensor, points: torch.Tensor, delta: torch.Tensor | None,
                          delta_value: float, grad_aligned: torch.Tensor, grad_pooled: torch.Tensor,
                          training: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the backward kernel. Returns dZ (B, T, L, D) and dP (B, T-1, 4)."""
    b, t, l, d, g_size = _check(z, points)
    z, points, delta, delta_ptr, g = _prepare(z, points, delta)
    # Incoming gradients may be expanded stride-0 views (from .sum()): make them dense.
    grad_aligned = grad_aligned.to(z.dtype).contiguous()
    grad_pooled = grad_pooled.to(z.dtype).contiguous()
    dz = empty_output(z.shape, z)
    nlb = triton.cdiv(l, BWD_BLOCK_L)
    acc_torch = torch.float64 if z.dtype == torch.float64 else torch.float32
    part = empty_output((b, t, nlb, 4), z, dtype=acc_torch)
    _align_bwd_kernel[(b * t, nlb)](z, points, delta, float(delta_value), g, grad_aligned, grad_pooled, dz,
                                    part, t, l, d, g_size, nlb, ACC=_acc(z), DELTA_PTR=delta_ptr,
                                    TRAIN=bool(training), FLAT=MASK_FLAT_RADIUS, SLOPE=MASK_RAMP_SLOPE,
                                    BLOCK_L=BWD_BLOCK_L, FIX_BF16=INTERPRET, enable_fp_fusion=False)
    part = part.sum(2)  # (B, T, 4)
    dp = torch.cat([part[:, :-1, 0:2], part[:, 1:, 2:4]], dim=2)
    return dz, dp.to(points.dtype)


# ---------------------------------------------------------------------------------------
# Custom ops and autograd


@torch.library.custom_op("ila_fast::align_frames", mutates_args=())
def align_frames_op(z: torch.Tensor, points: torch.Tensor, delta: torch.Tensor | None, delta_value: float,
                    training: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return align_frames_forward(z, points, delta, delta_value, training)


@align_frames_op.register_fake
def _(z, points, delta, delta_value, training):
    b, t, l, d = z.shape
    return z.new_empty(z.shape), z.new_empty((b, t - 1, 2, d))


@torch.library.custom_op("ila_fast::align_frames_backward", mutates_args=())
def align_frames_backward_op(z: torch.Tensor, points: torch.Tensor, delta: torch.Tensor | None,
                             delta_value: float, grad_aligned: torch.Tensor, grad_pooled: torch.Tensor,
                             training: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return align_frames_backward(z, points, delta, delta_value, grad_aligned, grad_pooled, training)


@align_frames_backward_op.register_fake
def _(z, points, delta, delta_value, grad_aligned, grad_pooled, training):
    return z.new_empty(z.shape), points.new_empty(points.shape)


def _setup_context(ctx, inputs, output):
    z, points, delta, delta_value, training = inputs
    ctx.save_for_backward(z, points, delta)
    ctx.delta_value = delta_value
    ctx.training = training


def _backward(ctx, grad_aligned, grad_pooled):
    z, points, delta = ctx.saved_tensors
    b, t, l, d = z.shape
    if grad_aligned is None:
        grad_aligned = torch.zeros_like(z)
    if grad_pooled is None:
        grad_pooled = z.new_zeros((b, t - 1, 2, d))
    dz, dp = align_frames_backward_op(z, points, delta, ctx.delta_value, grad_aligned, grad_pooled,
                                      ctx.training)
    return dz, dp, None, None, None


align_frames_op.register_autograd(_backward, setup_context=_setup_context)


def align_frames(z: torch.Tensor, points: torch.Tensor, delta: torch.Tensor | float,
                 training: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused ``reference.align_frames``: aligned (B, T, L, D) and pooled (B, T-1, 2, D).

    z: (B, T, L, D) fp32 / bf16 / fp16 (fp64: interpreter only; on a GPU the reference op
    runs, with a warning); points: (B, T-1, 4); delta: 0-d tensor (a model buffer, read on
    the device) or a float (a kernel argument: no tensor is made per call). Gradients flow
    to z and points.
    """
    if use_reference(z, "align_frames"):
        return reference.align_frames(z, points, delta, training)
    if isinstance(delta, torch.Tensor):
        return align_frames_op(z, points, delta, 0.0, bool(training))
    if z.dtype == torch.float64:  # a float kernel argument is fp32: keep float64's delta exact
        return align_frames_op(z, points, torch.tensor(float(delta), dtype=z.dtype, device=z.device), 0.0,
                               bool(training))
    return align_frames_op(z, points, None, float(delta), bool(training))
