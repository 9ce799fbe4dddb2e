"""``ila-fast demo``: tiny ILA vs a frame-only baseline on synthetic motion videos (CPU, ~5 minutes)."""
from __future__ import annotations

from ila_fast.arguments import add_config_argument, positive_int


def add_arguments(parser) -> None:
    add_config_argument(parser, required=False, default="demo")
    parser.add_argument("--out", default="demo_output", metavar="DIR",
                        help="where the dataset, both runs, the table and the pictures go")
    parser.add_argument("--data", default=None, metavar="DIR",
                        help="an existing `make-synthetic` dataset (default: write one under --out)")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help="training epochs of each model (default: train.epochs of the config)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the dataset and of training")


def run(args) -> int:
    from ila_fast import demo

    return demo.run(args)
