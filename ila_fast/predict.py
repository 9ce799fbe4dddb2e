"""``ila-fast predict VIDEO... --checkpoint CKPT``: top-5 classes of each video, multi-view.

    ila-fast predict a.mp4 b.webm --checkpoint model.pth --labels labels.csv [--json]

Each video is probed and decoded by the CPU data backend (any container / codec FFmpeg reads)
and scored as in ``ila-fast eval``: softmax averaged over ``data.test_clips`` x
``data.test_crops`` views. A video that cannot be read gets one line saying why (and nothing
else: the data pipeline's log lines about the temporary list are kept quiet); the others still
run. Exit code 0: all scored; 1: some could not be read; 2: none could. Light at its top: no
torch while parsing.
"""
from __future__ import annotations

from ila_fast.arguments import add_set_argument, int_range


def add_arguments(parser) -> None:
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files")
    add_model_arguments(parser)
    parser.add_argument("--clips", type=int_range(1), metavar="N", help="temporal clips (default data.test_clips)")
    parser.add_argument("--crops", type=int, choices=(1, 3), help="spatial crops (default data.test_crops)")
    parser.add_argument("--top", type=int_range(1), default=5, metavar="K", help="classes to show per video")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")


def add_model_arguments(parser) -> None:
    """--checkpoint / --config / --labels / --device / --set, shared with show-alignment."""
    parser.add_argument("--checkpoint", required=True, metavar="CKPT",
                        help="an ila-fast model file (export / convert), a training checkpoint folder or an official "
                             "ILA checkpoint")
    parser.add_argument("--config", metavar="NAME|TOML",
                        help="run config: data settings and, for an official file, the model (default: the "
                             "checkpoint's own model and default data settings)")
    parser.add_argument("--labels", metavar="CSV", help="label CSV (id,name); default: the config's data.labels")
    parser.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:1, ...")
    add_set_argument(parser)


def load_for_inference(args):
    """(cfg, model on its device, class names) from the shared model arguments."""
    import dataclasses

    import torch

    from ila_fast.config import Config, load_config, parse_overrides
    from ila_fast.data import read_labels
    from ila_fast.errors import UserError
    from ila_fast.train.eval_command import load_model, require_names

    overrides = parse_overrides(args.overrides)
    cfg = load_config(args.config, overrides) if args.config else None
    if cfg is None:
        if overrides:
            raise UserError("--set needs --config (the settings it changes live in a config)")
        cfg = Config()
    labels = args.labels or cfg.model.class_names or cfg.data.labels
    names = read_labels(labels) if labels else None
    model_cfg = cfg.model if args.config else None
    model, description = load_model(args.checkpoint, model_cfg, names, labels)
    require_names(model, description)
    names = model.class_names
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    cfg = dataclasses.replace(cfg, model=model.cfg)
    return cfg, model.to(device).eval(), names, description, device


def videos_loader(cfg, paths, workdir, mode: str, device, clips=None, crops=None):
    """A loader over arbitrary video files: a temporary list, every video probed and decoded as in eval."""
    import dataclasses
    import os
    from pathlib import Path

    from ila_fast.data import build_loader

    workdir = Path(workdir)
    # The list format takes paths relative to the data root: root "/" and absolute paths without the slash.
    lines = [f"{os.path.abspath(p).lstrip(os.sep)} 0" for p in paths]
    (workdir / "videos.txt").write_text("\n".join(lines) + "\n")
    views = (clips or cfg.data.test_clips) * (crops or cfg.data.test_crops) if mode == "test" else 1
    data = dataclasses.replace(cfg.data, root=os.sep, val_list=str(workdir / "videos.txt"), backend="cpu",
                               num_workers=min(2, len(paths)), batch_size=max(1, min(views, 16)),
                               max_bad_fraction=1.0, missing="skip", report_dir=str(workdir),
                               index_dir=str(workdir), test_clips=clips or cfg.data.test_clips,
                               test_crops=crops or cfg.data.test_crops)
    m = cfg.model
    return build_loader(data, "val", m.frames, m.input_size, m.num_classes, device=device, mode=mode)


def score_videos(model, cfg, args, names, device) -> tuple[dict, dict, int]:
    """({video index: top-5}, {video index: (reason, detail)} of the unreadable ones, views per video)."""
    import tempfile

    from ila_fast.data import TooManyBadVideos
    from ila_fast.train.evaluate import evaluate

    with tempfile.TemporaryDirectory(prefix="ila-fast-predict-") as work:
        loader = videos_loader(cfg, args.videos, work, "test", device, args.clips, args.crops)
        bad = {v: (e.reason, e.detail) for v, e in loader.bad_log.bad.items()}
        scored, views = {}, 0
        if len(bad) < len(args.videos):
            try:
                result = evaluate(model, loader, model.cfg.num_classes, class_names=names)
                scored = {p["index"]: p["top5"] for p in result.per_video}
                bad = {b["index"]: (b["reason"], b["detail"]) for b in result.bad}
                views = result.views
            except TooManyBadVideos:  # every remaining video failed while decoding
                bad.update({v: (e.reason, e.detail) for v, e in loader.bad_log.bad.items()})
    return scored, bad, views


def run(args) -> int:
    import json
    import logging
    import sys

    from ila_fast.data.bad_videos import REASONS

    cfg, model, names, description, device = load_for_inference(args)
    quiet = logging.getLogger("ila_fast")  # its warnings name the temporary list: each video gets its own line
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        scored, bad, views = score_videos(model, cfg, args, names, device)
    finally:
        quiet.setLevel(level)
    out = []
    for i, path in enumerate(args.videos):
        if i in scored:
            top = [{"class": c, "name": names[c] if names else str(c), "score": s} for c, s in scored[i][:args.top]]
            out.append({"video": path, "ok": True, "views": views, "top": top})
        else:
            reason, detail = bad.get(i, ("decode_error", "not scored"))
            out.append({"video": path, "ok": False, "reason": reason,
                        "error": detail or REASONS.get(reason, reason)})
    failed = sum(not o["ok"] for o in out)
    if args.json:
        print(json.dumps({"model": description, "videos": out, "failed": failed}, indent=1))
    else:
        for o in out:
            if o["ok"]:
                print(f"{o['video']}  ({o['views']} views)")
                for t in o["top"]:
                    print(f"  {t['score']:7.3f}  {t['name']}")
            else:
                print(f"{o['video']}: cannot read ({o['reason']}: {o['error']})", file=sys.stderr)
        if failed and failed < len(out):
            print(f"predict: {failed} of {len(out)} videos could not be read", file=sys.stderr)
    return 0 if not failed else 2 if failed == len(out) else 1
