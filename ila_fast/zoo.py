"""The model zoo: one table of the paper's results beside our configs, and measured costs.

Parameters and FLOPs are measured, not quoted: the model is built on the "meta" device (no
memory, no arithmetic) and one view is pushed through ``torch.utils.flop_counter``, which
counts 2 FLOPs per multiply-add. The paper (like fvcore) counts one per multiply-add, so
we print GMACs = FLOPs / 2 beside its figure. The class text features are cached, so the
text tower costs nothing per view.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import torch

from ila_fast.config import Config, load_config


@dataclass(frozen=True)
class ZooEntry:
    config: str                 # configs/<config>.toml
    top1: float                 # paper, 4 clips x 3 crops
    top5: float
    paper_gflops: float | None  # per view, as the paper counts (multiply-adds)


ZOO = (
    ZooEntry("k400_b32_8f", 81.3, 95.0, 40),
    ZooEntry("k400_b32_16f", 82.4, 95.8, None),
    ZooEntry("k400_b16_8f", 84.0, 96.6, None),
    ZooEntry("k400_b16_16f", 85.7, 97.2, 295),
    ZooEntry("k400_l14_8f", 88.0, 98.1, 673),
    ZooEntry("k400_l14_336_16f", 88.9, 97.8, 3130),
    ZooEntry("ssv2_b16_8f", 65.0, 89.2, None),
    ZooEntry("ssv2_b16_16f", 66.8, 90.3, 438),
    ZooEntry("ssv2_l14_8f", 67.8, 90.5, 907),
    ZooEntry("ssv2_l14_336_16f", 70.6, 93.1, 3723),
)


def config_path(name: str):
    """Path of a bundled config (``tiny``, ``k400_b16_8f``, ...)."""
    path = resources.files("ila_fast.configs") / f"{name}.toml"
    if not path.is_file():
        known = sorted(p.name[:-5] for p in resources.files("ila_fast.configs").iterdir() if p.name.endswith(".toml"))
        raise FileNotFoundError(f"no bundled config {name!r}; known: {', '.join(known)}")
    return path


def load_zoo_config(name: str) -> Config:
    return load_config(config_path(name))


def measure(cfg) -> dict:
    """Parameters (total, trainable) and FLOPs of one view, at the config's real shape, on "meta"."""
    from torch.utils.flop_counter import FlopCounterMode

    from ila_fast.model import ILAModel, count_parameters

    with torch.device("meta"):
        model = ILAModel(cfg).eval()
        video = torch.empty(1, cfg.frames, 3, cfg.input_size, cfg.input_size)
        if model.text_head:
            model.prepare_text_features()  # cached once per model, outside the per-view count
    total, trainable = count_parameters(model)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(video)
    return {"params": total, "trainable": trainable, "gflops": counter.get_total_flops() / 1e9}


def zoo_table() -> list[dict]:
    rows = []
    for entry in ZOO:
        cfg = load_zoo_config(entry.config).model
        m = measure(cfg)
        rows.append({"name": entry.config, "arch": cfg.arch, "frames": cfg.frames, "size": cfg.input_size,
                     "top1": entry.top1, "top5": entry.top5, "paper_gflops": entry.paper_gflops, **m})
    return rows


def format_table(rows: list[dict]) -> str:
    head = (f"{'config':<18} {'arch':<9} {'T x px':>8} {'params (M)':>11} {'trainable (M)':>14} "
            f"{'GFLOPs':>9} {'GMACs':>8} {'paper GMACs':>12} {'ratio':>6} {'paper top1/top5':>16}")
    lines = [head, "-" * len(head)]
    for r in rows:
        paper = r["paper_gflops"]
        gmacs = r["gflops"] / 2
        lines.append(
            f"{r['name']:<18} {r['arch']:<9} {str(r['frames']) + 'x' + str(r['size']):>8} "
            f"{r['params'] / 1e6:>11.2f} {r['trainable'] / 1e6:>14.2f} {r['gflops']:>9.1f} {gmacs:>8.1f} "
            f"{(f'{paper:.0f}' if paper else '-'):>12} {(f'{gmacs / paper:.2f}' if paper else '-'):>6} "
            f"{r['top1']:>9.1f} / {r['top5']:.1f}")
    return "\n".join(lines)


def run(args) -> int:
    print("ILA model zoo: parameters and FLOPs per view measured here (torch.utils.flop_counter at real")
    print("shapes; GMACs = FLOPs / 2, the paper's convention); accuracy is the paper's (4 clips x 3 crops).")
    print(format_table(zoo_table()))
    return 0
