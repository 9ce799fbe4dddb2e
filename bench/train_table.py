"""``ila-fast bench train``: training-step throughput, peak memory and MFU, variants side by side.

Variants (one process, the same model config, the same random clips):

    official-like   reference ops, eager, fp16 autocast + GradScaler, DDP, no FSDP: the stand-in for
                    the official code's recipe (its model is ours: same math, float64-checked)
    eager           FSDP2 with bf16 parameters (fp32 on a CPU: inductor's CPU bf16 code generation
                    fails to compile in torch 2.13), reference ops, eager
    compiled        + torch.compile per block (regional)
    compiled+fused  + the fused Triton ops (GPU only: under the interpreter they are not timed)
    +ac             + activation checkpointing per block

A step is forward + backward + AdamW on ``--batch`` clips (data loading is ``bench data``'s job).
Ratios to official-like are the headline; absolute times only mean something on a GPU, which the
table names. MFU = measured model FLOPs per step (``torch.utils.flop_counter`` on the reference
model) / step time / the device's measured dense bf16 GEMM rate (measured in the same run).
Light at its top: the CLI lists it without torch.
"""
from __future__ import annotations

from ila_fast.bench.rows import SavedRows

VARIANTS = ("official-like", "eager", "compiled", "compiled+fused", "+ac")
DEFAULT_CONFIGS = {"cpu": ["tiny"], "cuda": ["k400_b16_8f", "k400_l14_8f"]}


def add_arguments(parser) -> None:
    from ila_fast.arguments import int_range

    parser.add_argument("--configs", nargs="+", metavar="NAME",
                        help="configs to measure (default: tiny on a CPU; k400_b16_8f and k400_l14_8f on a GPU)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS), metavar="V",
                        help=f"variants, from {', '.join(VARIANTS)}")
    parser.add_argument("--batch", type=int_range(1), help="clips per step (default: the config's data.batch_size)")
    parser.add_argument("--steps", type=int_range(1), default=5, help="timed steps per variant")
    parser.add_argument("--warmup", type=int_range(0), default=2, help="untimed steps first (compiles, autotunes)")
    parser.add_argument("--save", metavar="JSON", help="also write the results (with device, versions, command), "
                        "rewritten after every row")
    parser.add_argument("--profile", metavar="JSON",
                        help="then profile one step of the last config's last variant with torch.profiler "
                             "(top 25 ops by device time; CPU time on a CPU) and write them here")


def run(args) -> int:
    import sys
    import time

    import torch

    from ila_fast.train import distributed

    device = "cuda" if torch.cuda.is_available() else "cpu"
    configs = args.configs or DEFAULT_CONFIGS[device]
    meta = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
            "command": " ".join(["ila-fast", *sys.argv[1:]])}
    try:
        import triton

        meta["triton"] = triton.__version__
    except ImportError:
        pass
    rows = []
    saved = SavedRows(args.save, meta=meta, rows=rows)  # rewritten after every row
    distributed.setup_distributed(None)
    try:
        gemm = meta["gemm_bf16_tflops"] = measure_gemm_tflops() if device == "cuda" else None
        saved.write()
        for name in configs:
            base = None
            for variant in args.variants:
                print(f"bench train: {name} {variant} ...", file=sys.stderr, flush=True)
                row = measure(name, variant, args.batch, args.steps, args.warmup, gemm)
                rows.append(row)
                if variant == "official-like" and row.get("clips_per_s"):
                    base = row["clips_per_s"]
                if base and row.get("clips_per_s"):
                    row["vs_official"] = row["clips_per_s"] / base
                saved.write()
        print(format_table(rows, device, gemm))
        saved.finish()
        if getattr(args, "profile", None):
            profile_step(configs[-1], args.variants[-1], args.batch, args.warmup, args.profile, meta)
    finally:
        distributed.teardown_distributed()
    return 0


def measure_gemm_tflops(n: int = 8192, reps: int = 20) -> float:
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * n ** 3 * reps / (start.elapsed_time(end) / 1e3) / 1e12


def _build(name: str, variant: str, device):
    import dataclasses

    import torch

    from ila_fast.config import load_config
    from ila_fast.model import build_model
    from ila_fast.train.parallel import parallelize
    from ila_fast.train.recipe import param_groups

    cfg = load_config(name)
    fused = variant in ("compiled+fused", "+ac")
    model_cfg = dataclasses.replace(cfg.model, kernels="triton" if fused else "reference")
    torch.manual_seed(0)
    model = build_model(model_cfg).to(device).train()
    if variant == "official-like":
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        groups = param_groups(model.module, cfg.train)
        return cfg, model, torch.optim.AdamW(groups, betas=tuple(cfg.train.betas), eps=cfg.train.eps, foreach=True)
    compile = variant != "eager"
    precision = "bf16" if device.type == "cuda" else "fp32"
    model = parallelize(model, precision, compile, variant == "+ac", "fsdp", device)
    groups = param_groups(model, cfg.train)
    return cfg, model, torch.optim.AdamW(groups, betas=tuple(cfg.train.betas), eps=cfg.train.eps, fused=True)


def _step_function(cfg, model, optimizer, variant: str, batch: int | None, device):
    """(clips per step, one training step on fixed random clips) for a built model."""
    import torch

    from ila_fast.data import soft_target_cross_entropy

    b = batch or cfg.data.batch_size
    m = cfg.model
    generator = torch.Generator(device="cpu").manual_seed(0)
    video = torch.randn(b, m.frames, 3, m.input_size, m.input_size, generator=generator).to(device)
    target = torch.softmax(torch.randn(b, m.num_classes, generator=generator), -1).to(device)
    scaler = torch.amp.GradScaler(device.type) if variant == "official-like" else None

    def step():
        if scaler is not None:
            with torch.autocast(device.type, dtype=torch.float16):
                out = model(video)
                loss = soft_target_cross_entropy(out.logits.float(), target) + out.aux_loss.float()
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            scaler.step(optimizer)
            scaler.update()
        else:
            out = model(video)
            loss = soft_target_cross_entropy(out.logits.float(), target) + out.aux_loss.float()
            loss.backward()
            params = [p for p in model.parameters() if p.requires_grad]
            norm = torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)
            norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
            torch.nn.utils.clip_grads_with_norm_(params, 1.0, norm, foreach=True)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return b, step


def measure(name: str, variant: str, batch: int | None, steps: int, warmup: int, gemm: float | None) -> dict:
    import gc
    import time

    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    row = {"config": name, "variant": variant,
           "precision": "fp16 autocast" if variant == "official-like" else
           ("bf16" if device.type == "cuda" else "fp32")}
    if variant in ("compiled+fused", "+ac") and device.type == "cpu":
        row["note"] = "fused ops are interpreted on a CPU: not timed"
        return row
    cfg, model, optimizer = _build(name, variant, device)
    b, step = _step_function(cfg, model, optimizer, variant, batch, device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        tick = time.perf_counter()
        for _ in range(warmup):
            step()
        sync()
        row["warmup_s"] = time.perf_counter() - tick
        tick = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        elapsed = time.perf_counter() - tick
        row.update(batch=b, step_s=elapsed / steps, clips_per_s=b * steps / elapsed)
        if device.type == "cuda":
            row["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
        if gemm:
            row["mfu"] = step_flops(name, b) / row["step_s"] / (gemm * 1e12)
    except torch.OutOfMemoryError:
        row["note"] = f"out of memory at batch {b}"
    finally:
        del model, optimizer
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def profile_step(name: str, variant: str, batch: int | None, warmup: int, path: str, meta: dict,
                 top: int = 25) -> list[dict]:
    """One training step under torch.profiler after ``warmup`` untimed ones (compiles, autotunes):
    the ``top`` ops by total device time (CPU time on a CPU), saved to ``path`` and printed."""
    import gc
    import sys

    import torch
    from torch.profiler import ProfilerActivity, profile

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if variant in ("compiled+fused", "+ac") and device.type == "cpu":
        variant = "compiled"  # the fused ops are interpreted on a CPU: profile what runs compiled
    print(f"bench train: profiling one step of {name} {variant} ...", file=sys.stderr, flush=True)
    cfg, model, optimizer = _build(name, variant, device)
    b, step = _step_function(cfg, model, optimizer, variant, batch, device)
    for _ in range(max(1, warmup)):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    if device.type == "cuda":
        torch.cuda.synchronize()
    with profile(activities=activities) as prof:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    events = prof.key_averages()

    def device_us(event, self_only=False):  # torch >= 2.4 names it device time; older: cuda time
        for key in ((("self_device_time_total", "self_cuda_time_total") if self_only else
                     ("device_time_total", "cuda_time_total"))):
            if hasattr(event, key):
                return getattr(event, key)
        return 0.0

    by = (lambda e: device_us(e)) if device.type == "cuda" else (lambda e: e.cpu_time_total)
    total = sum(device_us(e, True) for e in events) if device.type == "cuda" else \
        sum(e.self_cpu_time_total for e in events)
    rows = [{"op": e.key, "calls": e.count, "device_ms": device_us(e) / 1e3,
             "self_device_ms": device_us(e, True) / 1e3, "cpu_ms": e.cpu_time_total / 1e3,
             "self_cpu_ms": e.self_cpu_time_total / 1e3}
            for e in sorted(events, key=by, reverse=True)[:top]]
    key = "device_ms" if device.type == "cuda" else "cpu_ms"
    SavedRows(path, meta=dict(meta, config=name, variant=variant, batch=b, sorted_by=key,
                              self_total_ms=total / 1e3), rows=rows).finish()
    print(f"Profile of one step: {name} {variant}, batch {b}, top {top} ops by "
          f"{'device' if device.type == 'cuda' else 'CPU'} time (ms; self: the op alone)")
    for r in rows:
        print(f"  {r['op'][:60]:60s} {r['calls']:6d} {r[key]:10.2f} "
              f"{r['self_' + key]:10.2f}")
    del model, optimizer
    gc.collect()
    return rows


_FLOPS: dict = {}


def step_flops(name: str, batch: int) -> float:
    """FLOPs of one training step (forward + backward) of the reference model, counted on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ila_fast.config import load_config
    from ila_fast.data import soft_target_cross_entropy
    from ila_fast.model import ILAModel

    key = (name, batch)
    if key not in _FLOPS:
        cfg = load_config(name)
        import dataclasses

        with torch.device("meta"):
            model = ILAModel(dataclasses.replace(cfg.model, kernels="reference")).train()
            m = cfg.model
            video = torch.randn(batch, m.frames, 3, m.input_size, m.input_size)
            target = torch.randn(batch, m.num_classes)
            with FlopCounterMode(display=False) as counter:
                out = model(video)
                (soft_target_cross_entropy(out.logits, target) + out.aux_loss).backward()
        _FLOPS[key] = float(counter.get_total_flops())
    return _FLOPS[key]


def format_table(rows: list[dict], device: str, gemm: float | None) -> str:
    where = (f"GPU, measured bf16 GEMM {gemm:.0f} TFLOP/s" if gemm else
             "CPU: ratios only, no MFU; fp16 is slow on a CPU, so the official-like ratio is not a GPU's")
    lines = [f"bench train ({where})",
             f"{'config':<18} {'variant':<15} {'precision':<13} {'batch':>5} {'clips/s':>9} {'vs official':>11} {'step ms':>9} "
             f"{'peak GiB':>9} {'MFU':>6} {'warm-up s':>9}"]
    for r in rows:
        if "clips_per_s" not in r:
            lines.append(f"{r['config']:<18} {r['variant']:<15} {r.get('note', '')}")
            continue
        lines.append(f"{r['config']:<18} {r['variant']:<15} {r['precision']:<13} {r['batch']:>5} {r['clips_per_s']:>9.2f} "
                     f"{_fmt(r.get('vs_official'), '10.2f')}x {1e3 * r['step_s']:>9.1f} "
                     f"{_fmt(r.get('peak_mem_gib'), '9.2f')} {_fmt(r.get('mfu'), '6.1%')} {r['warmup_s']:>9.1f}")
    return "\n".join(lines)


def _fmt(value, spec: str) -> str:
    width = int(spec.split(".")[0])
    return f"{value:{spec}}" if value is not None else f"{'-':>{width}}"
