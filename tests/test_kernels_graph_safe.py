"""CUDA-graph capture preconditions of the fused ops: no tensor made from a Python value
(``torch.tensor(x)`` is a host-to-device copy on a GPU), no host sync (``.item()``), no
copy between devices, in the forward and backward of every op. Checked with a dispatch
mode that sees every aten call, on whatever device the tests run on.

Custom ops hide their bodies from a dispatch mode, so the launchers behind them are
called directly too. (The other precondition, that autotuning is finished before a
capture, is the caller's: run one eager step per shape first; see kernels/ops.py.)
"""
import os

os.environ.setdefault("ILA_FAST_AUTOTUNE", "0")

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ila_fast.kernels import alignment, correlation, dense_correlation, get_ops

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
FORBIDDEN = {"aten.lift_fresh.default", "aten.lift_fresh_copy.default", "aten.scalar_tensor.default",
             "aten._local_scalar_dense.default", "aten.item.default"}


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.bad = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        if name in FORBIDDEN:
            self.bad.append(name)
        if name.startswith(("aten._to_copy", "aten.to.")) and "device" in kwargs:
            src = next((a.device for a in args if isinstance(a, torch.Tensor)), None)
            if src is not None and torch.device(kwargs["device"]) != src:
                self.bad.append(f"{name} {src} -> {kwargs['device']}")
        return func(*args, **kwargs)


def _check(fn):
    with _Recorder() as rec:
        fn()
    assert not rec.bad, f"host-side tensor creation / sync / cross-device copy per call: {rec.bad}"


def _inputs(d=8, c=16):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, 3, 26, d, generator=gen).to(DEVICE)
    corr = dict(dw_weight=0.3 * torch.randn(2 * d, 1, 3, 3, generator=gen), dw_bias=torch.zeros(2 * d),
                dw_bn_weight=torch.ones(2 * d), dw_bn_bias=torch.zeros(2 * d), dw_bn_mean=torch.zeros(2 * d),
                dw_bn_var=torch.ones(2 * d), pw_weight=torch.randn(c, 2 * d, 1, 1, generator=gen) / 4,
                pw_bias=torch.zeros(c), pw_bn_weight=torch.ones(c), pw_bn_bias=torch.zeros(c),
                pw_bn_mean=torch.zeros(c), pw_bn_var=torch.ones(c))
    dense = dict(weight=torch.randn(c, 2 * d, 3, 3, generator=gen) / 12, bias=torch.zeros(c),
                 bn_weight=torch.ones(c), bn_bias=torch.zeros(c), bn_mean=torch.zeros(c), bn_var=torch.ones(c))

    def to(params):
        return {k: v.to(DEVICE).requires_grad_(not k.endswith(("_mean", "_var"))) for k, v in params.items()}

    points = (torch.rand(2, 2, 4, generator=gen) - 0.5).to(DEVICE)
    return z, points, to(corr), to(dense)


@pytest.mark.parametrize("training", [True, False])
def test_public_ops_make_no_host_tensors(training):
    """The public functions, float delta included, forward and backward (warm: the first
    call may build cached constants such as the token grid)."""
    ops = get_ops("triton")
    z, points, corr, dense = _inputs()

    def step():
        zz = z.detach().requires_grad_()
        pp = points.detach().requires_grad_()
        aligned, pooled = ops.align_frames(zz, pp, 0.2, training)
        f = ops.pair_correlation(zz, **corr, training=training, momentum=0.1, eps=1e-5)
        g = ops.pair_correlation_dense(zz, **dense, training=training, momentum=0.1, eps=1e-5)
        (aligned.sum() + pooled.sum() + f.sum() + g.sum()).backward()

    step()
    _check(step)


def test_launchers_make_no_host_tensors():
    """The bodies of the custom ops (hidden from a dispatch mode behind the op boundary)."""
    z, points, corr, dense = _inputs()
    d, c = z.shape[-1], 16
    w1 = corr["dw_weight"].detach().reshape(2 * d, 9)
    b1, gamma, beta = (corr[k].detach() for k in ("dw_bias", "dw_bn_weight", "dw_bn_bias"))
    pw, pb = corr["pw_weight"].detach().reshape(c, 2 * d), corr["pw_bias"].detach()
    w_t = dense["weight"].detach().permute(2, 3, 1, 0).reshape(9, 2 * d, c)
    delta = torch.tensor(0.2, device=DEVICE)

    def step():
        aligned, pooled = alignment.align_frames_forward(z, points, None, 0.2, True)
        alignment.align_frames_backward(z, points, delta, 0.0, aligned, pooled, True)
        mean, var = correlation._dw_batch_stats(z, w1, b1)
        norm = (mean, torch.rsqrt(var + 1e-5), gamma, beta)
        y = correlation.correlation_forward(z, w1, b1, pw, pb, norm=norm)
        correlation.correlation_backward(y, None, z, w1, b1, pw, norm=norm)
        out = correlation.correlation_forward(z, w1, b1, pw, pb, norm=None, relu_out=True)
        correlation.correlation_backward(out, out, z, w1, b1, pw, norm=None)
        y = dense_correlation.dense_forward(z, w_t, dense["bias"].detach())
        dense_correlation.dense_backward(y, z, w_t)

    step()
    _check(step)


def test_recorder_sees_a_python_scalar_tensor():
    """The check can fail: torch.tensor(float) and .item() are caught."""
    with _Recorder() as rec:
        x = torch.tensor(0.2, device=DEVICE)
        (x * 2).item()
    assert any("lift_fresh" in b for b in rec.bad) and any("_local_scalar_dense" in b for b in rec.bad), rec.bad
