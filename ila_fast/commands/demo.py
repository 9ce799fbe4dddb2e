"""``ila-fast demo``: the zoo table, then a few training steps of the tiny model on synthetic videos."""
from __future__ import annotations

from ila_fast.arguments import add_config_argument, positive_int


def add_arguments(parser) -> None:
    add_config_argument(parser, required=False, default="tiny")
    parser.add_argument("--data", default=None, metavar="DIR",
                        help="folder of an existing synthetic dataset (default: write one to a temporary folder)")
    parser.add_argument("--steps", type=positive_int, default=3, help="training steps to run")
    parser.add_argument("--no-zoo", action="store_true", help="skip the zoo table")


def run(args) -> int:
    from ila_fast import demo

    return demo.run(args)
