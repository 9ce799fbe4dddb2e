"""``ila-fast bench kernels``: the fused ILA ops vs the reference ops, eager and compiled.

Rows: op (alignment; Kinetics and SSv2 (dense) correlation fronts in training and
evaluation) x implementation
(fused Triton, reference eager, torch.compile(reference)) x pass (forward, forward +
backward): median time, achieved GB/s on the op's minimal traffic (bytes it must read and
write once, the roofline measure) and the speed-up over the eager reference. "saved MiB"
is what the op keeps for backward (tensors captured by saved_tensors_hooks, deduplicated
by storage, parameters excluded; the input Z counted when an op keeps it).

On a GPU the shapes are the real ones (ViT-B/16 8 frames x 32 clips at G = 14, ViT-L/14
16 frames x 8 clips at G = 24). On the CPU the Triton kernels run under the interpreter,
so only tiny shapes are run, as a smoke test: those times say nothing about speed.

The table ends with the activation memory one whole ILA block (ViT-B/16, 8 frames x 32
clips, bf16) saves for backward with the reference and with the fused ops, computed from
the saved tensors of a forward pass on the meta device (no memory is allocated).
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import os
import platform
import statistics
import sys
import time

import torch

from ila_fast.bench.rows import SavedRows

if not torch.cuda.is_available():  # before any Triton kernel is defined
    os.environ.setdefault("TRITON_INTERPRET", "1")

SHAPES = {  # B clips, T frames, G grid, D width, C correlation channels
    "tiny": dict(B=2, T=3, G=7, D=32, C=32),
    "b16": dict(B=32, T=8, G=14, D=768, C=256),
    "l14": dict(B=8, T=16, G=24, D=1024, C=256),
}
LABELS = {"tiny": "tiny (CPU smoke)", "b16": "B/16 8f x32 G14", "l14": "L/14 16f x8 G24"}
IMPLS = ("fused", "eager", "compiled")


# ---------------------------------------------------------------------------------------
# Inputs and the functions timed


def make_inputs(shape: dict, dtype: torch.dtype, device, seed: int = 0) -> dict:
    b, t, g, d, c = (shape[k] for k in "BTGDC")
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def rnd(*size, scale=1.0, shift=0.0):
        return (torch.randn(*size, generator=gen) * scale + shift).to(device=device, dtype=dtype)

    params = dict(dw_weight=rnd(2 * d, 1, 3, 3, scale=0.3), dw_bias=rnd(2 * d, scale=0.1),
                  dw_bn_weight=rnd(2 * d, scale=0.1, shift=1.0), dw_bn_bias=rnd(2 * d, scale=0.1),
                  dw_bn_mean=rnd(2 * d, scale=0.1), dw_bn_var=rnd(2 * d, scale=0.1, shift=1.0).abs(),
                  pw_weight=rnd(c, 2 * d, 1, 1, scale=(2 * d) ** -0.5), pw_bias=rnd(c, scale=0.1),
                  pw_bn_weight=rnd(c, scale=0.1, shift=1.0), pw_bn_bias=rnd(c, scale=0.1),
                  pw_bn_mean=rnd(c, scale=0.1), pw_bn_var=rnd(c, scale=0.1, shift=1.0).abs())
    dense = dict(weight=rnd(c, 2 * d, 3, 3, scale=(18 * d) ** -0.5), bias=rnd(c, scale=0.1),
                 bn_weight=rnd(c, scale=0.1, shift=1.0), bn_bias=rnd(c, scale=0.1),
                 bn_mean=rnd(c, scale=0.1), bn_var=rnd(c, scale=0.1, shift=1.0).abs())
    points = (torch.rand(b, t - 1, 4, generator=gen) * 1.5 - 0.75).to(device)
    return dict(z=rnd(b, t, g * g + 1, d), points=points, delta=torch.tensor(0.2, device=device),
                params=params, dense_params=dense)


def _is_stat(name: str) -> bool:
    return name.endswith(("_mean", "_var"))


def op_function(op: str, impl: str):
    """A function (inputs with requires_grad set) -> tuple of outputs, for one op and impl."""
    from ila_fast.kernels import get_ops

    ops = get_ops("reference" if impl in ("eager", "compiled") else "triton")
    if op == "align":
        def fn(inp):
            return ops.align_frames(inp["z"], inp["points"], inp["delta"], True)
    elif op.startswith("corr"):
        training = op == "corr_train"

        def fn(inp):
            return (ops.pair_correlation(inp["z"], **inp["params"], training=training,
                                         momentum=0.1, eps=1e-5),)
    else:
        training = op == "dense_train"

        def fn(inp):
            return (ops.pair_correlation_dense(inp["z"], **inp["dense_params"], training=training,
                                               momentum=0.1, eps=1e-5),)
    if impl == "compiled":
        fn = torch.compile(fn, fullgraph=True)
    return fn


def leaf_inputs(inputs: dict, op: str) -> dict:
    """Fresh leaves with requires_grad (the running statistics stay buffers)."""
    out = {"z": inputs["z"].detach().requires_grad_(), "delta": inputs["delta"],
           "points": inputs["points"].detach().requires_grad_(op == "align")}
    for key in ("params", "dense_params"):
        out[key] = {k: v.detach().clone().requires_grad_(not _is_stat(k) and op != "align")
                    for k, v in inputs[key].items()}
    return out


def minimal_bytes(op: str, shape: dict, elem: int, backward: bool) -> int:
    """Bytes the op must move at least: its inputs read once, its outputs written once."""
    b, t, g, d, c = (shape[k] for k in "BTGDC")
    z = b * t * (g * g + 1) * d * elem
    if op == "align":
        return 2 * z + (3 * z if backward else 0)          # fwd: Z, aligned; bwd: Z, dA -> dZ
    out = b * (t - 1) * c * g * g * elem
    return z + out + ((2 * z + out) if backward else 0)    # fwd: Z -> F; bwd: Z, dF -> dZ


def minimal_flops(op: str, shape: dict, backward: bool) -> int:
    """Floating-point operations the op must do (multiply-add = 2), the roofline's compute
    side: the 3x3 / 1x1 convolutions (GEMMs) dominate the correlation fronts."""
    b, t, g, d, c = (shape[k] for k in "BTGDC")
    if op == "align":
        return b * t * (g * g + 1) * d * (5 + (8 if backward else 0))
    m, k2 = b * (t - 1) * g * g, 2 * d
    if op.startswith("corr"):
        fwd = 2 * 9 * m * k2 + 2 * m * k2 * c              # depthwise + pointwise GEMM
        bwd = 2 * (2 * m * k2 * c) + 2 * (2 * 9 * m * k2)  # dW, dh GEMMs; depthwise dZ, dw1
    else:
        fwd = 2 * m * 9 * k2 * c                           # dense 3x3 conv as an implicit GEMM
        bwd = 2 * fwd                                      # dX and dW
    return fwd + (bwd if backward else 0)


def device_roofline(device) -> dict:
    """Measured on this GPU: device-to-device copy bandwidth (bytes read + written per s)
    and dense bf16 GEMM rate (FLOP/s), the ceilings the kernels are compared with."""
    measure = _timer(device)
    src = torch.empty(2**28, dtype=torch.float32, device=device)  # 1 GiB
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    copy_s = measure(lambda: dst.copy_(src), 20)
    del src, dst
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    bm = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ bm
    gemm_s = measure(lambda: a @ bm, 20)
    return dict(copy_bytes_per_s=2 * 2**30 / copy_s, gemm_flops_per_s=2 * 8192**3 / gemm_s)


def saved_bytes(fn, inputs: dict) -> int:
    """Bytes of the distinct storages autograd keeps for backward, parameters excluded."""
    exclude = {p.untyped_storage()._cdata for key in ("params", "dense_params") for p in inputs[key].values()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage._cdata not in exclude:
            seen[storage._cdata] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outs = fn(inputs)
    del outs
    return sum(seen.values())


def check_case(op: str, inputs: dict, seed: int = 1) -> list[dict]:
    """Correctness at the benchmark shape: fused and reference in the benchmark dtype, both
    against the reference in float64 on the same inputs (RMS error relative to the RMS of
    the exact value); ``ok``: fused <= 2 x reference + one ulp."""
    eps = {torch.float32: 1.2e-7, torch.bfloat16: 7.8e-3, torch.float16: 9.8e-4}[inputs["z"].dtype]
    results = {}
    for name, impl, cast in (("exact", "eager", torch.float64), ("reference", "eager", None),
                             ("fused", "fused", None)):
        inp = leaf_inputs(_cast_inputs(inputs, cast), op) if cast else leaf_inputs(inputs, op)
        outs = op_function(op, impl)(inp)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        grads = [torch.randn(o.shape, generator=gen).to(o) for o in outs]
        torch.autograd.backward(outs, grads)
        named = {f"out{i}": o.detach() for i, o in enumerate(outs)}
        named["dz"] = inp["z"].grad
        if op == "align":
            named["dpoints"] = inp["points"].grad
        else:
            key = "params" if op.startswith("corr") else "dense_params"
            named.update({f"d{k}": v.grad for k, v in inp[key].items() if v.grad is not None})
        results[name] = named
    rows = []
    for key, want in results["exact"].items():
        scale = want.double().pow(2).mean().sqrt().item() + 1e-30
        errs = [(results[n][key].double() - want.double()).pow(2).mean().sqrt().item() / scale
                for n in ("fused", "reference")]
        noise_only = op.endswith("train") and key in ("ddw_bias", "dpw_bias", "dbias")  # exact value 0
        rows.append(dict(op=op, tensor=key, fused=errs[0], reference=errs[1], noise_only=noise_only,
                         ok=noise_only or errs[0] <= 2 * errs[1] + eps))
    return rows


def _cast_inputs(inputs: dict, dtype) -> dict:
    out = dict(inputs, z=inputs["z"].to(dtype), points=inputs["points"].to(dtype),
               delta=inputs["delta"].to(dtype))
    for key in ("params", "dense_params"):
        out[key] = {k: v.to(dtype) for k, v in inputs[key].items()}
    return out


def _timer(device):
    if device.type == "cuda":
        def measure(call, iters):
            times = []
            for _ in range(iters):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                call()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            return statistics.median(times)
    else:
        def measure(call, iters):
            times = []
            for _ in range(iters):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            return statistics.median(times)
    return measure


def bench_case(op: str, impl: str, inputs: dict, shape: dict, iters: int, device) -> list[dict]:
    """Forward and forward+backward rows for one op / implementation."""
    fn = op_function(op, impl)
    measure = _timer(device)
    elem = inputs["z"].element_size()
    leaves = leaf_inputs(inputs, op)
    outs = fn(leaves)
    grads = [torch.randn_like(o) for o in outs]

    def forward():
        with torch.no_grad():
            fn(leaves)

    def forward_backward():
        torch.autograd.backward(fn(leaves), grads)

    rows = []
    for name, call, backward in (("fwd", forward, False), ("fwd+bwd", forward_backward, True)):
        for _ in range(2):  # warm-up: autotuning, compilation
            call()
        seconds = measure(call, iters)
        rows.append(dict(op=op, impl=impl, pass_=name, ms=seconds * 1e3,
                         gbps=minimal_bytes(op, shape, elem, backward) / seconds / 1e9,
                         tflops=minimal_flops(op, shape, backward) / seconds / 1e12))
    saved = saved_bytes(fn, leaf_inputs(inputs, op))
    for row in rows:
        row["saved_mib"] = saved / 2**20
    return rows


def block_saved_memory(dtype=torch.bfloat16) -> dict:
    """Computed activation memory one ILA block (ViT-B/16, 8 frames x 32 clips, training)
    saves for backward, reference vs fused ops: whole block and the ILA branch alone."""
    from ila_fast.config import ModelConfig
    from ila_fast.model.ila import ILABlock

    result = {}
    for (kernels, interactive) in itertools.product(("reference", "triton"), ("depthwise", "dense")):
        cfg = ModelConfig(arch="ViT-B/16", frames=8, input_size=224, kernels=kernels, interactive=interactive)
        with torch.device("meta"):
            block = ILABlock(cfg).to(dtype).train()
            x = torch.empty(32 * cfg.frames, cfg.tokens, cfg.width, dtype=dtype, requires_grad=True)
            z = torch.empty(32, cfg.frames, cfg.tokens, cfg.width, dtype=dtype, requires_grad=True) * 1
        exclude = {p.untyped_storage()._cdata for p in block.parameters()}
        for part, call in (("block", lambda: block(x)), ("ila_branch", lambda: block.message_ila(z))):
            seen: dict[int, int] = {}

            def pack(t):
                storage = t.untyped_storage()
                if storage._cdata not in exclude:
                    seen[storage._cdata] = storage.nbytes()
                return t

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                call()
            result[(kernels, interactive, part)] = sum(seen.values()) / 2**20
    return result


def block_measured_memory(dtype=torch.bfloat16) -> dict:
    """GPU only: measured memory of one ILA block (ViT-B/16, 8 frames x 32 clips, training):
    allocated and held after the forward (what backward keeps, plus the block's outputs),
    and the peaks of forward and of forward + backward, all above the inputs and weights."""
    from ila_fast.config import ModelConfig
    from ila_fast.model.ila import ILABlock

    result = {}
    for kernels, interactive in itertools.product(("reference", "triton"), ("depthwise", "dense")):
        cfg = ModelConfig(arch="ViT-B/16", frames=8, input_size=224, kernels=kernels, interactive=interactive)
        block = ILABlock(cfg).to("cuda", dtype).train()
        x = torch.randn(32 * cfg.frames, cfg.tokens, cfg.width, device="cuda", dtype=dtype, requires_grad=True)
        for measure in (False, True):  # the first pass autotunes
            x.grad = None
            block.zero_grad(set_to_none=False)
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            out, aux = block(x)
            held = torch.cuda.memory_allocated() - base
            peak_fwd = torch.cuda.max_memory_allocated() - base
            (out.float().square().mean() + aux).backward()
            peak = torch.cuda.max_memory_allocated() - base
            del out, aux
        result[(kernels, interactive)] = dict(held=held / 2**20, peak_fwd=peak_fwd / 2**20, peak=peak / 2**20)
        del block, x
        torch.cuda.empty_cache()
    return result


# ---------------------------------------------------------------------------------------
# The command


def _versions() -> dict:
    import triton

    info = dict(torch=torch.__version__, triton=triton.__version__, python=platform.python_version(),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name()
    else:
        info["device"] = f"CPU ({platform.processor() or platform.machine()}), Triton interpreter"
    return info


def _compile_report() -> int:
    """The offline sm_90 compile report, in a process of its own (it must not interpret)."""
    import subprocess

    env = dict(os.environ, TRITON_INTERPRET="0")
    return subprocess.run([sys.executable, "-m", "ila_fast.kernels.compile_report", "--scope", "all"],
                          env=env).returncode


def _roofline_cells(row: dict, roof: dict | None) -> str:
    if roof is None:
        return f"{'interpreted, no bandwidth figure':>32s}"
    copy = row["gbps"] * 1e9 / roof["copy_bytes_per_s"]
    gemm = row["tflops"] * 1e12 / roof["gemm_flops_per_s"]
    return f"{row['gbps']:8.1f} {100 * copy:5.1f}% {row['tflops']:7.1f} {100 * gemm:5.1f}%"


def run(args: argparse.Namespace) -> int:
    if getattr(args, "compile_report", False):
        return _compile_report()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    shapes = (["b16", "l14"] if cuda else ["tiny"]) if args.shapes == "auto" else args.shapes.split(",")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32,
             "auto": torch.bfloat16 if cuda else torch.float32}[args.dtype]
    iters = args.iters or (20 if cuda else 3)
    impls = [i for i in IMPLS if not (args.no_compile and i == "compiled")]
    info = _versions()
    print(f"ila-fast bench kernels  device: {info['device']}  torch {info['torch']}  triton {info['triton']}  "
          f"dtype {str(dtype).removeprefix('torch.')}  {info['date']}")
    if not cuda:
        print("No GPU: the fused kernels run under the Triton interpreter on tiny shapes. This is a smoke "
              "test; the times and GB/s below say nothing about GPU speed.")
    checks, rows = [], []
    # Saved after every row (bench/rows.py): a run cut short keeps what finished.
    saved = SavedRows(args.save, info=info, dtype=str(dtype), rows=rows, checks=checks,
                      command=" ".join(["ila-fast", *sys.argv[1:]]))
    saved.write()
    if args.check:
        print(f"{'shape':18s} {'op':11s} {'tensor':14s} {'fused err':>10s} {'ref err':>10s}  ok")
        for shape_name in shapes:
            inputs = make_inputs(SHAPES[shape_name], dtype, device)
            for op in args.ops.split(","):
                for r in check_case(op, inputs):
                    r["shape"] = shape_name
                    checks.append(r)
                    saved.write()
                    verdict = "exact value 0 (bias before a training BN): rounding noise only" \
                        if r["noise_only"] else ("ok" if r["ok"] else "FAIL")
                    print(f"{LABELS[shape_name]:18s} {op:11s} {r['tensor']:14s} {r['fused']:10.2e} "
                          f"{r['reference']:10.2e}  {verdict}")
            if cuda:
                torch.cuda.empty_cache()
        print(f"check: {sum(r['ok'] for r in checks)} / {len(checks)} ok "
              "(RMS error vs float64 relative to the exact RMS; ok: fused <= 2 x reference + 1 ulp)\n")
    roof = device_roofline(device) if cuda else None
    if roof:
        print(f"Roofline, measured on this GPU: copy {roof['copy_bytes_per_s'] / 1e9:.0f} GB/s (read + write), "
              f"bf16 GEMM {roof['gemm_flops_per_s'] / 1e12:.0f} TFLOP/s. GB/s and TFLOP/s: the op's minimal "
              "bytes and FLOPs over its time; %: the fraction of those ceilings.")
        info["roofline"] = roof
    roof_head = f"{'GB/s':>8s} {'%copy':>6s} {'TFLOP/s':>7s} {'%gemm':>6s}" if roof else f"{'roofline':>32s}"
    header = (f"{'shape':18s} {'op':11s} {'impl':9s} {'pass':8s} {'ms':>10s} {roof_head} {'x eager':>8s} "
              f"{'saved MiB':>10s}")
    print(header)
    print("-" * len(header))
    for shape_name in shapes:
        shape = SHAPES[shape_name]
        inputs = make_inputs(shape, dtype, device)
        for op in args.ops.split(","):
            case_rows = []
            for impl in impls:
                case_rows += bench_case(op, impl, inputs, shape, iters, device)
            eager = {r["pass_"]: r["ms"] for r in case_rows if r["impl"] == "eager"}
            for r in case_rows:
                r["speedup"] = eager[r["pass_"]] / r["ms"]
                r["shape"] = shape_name
                print(f"{LABELS[shape_name]:18s} {r['op']:11s} {r['impl']:9s} {r['pass_']:8s} {r['ms']:10.3f} "
                      f"{_roofline_cells(r, roof)} {r['speedup']:8.2f} {r['saved_mib']:10.2f}")
            rows += case_rows
            saved.write()
            if cuda:
                torch.cuda.empty_cache()
    memory = block_saved_memory()
    print("\nActivation memory saved for backward, one ILA block, ViT-B/16 8 frames x 32 clips, bf16, training")
    print("(computed from the saved tensors of a meta-device forward; attention as the meta dispatch runs it):")
    for interactive, label in (("depthwise", "Kinetics (depthwise)"), ("dense", "SSv2 (dense)")):
        for part in ("ila_branch", "block"):
            ref, fused = memory[("reference", interactive, part)], memory[("triton", interactive, part)]
            print(f"  {label:20s} {part:10s}  reference {ref:7.1f} MiB   fused {fused:7.1f} MiB   "
                  f"saved {ref - fused:6.1f} MiB ({ref / fused:.2f}x less)")
    measured = {}
    if cuda:
        measured = block_measured_memory()
        print("\nMeasured on this GPU (same block and batch, bf16, training; MiB above inputs and weights):")
        for interactive, label in (("depthwise", "Kinetics (depthwise)"), ("dense", "SSv2 (dense)")):
            for kernels in ("reference", "triton"):
                m = measured[(kernels, interactive)]
                print(f"  {label:20s} {kernels:9s}  held after forward {m['held']:8.1f}   "
                      f"peak forward {m['peak_fwd']:8.1f}   peak forward+backward {m['peak']:8.1f}")
    saved.finish(block_saved_mib={"/".join(k): v for k, v in memory.items()},
                 block_measured_mib={"/".join(k): v for k, v in measured.items()})
    if args.save:
        print(f"wrote {args.save}")
    return 0 if all(r["ok"] for r in checks) else 1
