"""One writer per run folder: ``<output>/run.lock`` holds the writer's PID, host and start time.

    lock = RunLock.acquire(output, warn=print)   # RunFolderBusy (a UserError) when another run holds it
    ...
    lock.release()

The file also carries a POSIX record lock (``lockf``) while held, so the kernel frees it when the
holder dies however it dies (SIGKILL included). A record lock belongs to the process, not to the
open file: the loader's forked workers do not inherit it (an ``flock`` would stay held by them
after their parent was killed). The PID and host are what the refusal names. A lock whose holder
is gone (its record lock free, and on this host its PID dead) is taken over with a warning. A lock
written on another host whose record lock is free (a file system without shared locks, or a crashed host) is
refused with the way out: a second writer there would interleave checkpoints and metrics; unless
it names this very Slurm job (a requeue after a node failure: Slurm runs one job id once at a time).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from ila_fast.errors import UserError

LOCK_NAME = "run.lock"
_HELD: dict[str, dict] = {}  # lock files this process holds -> their record


class RunFolderBusy(UserError):
    """Another run writes into this --output; the message names it."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _describe(holder: dict) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {when}"


def _read(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    try:
        holder = json.loads(data.decode() or "{}")
        return holder if isinstance(holder, dict) else {}
    except (ValueError, UnicodeDecodeError):
        return {}


class RunLock:
    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    @classmethod
    def acquire(cls, output: str | Path, warn=print) -> RunLock:
        output = Path(output)
        output.mkdir(parents=True, exist_ok=True)
        path = output / LOCK_NAME
        host = socket.gethostname()
        key = os.path.realpath(path)
        if key in _HELD:  # record locks do not conflict within one process: say it here
            raise RunFolderBusy(f"{output}: another run is writing here ({_describe(_HELD[key])}, this process; "
                                f"lock file {path}); wait for it or stop it, or use another --output")
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = _read(fd)
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise RunFolderBusy(f"{output}: another run is writing here ({_describe(holder)}; lock file "
                                        f"{path}); wait for it or stop it, or use another --output") from None
                raise
            # The holder may have removed the file between our open and our lock: lock the file
            # that is at the path now, not an unlinked one.
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        holder = _read(fd)
        if holder:
            if holder.get("host") == host:
                pid = holder.get("pid")
                why = "that process is gone" if not (isinstance(pid, int) and _alive(pid)) else "it holds no lock"
                warn(f"{path}: taking over a stale lock ({_describe(holder)}: {why})")
            elif holder.get("slurm_job") and holder.get("slurm_job") == os.environ.get("SLURM_JOB_ID"):
                # Slurm never runs one job id twice at once: this is the same job, requeued elsewhere
                warn(f"{path}: taking over the lock of this Slurm job's earlier run ({_describe(holder)}; requeued)")
            else:
                os.close(fd)
                raise RunFolderBusy(f"{output}: {path} names a run on another host ({_describe(holder)}); if that "
                                    f"run is over, delete {path} and start again, else use another --output")
        record = json.dumps({"pid": os.getpid(), "host": host, "started": time.time(),
                             "slurm_job": os.environ.get("SLURM_JOB_ID")})
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, record.encode())
        os.fsync(fd)
        # (a record lock is also dropped when this process closes any other descriptor of the file:
        # nothing here opens run.lock again while holding it, and _HELD answers for this process)
        _HELD[key] = json.loads(record)
        return cls(path, fd)

    def release(self) -> None:
        if self.fd is None:
            return
        _HELD.pop(os.path.realpath(self.path), None)
        try:
            self.path.unlink(missing_ok=True)  # while still locked: nobody can take the file in between
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


def decided_on_rank0(fn):
    """``fn()`` on rank 0 only (file-system decisions), its result broadcast to every rank. A
    UserError there is raised on every rank with the same message (any other error: as itself on
    rank 0, as a RuntimeError naming it on the others), so no rank waits for rank 0 at a
    collective it will never reach."""
    import torch.distributed as dist

    from . import distributed

    rank = dist.get_rank() if dist.is_initialized() else 0
    result, error, original = None, None, None
    if rank == 0:
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - every rank must hear of it, or the others wait forever
            original = e
            error = (type(e) if isinstance(e, UserError) else None, str(e))
    result, error = distributed.broadcast_object((result, error))
    if original is not None:
        raise original
    if error is not None:
        kind, message = error
        if kind is None:
            raise RuntimeError(f"rank 0 failed while preparing the run folder: {message}")
        raise kind(message)
    return result
