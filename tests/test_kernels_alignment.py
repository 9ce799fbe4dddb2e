"""Fused alignment op vs the PyTorch reference, both judged against float64.

Every case quantises its inputs to the test dtype first; the float64 reference runs on
those same (upcast) values, so the comparison measures each op's own rounding: the
kernel may err at most ~2x as much as the reference op in the same dtype, plus a floor
of a few ulps of the largest value. Outputs are NaN-filled before the kernels write.
"""
import os

# On a GPU: one kernel config per kernel (no autotuning sweep) keeps the many small test
# shapes fast; set ILA_FAST_AUTOTUNE=1 to test the tuned configs.
os.environ.setdefault("ILA_FAST_AUTOTUNE", "0")

import pytest
import torch

from ila_fast.kernels import reference
from ila_fast.kernels.alignment import align_frames

# The compiled kernels on a GPU when there is one, else the interpreter on the CPU.
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
EPS = {torch.float32: 1.2e-7, torch.bfloat16: 7.8e-3, torch.float16: 9.8e-4}


@pytest.fixture(autouse=True)
def _nan_fill(monkeypatch):
    monkeypatch.setenv("ILA_FAST_NAN_FILL", "1")


def _run(fn, z, points, delta, training, grads):
    z = z.detach().to(DEVICE).requires_grad_()
    points = points.detach().to(DEVICE).requires_grad_()
    if isinstance(delta, torch.Tensor):
        delta = delta.to(DEVICE)
    aligned, pooled = fn(z, points, delta, training)
    torch.autograd.backward([aligned, pooled], [g.to(DEVICE, aligned.dtype) for g in grads])
    return {"aligned": aligned, "pooled": pooled, "dz": z.grad, "dp": points.grad}


def _compare(b, t, g, d, dtype, training, seed=0, points=None):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(b, t, g * g + 1, d, generator=gen).to(dtype)
    if points is None:
        points = (torch.rand(b, t - 1, 4, generator=gen) * 1.6 - 0.8)
    delta = torch.tensor(0.2)
    grads = [torch.randn(b, t, g * g + 1, d, generator=gen).to(dtype),
             torch.randn(b, t - 1, 2, d, generator=gen).to(dtype)]
    exact = _run(reference.align_frames, z.double(), points.double(), delta.double(), training,
                 [x.double() for x in grads])
    ref = _run(reference.align_frames, z, points, delta, training, grads)
    ker = _run(align_frames, z, points, delta, training, grads)
    for name, want in exact.items():
        got, base = ker[name], ref[name]
        assert got.dtype == base.dtype and got.shape == want.shape, name
        assert torch.isfinite(got).all(), f"{name}: non-finite values (an unwritten element?)"
        err_kernel = (got.double() - want).abs().max().item()
        err_ref = (base.double() - want).abs().max().item()
        floor = 4 * EPS[dtype] * want.abs().max().item() + 1e-6
        assert err_kernel <= 2 * err_ref + floor, (
            f"{name}: kernel error {err_kernel:.3g} > 2 x reference error {err_ref:.3g} + {floor:.3g}")


# Every axis value appears; D = 40 and 72 are not multiples of the block (64).
CASES = [
    (1, 2, 7, 40, torch.float32, True),
    (3, 3, 5, 16, torch.float32, False),
    (3, 8, 14, 40, torch.float32, False),
    (3, 8, 5, 72, torch.float32, True),
    (3, 8, 7, 72, torch.bfloat16, True),
    (3, 2, 14, 16, torch.bfloat16, False),
    (1, 3, 5, 40, torch.bfloat16, True),
    (1, 8, 7, 16, torch.bfloat16, False),
    (1, 8, 14, 40, torch.float16, False),
    (1, 3, 5, 72, torch.float16, True),
    (3, 3, 7, 40, torch.float16, True),
    (1, 2, 5, 16, torch.float16, False),
]
# On a GPU also the real ViT-B/16 shapes (8 frames, G = 14, D = 768; 8 clips keep the float64
# reference small): the GPU suite's first stage runs these at the default configs.
REAL_CASES = [(8, 8, 14, 768, torch.bfloat16, True), (8, 8, 14, 768, torch.float16, False)]
if DEVICE.type == "cuda":
    CASES += REAL_CASES


@pytest.mark.parametrize("b,t,g,d,dtype,training", CASES)
def test_align_frames_matches_reference(b, t, g, d, dtype, training):
    _compare(b, t, g, d, dtype, training)


def _breakpoint_points(g_size, delta, training):
    """Points (1, 1, 4) in float32 that put grid distances exactly on |d| = 0.25 and exactly
    where the ramp 1 - 1.5 (|d| - 0.25) evaluates to 0 (found by search in float32, the
    precision the masks are computed in)."""
    grid = reference.grid_coordinates(g_size)
    # Ramp zero: from grid point +1, the point at distance ~11/12 where float32 gives exactly 0.
    start = torch.tensor(1.0 - 11.0 / 12.0)
    candidates = [start]
    for direction in (1.0, -1.0):
        p = start
        for _ in range(64):
            p = torch.nextafter(p, torch.tensor(direction))
            candidates.append(p)
    shift = delta if training else torch.tensor(0.0)
    zero_ramp = None
    for p in candidates:
        # In training the +delta offset lands on the breakpoint: choose p so that p + delta == p_bp.
        base = p - shift
        d = grid[-1] - (base + shift)
        if (1.0 - 1.5 * (d.abs() - 0.25)) == 0.0:
            zero_ramp = base
            break
    assert zero_ramp is not None, "no float32 point puts the ramp exactly at zero"
    flat = torch.tensor(0.25) - shift  # distance exactly 0.25 from the grid point 0 and 0.5
    return torch.stack([zero_ramp, flat, flat, zero_ramp]).view(1, 1, 4).float()


@pytest.mark.parametrize("training", [False, True])
def test_align_frames_point_gradient_at_breakpoints(training):
    """dP equals autograd of the reference formula exactly at the mask's kinks."""
    g_size, d = 5, 8
    delta = torch.tensor(0.25)  # exact in float32, so p + delta stays on the breakpoint
    points = _breakpoint_points(g_size, delta, training)
    grid = reference.grid_coordinates(g_size)
    # The distances really hit both kinks (otherwise the test would prove nothing).
    shifts = (-delta, 0.0, delta) if training else (0.0,)
    dists = torch.stack([grid - (points[0, 0, k] + s) for k in range(4) for s in shifts])
    assert (dists.abs() == 0.25).any()
    assert ((1.0 - 1.5 * (dists.abs() - 0.25)) == 0.0).any()
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(1, 2, g_size * g_size + 1, d, generator=gen)
    grads = [torch.randn(1, 2, g_size * g_size + 1, d, generator=gen), torch.randn(1, 1, 2, d, generator=gen)]
    ref = _run(reference.align_frames, z, points, delta, training, grads)
    ker = _run(align_frames, z, points, delta, training, grads)
    torch.testing.assert_close(ker["dp"], ref["dp"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ker["aligned"], ref["aligned"], rtol=1e-6, atol=1e-6)


def test_align_frames_gradcheck_float64():
    """Kernels in float64 against numerical derivatives (points away from the kinks)."""
    z = torch.randn(1, 3, 17, 6, dtype=torch.float64, device=DEVICE, requires_grad=True)
    points = torch.tensor([[[0.1, -0.3, 0.37, 0.2], [-0.45, 0.05, 0.3, -0.6]]], dtype=torch.float64,
                          device=DEVICE, requires_grad=True)
    for training in (False, True):
        assert torch.autograd.gradcheck(lambda a, p: align_frames(a, p, 0.2, training), (z, points),
                                        fast_mode=True, eps=1e-6, atol=1e-5)


def test_align_frames_stride0_grads_and_unused_output():
    """out.sum() sends expanded stride-0 gradients; an unused output sends none."""
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(2, 3, 26, 12, generator=gen).to(DEVICE)
    points = (torch.rand(2, 2, 4, generator=gen) - 0.5).to(DEVICE)
    results = []
    for fn in (reference.align_frames, align_frames):
        zz, pp = z.clone().requires_grad_(), points.clone().requires_grad_()
        aligned, pooled = fn(zz, pp, torch.tensor(0.2, device=DEVICE), True)
        (aligned.sum() * 0.5 + pooled.sum()).backward()
        zz2 = z.clone().requires_grad_()
        aligned, _ = fn(zz2, points, 0.2, False)
        aligned.sum().backward()
        results.append((zz.grad, pp.grad, zz2.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_align_frames_noncontiguous_input_and_float_delta():
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(2, 3, 12, 26, generator=gen).to(DEVICE).transpose(2, 3)  # (2, 3, 26, 12), not contiguous
    points = (torch.rand(2, 2, 4, generator=gen) - 0.5).to(DEVICE)
    want = reference.align_frames(z, points, torch.tensor(0.1, device=DEVICE), True)
    got = align_frames(z, points, 0.1, True)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_align_frames_rejects_bad_shapes():
    with pytest.raises(ValueError, match="G\\*G \\+ 1"):
        align_frames(torch.zeros(1, 2, 11, 4), torch.zeros(1, 1, 4), 0.2, False)
    with pytest.raises(ValueError, match="points"):
        align_frames(torch.zeros(1, 2, 10, 4)[:, :, :10], torch.zeros(1, 2, 4), 0.2, False)
