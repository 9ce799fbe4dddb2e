"""Without a GPU the fused ops work in any import order. Triton fixes its interpreter mode
when it is first imported; open_clip (the Kinetics text head) imports triton. Each case
runs in a fresh interpreter without TRITON_INTERPRET and calls every fused op, forward
and backward, against the reference ops:

- open_clip first, through ila_fast (``ila_fast.compat.import_open_clip``): ila_fast's
  first import has already chosen the interpreter, so the kernels run;
- triton first, before anything of ila_fast: the kernels cannot run in that triton, and
  the fused ops hand every call to the reference ops with one warning.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter question arises only without a GPU")

SCRIPT = textwrap.dedent("""
    import sys, warnings
    FIRST = sys.argv[1]
    if FIRST == "open_clip":
        from ila_fast.compat import import_open_clip
        import_open_clip()
    else:
        import triton  # noqa: F401  (compiled mode: TRITON_INTERPRET is unset)
    assert "triton" in sys.modules, "the first import did not load triton"
    import torch
    from ila_fast.kernels import alignment, get_ops
    fused, ref = get_ops("triton"), get_ops("reference")
    gen = torch.Generator().manual_seed(0)
    d, c = 8, 8
    z0 = torch.randn(1, 3, 10, d, generator=gen)
    points = torch.rand(1, 2, 4, generator=gen) - 0.5
    corr = dict(dw_weight=0.3 * torch.randn(2 * d, 1, 3, 3, generator=gen), dw_bias=torch.zeros(2 * d),
                dw_bn_weight=torch.ones(2 * d), dw_bn_bias=torch.zeros(2 * d), pw_weight=torch.randn(c, 2 * d, 1, 1,
                generator=gen) / 4, pw_bias=torch.zeros(c), pw_bn_weight=torch.ones(c), pw_bn_bias=torch.zeros(c))
    dense = dict(weight=torch.randn(c, 2 * d, 3, 3, generator=gen) / 12, bias=torch.zeros(c),
                 bn_weight=torch.ones(c), bn_bias=torch.zeros(c))

    def run(ops, training):
        z = z0.clone().requires_grad_()
        stats = lambda n: dict(mean=torch.zeros(n), var=torch.ones(n))
        s1, s2, s3 = stats(2 * d), stats(c), stats(c)
        a, p = ops.align_frames(z, points, 0.2, training)
        f = ops.pair_correlation(z, **corr, dw_bn_mean=s1["mean"], dw_bn_var=s1["var"], pw_bn_mean=s2["mean"],
                                 pw_bn_var=s2["var"], training=training, momentum=0.1, eps=1e-5)
        g = ops.pair_correlation_dense(z, **dense, bn_mean=s3["mean"], bn_var=s3["var"], training=training,
                                       momentum=0.1, eps=1e-5)
        (a.square().sum() + p.sum() + f.square().sum() + g.square().sum()).backward()
        return a, p, f, g, z.grad

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for training in (True, False):
            for got, want in zip(run(fused, training), run(ref, training)):
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    ours = [str(w.message) for w in caught if "ila_fast.kernels" in str(w.message)]
    print("USE_REFERENCE", alignment.USE_REFERENCE, "warnings", len(ours))
""")


@pytest.mark.parametrize("first, use_reference, warnings", [("open_clip", False, 0), ("triton", True, 1)])
def test_fused_ops_work_in_any_import_order(tmp_path, first, use_reference, warnings):
    script = tmp_path / "order.py"  # a file: Triton kernels and their callers need real sources
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, str(script), first], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"USE_REFERENCE {use_reference} warnings {warnings}" in proc.stdout, proc.stdout + proc.stderr[-2000:]
