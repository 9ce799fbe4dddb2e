"""The model against an independent float64 rendering of the spec (tests/spec_reference.py).

Every parameter and BatchNorm running statistic is randomised first: a fresh model has
zero-initialised ILA residuals (``temporal_*_fc``) and a zero last point-head conv, which
would hide the whole ILA branch. delta is set to a nonzero value other than its default.
Agreement is asked to 1e-10 of max |error| / max(1, max |reference|), in float64, in
training mode (9-offset masks, batch-statistics BatchNorm, running-statistics update) and
evaluation mode (perturbed running statistics, single mask).
"""
from __future__ import annotations

import math

import pytest
import torch

from ila_fast.config import ModelConfig
from ila_fast.model import ILAModel
from ila_fast.model.ila import ILABlock

import spec_reference as spec  # tests/ is on sys.path (rootdir-relative, no package)

TOL = 1e-10
DELTA = 0.13  # the masks' jitter: nonzero and not the default 0.2
BN_BUFFERS = (".running_mean", ".running_var", ".num_batches_tracked")


# ---------------------------------------------------------------- helpers

def make_cfg(grid, frames, interactive="depthwise", dataset="k400", patch=4, width=32, channels=32,
             layers=1, heads=2, **kw):
    return ModelConfig(arch="custom", dataset=dataset, interactive=interactive, frames=frames,
                       input_size=grid * patch, patch_size=patch, width=width, layers=layers, heads=heads,
                       embed_dim=64, text_width=32, text_heads=2, text_layers=1, context_length=16,
                       correlation_channels=channels, **kw)


def random_state(module, seed):
    """A random value for every entry of ``module.state_dict()`` (float64), so every term counts."""
    gen = torch.Generator().manual_seed(seed)

    def randn(shape, std=1.0, mean=0.0):
        return mean + std * torch.randn(shape, generator=gen, dtype=torch.float64)

    new = {}
    for name, v in module.state_dict().items():
        shape = v.shape
        if name.endswith(".num_batches_tracked"):
            new[name] = torch.tensor(int(torch.randint(0, 50, (), generator=gen)))
        elif name.endswith(".running_mean"):
            new[name] = randn(shape, 0.3)
        elif name.endswith(".running_var"):
            new[name] = 0.5 + torch.rand(shape, generator=gen, dtype=torch.float64)
        elif name.endswith("delta"):
            new[name] = torch.tensor(DELTA, dtype=torch.float64)
        elif name.endswith("logit_scale"):
            new[name] = torch.tensor(math.log(12.0), dtype=torch.float64)
        elif name.endswith("alpha"):
            new[name] = randn(shape, 0.2, 0.5)
        elif v.dim() >= 2:  # matrices, convolutions, embeddings: O(1) activations
            new[name] = randn(shape, v[0].numel() ** -0.5)
        elif name.endswith(".weight"):  # LayerNorm / BatchNorm scales
            new[name] = randn(shape, 0.2, 1.0)
        else:  # biases, class embedding
            new[name] = randn(shape, 0.3)
    return new


def state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def check(actual, expected, what, tol=TOL, quiet=False):
    """max |a - e| / max(1, max |e|) <= tol; returns the error."""
    actual, expected = actual.detach(), expected.detach()
    assert actual.shape == expected.shape, \
        f"{what}: shape {tuple(actual.shape)} vs spec {tuple(expected.shape)}"
    scale = max(1.0, float(expected.abs().max()))
    err = float((actual - expected).abs().max()) / scale
    if not quiet:
        print(f"  {what}: rel max err {err:.2e}")
    assert err <= tol, f"{what}: max |error| {err:.3e} (relative to scale {scale:.3g}) > {tol:g}"
    return err


def check_buffers(before, after, updates, what):
    """Training: every BN buffer moved exactly as the spec's update says; others untouched."""
    bn_keys = sorted(k for k in after if k.endswith(BN_BUFFERS))
    assert sorted(updates) == bn_keys, \
        f"{what}: BN buffers updated by the spec {sorted(updates)} vs model {bn_keys}"
    worst = 0.0
    for k in after:
        expected = updates.get(k, before[k])
        if k.endswith(".num_batches_tracked"):
            assert int(after[k]) == int(expected), f"{what}: {k} = {int(after[k])}, spec {int(expected)}"
        else:
            worst = max(worst, check(after[k], expected, f"{what} state {k}", quiet=True))
    print(f"  {what} running statistics ({len(updates)} buffers): rel max err {worst:.2e}")


def hook_outputs(block, prefix, store):
    """Capture the block's intermediates (z, points, aligned / temporal / aux) for diagnosis."""
    handles = []

    def save(key):
        def fn(_m, _i, out):
            store[prefix + key] = out
        return fn

    handles.append(block.message_ln.register_forward_hook(save("z")))
    handles.append(block.message_ila.point_head.register_forward_hook(save("points")))
    handles.append(block.message_ila.register_forward_hook(save("ila")))
    return handles


def check_intermediates(store, record, prefix, bsz, frames, what):
    ref = record[prefix]
    l, d = ref["z"].shape[2:]
    check(store[prefix + "z"].reshape(bsz, frames, l, d), ref["z"], f"{what} Z")
    check(store[prefix + "points"], ref["points"], f"{what} points")
    aligned, temporal, aux = store[prefix + "ila"]
    check(aligned.reshape(bsz, frames, l, d), ref["aligned"], f"{what} aligned")
    check(temporal.reshape(bsz, frames, l, d), ref["temporal"], f"{what} temporal")
    check(aux, ref["aux"], f"{what} aux")


def assert_branch_visible(ref, training):
    """Guard against a vacuous comparison: both ILA residuals and the masks really act."""
    assert float(ref["align_term"].abs().max()) > 0.05 and float(ref["skip_term"].abs().max()) > 0.05
    masks = torch.cat([ref["masks_pre"].flatten(), ref["masks_cur"].flatten()])
    assert float(masks.min()) < 0.9 and float(masks.max()) > 0.1
    points = ref["points"]
    assert float(points.abs().max()) > 0.1 and float(points.std()) > 0.05
    if training:  # 9-offset averages: fractional weights appear
        assert bool(((masks > 0.01) & (masks < 0.99)).any())


# ---------------------------------------------------------------- one block

BLOCK_CASES = [(i, g, t) for i in ("depthwise", "dense") for g in (7, 14) for t in (2, 3, 8)]


def run_block(interactive, grid, frames, training, seed, channels=32, bsz=2):
    cfg = make_cfg(grid, frames, interactive, channels=channels)
    torch.manual_seed(seed)
    # drop-path on the four residuals is the identity in evaluation: give it a rate there
    block = ILABlock(cfg, 0.0 if training else 0.3).double()
    block.load_state_dict(random_state(block, seed))
    block.train(training)
    before = state(block)
    l, d = cfg.tokens, cfg.width
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(bsz * frames, l, d, generator=gen, dtype=torch.float64)
    store = {}
    handles = hook_outputs(block, "", store)
    with torch.no_grad():
        out, aux = block(x)
    for h in handles:
        h.remove()
    after = state(block)
    updates, record = {}, {}
    ref_out, ref_aux = spec.ila_block(x.view(bsz, frames, l, d), before, "", cfg, training, updates, record)
    what = f"block[{interactive} G={grid} T={frames} C={channels} {'train' if training else 'eval'}]"
    print(what)
    assert_branch_visible(record[""], training)
    check_intermediates(store, record, "", bsz, frames, what)
    check(out.view(bsz, frames, l, d), ref_out, f"{what} output")
    check(aux, ref_aux, f"{what} aux loss")
    if training:
        check_buffers(before, after, updates, what)
    else:
        assert not updates
        for k in after:
            assert torch.equal(after[k], before[k]), f"{what}: evaluation changed {k}"


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("interactive,grid,frames", BLOCK_CASES)
def test_block_matches_spec(interactive, grid, frames, training):
    run_block(interactive, grid, frames, training, seed=100 * grid + 10 * frames + (interactive == "dense"))


@pytest.mark.parametrize("interactive", ["depthwise", "dense"])
def test_block_matches_spec_256_channels(interactive):
    """The spec's own correlation width (256), training mode, G = 7."""
    run_block(interactive, 7, 3, True, seed=7, channels=256, bsz=1)


# ---------------------------------------------------------------- whole model, per head

MODEL_CASES = [
    # head, interactive, grid, patch, frames
    ("k400", "depthwise", 7, 4, 3),
    ("ssv2", "dense", 14, 2, 8),
    ("k400", "dense", 14, 2, 2),       # the interactive variant is independent of the head
    ("ssv2", "depthwise", 7, 8, 8),
]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dataset,interactive,grid,patch,frames", MODEL_CASES)
def test_model_matches_spec(dataset, interactive, grid, patch, frames, training):
    cfg = make_cfg(grid, frames, interactive, dataset=dataset, patch=patch, layers=2, num_classes=5,
                   ssv2_dropout=0.0 if training else 0.5)
    seed = 1000 + grid + frames
    torch.manual_seed(seed)
    model = ILAModel(cfg).double()
    model.load_state_dict(random_state(model, seed))  # also refreshes the cached text features
    model.train(training)
    before = state(model)
    bsz = 2
    size = cfg.input_size
    video = torch.randn(bsz, frames, 3, size, size, generator=torch.Generator().manual_seed(seed + 1),
                        dtype=torch.float64)
    store = {}
    handles = []
    for i, block in enumerate(model.visual.transformer.resblocks):
        handles += hook_outputs(block, f"{i}.", store)
    with torch.no_grad():
        frame_features, patches, _ = model.encode_frames(video)
        for h in handles:
            h.remove()
        model.load_state_dict(before)  # undo the first pass's BN update
        out = model(video)
    after = state(model)
    tokens = model.class_tokens if dataset == "k400" else None
    record = {}
    logits, aux, ref_updates, extras = spec.ila_model(video, before, cfg, training, tokens, record)
    what = f"model[{dataset} {interactive} G={grid} T={frames} {'train' if training else 'eval'}]"
    print(what)
    for i in range(cfg.layers):
        prefix = f"visual.transformer.resblocks.{i}."
        assert_branch_visible(record[prefix], training)
        mine = {prefix + k[len(f"{i}."):]: v for k, v in store.items() if k.startswith(f"{i}.")}
        check_intermediates(mine, record, prefix, bsz, frames, f"{what} block {i}")
    check(frame_features, extras["frame_features"], f"{what} frame features")
    check(patches, extras["patches"], f"{what} patch tokens")
    if dataset == "k400":
        check(model.text_features, extras["text_features"], f"{what} text features")
    check(out.aux_loss, aux, f"{what} aux loss")
    check(out.logits, logits, f"{what} logits")
    assert float(logits.std()) > 1e-3  # the logits really vary across classes / clips
    if training:
        check_buffers(before, after, ref_updates, what)
    else:
        assert not ref_updates
        for k in after:
            assert torch.equal(after[k], before[k]), f"{what}: evaluation changed {k}"


def test_official_eval_bn_option():
    """official_eval_bn: evaluation masks (single mask) with batch-statistics BatchNorm (spec 5)."""
    cfg = make_cfg(7, 3, "depthwise", official_eval_bn=True)
    block = ILABlock(cfg).double()
    block.load_state_dict(random_state(block, 5))
    block.eval()
    before = state(block)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2 * 3, cfg.tokens, cfg.width, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        out, aux = block(x)
    updates = {}
    ref_out, ref_aux = spec.ila_block(x.view(2, 3, cfg.tokens, cfg.width), before, "", cfg, False, updates,
                                      bn_training=True)
    print("official_eval_bn block")
    check(out.view_as(ref_out), ref_out, "official_eval_bn output")
    check(aux, ref_aux, "official_eval_bn aux")
    check_buffers(before, state(block), updates, "official_eval_bn")


# ---------------------------------------------------------------- gradients

@pytest.mark.parametrize("interactive,grid,frames,training", [
    ("depthwise", 7, 3, True), ("dense", 7, 8, True), ("depthwise", 14, 2, False), ("dense", 14, 3, False)])
def test_block_gradients_match_spec(interactive, grid, frames, training):
    """Backward: d(loss)/d(input) and d(loss)/d(every parameter) against autograd through the spec."""
    cfg = make_cfg(grid, frames, interactive)
    block = ILABlock(cfg).double()
    seed = 300 + grid + frames
    block.load_state_dict(random_state(block, seed))
    block.train(training)
    sd = state(block)
    bsz, l, d = 2, cfg.tokens, cfg.width
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(bsz * frames, l, d, generator=gen, dtype=torch.float64)
    weight = torch.randn(bsz * frames, l, d, generator=gen, dtype=torch.float64)

    x_model = x.clone().requires_grad_(True)
    out, aux = block(x_model)
    ((out * weight).sum() + 3.0 * aux).backward()

    names = [n for n, _ in block.named_parameters()]
    leaves = {n: sd[n].clone().requires_grad_(True) for n in names}
    x_spec = x.clone().requires_grad_(True)
    ref_out, ref_aux = spec.ila_block(x_spec.view(bsz, frames, l, d), {**sd, **leaves}, "", cfg, training)
    ((ref_out.reshape(bsz * frames, l, d) * weight).sum() + 3.0 * ref_aux).backward()

    what = f"grad[{interactive} G={grid} T={frames} {'train' if training else 'eval'}]"
    print(what)
    check(x_model.grad, x_spec.grad, f"{what} d/dx")
    worst = 0.0
    params = dict(block.named_parameters())
    for n in names:
        assert params[n].grad is not None, f"{what}: no gradient reached {n}"
        worst = max(worst, check(params[n].grad, leaves[n].grad, f"{what} d/d{n}", quiet=True))
    print(f"  {what} d/d(all {len(names)} parameters): rel max err {worst:.2e}")
    grads = {n: float(leaves[n].grad.abs().max()) for n in names}
    assert min(grads.values()) > 0, f"{what}: parameters without gradient in the spec: " \
        f"{[n for n, g in grads.items() if g == 0]}"


def test_block_gradcheck():
    """gradcheck of one block in float64, training mode (9-offset masks, batch-stat BN).

    The block is piecewise smooth: ReLUs, max-pools, and the mask's 1-D weight with kinks at
    |g - p| = 0.25 and 0.25 + 1/1.5. Finite differences (eps 1e-6) are valid where every such
    quantity is farther than the perturbation can move it; the spec rendering measures those
    margins for the chosen weights and input, and the test asserts them (> 1e-4) first.
    Max-pool ties have probability zero with continuous random data.
    """
    cfg = make_cfg(5, 3, "depthwise", width=8, channels=8, heads=2)  # G = 5: 5 -> 2 -> 1, floor
    block = ILABlock(cfg).double()
    sd = random_state(block, 11)
    block.load_state_dict(sd)
    block.train()
    l, d = cfg.tokens, cfg.width
    x = torch.randn(3, l, d, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    record = {}
    spec.ila_block(x.view(1, 3, l, d), state(block), "", cfg, True, {}, record)
    assert record[""]["kink_margin"] > 1e-4, record[""]["kink_margin"]
    assert record[""]["relu_margin"] > 1e-4, record[""]["relu_margin"]
    assert_branch_visible(record[""], True)

    names = ["message_fc.weight", "message_ila.point_head.fc2.weight", "message_ila.temporal_conv.weight"]
    params = {n: p.detach().clone().requires_grad_(True) for n, p in block.named_parameters() if n in names}
    assert sorted(params) == sorted(names)

    def fn(x, *ps):
        out, aux = torch.func.functional_call(block, dict(zip(names, ps)), (x,))
        return out, aux

    inputs = (x.clone().requires_grad_(True), *[params[n] for n in names])
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_delta_schedule_and_state():
    """Spec 3.1.5: delta starts at 0.2 and halves at the start of each epoch from epoch 30 on
    (0-based epochs, as ``set_epoch`` takes them); it is stored in the state dict."""
    cfg = make_cfg(7, 2, "depthwise", layers=2, dataset="ssv2")
    model = ILAModel(cfg)
    expected = {0: 0.2, 29: 0.2, 30: 0.1, 31: 0.05, 34: 0.2 / 2 ** 5, 49: 0.2 / 2 ** 20}
    for epoch, value in expected.items():
        model.set_epoch(epoch)
        for i in range(cfg.layers):
            stored = model.state_dict()[f"visual.transformer.resblocks.{i}.message_ila.delta"]
            assert math.isclose(float(stored), value, rel_tol=1e-6), (epoch, float(stored), value)
