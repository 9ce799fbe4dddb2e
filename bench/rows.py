"""Benchmark results saved as they are made: the JSON file is rewritten after every row.

A run cut short (a GPU machine's time limit, a kill) leaves every row that finished, with
``"complete": false``; ``writes`` counts the rewrites, so a reader can tell a file written
row by row from one written once at the end. The rewrite is atomic (a temporary file
renamed over the old one): a kill never leaves half a file.
"""
from __future__ import annotations

import json
import os
import time


class SavedRows:
    """``SavedRows(path, **fields)``; ``write(**updates)`` after each row, ``finish(**updates)`` at
    the end. Lists passed in are stored by reference: append to them, then call ``write()``.
    With ``path`` None every call does nothing (the tables' ``--save`` is optional)."""

    def __init__(self, path: str | os.PathLike | None, **fields):
        self.path = None if path is None else os.fspath(path)
        self.data = dict(fields, complete=False, writes=0)

    def write(self, **updates) -> None:
        self.data.update(updates)
        if self.path is None:
            return
        self.data["writes"] += 1
        self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        temporary = f"{self.path}.partial"
        with open(temporary, "w") as f:
            json.dump(self.data, f, indent=1, default=str)
        os.replace(temporary, self.path)

    def finish(self, **updates) -> None:
        self.write(complete=True, **updates)
