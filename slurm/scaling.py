"""Communication and step time of FSDP2 / HSDP training, on paper: ``python -m ila_fast.slurm.scaling``.

Counts come from the model code itself, built on the meta device (no weights, no memory):
the FSDP2 units as ``ila_fast.train.parallel.parallelize`` makes them (one per image-tower block,
one per text-tower block, the root for the rest), the bytes each unit all-gathers (bf16) and
reduce-scatters (fp32 gradients, trainable parameters only: frozen CLIP weights get no gradient),
and the FLOPs of one training clip (torch's FLOP counter over forward + backward). Step time and
weak-scaling efficiency then follow from the stated hardware assumptions (``Hardware``); the
result is printed as the tables in docs/scaling.md.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass


@dataclass
class Hardware:
    """Assumed per-GPU figures (H100 SXM node: 8 GPUs, NVLink 4, one 400 Gb/s NDR NIC per GPU)."""
    peak_tflops: float = 790.0     # dense bf16 GEMM measured on the H100 (environment.md)
    mfu: float = 0.40              # assumed model-FLOP utilisation of a compiled FSDP2 ViT step
    nvlink_gbs: float = 360.0      # NCCL bus bandwidth inside a node (all-gather / reduce-scatter)
    ib_gbs: float = 40.0           # NCCL bus bandwidth across nodes per GPU (400 Gb/s = 50 GB/s raw)
    hop_us: float = 8.0            # per-ring-step latency across nodes (ring collectives: W - 1 steps)
    gpus_per_node: int = 8


@dataclass
class Units:
    name: str
    gathered: list[int]            # elements all-gathered per forward, per FSDP unit that runs
    backward_gathered: list[int]   # again in backward (reshard_after_forward; the root keeps its own)
    trainable: int                 # elements with gradients (reduce-scattered in fp32)
    total: int
    idle: int                      # elements in units that never run in training (text tower blocks)
    train_gflops: float            # one clip, forward + backward
    forward_gflops: float


def count(config: str) -> Units:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ila_fast.config import load_config, resolve_config_path
    from ila_fast.model import build_model

    cfg = load_config(resolve_config_path(config))
    with torch.device("meta"):
        model = build_model(cfg.model, class_names=[f"class {i}" for i in range(cfg.model.num_classes)])
    model.train()
    units, seen = [], set()
    for block in model.visual.transformer.resblocks:
        params = list(block.parameters())
        seen.update(id(p) for p in params)
        units.append(params)
    idle = 0
    text = getattr(model, "transformer", None)
    if text is not None and hasattr(text, "resblocks"):
        for p in text.resblocks.parameters():
            seen.add(id(p))
            idle += p.numel()
    root = [p for p in model.parameters() if id(p) not in seen]
    blocks = [sum(p.numel() for p in ps) for ps in units]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    video = torch.randn(1, cfg.model.frames, 3, cfg.model.input_size, cfg.model.input_size, device="meta")
    with torch.no_grad():
        model(video)   # the class text features are computed once, at the first forward, then cached
    with FlopCounterMode(display=False) as counter:
        out = model(video)
        forward = counter.get_total_flops()
        (out.logits.sum() + (out.aux_loss if out.aux_loss is not None else 0)).backward()
    flops = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    # torch's counter charges grouped / depthwise convolution backward as if dense; bound it by 2x forward
    conv_bwd = flops.get("aten.convolution_backward", 0)
    train = counter.get_total_flops() - conv_bwd + min(conv_bwd, 2 * flops.get("aten.convolution", 0))
    return Units(cfg.name, blocks + [sum(p.numel() for p in root)], blocks, trainable,
                 sum(p.numel() for p in model.parameters()), idle, train / 1e9, forward / 1e9)


def step_times(u: Units, nodes: int, clips_per_gpu: int, hw: Hardware, hsdp: bool,
               frozen_replicated: bool = False) -> dict:
    """Seconds per micro-step for one layout: compute, communication, bytes per GPU.

    ``frozen_replicated``: the frozen CLIP weights kept whole on every GPU in bf16 (FSDP2's
    ``ignored_params``) instead of sharded, so only trainable weights are gathered."""
    g = hw.gpus_per_node
    world = nodes * g
    compute = clips_per_gpu * u.train_gflops * 1e9 / (hw.mfu * hw.peak_tflops * 1e12)
    gathered = 2 * (sum(u.gathered) + sum(u.backward_gathered))       # bf16 bytes
    if frozen_replicated:
        gathered = 2 * 2 * u.trainable
    reduced = 4 * u.trainable                                          # fp32 gradient bytes
    collectives = len(u.gathered) + len(u.backward_gathered) + len(u.gathered)  # AG fwd, AG bwd, RS
    if hsdp or nodes == 1:
        shard = g if hsdp else world
        inside = (gathered + reduced) * (shard - 1) / shard / (hw.nvlink_gbs * 1e9)
        across = 0.0
        if hsdp and nodes > 1:   # all-reduce of each GPU's 1/g gradient shard across the node replicas
            across = 2 * (nodes - 1) / nodes * reduced / g / (hw.ib_gbs * 1e9) + 2 * (nodes - 1) * hw.hop_us * 1e-6
        comm = inside + across
        ib_bytes = 2 * (nodes - 1) / nodes * reduced / g if nodes > 1 else 0.0
    else:
        comm = (gathered + reduced) * (world - 1) / world / (hw.ib_gbs * 1e9) + collectives * (world - 1) * hw.hop_us * 1e-6
        ib_bytes = (gathered + reduced) * (world - 1) / world
    return {"compute": compute, "comm": comm, "overlapped": max(compute, comm), "serial": compute + comm,
            "gathered": gathered, "reduced": reduced, "ib_bytes": ib_bytes}


def report(configs: list[str], clips_per_gpu: int, hw: Hardware) -> str:
    lines = []
    for config in configs:
        u = count(config)
        lines += [f"### {u.name}", "",
                  (f"- parameters {u.total / 1e6:.2f} M, trainable {u.trainable / 1e6:.2f} M; text-tower blocks "
                   f"{u.idle / 1e6:.2f} M (sharded, never gathered: class text features are cached)"),
                  (f"- FSDP units gathered per step: {len(u.gathered)} (image blocks {u.gathered[0] / 1e6:.2f} M "
                   f"each, root {u.gathered[-1] / 1e6:.2f} M)"),
                  (f"- one training clip: {u.forward_gflops:.0f} GFLOPs forward, {u.train_gflops:.0f} GFLOPs "
                   f"forward + backward ({u.train_gflops / u.forward_gflops:.2f}x)"), ""]
        one = step_times(u, 1, clips_per_gpu, hw, hsdp=False)
        lines += [(f"Per GPU per step: all-gather {one['gathered'] / 1e9:.2f} GB (bf16, forward + backward), "
                   f"reduce-scatter {one['reduced'] / 1e9:.3f} GB (fp32 gradients of trainable weights), "
                   "times (W-1)/W on the wire."), "",
                  ("| nodes | GPUs | layout | compute s | comm s | step s (overlapped / serial) | "
                   "weak-scaling eff. (overlapped / serial) | inter-node GB per GPU |"),
                  "|---|---|---|---|---|---|---|---|"]
        layouts = {"FSDP": (False, False), "HSDP": (True, False), "FSDP, frozen replicated": (False, True)}
        for nodes in (1, 2, 8, 32, 64):
            for name, (hsdp, frozen) in layouts.items():
                if nodes == 1 and hsdp:
                    continue
                t = step_times(u, nodes, clips_per_gpu, hw, hsdp, frozen)
                b = step_times(u, 1, clips_per_gpu, hw, False, frozen)
                lines.append(f"| {nodes} | {nodes * hw.gpus_per_node} | {name} | "
                             f"{t['compute']:.3f} | {t['comm']:.3f} | {t['overlapped']:.3f} / {t['serial']:.3f} | "
                             f"{b['overlapped'] / t['overlapped']:.0%} / {b['serial'] / t['serial']:.0%} | "
                             f"{t['ib_bytes'] / 1e9:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", default=["k400_b16_8f", "k400_l14_8f"])
    parser.add_argument("--clips-per-gpu", type=int, default=8, help="data.batch_size")
    parser.add_argument("--mfu", type=float, default=Hardware.mfu)
    args = parser.parse_args()
    print(report(args.configs, args.clips_per_gpu, Hardware(mfu=args.mfu)))


if __name__ == "__main__":
    main()
