"""The model zoo: one table of the paper's results beside our configs, and measured costs.

Parameters and FLOPs are measured, not quoted: the model is built on the "meta" device (no
memory, no arithmetic) and one view is pushed through ``torch.utils.flop_counter``, which
counts 2 FLOPs per multiply-add. The paper (like fvcore) counts one per multiply-add, so
we print GMACs = FLOPs / 2 beside its figure. The class text features are cached, so the
text tower costs nothing per view.

Weights are not downloaded by ila-fast. ``weights_table`` says where each config's official ILA
checkpoint is published (the official repository's README, Francis-Rings/ILA), the command that
converts it, and which CLIP file (open_clip's name, OpenAI's file) a config trains from.
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
    official: str = ""          # Google Drive id of the released checkpoint (the official README's "ckpt" link)
    clip: str = ""              # open_clip model name of the CLIP tower it starts from (pretrained tag "openai")


ZOO = (
    ZooEntry("k400_b32_8f", 81.3, 95.0, 40, "1hbl3nndAcxENsif0QuEJ_8UxiTv9jSOh", "ViT-B-32"),
    ZooEntry("k400_b32_16f", 82.4, 95.8, None, "1GEO8m1qfDsOj-81YW5jc8ekAxPWMrtg3", "ViT-B-32"),
    ZooEntry("k400_b16_8f", 84.0, 96.6, None, "1lAUgzxBDHoueXDaG9X9WFlBPVBl5LNdk", "ViT-B-16"),
    ZooEntry("k400_b16_16f", 85.7, 97.2, 295, "1IYz8DzzgoNbU1aXyeHFl69t6pb0RNMsV", "ViT-B-16"),
    ZooEntry("k400_l14_8f", 88.0, 98.1, 673, "1IhalyRKqAbJ9efLAgAA4f7t9hwRMux0p", "ViT-L-14"),
    ZooEntry("k400_l14_336_16f", 88.9, 97.8, 3130, "132aB_FF-jPKP1z3kZArG_tOj32rVIFYc", "ViT-L-14-336"),
    ZooEntry("ssv2_b16_8f", 65.0, 89.2, None, "1Ei0fO-W8u4jBQO0qG6V7nlRjKUuozbLa", "ViT-B-16"),
    ZooEntry("ssv2_b16_16f", 66.8, 90.3, 438, "1NYXsYSOjRuuOIXiCTaTE2gFUCi-1qC_5", "ViT-B-16"),
    ZooEntry("ssv2_l14_8f", 67.8, 90.5, 907, "10xHxzyUH38bjkAAutlBvMkj0BxXaaobB", "ViT-L-14"),
    ZooEntry("ssv2_l14_336_16f", 70.6, 93.1, 3723, "1ZquukTAxosC2k1uquI9jnMsk4BA2N5w5", "ViT-L-14-336"),
)

# OpenAI's CLIP files, as open_clip's pretrained list names them (model name, tag "openai"): the
# TorchScript archives that model.clip_weights accepts as they are (an open_clip state dict too).
CLIP_FILES = {
    "ViT-B-32": "https://openaipublic.azureedge.net/clip/models/"
                "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    "ViT-B-16": "https://openaipublic.azureedge.net/clip/models/"
                "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    "ViT-L-14": "https://openaipublic.azureedge.net/clip/models/"
                "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    "ViT-L-14-336": "https://openaipublic.azureedge.net/clip/models/"
                    "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt",
}
LABEL_SET = {"k400": "kinetics400", "ssv2": "ssv2"}  # bundled class names, in the checkpoints' label order


def official_url(entry: ZooEntry) -> str:
    return f"https://drive.google.com/file/d/{entry.official}/view"


def convert_command(entry: ZooEntry) -> str:
    """The one command that turns the downloaded official file into ila-fast's model file."""
    dataset = entry.config.split("_", 1)[0]
    return (f"ila-fast convert {entry.config}_official.pth {entry.config}.pth --config {entry.config} "
            f"--labels {LABEL_SET[dataset]}")


def weights_table() -> list[dict]:
    """Per config: the official checkpoint's URL, the convert command, the CLIP file and its config line."""
    return [{"name": e.config, "official_url": official_url(e), "convert": convert_command(e),
             "clip": e.clip, "clip_file": CLIP_FILES[e.clip].rsplit("/", 1)[1], "clip_url": CLIP_FILES[e.clip],
             "config_line": f'model.clip_weights = "/path/to/{CLIP_FILES[e.clip].rsplit("/", 1)[1]}"'}
            for e in ZOO]


def format_weights(rows: list[dict]) -> str:
    lines = ["Official ILA checkpoints (links of the official README, github.com/Francis-Rings/ILA; download them "
             "yourself: ila-fast downloads nothing), and the command that converts each:"]
    for r in rows:
        lines += [f"  {r['name']:<18} {r['official_url']}", f"  {'':<18} {r['convert']}"]
    lines += ["", "CLIP weights to train from (open_clip model name with pretrained='openai', i.e. OpenAI's file); "
              "set the file in the config:"]
    seen = {}
    for r in rows:
        seen.setdefault(r["clip"], []).append(r["name"])
    for clip, names in seen.items():
        file = CLIP_FILES[clip]
        lines += [f"  {clip:<13} {file}", f"  {'':<13} model.clip_weights = \"/path/to/{file.rsplit('/', 1)[1]}\"   "
                  f"# {', '.join(names)}"]
    return "\n".join(lines)


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
    if getattr(args, "weights", False):
        print(format_weights(weights_table()))
        return 0
    print("ILA model zoo: parameters and FLOPs per view measured here (torch.utils.flop_counter at real")
    print("shapes; GMACs = FLOPs / 2, the paper's convention); accuracy is the paper's (4 clips x 3 crops).")
    print(format_table(zoo_table()))
    print()
    print(format_weights(weights_table()))
    return 0
