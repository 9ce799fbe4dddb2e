"""The fused ops as registered torch ops: interface, opcheck, torch.compile, and a whole
ILA block with the fused ops against the same block with the reference ops."""
import os

# On a GPU: one kernel config per kernel (no autotuning sweep) keeps the many small test
# shapes fast; set ILA_FAST_AUTOTUNE=1 to test the tuned configs.
os.environ.setdefault("ILA_FAST_AUTOTUNE", "0")

import copy
import inspect

import pytest
import torch
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd

from ila_fast.kernels import OP_NAMES, get_ops, reference
from ila_fast.kernels import alignment, correlation, dense_correlation  # noqa: F401  (registers the ops)

OPS = torch.ops.ila_fast
# The compiled kernels on a GPU when there is one, else the interpreter on the CPU.
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(autouse=True)
def _nan_fill(monkeypatch):
    monkeypatch.setenv("ILA_FAST_NAN_FILL", "1")


def _corr_params(d, c, gen, requires_grad=True):
    p = dict(dw_weight=0.3 * torch.randn(2 * d, 1, 3, 3, generator=gen), dw_bias=0.1 * torch.randn(2 * d, generator=gen),
             dw_bn_weight=1 + 0.2 * torch.randn(2 * d, generator=gen), dw_bn_bias=0.1 * torch.randn(2 * d, generator=gen),
             dw_bn_mean=0.1 * torch.randn(2 * d, generator=gen), dw_bn_var=1 + 0.2 * torch.rand(2 * d, generator=gen),
             pw_weight=torch.randn(c, 2 * d, 1, 1, generator=gen) / (2 * d) ** 0.5,
             pw_bias=0.1 * torch.randn(c, generator=gen), pw_bn_weight=1 + 0.2 * torch.randn(c, generator=gen),
             pw_bn_bias=0.1 * torch.randn(c, generator=gen), pw_bn_mean=0.1 * torch.randn(c, generator=gen),
             pw_bn_var=1 + 0.2 * torch.rand(c, generator=gen))
    p = {k: v.to(DEVICE) for k, v in p.items()}
    for k, v in p.items():
        v.requires_grad_(requires_grad and not k.endswith(("_mean", "_var")))
    return p


def test_triton_ops_have_reference_signatures():
    fused, ref = get_ops("triton"), get_ops("reference")
    for name in OP_NAMES:
        want = list(inspect.signature(getattr(ref, name)).parameters)
        assert list(inspect.signature(getattr(fused, name)).parameters) == want, name


@pytest.mark.parametrize("training", [False, True])
def test_opcheck_align_frames(training):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, 3, 26, 12, generator=gen).to(DEVICE).requires_grad_()
    points = (torch.rand(2, 2, 4, generator=gen) - 0.5).to(DEVICE).requires_grad_()
    grads = (torch.randn(2, 3, 26, 12, generator=gen).to(DEVICE), torch.randn(2, 2, 2, 12, generator=gen).to(DEVICE))
    # delta as a device tensor (a model buffer) and as a float kernel argument
    for delta, value in ((torch.tensor(0.2, device=DEVICE), 0.0), (None, 0.2)):
        torch.library.opcheck(OPS.align_frames.default, (z, points, delta, value, training))
        torch.library.opcheck(OPS.align_frames_backward.default,
                              (z.detach(), points.detach(), delta, value, *grads, training))


def test_opcheck_pair_correlation():
    gen = torch.Generator().manual_seed(1)
    d, c = 12, 16
    z = torch.randn(2, 3, 26, d, generator=gen).to(DEVICE).requires_grad_()
    p = _corr_params(d, c, gen)
    w1, pw = p["dw_weight"].reshape(2 * d, 9), p["pw_weight"].reshape(c, 2 * d)
    train_args = (z, w1, p["dw_bias"], p["dw_bn_weight"], p["dw_bn_bias"], pw, p["pw_bias"], 1e-5)
    torch.library.opcheck(OPS.pair_correlation_train.default, train_args)
    torch.library.opcheck(OPS.pair_correlation_eval.default, (z, w1, p["dw_bias"], pw, p["pw_bias"]))
    with torch.no_grad():
        y, mean, var = OPS.pair_correlation_train(*train_args)
        out = OPS.pair_correlation_eval(z, w1, p["dw_bias"], pw, p["pw_bias"])
    gy = torch.randn(y.shape, generator=gen).to(DEVICE)
    detached = [a.detach() if isinstance(a, torch.Tensor) else a for a in train_args]
    torch.library.opcheck(OPS.pair_correlation_train_backward.default,
                          (gy, *detached[:6], mean, var, 1e-5))
    torch.library.opcheck(OPS.pair_correlation_eval_backward.default,
                          (gy, out, z.detach(), w1.detach(), p["dw_bias"].detach(), pw.detach()))


def test_opcheck_pair_conv3x3():
    gen = torch.Generator().manual_seed(6)
    d, c = 12, 16
    z = torch.randn(2, 3, 26, d, generator=gen).to(DEVICE).requires_grad_()
    w_t = (torch.randn(9, 2 * d, c, generator=gen) * 0.1).to(DEVICE).requires_grad_()
    bias = torch.randn(c, generator=gen).to(DEVICE).requires_grad_()
    torch.library.opcheck(OPS.pair_conv3x3.default, (z, w_t, bias))
    gy = torch.randn(4, c, 5, 5, generator=gen).to(DEVICE)
    torch.library.opcheck(OPS.pair_conv3x3_backward.default, (gy, z.detach(), w_t.detach()))


def _recording_backend(store):
    def record(name):
        def compiler(gm, example_inputs):
            store[name] = {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}
            return make_boxed_func(gm.forward)
        return compiler
    return aot_autograd(fw_compiler=record("forward"), bw_compiler=record("backward"))


@pytest.mark.parametrize("training", [True, False])
def test_compile_fullgraph_keeps_ops_in_graph(training):
    """Both ops (forward and backward) appear in the compiled graphs, and match eager."""
    fused = get_ops("triton")
    gen = torch.Generator().manual_seed(2)
    d, c = 12, 16
    z0 = torch.randn(2, 3, 26, d, generator=gen).to(DEVICE)
    params = _corr_params(d, c, gen, requires_grad=False)
    delta = torch.tensor(0.2, device=DEVICE)

    def step(z, p):
        f = fused.pair_correlation(z, **p, training=training, momentum=0.1, eps=1e-5)
        points = torch.tanh(f.mean((1, 2, 3))).view(2, 2, 1).expand(2, 2, 4) * 0.5
        aligned, pooled = fused.align_frames(z, points, delta, training)
        return aligned.square().mean() + pooled.mean() + f.mean()

    def run(fn):
        z = z0.clone().requires_grad_()
        p = {k: v.clone().requires_grad_(not k.endswith(("_mean", "_var"))) for k, v in params.items()}
        loss = fn(z, p)
        loss.backward()
        return loss, z.grad, p["dw_weight"].grad, p["pw_bn_weight"].grad, p["dw_bn_mean"]

    store = {}
    compiled = torch.compile(step, fullgraph=True, backend=_recording_backend(store))
    got, want = run(compiled), run(step)
    corr = "pair_correlation_train" if training else "pair_correlation_eval"
    assert any(f"ila_fast.{corr}.default" in t for t in store["forward"]), store["forward"]
    assert any("ila_fast.align_frames.default" in t for t in store["forward"]), store["forward"]
    assert any(f"ila_fast.{corr}_backward.default" in t for t in store["backward"]), store["backward"]
    assert any("ila_fast.align_frames_backward.default" in t for t in store["backward"]), store["backward"]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------
# A whole ILA block: kernels="triton" vs kernels="reference"


def _blocks(interactive="depthwise"):
    from ila_fast.config import ModelConfig
    from ila_fast.model.ila import ILABlock

    torch.manual_seed(0)
    cfg = ModelConfig(arch="tiny", input_size=64, frames=3, correlation_channels=32, interactive=interactive)
    ref = ILABlock(cfg).to(DEVICE)
    with torch.no_grad():  # leave the zero-initialised start so the ILA branch matters
        for name, p in ref.named_parameters():
            if "temporal_" in name or "point_head.fc2" in name:
                p.normal_(0.0, 0.2)
        for name, b in ref.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.8, 1.2)
    cfg_fused = copy.deepcopy(cfg)
    cfg_fused.kernels = "triton"
    fused = ILABlock(cfg_fused).to(DEVICE)
    fused.load_state_dict(ref.state_dict())
    return cfg, ref, fused


def _block_step(block, x):
    x = x.clone().requires_grad_()
    out, aux = block(x)
    (out.square().mean() + aux).backward()
    strip = lambda n: n.removeprefix("_orig_mod.")  # noqa: E731  (torch.compile's wrapper)
    grads = {strip(n): p.grad for n, p in block.named_parameters() if p.grad is not None}
    return out, aux, x.grad, grads, {strip(n): b.clone() for n, b in block.named_buffers()}


@pytest.mark.parametrize("training,interactive", [(True, "depthwise"), (False, "depthwise"),
                                                  (True, "dense"), (False, "dense")])
def test_ila_block_fused_matches_reference(training, interactive):
    pytest.importorskip("ila_fast.model.ila")
    cfg, ref, fused = _blocks(interactive)
    ref.train(training)
    fused.train(training)
    x = torch.randn(2 * cfg.frames, cfg.tokens, cfg.width, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    want, got = _block_step(ref, x), _block_step(fused, x)
    torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got[2], want[2], rtol=1e-4, atol=1e-5)
    assert set(got[3]) == set(want[3])
    for name in want[3]:
        torch.testing.assert_close(got[3][name], want[3][name], rtol=1e-4, atol=1e-5, msg=name)
    for name in want[4]:
        torch.testing.assert_close(got[4][name], want[4][name], rtol=1e-5, atol=1e-6, msg=name)
    # The correlation ops really had gradients to give.
    conv = "dw_conv" if interactive == "depthwise" else "dense_conv"
    assert got[3][f"message_ila.{conv}.weight"].abs().max() > 0


def test_ila_block_compiled_with_fused_ops():
    """torch.compile(fullgraph=True) of a whole ILA block with the Triton ops in its graphs.
    (aot_eager: inductor's cold compile of a block takes ~50 s on the CI machine; inductor
    itself is exercised on the two ops in test_compile_inductor.)"""
    pytest.importorskip("ila_fast.model.ila")
    cfg, _, fused = _blocks()
    fused.train(True)
    eager = copy.deepcopy(fused)
    x = torch.randn(2 * cfg.frames, cfg.tokens, cfg.width, generator=torch.Generator().manual_seed(4)).to(DEVICE)
    want = _block_step(eager, x)
    store = {}
    got = _block_step(torch.compile(fused, fullgraph=True, backend=_recording_backend(store)), x)
    assert any("ila_fast.pair_correlation_train_backward" in t for t in store["backward"]), store["backward"]
    assert any("ila_fast.align_frames_backward" in t for t in store["backward"]), store["backward"]
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[2], want[2], rtol=1e-5, atol=1e-6)
    for name in want[3]:
        torch.testing.assert_close(got[3][name], want[3][name], rtol=1e-5, atol=1e-6, msg=name)
    for name in want[4]:
        torch.testing.assert_close(got[4][name], want[4][name], rtol=1e-5, atol=1e-6, msg=name)


def test_compile_inductor():
    """Inductor, fullgraph, forward + backward through both ops (training mode)."""
    fused = get_ops("triton")
    gen = torch.Generator().manual_seed(5)
    z0 = torch.randn(2, 3, 26, 12, generator=gen).to(DEVICE)
    params = _corr_params(12, 16, gen, requires_grad=False)

    def step(z, p):
        f = fused.pair_correlation(z, **p, training=True, momentum=0.1, eps=1e-5)
        points = torch.tanh(f.mean((1, 2, 3))).view(2, 2, 1).expand(2, 2, 4) * 0.5
        aligned, pooled = fused.align_frames(z, points, torch.tensor(0.2, device=DEVICE), True)
        return aligned.square().mean() + pooled.mean()

    results = []
    for fn in (step, torch.compile(step, fullgraph=True, backend="inductor")):
        z = z0.clone().requires_grad_()
        p = {k: v.clone().requires_grad_(not k.endswith(("_mean", "_var"))) for k, v in params.items()}
        loss = fn(z, p)
        loss.backward()
        results.append((loss, z.grad, p["dw_weight"].grad, p["dw_bn_var"]))
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)
