"""``ila-fast train``: train (or resume) a model. Light at its top: the CLI lists it without torch.

    ila-fast train --config k400_b16_8f --output runs/b16 [--set train.lr_mit=1e-4 ...]
    torchrun --nproc_per_node 8 -m ila_fast.cli train --config k400_b16_8f --output runs/b16

Started again with the same ``--output``, it resumes from the newest complete checkpoint there.
SIGTERM, SIGINT (Ctrl-C) and SIGUSR2 save at the next step and stop (exit 0); see ``signals.py``.
"""
from __future__ import annotations

from ila_fast.arguments import add_config_argument, add_set_argument, int_range

from .signals import StopOnSignals


def add_arguments(parser) -> None:
    add_config_argument(parser)
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="run folder: checkpoints, config.toml, metrics.jsonl, tb/, curves.png, summary.json")
    add_set_argument(parser)
    parser.add_argument("--resume", default="auto", metavar="auto|none|PATH",
                        help="auto: the newest good checkpoint in --output (a damaged one is renamed "
                             "step_N.damaged); none: start over; or a checkpoint (or run) folder. none and PATH "
                             "move --output's checkpoints off that line into checkpoints/superseded_<time>/")
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

    if not cfg.data.train_list and cfg.data.dataset == "list":
        from ila_fast.errors import UserError

        raise UserError(f"{args.config}: data.train_list is not set; set the [data] keys (or --set "
                        "data.train_list=...), or try it on synthetic videos with --synthetic DIR")
    resume = None if args.resume == "none" else args.resume
    trainer = Trainer(cfg, args.output, resume=resume, init=args.init)
    signals = StopOnSignals(trainer.request_save, args.output)
    try:
        summary = trainer.fit()
    finally:
        signals.close()
    if summary["status"] == "stopped_on_request" and signals.rank == 0:
        print(f"ila-fast train: stopped on {signals.requested or 'request'} after saving step "
              f"{summary['step']} to {summary['last_checkpoint']}; to continue from it, {same_command()}",
              flush=True)
    return 0 if summary["status"] in ("completed", "stopped_on_request") else 1


def same_command() -> str:
    """How to run this command again, as a user would type it (torchrun's, when it launched this process)."""
    import os
    import shlex
    import sys

    if "TORCHELASTIC_RUN_ID" in os.environ:
        return "run the same torchrun command again (same --output)"
    return "run the same command again: ila-fast " + shlex.join(sys.argv[1:])


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
