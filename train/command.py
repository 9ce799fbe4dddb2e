"""``ila-fast train``: train (or resume) a model. Light at its top: the CLI lists it without torch.

    ila-fast train --config k400_b16_8f --output runs/b16 [--set train.lr_mit=1e-4 ...]
    torchrun --nproc_per_node 8 -m ila_fast.cli train --config k400_b16_8f --output runs/b16

Started again with the same ``--output``, it resumes from the newest complete checkpoint there.
"""
from __future__ import annotations

from ila_fast.arguments import add_config_argument, add_set_argument, int_range


def add_arguments(parser) -> None:
    add_config_argument(parser)
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="run folder: checkpoints, config.toml, metrics.jsonl, tb/, curves.png, summary.json")
    add_set_argument(parser)
    parser.add_argument("--resume", default="auto", metavar="auto|none|PATH",
                        help="auto: the newest complete checkpoint in --output (none: start fresh); "
                             "or a checkpoint folder")
    parser.add_argument("--init", metavar="PATH",
                        help="initial weights: an ila-fast model file (convert / export), a training checkpoint "
                             "folder or an official ILA checkpoint (unpickled: trusted files only)")
    parser.add_argument("--synthetic", metavar="DIR",
                        help="train on `ila-fast make-synthetic`'s motion dataset in DIR (written there first if "
                             "missing): sets data.root / train_list / val_list / labels; for trying things on a CPU")
    parser.add_argument("--max-steps", type=int_range(1), metavar="N",
                        help="stop after N optimizer steps (same as --set train.max_steps=N)")


def run(args) -> int:
    from ila_fast.config import load_config, parse_overrides

    overrides = parse_overrides(args.overrides)
    if args.max_steps:
        overrides["train.max_steps"] = args.max_steps
    if args.synthetic:
        overrides.update(synthetic_data(args.synthetic))
    cfg = load_config(args.config, overrides)  # a bad key or value stops here, before any work

    from .trainer import Trainer

    if not cfg.data.train_list:
        from ila_fast.errors import UserError

        raise UserError(f"{args.config}: data.train_list is not set; set the [data] keys (or --set "
                        "data.train_list=...), or try it on synthetic videos with --synthetic DIR")
    resume = None if args.resume == "none" else args.resume
    trainer = Trainer(cfg, args.output, resume=resume, init=args.init)
    save_on_signals(trainer)
    summary = trainer.fit()
    return 0 if summary["status"] in ("completed", "stopped_on_request") else 1


def synthetic_data(folder) -> dict:
    """Write the synthetic motion dataset into ``folder`` unless it is there; its data keys."""
    from pathlib import Path

    root = Path(folder)
    if not (root / "train.txt").is_file():
        from ila_fast.data.synthetic import make_synthetic

        print(f"writing the synthetic motion dataset to {root} ...", flush=True)
        make_synthetic(root)
    return {"data.root": str(root), "data.train_list": str(root / "train.txt"),
            "data.val_list": str(root / "val.txt"), "data.labels": str(root / "labels.csv")}


def save_on_signals(trainer) -> None:
    """SIGTERM (torchrun / Slurm stopping the job) and SIGUSR2 (Slurm's --signal before a time limit or
    preemption): save at the next step boundary, then return. A second SIGTERM/Ctrl-C stops at once."""
    import signal

    def request(signum, frame):
        print(f"ila-fast train: {signal.Signals(signum).name}: saving at the next step, then stopping", flush=True)
        trainer.request_save(stop=True)
        if signum == signal.SIGTERM:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    for signum in (signal.SIGTERM, signal.SIGUSR2):
        signal.signal(signum, request)
