"""pytest-benchmark: fused ILA ops vs reference (eager) vs torch.compile(reference).

    .venv/bin/pytest bench/test_bench_kernels.py --benchmark-group-by=param:shape,param:op,param:pass_

On a GPU the shapes are the real ones (ViT-B/16 8f x 32 clips at G = 14; ViT-L/14 16f x 8
clips at G = 24) in bf16; on the CPU the Triton kernels run under the interpreter on a
tiny shape only, as a smoke test. ``extra_info`` carries the achieved GB/s on the op's
minimal traffic. ``ila-fast bench kernels`` prints the same comparison as one table with
ratios and the activation memory each variant saves for backward.
"""
import pytest
import torch

from ila_fast.bench.kernels_table import (IMPLS, SHAPES, leaf_inputs, make_inputs, minimal_bytes,
                                          op_function)

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
DTYPE = torch.bfloat16 if CUDA else torch.float32
SHAPE_NAMES = ["b16", "l14"] if CUDA else ["tiny"]


@pytest.fixture(scope="module", params=SHAPE_NAMES)
def shape(request):
    return request.param


@pytest.fixture(scope="module")
def inputs(shape):
    return make_inputs(SHAPES[shape], DTYPE, DEVICE)


@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("op", ["align", "corr_train", "corr_eval", "dense_train", "dense_eval"])
def test_kernel(benchmark, shape, inputs, op, impl, pass_):
    fn = op_function(op, impl)
    leaves = leaf_inputs(inputs, op)
    grads = [torch.randn_like(o) for o in fn(leaves)]

    def call():
        if pass_ == "fwd":
            with torch.no_grad():
                fn(leaves)
        else:
            torch.autograd.backward(fn(leaves), grads)
        if CUDA:
            torch.cuda.synchronize()

    call()  # autotuning / compilation outside the timing
    rounds = 20 if CUDA else 2
    benchmark.pedantic(call, rounds=rounds, warmup_rounds=1 if CUDA else 0)
    seconds = benchmark.stats.stats.median
    benchmark.extra_info["GB/s"] = minimal_bytes(op, SHAPES[shape], inputs["z"].element_size(),
                                                 pass_ == "fwd+bwd") / seconds / 1e9
