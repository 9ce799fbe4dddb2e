"""``ila-fast zoo``: the model zoo table (measured parameters and GMACs beside the paper's results)."""
from __future__ import annotations


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    from ila_fast import zoo

    return zoo.run(args)
