"""``ila-fast demo``: the zoo table, then a small ILA model's forward + backward on a synthetic clip.

The clip is a textured square moving right across a noisy background, so the ILA branch
sees real motion. Runs on a CPU in seconds, with no downloads.
"""
from __future__ import annotations

import time

import torch

from ila_fast import zoo
from ila_fast.config import PIXEL_MEAN, PIXEL_STD


def moving_square_clip(frames: int, size: int, seed: int = 0) -> torch.Tensor:
    """(1, T, 3, H, W) normalised clip of a square moving right by size/(2T) pixels a frame."""
    g = torch.Generator().manual_seed(seed)
    background = torch.rand(3, size, size, generator=g) * 255
    texture = torch.rand(3, size // 4, size // 4, generator=g) * 255
    clip = background.repeat(frames, 1, 1, 1)
    side, step = size // 4, max(1, size // (2 * frames))
    top = size // 2 - side // 2
    for t in range(frames):
        left = t * step
        clip[t, :, top:top + side, left:left + side] = texture
    mean, std = torch.tensor(PIXEL_MEAN).view(3, 1, 1), torch.tensor(PIXEL_STD).view(3, 1, 1)
    return ((clip - mean) / std)[None]


def add_arguments(parser) -> None:
    parser.add_argument("--config", default=None, help="run config (TOML); default: the bundled tiny config")
    parser.add_argument("--no-zoo", action="store_true", help="skip the zoo table")


def run(args) -> int:
    from ila_fast.config import load_config
    from ila_fast.model import build_model, count_parameters

    if not args.no_zoo:
        zoo.run(args)
        print()
    cfg = load_config(args.config or zoo.config_path("tiny")).model
    torch.manual_seed(0)
    model = build_model(cfg).train()
    total, trainable = count_parameters(model)
    video = moving_square_clip(cfg.frames, cfg.input_size).repeat(2, 1, 1, 1, 1)
    labels = torch.tensor([0, 1])
    start = time.perf_counter()
    out = model(video)
    loss = torch.nn.functional.cross_entropy(out.logits, labels) + out.aux_loss
    loss.backward()
    seconds = time.perf_counter() - start
    grads = [p.grad.norm().item() for p in model.parameters() if p.requires_grad and p.grad is not None]
    print(f"demo: {cfg.arch} ILA, {cfg.frames} frames at {cfg.input_size}px, {cfg.dataset} head, "
          f"kernels={cfg.kernels}: {total:,} parameters ({trainable:,} trainable)")
    print(f"  forward + backward of 2 synthetic clips {tuple(video.shape)}: logits {tuple(out.logits.shape)}, "
          f"classification loss {loss.item() - out.aux_loss.item():.4f}, alignment loss {out.aux_loss.item():.4f}, "
          f"{len(grads)} trainable tensors got gradients, {seconds:.2f} s on {video.device}")
    return 0
