"""Offline sm_90 (H100 / H200) compile report of every fused kernel: no GPU needed.

Each kernel x autotune config x input dtype is compiled with Triton's own NVIDIA backend
and its bundled ``ptxas`` for sm_90, at the argument specialisation a real launch at the
B/16 shape gets (pointers 16-byte aligned, integer arguments divisible by 16 where they
are). Per compile it reports the shared memory the launch needs (the sm_90 per-block
limit is 232,448 B: above it a launch fails with OutOfResources), registers per thread
and spill bytes (from ``ptxas -v``), and from the PTX the tensor-core instructions
(``wgmma.mma_async`` / ``mma.sync``) and the 16-byte global loads / stores and
``cp.async`` copies (vectorised and asynchronous memory access).

Run it in a process of its own: the kernels must be defined with ``TRITON_INTERPRET=0``
(the tests set the interpreter), so ``python -m ila_fast.kernels.compile_report`` sets
that before anything imports triton. ``ila-fast bench kernels --compile-report`` and
tests/test_kernels_compile.py call it that way.
"""
from __future__ import annotations

import os

# Run as a program: compile, never interpret; and see every autotune config (not
# ILA_FAST_AUTOTUNE=0's one). Imported (tests read SMEM_LIMIT / problems), it must leave the
# importing process's interpreter setting alone.
if __name__ == "__main__":
    os.environ["TRITON_INTERPRET"] = "0"
    os.environ["ILA_FAST_AUTOTUNE"] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402

SMEM_LIMIT = 232448  # bytes of shared memory one block may use on sm_90
DTYPES = ("fp32", "bf16", "fp16")


class Ptr:
    """A pointer argument of the given Triton element type ("fp32", "bf16", ...)."""

    def __init__(self, ty: str):
        self.ty = ty


def _shape(name: str) -> dict:
    b, t, g, d, c = {"b16": (32, 8, 14, 768, 256), "l14": (8, 16, 24, 1024, 256)}[name]
    q = g * g
    return dict(B=b, T=t, G=g, D=d, C=c, L=q + 1, Q=q, M=b * (t - 1) * q, MF=b * t * q, K2=2 * d)


def kernel_specs(dtype: str, shape: str = "b16"):
    """(name, autotuner, args) per kernel variant, with args as a real launch passes them:
    Ptr for tensors, ints, and the constexprs (block sizes fixed by the launcher included)."""
    import triton.language as tl

    from . import alignment as al
    from . import correlation as co
    from . import dense_correlation as dc

    s = _shape(shape)
    z, f32 = Ptr(dtype), Ptr("fp32")
    dot = {"fp32": tl.float32, "bf16": tl.bfloat16, "fp16": tl.float16}[dtype]
    prec = "tf32" if dtype == "fp32" else "ieee"
    geo = dict(T=s["T"], L=s["L"], D=s["D"], G=s["G"], Q=s["Q"])
    mask = dict(ACC=tl.float32, FLAT=0.25, SLOPE=1.5, FIX_BF16=False)
    gemm = dict(ACC=tl.float32, DOT=dot, PREC=prec)
    h_args = dict(z_ptr=z, w_ptr=z, bias_ptr=z, mean_ptr=f32, rstd_ptr=f32, gamma_ptr=z, beta_ptr=z)
    specs = [
        ("align_fwd", al._align_fwd_kernel,
         dict(z_ptr=z, p_ptr=f32, delta_ptr=f32, delta_value=0.0, g_ptr=f32, out_ptr=z, pooled_ptr=z, DELTA_PTR=True,
              T=s["T"], L=s["L"], D=s["D"], G=s["G"], TRAIN=True, **mask)),
        ("align_bwd", al._align_bwd_kernel,
         dict(z_ptr=z, p_ptr=f32, delta_ptr=f32, delta_value=0.0, g_ptr=f32, ga_ptr=z, gs_ptr=z, dz_ptr=z,
              dp_part_ptr=f32, DELTA_PTR=True,
              T=s["T"], L=s["L"], D=s["D"], G=s["G"], NLB=-(-s["L"] // al.BWD_BLOCK_L), TRAIN=True,
              BLOCK_L=al.BWD_BLOCK_L, **mask)),
        ("corr_stats", co._dw_stats_kernel,
         dict(z_ptr=z, w_ptr=z, bias_ptr=z, mean_part_ptr=f32, m2_part_ptr=f32, **geo, M=s["M"], K2=s["K2"],
              ACC=tl.float32, BLOCK_M=co.STATS_BLOCK_M)),
    ]
    for mode, norm in (("train", True), ("eval", False)):
        # Evaluation folds the BatchNorms in fp32 (the statistics' dtype): its weights are fp32.
        w = z if norm else f32
        hw = dict(h_args, w_ptr=w, bias_ptr=w)
        specs += [
            (f"corr_fwd_{mode}", co._corr_fwd_kernel,
             dict(hw, pw_ptr=w, pb_ptr=w, out_ptr=z, **geo, M=s["M"], K2=s["K2"], C=s["C"],
                  NORM=norm, RELU_OUT=not norm, FIX_BF16=False, **gemm)),
            (f"corr_wgrad_{mode}", co._corr_wgrad_kernel,
             dict(hw, pw_ptr=w, gy_ptr=z, out_ptr=z, dw_part_ptr=f32, bn_part_ptr=f32, db_part_ptr=f32,
                  **geo, M=s["M"], K2=s["K2"], C=s["C"], SPLIT=16, NORM=norm, GATE=not norm,
                  BLOCK_C=s["C"], **gemm)),
            (f"corr_du_{mode}", co._corr_du_kernel,
             dict(hw, pw_ptr=w, gy_ptr=z, out_ptr=z, a_ptr=f32, mg_ptr=f32, mgx_ptr=f32, du_ptr=z,
                  **geo, M=s["M"], K2=s["K2"], C=s["C"], NORM=norm, GATE=not norm, FIX_BF16=False,
                  BLOCK_C=s["C"], **gemm)),
        ]
    specs += [
        ("corr_dz", co._corr_dz_kernel,
         dict(z_ptr=z, du_ptr=z, w_ptr=z, dz_ptr=z, part_ptr=f32, **geo, MF=s["MF"], K2=s["K2"],
              ACC=tl.float32, FIX_BF16=False)),
        ("dense_fwd", dc._dense_fwd_kernel,
         dict(z_ptr=z, w_ptr=z, bias_ptr=z, y_ptr=z, **geo, M=s["M"], K2=s["K2"], C=s["C"],
              FIX_BF16=False, **gemm)),
        ("dense_dx", dc._dense_dx_kernel,
         dict(gy_ptr=z, w_ptr=z, dz_ptr=z, **geo, MF=s["MF"], K2=s["K2"], C=s["C"], FIX_BF16=False, **gemm)),
        ("dense_dw", dc._dense_dw_kernel,
         dict(z_ptr=z, gy_ptr=z, part_ptr=f32, **geo, M=s["M"], K2=s["K2"], C=s["C"], SPLIT=16,
              BLOCK_C=s["C"], **gemm)),
    ]
    return specs


def _jit_fn(kernel):
    from triton.runtime.jit import JITFunction

    fn = kernel
    while not isinstance(fn, JITFunction):  # Autotuner / Heuristics wrappers
        fn = fn.fn
    return fn


def default_index(kernel) -> int:
    """Index of the config a launch with ILA_FAST_AUTOTUNE=0 uses."""
    return getattr(kernel.configs, "default", 0)


def kept_configs(kernel, args: dict) -> list[bool]:
    """Which configs the kernel's pruning (``ConfigList.prune``) keeps for these arguments."""
    size = next(4 if a.ty == "fp32" else 2 for a in args.values() if isinstance(a, Ptr))
    return [size in getattr(c, "element_sizes", (size,)) for c in kernel.configs]


class _SharedOnly(Exception):
    """Raised in place of the PTX stage: the shared memory is known after LLVM IR."""


def _stop_before_ptx():
    """Make the NVIDIA backend stop after LLVM IR (half the time of a full compile: no
    PTX, no ptxas), for configs whose shared memory is all we check."""
    from triton.backends.nvidia.compiler import CUDABackend

    if getattr(CUDABackend, "_ila_patched", False):
        return
    original = CUDABackend.add_stages

    def add_stages(self, stages, options, language):
        original(self, stages, options, language)
        if _SHARED_ONLY[0]:
            def stop(src, metadata):
                raise _SharedOnly(metadata["shared"])
            stages["ptx"] = stop

    CUDABackend.add_stages = add_stages
    CUDABackend._ila_patched = True


_SHARED_ONLY = [False]


def _compile(name: str, index: int, dtype: str, shape: str, full: bool = True) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget

    spec = {n: (k, a) for n, k, a in kernel_specs(dtype, shape)}
    kernel, args = spec[name]
    config = kernel.configs[index]
    fn = _jit_fn(kernel)
    values = dict(args, **config.kwargs)
    signature, constexprs, attrs = {}, {}, {}
    for i, (arg, param) in enumerate(zip(fn.arg_names, fn.params)):
        value = values[arg]
        if param.is_constexpr:
            signature[arg] = "constexpr"
            constexprs[arg] = value
        elif isinstance(value, Ptr):
            signature[arg] = "*" + value.ty
            attrs[(i,)] = [["tt.divisibility", 16]]  # torch allocations are 16-byte aligned
        elif isinstance(value, int):
            signature[arg] = "i32" if abs(value) < 2**31 else "i64"
            if value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            signature[arg] = "fp32"
    target = GPUTarget("cuda", 90, 32)
    backend = triton.compiler.make_backend(target)
    opts = {"num_warps": config.num_warps, "num_stages": config.num_stages}
    if name.startswith("align"):
        opts["enable_fp_fusion"] = False
    options = backend.parse_options(opts)
    src = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    triton.knobs.nvidia.dump_ptxas_log = True
    log = io.StringIO()
    start = time.perf_counter()
    cfg = ",".join(f"{k[6:] if k.startswith('BLOCK_') else k}={v}" for k, v in config.kwargs.items())
    row = dict(kernel=name, index=index, config=f"{cfg},w={config.num_warps},s={config.num_stages}",
               dtype=dtype, shape=shape, default=index == default_index(kernel),
               kept=kept_configs(kernel, args)[index], full=full)
    _stop_before_ptx()
    _SHARED_ONLY[0] = not full
    try:
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(src, target=target, options=options.__dict__)
    except _SharedOnly as stop:
        return dict(row, smem=stop.args[0], regs=-1, spill=-1, wgmma=-1, mma=-1, v4=-1, cp_async=-1,
                    seconds=time.perf_counter() - start)
    except Exception as error:  # a config that does not compile is a finding, not a crash
        return dict(row, smem=-1, regs=-1, spill=-1, wgmma=-1, mma=-1, v4=-1, cp_async=-1,
                    seconds=time.perf_counter() - start, error=f"{type(error).__name__}: {error}"[:200])
    seconds = time.perf_counter() - start
    text = log.getvalue()
    ptx = compiled.asm["ptx"]
    regs = re.search(r"Used (\d+) registers", text)
    spill_st = re.search(r"(\d+) bytes spill stores", text)
    spill_ld = re.search(r"(\d+) bytes spill loads", text)
    return dict(row, smem=compiled.metadata.shared,
                regs=int(regs.group(1)) if regs else -1,
                spill=int(spill_st.group(1)) + int(spill_ld.group(1)) if spill_st else -1,
                wgmma=ptx.count("wgmma.mma_async"), mma=ptx.count("mma.sync"),
                v4=len(re.findall(r"(?:ld|st)\.global[.a-z0-9]*\.v4", ptx)) + ptx.count("ld.global.v2.b64"),
                cp_async=ptx.count("cp.async.cg") + ptx.count("cp.async.ca") + ptx.count("cp.async.bulk"),
                seconds=seconds)


def jobs(dtypes=DTYPES, shape="b16", kernels=None, scope="all", full="default"):
    """(kernel, config index, dtype, shape, full) to compile.

    scope "all": every config for every dtype, the pruned ones included (marked);
    "check" (make test, kept to a couple of minutes): every config each dtype keeps for
    fp32 and bf16, except that the evaluation variants of the Kinetics kernels (the
    training kernels minus the BatchNorm loads) and fp16 (bf16's element size, so its
    tiles and shared memory) get their default config only, fp16 without ptxas;
    "default": the default configs only.
    full "default": the default configs are compiled to a cubin (registers, spills, PTX
    counts), the others only to LLVM IR (shared memory); "all": every one to a cubin."""
    out = []
    for dtype in dtypes:
        for name, kernel, args in kernel_specs(dtype, shape):
            if kernels and name not in kernels:
                continue
            kept = kept_configs(kernel, args)
            for index in range(len(kernel.configs)):
                is_default = index == default_index(kernel)
                if scope == "default" or (scope == "check" and (dtype == "fp16" or name.endswith("_eval"))):
                    if not is_default:
                        continue
                elif scope == "check" and not kept[index]:
                    continue
                cubin = full == "all" or (is_default and not (scope == "check" and dtype == "fp16"))
                out.append((name, index, dtype, shape, cubin))
    return out


def problems(rows: list[dict], spill_bound: int = 0) -> list[str]:
    """What the make-test check fails on: a compile error, a kept config over the sm_90
    shared-memory limit, a default config spilling more than spill_bound bytes."""
    bad = []
    for r in rows:
        where = f"{r['kernel']} [{r['config']}] {r['dtype']}"
        if r.get("error"):
            bad.append(f"{where}: {r['error']}")
        elif r["kept"] and r["smem"] > SMEM_LIMIT:
            bad.append(f"{where}: {r['smem']} B of shared memory > {SMEM_LIMIT} B (fails at launch)")
        elif r["default"] and r["spill"] > spill_bound:
            bad.append(f"{where}: default config spills {r['spill']} B > {spill_bound} B")
    return bad


def _init_worker(cache_dir):
    os.environ["TRITON_CACHE_DIR"] = cache_dir
    os.environ["TRITON_INTERPRET"] = "0"


def run_all(job_list, workers: int) -> list[dict]:
    # A fresh cache: a cached kernel would come back without its ptxas log.
    with tempfile.TemporaryDirectory(prefix="ila-compile-") as cache:
        _init_worker(cache)
        if workers <= 1:
            return [_compile(*j) for j in job_list]
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(cache,)) as pool:
            rows = []
            for row in pool.map(_compile, *zip(*job_list)):
                print(json.dumps(row), file=sys.stderr, flush=True)  # progress, and partial results
                rows.append(row)
            return rows


def format_table(rows: list[dict]) -> str:
    head = (f"{'kernel':17s} {'config':34s} {'dtype':5s} {'smem B':>7s} {'regs':>4s} {'spill B':>7s} "
            f"{'wgmma':>5s} {'mma':>4s} {'v4 ld/st':>8s} {'cp.async':>8s} {'s':>5s}  note")
    lines = [head, "-" * len(head)]
    for r in rows:
        notes = []
        if r["default"]:
            notes.append("default")
        if r.get("error"):
            notes.append("COMPILE ERROR " + r["error"])
        if r["smem"] > SMEM_LIMIT:
            notes.append("OVER SMEM LIMIT")
        if not r["kept"]:
            notes.append("pruned for this dtype")

        def num(key, width):
            return f"{r[key]:{width}d}" if r[key] >= 0 else " " * (width - 1) + "-"

        lines.append(f"{r['kernel']:17s} {r['config']:34s} {r['dtype']:5s} {r['smem']:7d} {num('regs', 4)} "
                     f"{num('spill', 7)} {num('wgmma', 5)} {num('mma', 4)} {num('v4', 8)} {num('cp_async', 8)} "
                     f"{r['seconds']:5.1f}  {', '.join(notes)}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    parser.add_argument("--shape", default="b16", choices=["b16", "l14"])
    parser.add_argument("--kernels", default="", help="comma list of kernel names (default: all)")
    parser.add_argument("--scope", choices=["all", "check", "default"], default="all",
                        help="which (config, dtype) pairs to compile (see jobs())")
    parser.add_argument("--full", choices=["default", "all"], default="default",
                        help="which configs to compile to a cubin (the others stop after LLVM IR)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 on a compile error, a kept config over the shared-memory limit or a "
                             "spilling default config")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    job_list = jobs(args.dtypes.split(","), args.shape, set(args.kernels.split(",")) if args.kernels else None,
                    args.scope, args.full)
    start = time.perf_counter()
    rows = run_all(job_list, args.jobs)
    import triton

    print(f"sm_90 compile report (Triton {triton.__version__} NVIDIA backend, offline; shape {args.shape}): "
          f"{len(rows)} compiles in {time.perf_counter() - start:.0f} s; shared-memory limit {SMEM_LIMIT} B; "
          "regs / spills / PTX counts for the compiles to cubin, '-' for shared-memory-only compiles")
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    bad = problems(rows)
    for line in bad:
        print("PROBLEM:", line)
    return 1 if (args.check and bad) else 0


if __name__ == "__main__":
    sys.exit(main())
