"""``ila-fast zoo``: the model zoo table (measured parameters and GMACs beside the paper's results)."""
from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--weights", action="store_true",
                        help="only where the weights come from: each config's official checkpoint URL and convert "
                             "command, and its CLIP file (no measuring)")


def run(args) -> int:
    from ila_fast import zoo

    return zoo.run(args)
