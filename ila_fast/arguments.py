"""Argument types and shared options for ``ila-fast`` subcommands (standard library only).

Command modules import these while the parser is built, so nothing heavy may be imported
here. A bad value makes argparse print one line and exit 2.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def int_range(low: int | None = None, high: int | None = None):
    """An argparse type: an int in [low, high] (either end open when None)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = (f">= {low}" if high is None else f"<= {high}" if low is None else f"in [{low}, {high}]")
            raise argparse.ArgumentTypeError(f"{value} must be {bounds}")
        return value
    parse.__name__ = "int"
    return parse


positive_int = int_range(1)
nonnegative_int = int_range(0)


def float_range(low: float | None = None, high: float | None = None, low_open: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value != value or (low is not None and (value <= low if low_open else value < low)) \
                or (high is not None and value > high):
            lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
            hi = "" if high is None else f"<= {high}"
            raise argparse.ArgumentTypeError(f"{value} must be {' and '.join(b for b in (lo, hi) if b)}")
        return value
    parse.__name__ = "float"
    return parse


positive_float = float_range(0.0, low_open=True)


def size_wxh(text: str) -> tuple[int, int]:
    """``128x96`` -> (128, 96), both positive."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must look like WIDTHxHEIGHT, e.g. 128x96") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: width and height must be >= 1")
    return w, h


def int_list(text: str) -> list[int]:
    """``0,1,2`` -> [0, 1, 2] (each >= 0)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be comma-separated integers, e.g. 0,1,2") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: need at least one integer, each >= 0")
    return values


def existing_file(text: str) -> str:
    """An input file that must exist (checked at parse time, so the error comes first)."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: is a folder, expected a file")
    return text


def add_config_argument(parser: argparse.ArgumentParser, required: bool = True, default=None,
                        help_text: str = "run config: a bundled config's name (see `ila-fast configs`) "
                                         "or a TOML file") -> None:
    parser.add_argument("--config", required=required, default=default, metavar="NAME|PATH", help=help_text)


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.epochs=10 (repeatable; values are TOML)")


def add_force_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")


def check_output(path: str | Path, force: bool) -> Path:
    """Refuse to overwrite an existing output unless ``force``."""
    from ila_fast.errors import OutputExists

    path = Path(path)
    if path.exists() and not force:
        raise OutputExists(f"{path}: already exists; pass --force to overwrite it, or choose another path")
    return path
