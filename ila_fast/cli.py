"""The ``ila-fast`` command line.

Each subcommand lives in the module that owns its work; that module exposes
``add_arguments(parser)`` and ``run(args) -> int`` and is imported only when its
subcommand runs, so heavy optional dependencies load only where needed.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, help). "bench" has its own sub-subcommands below.
COMMANDS = {
    "demo": ("ila_fast.demo", "print the model zoo and run a small ILA model forward + backward"),
    "zoo": ("ila_fast.zoo", "print the model zoo: parameters and measured GFLOPs per view"),
    "convert": ("ila_fast.model.convert", "convert an official ILA checkpoint to ila-fast's layout"),
    "make-synthetic": ("ila_fast.data.synthetic", "write a small synthetic motion dataset of real videos"),
    "submit": ("ila_fast.slurm.launcher", "queue training on Slurm (submitit): requeue on preemption, sweeps"),
}
BENCHES = {
    "kernels": ("ila_fast.bench.kernels_table", "fused ILA ops vs reference (eager and compiled)"),
    "data": ("ila_fast.bench.data_table", "clips/s of the data backends"),
}


def _add(sub, name, module, help_text):
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(_module=module)
    try:
        importlib.import_module(module).add_arguments(parser)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):  # the command's own module is not there yet
            parser.set_defaults(_missing=f"'{name}' is not available in this build ({module} missing)")
        else:
            parser.set_defaults(_missing=f"'{name}' needs {e.name}: install it (see README)")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ila-fast", description="Fast ILA video recognition.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        _add(sub, name, module, help_text)
    bench = sub.add_parser("bench", help="benchmarks: kernels, data")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    for name, (module, help_text) in BENCHES.items():
        _add(bench_sub, name, module, help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "_missing", None):
        print(f"ila-fast: {args._missing}", file=sys.stderr)
        return 2
    from ila_fast.config import ConfigError
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except ConfigError as e:
        print(f"ila-fast: config error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
