"""The ``ila-fast`` command line.

Adding a command is one line in ``COMMANDS``: its name (``"group name"`` for a nested one,
e.g. ``"bench kernels"``), the module that declares and runs it, and its help. That module
defines ``add_arguments(parser)`` and ``run(args) -> int`` and imports only the standard
library at its top (``ila_fast.arguments`` has the argument types); ``run`` imports the
work. Only the chosen command's module is imported, so ``ila-fast --help`` and
``ila-fast CMD --help`` answer at once.

Errors follow ``ila_fast.errors``: a user error prints one line and exits 2; anything else
is a bug and keeps its traceback (``--debug`` / ``ILA_FAST_DEBUG=1``: traceback for all).
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import sys
from typing import NamedTuple

from ila_fast import __version__
from ila_fast.errors import debug_enabled, is_user_error, missing_dependency, one_line


class Command(NamedTuple):
    module: str  # defines add_arguments(parser) and run(args); light at its top
    help: str


COMMANDS: dict[str, Command] = {
    "demo": Command("ila_fast.commands.demo", "a tiny ILA model vs a frame-only baseline, trained on synthetic "
                                              "motion videos and evaluated (CPU: ~5 CPU-minutes, 2 min on an "
                                              "idle 2-core machine, up to 20 on a busy one)"),
    "zoo": Command("ila_fast.commands.zoo", "the model zoo: measured parameters and GMACs per view"),
    "configs": Command("ila_fast.commands.configs", "list the bundled configs (arch, dataset, frames x size)"),
    "config show": Command("ila_fast.commands.config_show", "print a config resolved as TOML (what a run saves)"),
    "train": Command("ila_fast.train.command", "train (or resume) a model: FSDP2, checkpoints, metrics"),
    "export": Command("ila_fast.train.export", "a training checkpoint -> a single-file model"),
    "eval": Command("ila_fast.train.eval_command", "the test protocol (clips x crops, every video once, any "
                                                   "number of ranks): eval.json, confusion matrix, table"),
    "ensemble": Command("ila_fast.train.ensemble", "combine the score tables of `eval --save-scores` runs "
                                                   "(several models or views): top-1 / top-5 of the ensemble"),
    "predict": Command("ila_fast.predict", "top-5 classes of video files (multi-view, CPU or GPU)"),
    "show-alignment": Command("ila_fast.alignment_picture", "picture of ILA's alignment points and masks on "
                                                            "each frame pair of a video"),
    "convert": Command("ila_fast.commands.convert", "an official ILA checkpoint -> ila-fast's model file"),
    "make-synthetic": Command("ila_fast.commands.make_synthetic", "write a small synthetic motion dataset of "
                                                                  "real videos"),
    "prepare": Command("ila_fast.commands.prepare", "re-encode a dataset for fast loading (short side, GOP, CFR)"),
    "prepare-dataset": Command("ila_fast.commands.prepare_dataset", "a dataset as downloaded (Kinetics, SSv2, "
                                                                    "UCF101, HMDB51) -> list files, labels, probe"),
    "submit": Command("ila_fast.slurm.launcher", "queue training on Slurm (submitit): multi-node, requeue on "
                                                 "preemption / time-out, sweeps as job arrays, --status"),
    "bench kernels": Command("ila_fast.commands.bench_kernels", "fused ILA ops vs reference (eager, compiled)"),
    "bench data": Command("ila_fast.commands.bench_data", "clips/s of the data backends"),
    "bench train": Command("ila_fast.bench.train_table", "training-step clips/s, peak memory and MFU: official-like "
                                                         "vs eager / compiled / fused / +AC"),
}
GROUPS = {"bench": "benchmarks: kernels, data, train", "config": "inspect a config: show"}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except where there is nothing to show (None, a flag's False)."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or action.default == []:
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """Argument errors on one line (exit 2), with the nearest command for a misspelt one."""

    def error(self, message: str):
        if "invalid choice:" in message:
            wrong = message.split("invalid choice:", 1)[1].split("(")[0].strip(" '")
            close = difflib.get_close_matches(wrong, [c.split()[-1] for c in COMMANDS] + list(GROUPS), n=1)
            if close:
                message += f"; did you mean {close[0]!r}?"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class Unavailable(Exception):
    """The chosen command's module cannot be imported."""


def _selected(argv: list[str]) -> str | None:
    """The command named in argv ("bench data"), or None (help, version, unknown)."""
    words = [a for a in argv if not a.startswith("-")]
    if not words:
        return None
    if words[0] in GROUPS and len(words) > 1 and f"{words[0]} {words[1]}" in COMMANDS:
        return f"{words[0]} {words[1]}"
    return words[0] if words[0] in COMMANDS else None


def _load(name: str):
    module = COMMANDS[name].module
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):  # the command's own module is not there
            raise Unavailable(f"'{name}' is not available in this build ({module} is missing)") from None
        hint = missing_dependency(e)
        if hint:
            raise Unavailable(f"'{name}' needs {hint}") from None
        raise


def _debug_option(parser) -> None:
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of any error (or set ILA_FAST_DEBUG=1)")


def build_parser(commands: list[str] | None = None) -> ArgumentParser:
    """The parser; the arguments of ``commands`` (default: all) are declared, the others only listed."""
    chosen = set(COMMANDS) if commands is None else set(commands)
    parser = ArgumentParser(prog="ila-fast", formatter_class=HelpFormatter,
                            description="Fast ILA video recognition (ICCV 2023) on CLIP ViTs.",
                            epilog="`ila-fast CMD --help` shows a command's options.")
    parser.add_argument("--version", action="version", version=f"ila-fast {__version__}")
    _debug_option(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=ArgumentParser)
    groups = {}
    for name, command in COMMANDS.items():
        group, _, leaf = name.rpartition(" ")
        where = sub
        if group:
            if group not in groups:
                p = sub.add_parser(group, help=GROUPS[group], description=GROUPS[group],
                                   formatter_class=HelpFormatter)
                groups[group] = p.add_subparsers(dest=f"{group}_command", required=True, metavar="COMMAND",
                                                 parser_class=ArgumentParser)
            where = groups[group]
        p = where.add_parser(leaf, help=command.help, description=command.help, formatter_class=HelpFormatter)
        p.set_defaults(_command=name)
        if name in chosen:
            _debug_option(p)
            _load(name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    name = _selected(argv)
    try:
        parser = build_parser([name] if name else [])
    except Unavailable as e:
        print(f"ila-fast: {e}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)  # exits 2 with one line on a bad argument
    debug = getattr(args, "debug", False) or debug_enabled()
    try:
        return int(_load(args._command).run(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"ila-fast {args._command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug or not is_user_error(e):
            raise
        print(f"ila-fast {args._command}: {one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
