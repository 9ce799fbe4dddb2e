"""The one error policy of ila-fast: which exceptions are the user's to fix, and how they read.

An expected user error (a missing input file, a file that is not a checkpoint, a bad list
line, too many bad videos, an output that already exists, a bad config key, a missing
optional dependency) is printed by the CLI as one line naming the file / line / key and what
to do, with exit code 2. Anything else is a bug and keeps its traceback; ``--debug`` or
``ILA_FAST_DEBUG=1`` keeps the traceback for user errors too.

Raise ``UserError`` (or a subclass) for a new kind of user error. Errors defined in heavy
modules are listed here by qualified name, so that deciding needs no heavy import.
This module imports nothing but the standard library.
"""
from __future__ import annotations

import os


class UserError(Exception):
    """An expected error the user can fix; the message names the file / key and what to do."""


class OutputExists(UserError, FileExistsError):
    """An output path that already exists and would be overwritten."""


class MissingDependency(UserError, ImportError):
    """An optional dependency that a feature needs; the message says what to install."""


# Exceptions counted as user errors, by "module.QualifiedName" (subclasses count too).
USER_ERRORS = frozenset({
    "ila_fast.errors.UserError",
    "ila_fast.config.ConfigError",
    "ila_fast.model.weights.WeightsError",        # not a checkpoint / wrong layout / wrong shapes
    "ila_fast.data.dataset.DatasetError",         # bad list line, label file, data folder
    "ila_fast.data.bad_videos.TooManyBadVideos",  # the run's bad-video limit was passed
    "builtins.FileNotFoundError",                 # an input that is not there
    "builtins.FileExistsError",                   # an output that is
    "builtins.IsADirectoryError",
    "builtins.NotADirectoryError",
    "builtins.PermissionError",
})

# Optional dependencies -> what to install (from a checkout).
OPTIONAL = {
    "nvidia": "NVIDIA DALI: pip install -e '.[dali]' (CUDA 12) or -e '.[dali-cuda13]'",
    "av": "PyAV: pip install -e '.[cpu-video]'",
    "open_clip": "open_clip: pip install -e . (it is a core dependency; installs open_clip_torch)",
    "submitit": "submitit: pip install -e . (it is a core dependency)",
    "torchcodec": "torchcodec: pip install torchcodec==0.13 and Debian's FFmpeg 5 libraries",
}


def debug_enabled() -> bool:
    return os.environ.get("ILA_FAST_DEBUG", "") not in ("", "0")


def missing_dependency(error: ImportError) -> str | None:
    """The install hint for an ImportError of a known optional dependency, else None."""
    name = (getattr(error, "name", None) or "").split(".")[0]
    if name in OPTIONAL:
        return f"{error.name} is not installed; install {OPTIONAL[name]}"
    return None


def is_user_error(error: BaseException) -> bool:
    if isinstance(error, ImportError) and not isinstance(error, MissingDependency):
        return missing_dependency(error) is not None
    return any(f"{c.__module__}.{c.__qualname__}" in USER_ERRORS for c in type(error).__mro__)


def one_line(error: BaseException) -> str:
    """The message of a user error on one line."""
    if isinstance(error, ImportError) and not isinstance(error, MissingDependency):
        hint = missing_dependency(error)
        if hint:
            return hint
    if isinstance(error, OSError) and error.filename is not None and not isinstance(error, UserError):
        what = {FileNotFoundError: "no such file or folder", FileExistsError: "already exists",
                IsADirectoryError: "is a folder, expected a file", NotADirectoryError: "is not a folder",
                PermissionError: "permission denied"}.get(type(error), error.strerror or str(error))
        return f"{error.filename}: {what}"
    text = str(error).strip() or type(error).__name__
    if isinstance(error, KeyError) and text.startswith("'"):
        text = text.strip("'")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1:  # the first line says what is wrong and what to do; details follow it
        return f"{lines[0]} [{len(lines) - 1} more lines: rerun with --debug]"
    return lines[0]
