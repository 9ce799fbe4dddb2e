"""``ila-fast show-alignment VIDEO --checkpoint CKPT --out FILE.png``: where ILA aligns each frame pair.

For every adjacent frame pair (one row each) the picture shows the two frames of the clip the
model sees (single centre view), each with the alignment point the point head predicted for
it and the mask region around that point (the inference-time mask of docs/specification.md#31-one-block,
rendered by ``ila_fast.kernels.reference.alignment_masks``), for the chosen block(s): by
default the last. The points are captured with forward hooks on the blocks' point heads, so
the model runs unchanged. Light at its top: no torch while parsing.
"""
from __future__ import annotations

from ila_fast.arguments import int_list

CELL_INCHES = 2.0    # one frame panel
TITLE_INCHES = 1.15  # the two title lines, the legend and the column titles above the panels
DPI = 100
# The mask must read on any video: tokens outside it are dimmed, and its outline is drawn in a
# light colour on a dark stroke, which stays visible on light and dark, plain and busy frames.
OUTLINE = "#00e5ff"
STROKE = "black"
DIM = 0.6            # opacity of the black veil over tokens of weight 0 (scaled by 1 - weight)


def add_arguments(parser) -> None:
    parser.add_argument("video", metavar="VIDEO", help="a video file")
    from ila_fast.predict import add_model_arguments

    add_model_arguments(parser)
    parser.add_argument("--out", required=True, metavar="FILE.png", help="the picture to write")
    parser.add_argument("--blocks", type=int_list, metavar="I,J", default=None,
                        help="vision blocks to show, 0-based (default: the last)")


def capture_points(model, video, blocks: list[int]):
    """Run ``model`` on ``video`` (1, T, 3, S, S); returns (logits, {block: points (T-1, 4)})."""
    import torch

    resblocks = model.visual.transformer.resblocks
    if not hasattr(resblocks[0], "message_ila"):
        from ila_fast.errors import UserError

        raise UserError("this model has no ILA branch (model.ila = false): there is no alignment to show")
    points, handles = {}, []
    for i in blocks:
        def hook(module, args, output, i=i):
            points[i] = output.detach()[0].float().cpu()
        handles.append(resblocks[i].message_ila.point_head.register_forward_hook(hook))
    try:
        with torch.no_grad():
            logits = model(video).logits
    finally:
        for h in handles:
            h.remove()
    return logits, points


def grid_to_pixels(coord, grid: int, patch: int):
    """Token-grid coordinate in [-1, 1] (token centres) -> pixel position in the input clip."""
    return ((coord + 1) / 2 * (grid - 1) + 0.5) * patch


def draw(frames, points: dict, masks: dict, grid: int, patch: int, out, title: str = "") -> None:
    """frames (T, S, S, 3) in [0, 1]; points {block: (T-1, 4)}; masks {block: (T-1, 2, G, G)}.

    Each token of a frame is veiled in black by (1 - its mask weight) x DIM, the tokens of weight
    >= 0.5 are outlined (solid) and those of weight > 0 (dashed): the mask exactly as the model
    applies it, token by token. The point is a white-on-black marker; a legend says what is what."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patheffects as effects
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    stroke = [effects.Stroke(linewidth=3.2, foreground=STROKE), effects.Normal()]

    blocks = sorted(points)
    pairs, size = frames.shape[0] - 1, frames.shape[1]
    cols = 2 * len(blocks)
    fig, axes = plt.subplots(pairs, cols, figsize=(CELL_INCHES * cols, CELL_INCHES * pairs + TITLE_INCHES),
                             squeeze=False)
    for p in range(pairs):
        for j, b in enumerate(blocks):
            for side in (0, 1):  # 0: the pair's first (pre) frame, 1: its second (cur) frame
                ax = axes[p, 2 * j + side]
                ax.imshow(frames[p + side], extent=(0, size, size, 0), interpolation="nearest")
                weight = np.clip(np.kron(masks[b][p, side], np.ones((patch, patch))), 0, 1)  # per pixel
                veil = np.zeros(weight.shape + (4,))
                veil[..., 3] = DIM * (1 - weight)
                ax.imshow(veil, extent=(0, weight.shape[1], weight.shape[0], 0), interpolation="nearest")
                centres = np.arange(weight.shape[0]) + 0.5
                # the support's outline only where it differs from the >= 0.5 one (a coarse grid: often not)
                support_differs = bool(((weight > 1e-3) != (weight >= 0.5)).any())
                for level, style in ((0.5, "solid"), (1e-3, "dashed")):
                    if weight.min() < level <= weight.max() and (style == "solid" or support_differs):
                        lines = ax.contour(centres, centres, weight, levels=[level], colors=OUTLINE,
                                           linewidths=1.6, linestyles=style)
                        lines.set_path_effects(stroke)
                x, y = points[b][p, 2 * side], points[b][p, 2 * side + 1]
                ax.plot(grid_to_pixels(float(x), grid, patch), grid_to_pixels(float(y), grid, patch), marker="P",
                        markerfacecolor="white", markeredgecolor="black", markersize=12, markeredgewidth=1.5,
                        linestyle="none")
                ax.set_xlim(0, size)
                ax.set_ylim(size, 0)
                ax.set_xticks([])
                ax.set_yticks([])
                if p == 0:
                    ax.set_title(f"block {b}: {'pre' if side == 0 else 'cur'}", fontsize=8)
                if j == 0 and side == 0:
                    ax.set_ylabel(f"frames {p} -> {p + 1}", fontsize=8)
    height = CELL_INCHES * pairs + TITLE_INCHES
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.05 / height, va="top")
    legend = [Line2D([], [], marker="P", markerfacecolor="white", markeredgecolor="black", markersize=10,
                     linestyle="none", label="alignment point"),
              Line2D([], [], color=OUTLINE, linewidth=1.6, path_effects=stroke, label="mask weight >= 0.5"),
              Line2D([], [], color=OUTLINE, linewidth=1.6, linestyle="dashed", path_effects=stroke,
                     label="weight > 0, where wider"),
              Patch(facecolor="black", alpha=DIM, label="weight 0 (veiled)")]
    fig.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, 1 - 0.42 / height), ncol=2, fontsize=7,
               frameon=False, handlelength=2.2, columnspacing=1.2)
    top = 1 - TITLE_INCHES / height
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.01, top=top, wspace=0.05, hspace=0.08)
    fig.savefig(out, dpi=DPI)  # no tight bbox: the size is exactly figsize x DPI
    plt.close(fig)


def show_alignment(model, video, out, blocks: list[int] | None = None, class_names=None, device="cpu") -> dict:
    """Write the picture for one (1, T, 3, S, S) normalised clip; returns what was drawn."""
    import numpy as np
    import torch

    from ila_fast.config import PIXEL_MEAN, PIXEL_STD
    from ila_fast.errors import UserError
    from ila_fast.kernels.reference import alignment_masks

    cfg = model.cfg
    n = cfg.layers
    blocks = [n - 1] if not blocks else blocks
    for b in blocks:
        if not -n <= b < n:
            raise UserError(f"--blocks: block {b} does not exist (the model has {n} blocks, 0..{n - 1})")
    blocks = sorted({b % n for b in blocks})
    model.eval()
    logits, points = capture_points(model, video.to(device), blocks)
    masks = {b: alignment_masks(points[b][None], cfg.grid_size, 0.0, training=False)[0].numpy() for b in blocks}
    mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    frames = ((video[0].float().cpu() * std + mean) / 255).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    probs = logits.float().softmax(-1)[0].cpu()
    top = int(probs.argmax())
    name = class_names[top] if class_names else str(top)
    draw(frames, {b: points[b].numpy() for b in blocks}, masks, cfg.grid_size, cfg.patch_size, out,
         title=f"predicted: {name} ({float(probs[top]):.2f})\nILA's alignment of each frame pair (inference masks)")
    return {"blocks": blocks, "points": {b: np.round(points[b].numpy(), 4).tolist() for b in blocks},
            "top1": top, "top1_name": name}


def run(args) -> int:
    import tempfile
    from pathlib import Path

    from ila_fast.data import TooManyBadVideos
    from ila_fast.errors import UserError
    from ila_fast.predict import load_for_inference, videos_loader

    cfg, model, names, description, device = load_for_inference(args)
    with tempfile.TemporaryDirectory(prefix="ila-fast-align-") as work:
        loader = videos_loader(cfg, [args.video], work, "val", device)
        if loader.bad_log.bad:
            event = next(iter(loader.bad_log.bad.values()))
            raise UserError(f"{args.video}: cannot read ({event.reason}: {event.detail})")
        try:
            batch = next(iter(loader))
        except TooManyBadVideos:  # it failed while decoding: no other video can stand in
            event = next(iter(loader.bad_log.bad.values()))
            raise UserError(f"{args.video}: cannot read ({event.reason}: {event.detail})") from None
        if batch.specs[0].skipped:
            _, reason, detail = batch.specs[0].skipped[0]
            raise UserError(f"{args.video}: cannot read ({reason}: {detail})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    drawn = show_alignment(model, batch.video, out, args.blocks, names, device)
    print(f"{description}: predicted {drawn['top1_name']}; alignment of blocks {drawn['blocks']} -> {out}")
    return 0
