"""``train.log``: everything a run prints on rank 0, as plain lines, in its run folder.

While a run is on, ``sys.stdout`` and ``sys.stderr`` are teed into ``<output>/train.log``
(appended, so a resumed run adds to it): the monitor's lines, warnings of the data pipeline,
the signal handler's notes. A progress bar writes to the real stream behind the tee, so the
file never holds a bar's carriage returns; the monitor writes the bar's steps to the file as
the plain lines a terminal without a bar would show (``RunLog.write_only``).
"""
from __future__ import annotations

import io
import os
import sys
import threading
import time
from pathlib import Path


def has_terminal(stream) -> bool:
    """A terminal that a progress bar can draw on: a tty that reports a width (some report 0 x 0)."""
    try:
        if not stream.isatty():
            return False
        return os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, OSError, ValueError):
        return False


def plain(text: str) -> str:
    """Text as a file should hold it: of a line redrawn with carriage returns, its last drawing."""
    if "\r" not in text:
        return text
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


class _Tee(io.TextIOBase):
    """A text stream that writes to ``stream`` and to the log; everything else is ``stream``'s."""

    def __init__(self, stream, log: "RunLog"):
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        written = self.stream.write(text)
        self.log.write_only(text, newline=False)
        return len(text) if written is None else written

    def flush(self) -> None:
        self.stream.flush()
        self.log.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self):
        return getattr(self.stream, "encoding", "utf-8")

    def __getattr__(self, name):
        return getattr(self.stream, name)


class RunLog:
    """Tee stdout / stderr into ``path`` until ``close()``. The real streams stay in ``stdout`` / ``stderr``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.file = open(self.path, "a", encoding="utf-8", errors="replace")
        self.lock = threading.Lock()
        self.stdout, self.stderr = sys.stdout, sys.stderr
        self.file.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S %Z')}: {' '.join(sys.argv) or 'python'} "
                        f"(pid {os.getpid()})\n")
        self.file.flush()
        sys.stdout, sys.stderr = _Tee(self.stdout, self), _Tee(self.stderr, self)

    def write_only(self, text: str, newline: bool = True) -> None:
        """Into the file alone (what a bar shows on the terminal, as a plain line)."""
        if self.file is None:
            return
        with self.lock:
            self.file.write(plain(text) + ("\n" if newline else ""))
            if newline or text.endswith("\n"):
                self.file.flush()

    def flush(self) -> None:
        if self.file is not None:
            with self.lock:
                self.file.flush()

    def close(self) -> None:
        """Put the real streams back (only where they are still ours) and close the file."""
        if self.file is None:
            return
        if isinstance(sys.stdout, _Tee) and sys.stdout.log is self:
            sys.stdout = self.stdout
        if isinstance(sys.stderr, _Tee) and sys.stderr.log is self:
            sys.stderr = self.stderr
        with self.lock:
            self.file.close()
            self.file = None
