"""Fused inter-frame correlation vs the PyTorch reference, both judged against float64.

As in test_kernels_alignment: inputs are quantised to the test dtype first and the
float64 reference runs on the same values; the kernel may err at most ~2x as much as
the reference op in that dtype, plus a floor of a few ulps of the largest value. Every
gradient (dZ, conv weights and biases, BatchNorm affine) and, in training, the updated
running statistics are compared. Outputs are NaN-filled before the kernels write.
"""
import os

# On a GPU: one kernel config per kernel (no autotuning sweep) keeps the many small test
# shapes fast; set ILA_FAST_AUTOTUNE=1 to test the tuned configs.
os.environ.setdefault("ILA_FAST_AUTOTUNE", "0")

import pytest
import torch

from ila_fast.kernels import reference
from ila_fast.kernels.correlation import pair_correlation
from ila_fast.kernels.dense_correlation import pair_correlation_dense

# The compiled kernels on a GPU when there is one, else the interpreter on the CPU.
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
EPS = {torch.float32: 1.2e-7, torch.bfloat16: 7.8e-3, torch.float16: 9.8e-4}
MOMENTUM, BN_EPS = 0.1, 1e-5
BIAS_WEIGHT = {"dw_bias": "dw_weight", "pw_bias": "pw_weight", "bias": "weight"}


@pytest.fixture(autouse=True)
def _nan_fill(monkeypatch):
    monkeypatch.setenv("ILA_FAST_NAN_FILL", "1")


def _params(d, c, gen, dense=False):
    if dense:
        return dict(weight=torch.randn(c, 2 * d, 3, 3, generator=gen) / (18 * d) ** 0.5,
                    bias=0.1 * torch.randn(c, generator=gen), **_bn("", c, gen))
    return dict(dw_weight=0.3 * torch.randn(2 * d, 1, 3, 3, generator=gen),
                dw_bias=0.1 * torch.randn(2 * d, generator=gen), **_bn("dw_", 2 * d, gen),
                pw_weight=torch.randn(c, 2 * d, 1, 1, generator=gen) / (2 * d) ** 0.5,
                pw_bias=0.1 * torch.randn(c, generator=gen), **_bn("pw_", c, gen))


def _bn(prefix, n, gen):
    return {f"{prefix}bn_weight": 1 + 0.2 * torch.randn(n, generator=gen),
            f"{prefix}bn_bias": 0.1 * torch.randn(n, generator=gen),
            f"{prefix}bn_mean": 0.1 * torch.randn(n, generator=gen),
            f"{prefix}bn_var": 1 + 0.2 * torch.rand(n, generator=gen)}


def _is_stat(name):
    return name.endswith(("_mean", "_var"))


def _run(fn, z, params, training, grad, dtype):
    z = z.detach().to(DEVICE, dtype).clone().requires_grad_()
    p = {k: v.detach().to(DEVICE, dtype).clone().requires_grad_(not _is_stat(k)) for k, v in params.items()}
    out = fn(z, **p, training=training, momentum=MOMENTUM, eps=BN_EPS)
    out.backward(grad.to(DEVICE, out.dtype))
    result = {"out": out, "dz": z.grad}
    for k, v in p.items():
        result[k] = v if _is_stat(k) else v.grad  # running statistics after the call
    return result


def _compare(fn_ref, fn_kernel, b, t, g, d, c, dtype, training, dense=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(b, t, g * g + 1, d, generator=gen).to(dtype)
    params = {k: v.to(dtype) for k, v in _params(d, c, gen, dense).items()}
    grad = torch.randn(b * (t - 1), c, g, g, generator=gen).to(dtype)
    exact = _run(fn_ref, z, params, training, grad, torch.float64)
    ref = _run(fn_ref, z, params, training, grad, dtype)
    ker = _run(fn_kernel, z, params, training, grad, dtype)
    for name, want in exact.items():
        got, base = ker[name], ref[name]
        assert got is not None, f"{name}: no gradient"
        assert got.dtype == base.dtype and got.shape == want.shape, name
        assert torch.isfinite(got).all(), f"{name}: non-finite values (an unwritten element?)"
        if training and name in BIAS_WEIGHT:
            # A bias feeding a training-mode BatchNorm has exact gradient 0: both ops return
            # rounding noise of a sum over N*G*G terms, ~eps x the RMS of the matching weight
            # gradient (a sum of the same terms times unit-scale inputs).
            noise = EPS[dtype] * exact[BIAS_WEIGHT[name]].pow(2).mean().sqrt().item()
            err = (got.double() - want).abs().max().item()
            err_ref = (base.double() - want).abs().max().item()
            assert err <= 2 * err_ref + 4 * noise + 1e-6, f"{name}: {err:.3g} > 2 x {err_ref:.3g} + 4 x {noise:.3g}"
            continue
        _check_error(name, got, base, want, dtype)


def _check_error(name, got, base, want, dtype):
    """RMS error relative to the RMS of the exact value: kernel <= 2 x reference + floor.
    In float32 the largest error must pass the same test. (Low precision compares RMS
    only: a ReLU gate that flips on a value within an ulp of 0 moves single elements by
    a whole gradient term in either implementation.)"""
    scale = want.pow(2).mean().sqrt().item() + 1e-30
    err_kernel = (got.double() - want).pow(2).mean().sqrt().item() / scale
    err_ref = (base.double() - want).pow(2).mean().sqrt().item() / scale
    # 16 ulps: weight gradients are reductions over B*(T-1)*G*G terms (with BatchNorm's cancelling
    # sums), which the split-K kernel and the reference add in different orders; fresh-clone runs
    # saw 4.1 ulps (RMS) and 8.5 ulps (max) on pw_bn_weight, varying run to run. A wrong kernel is
    # off by orders of magnitude more.
    floor = 16 * EPS[dtype] + 1e-6 / scale
    assert err_kernel <= 2 * err_ref + floor, (
        f"{name}: kernel RMS error {err_kernel:.3g} > 2 x reference's {err_ref:.3g} + {floor:.3g}")
    if dtype == torch.float32:
        top_kernel = (got.double() - want).abs().max().item()
        top_ref = (base.double() - want).abs().max().item()
        top_floor = 16 * EPS[dtype] * want.abs().max().item() + 1e-6
        assert top_kernel <= 2 * top_ref + top_floor, (
            f"{name}: kernel max error {top_kernel:.3g} > 2 x reference's {top_ref:.3g} + {top_floor:.3g}")


# Every axis value appears. D = 24 / 40: 2D is not a multiple of the K block (32) and the
# frame boundary D falls inside a block; C = 24 / 40 are not multiples of the N block.
CASES = [
    (1, 2, 7, 24, 16, torch.float32, True),
    (3, 3, 5, 40, 24, torch.float32, False),
    (1, 3, 14, 16, 40, torch.float32, True),
    (1, 8, 5, 24, 24, torch.float32, False),
    (3, 8, 5, 40, 24, torch.bfloat16, True),
    (1, 2, 14, 24, 16, torch.bfloat16, False),
    (3, 3, 5, 16, 40, torch.bfloat16, True),
    (1, 8, 7, 24, 16, torch.bfloat16, False),
    (1, 3, 14, 16, 24, torch.float16, True),
    (3, 2, 5, 40, 16, torch.float16, False),
    (3, 8, 5, 24, 40, torch.float16, True),
    (1, 3, 7, 40, 24, torch.float16, False),
]
# On a GPU also the real ViT-B/16 shapes (8 frames, G = 14, D = 768, C = 256; 8 clips keep the
# float64 reference small): the GPU suite's first stage runs these at the default configs.
REAL_CASES = [(8, 8, 14, 768, 256, torch.bfloat16, True), (8, 8, 14, 768, 256, torch.bfloat16, False)]
if DEVICE.type == "cuda":
    CASES += REAL_CASES


@pytest.mark.parametrize("b,t,g,d,c,dtype,training", CASES)
def test_pair_correlation_matches_reference(b, t, g, d, c, dtype, training):
    _compare(reference.pair_correlation, pair_correlation, b, t, g, d, c, dtype, training)


@pytest.mark.parametrize("b,t,g,d,c,dtype,training", [
    (3, 3, 5, 24, 16, torch.float32, True), (1, 8, 7, 16, 24, torch.bfloat16, False),
    (1, 2, 5, 24, 16, torch.float16, True), (1, 2, 14, 40, 40, torch.float32, False),
    (3, 2, 7, 40, 24, torch.bfloat16, True), (1, 3, 7, 16, 40, torch.float16, False),
    *(REAL_CASES if DEVICE.type == "cuda" else [])])
def test_pair_correlation_dense_matches_reference(b, t, g, d, c, dtype, training):
    _compare(reference.pair_correlation_dense, pair_correlation_dense, b, t, g, d, c, dtype, training, dense=True)


def test_pair_correlation_float64_tight():
    """In float64 the fused op equals the reference to rounding, train and eval."""
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(2, 3, 26, 24, generator=gen, dtype=torch.float64)
    params = {k: v.double() for k, v in _params(24, 16, gen).items()}
    grad = torch.randn(4, 16, 5, 5, generator=gen, dtype=torch.float64)
    for training in (True, False):
        want = _run(reference.pair_correlation, z, params, training, grad, torch.float64)
        got = _run(pair_correlation, z, params, training, grad, torch.float64)
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=1e-9, atol=1e-9, msg=name)


def test_pair_correlation_dense_float64_tight():
    gen = torch.Generator().manual_seed(8)
    z = torch.randn(2, 3, 26, 24, generator=gen, dtype=torch.float64)
    params = {k: v.double() for k, v in _params(24, 16, gen, dense=True).items()}
    grad = torch.randn(4, 16, 5, 5, generator=gen, dtype=torch.float64)
    for training in (True, False):
        want = _run(reference.pair_correlation_dense, z, params, training, grad, torch.float64)
        got = _run(pair_correlation_dense, z, params, training, grad, torch.float64)
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=1e-9, atol=1e-9, msg=name)


def test_pair_correlation_batch_stats_large_mean():
    """Chan-combined batch statistics stay accurate when the mean dwarfs the spread."""
    gen = torch.Generator().manual_seed(6)
    z = 50.0 + 0.01 * torch.randn(2, 3, 50, 16, generator=gen)
    params = _params(16, 16, gen)
    grad = torch.randn(4, 16, 7, 7, generator=gen)
    want = _run(reference.pair_correlation, z, params, True, grad, torch.float64)
    got = _run(pair_correlation, z, params, True, grad, torch.float32)
    for name in ("out", "dw_bn_mean", "dw_bn_var"):
        torch.testing.assert_close(got[name].double(), want[name], rtol=2e-3, atol=2e-3, msg=name)


def test_pair_correlation_stride0_grad():
    gen = torch.Generator().manual_seed(7)
    z = torch.randn(2, 3, 26, 16, generator=gen).to(DEVICE)
    params = {k: v.to(DEVICE) for k, v in _params(16, 16, gen).items()}
    for training in (True, False):
        grads = []
        for fn in (reference.pair_correlation, pair_correlation):
            zz = z.clone().requires_grad_()
            p = {k: v.clone().requires_grad_(not _is_stat(k)) for k, v in params.items()}
            fn(zz, **p, training=training, momentum=MOMENTUM, eps=BN_EPS).sum().backward()
            grads.append([zz.grad, p["dw_weight"].grad, p["pw_weight"].grad])
        for a, b in zip(*grads):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dense", [False, True])
def test_pair_correlation_under_autocast(dense):
    """Under autocast both fronts take fp32 Z (what LayerNorm emits) and fp32 parameters and
    run in the autocast dtype, as the reference's autocast convolutions do."""
    gen = torch.Generator().manual_seed(9)
    z = torch.randn(2, 3, 26, 16, generator=gen).to(DEVICE)
    params = {k: v.to(DEVICE) for k, v in _params(16, 16, gen, dense).items()}
    fns = (reference.pair_correlation_dense, pair_correlation_dense) if dense else \
        (reference.pair_correlation, pair_correlation)
    exact = _run(fns[0], z, params, True, torch.ones(4, 16, 5, 5), torch.float64)
    results = []
    for fn in fns:
        zz = z.clone().requires_grad_()
        p = {k: v.clone().requires_grad_(not _is_stat(k)) for k, v in params.items()}
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            out = fn(zz, **p, training=True, momentum=MOMENTUM, eps=BN_EPS)
        out.float().sum().backward()
        results.append((out, zz.grad))
    (ref_out, ref_dz), (out, dz) = results
    assert out.dtype == ref_out.dtype == torch.bfloat16 and dz.dtype == torch.float32
    for got, base, want in ((out, ref_out, exact["out"]), (dz, ref_dz, exact["dz"])):
        _check_error("autocast", got, base, want, torch.bfloat16)


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_pair_correlation_bf16_params_fp32_running_stats(dense, training):
    """Mixed precision as FSDP does it (param_dtype=bf16): bf16 Z and parameters, fp32
    running statistics. The fused fronts accept the mix (F.batch_norm alone refuses it);
    errors as for the reference run entirely in bf16."""
    gen = torch.Generator().manual_seed(10)
    z = torch.randn(2, 3, 26, 16, generator=gen).bfloat16().to(DEVICE)
    params = {k: (v if _is_stat(k) else v.bfloat16()).to(DEVICE) for k, v in _params(16, 16, gen, dense).items()}
    grad = torch.randn(4, 16, 5, 5, generator=gen).bfloat16().to(DEVICE)
    ref_fn = reference.pair_correlation_dense if dense else reference.pair_correlation
    exact = _run(ref_fn, z, params, training, grad, torch.float64)
    base = _run(ref_fn, z, params, training, grad, torch.bfloat16)
    zz = z.clone().requires_grad_()
    p = {k: v.clone().requires_grad_(not _is_stat(k)) for k, v in params.items()}
    fn = pair_correlation_dense if dense else pair_correlation
    out = fn(zz, **p, training=training, momentum=MOMENTUM, eps=BN_EPS)
    out.backward(grad)
    assert out.dtype == torch.bfloat16
    for name, got in (("out", out), ("dz", zz.grad), *((k, v if _is_stat(k) else v.grad) for k, v in p.items())):
        if training and name in BIAS_WEIGHT:
            continue  # exact value 0: rounding noise only
        assert got.dtype == p.get(name, zz).dtype, name
        if training and name not in ("out", "dw_bn_mean", "dw_bn_var", "bn_mean", "bn_var",
                                     "pw_bn_mean", "pw_bn_var"):
            # Training gradients through two batch-statistics BatchNorms over 100 values swing
            # by seed for either implementation (ReLU gates flipping on bf16 rounding); the
            # sweep above judges their accuracy. Here: the mix runs and stays at bf16 level.
            want = exact[name]
            err = (got.double() - want).pow(2).mean().sqrt() / (want.pow(2).mean().sqrt() + 1e-30)
            assert err < 0.15, f"{name}: relative RMS error {err:.3g}"
            continue
        _check_error(name, got, base[name], exact[name], torch.bfloat16)
