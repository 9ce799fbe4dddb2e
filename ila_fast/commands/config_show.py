"""``ila-fast config show NAME [--set KEY=VALUE ...]``: the resolved config as TOML.

This is the text a training run saves as ``config.toml`` (``ila_fast.config.to_toml``):
every key, defaults included, after the ``--set`` overrides.
"""
from __future__ import annotations

from ila_fast.arguments import add_set_argument


def add_arguments(parser) -> None:
    parser.add_argument("config", metavar="NAME|PATH", help="a bundled config's name or a TOML file")
    add_set_argument(parser)


def run(args) -> int:
    from ila_fast.config import load_config, parse_overrides, to_toml

    print(to_toml(load_config(args.config, parse_overrides(args.overrides))), end="")
    return 0
