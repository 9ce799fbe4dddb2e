"""Stop requests by signal, for ``ila-fast train`` (standard library only: the CLI imports it cheaply).

    stop = StopOnSignals(trainer.request_save, output="runs/b16")   # before trainer.fit()

SIGTERM (``torchrun``, Slurm's ``scancel`` and most schedulers stopping a job), SIGINT (Ctrl-C)
and SIGUSR2 (Slurm's warning before a time limit) all mean "save at the next step boundary, then
stop": the first one asks the trainer for a checkpoint (``request_save(stop=True)`` only sets
flags) and prints one line on rank 0. A later one stops this process at once, without saving,
with the shell's exit code 128 + signal number; the newest complete checkpoint stays. A repeat
within ``REPEAT_WINDOW_S`` of the first counts as the same request: a launcher forwarding the
signal that the scheduler also sent to every process of the job delivers it twice.

The signals are read by a watcher thread from ``signal.set_wakeup_fd``, not by a Python handler
in the main thread: Python runs handlers only between bytecodes of the main thread, which may be
blocked for minutes in a collective or a save when the second signal should stop it *at once*
(with its loader workers, which are killed first).
Loader worker processes ignore these signals (``data.cpu_backend.ignore_stop_signals``): only the
main process of each rank decides.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
import time

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)
REPEAT_WINDOW_S = 2.0


def _say(text: str) -> None:
    # os.write, not print: the main thread may be inside a print to the same buffered stream
    try:
        os.write(2, (text + "\n").encode())
    except OSError:
        pass


def _name(signum: int) -> str:
    return "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name


class StopOnSignals:
    """Installs the handling described in the module docstring; ``close()`` restores the previous one."""

    def __init__(self, request_save, output: str, rank: int | None = None):
        self.request_save, self.output = request_save, output
        self.rank = int(os.environ.get("RANK", "0")) if rank is None else rank
        self.first: tuple[int, float] | None = None  # (signal, monotonic time) of the request
        self._reader, writer = socket.socketpair()
        writer.setblocking(False)
        self._writer = writer
        self._previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        # a Python-level handler must exist for the C handler to write the wakeup byte; it does nothing
        self._previous = {s: signal.signal(s, _noop) for s in SIGNALS}
        self._thread = threading.Thread(target=self._watch, name="ila-fast-signals", daemon=True)
        self._thread.start()

    @property
    def requested(self) -> str | None:
        """The name of the signal that asked to stop, if one did."""
        return signal.Signals(self.first[0]).name if self.first else None

    def _watch(self) -> None:
        while True:
            try:
                data = self._reader.recv(64)
            except OSError:
                return
            if not data:  # closed
                return
            # every signal with a Python handler is written here (SIGCHLD: the DataLoader's); only ours count
            for signum in data:
                if signum in SIGNALS:
                    self.on_signal(signum)

    def on_signal(self, signum: int) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = (signum, now)
            self.request_save(stop=True)
            if self.rank == 0:
                again = "Ctrl-C again" if signum == signal.SIGINT else "a second signal"
                _say(f"ila-fast train: {_name(signum)}: saving at the next step, then stopping "
                     f"({again} stops at once, without saving)")
            return
        if now - self.first[1] < REPEAT_WINDOW_S:
            return  # the same request, delivered twice (by the scheduler and by the launcher)
        if self.rank == 0:
            _say(f"ila-fast train: {_name(signum)} again: stopping now, without saving; the newest complete "
                 f"checkpoint in {self.output} is kept (run the same command again to resume from it)")
        _kill_children()
        os._exit(128 + signum)

    def close(self) -> None:
        """Back to the handlers from before (the run is over: a late signal must not act on it)."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        signal.set_wakeup_fd(self._previous_fd)
        self._writer.close()  # the watcher reads end-of-file and returns
        self._thread.join(timeout=5)
        self._reader.close()


def _noop(signum, frame) -> None:
    pass


def _kill_children() -> None:
    """SIGKILL this process's children (loader workers ignore the stop signals, and would otherwise
    linger for seconds, holding the terminal's or a pipe's output open, until they notice)."""
    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = f.read().rsplit(")", 1)[1].split()[1]
            if parent == me:
                os.kill(int(entry), signal.SIGKILL)
        except (OSError, IndexError):
            pass
