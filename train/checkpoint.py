"""Training checkpoints that survive anything: torch.distributed.checkpoint, complete or invisible.

Layout under ``<output>/checkpoints/``:

    step_00001200/            a complete checkpoint (only complete ones carry this name)
        .metadata, *.distcp   model + optimizer, sharded (DCP; reshards on load)
        trainer.json          step, epoch, loader position, ila-fast version, config hash, world size
        config.toml           the resolved config of the run
        rng/rank{r}.pt        each rank's RNG states
        COMPLETE              written last
    .tmp_step_00001300/       a save in progress: never picked, removed by the next run

A save writes everything into the temporary folder, every rank syncs, rank 0 writes ``COMPLETE``,
fsyncs, and renames the folder; only then are checkpoints beyond ``keep_last`` deleted (oldest
first, never the one just written). A process killed at any moment leaves the previous complete
checkpoint in place, and ``latest_checkpoint`` never returns a partial folder.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
import torch.distributed as dist

from ila_fast.errors import UserError

from . import distributed

MARKER = "COMPLETE"
NAME = re.compile(r"^step_(\d{8,})$")


class CheckpointError(UserError):
    """A checkpoint that cannot be used; the message names the folder."""


def checkpoint_root(output: str | Path) -> Path:
    return Path(output) / "checkpoints"


def is_complete(path: Path) -> bool:
    return (path / MARKER).is_file() and (path / ".metadata").is_file() and (path / "trainer.json").is_file()


def complete_checkpoints(output: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoint_root(output)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := NAME.match(p.name)) and is_complete(p)]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output: str | Path) -> Path | None:
    found = complete_checkpoints(output)
    return found[-1] if found else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def remove_partial(output: str | Path) -> None:
    """Delete leftovers of interrupted saves (rank 0, at start-up)."""
    root = checkpoint_root(output)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".tmp_step_"):
                shutil.rmtree(p, ignore_errors=True)


def save(output: str | Path, step: int, model, optimizer, meta: dict, config_toml: str, keep_last: int) -> Path:
    """Collective: every rank calls it. Returns the complete checkpoint's folder."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    root = checkpoint_root(output)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp_step_{step:08d}"
    rank = dist.get_rank()
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    distributed.barrier()
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(tmp))
    (tmp / "rng").mkdir(exist_ok=True)
    torch.save(rng_state(), tmp / "rng" / f"rank{rank}.pt")
    distributed.barrier()
    if rank == 0:
        _write_file(tmp / "trainer.json", json.dumps(meta, indent=1))
        _write_file(tmp / "config.toml", config_toml)
        _write_file(tmp / MARKER, f"step {step}\n")
        _fsync_dir(tmp)
        if final.exists():  # a complete save of the same step (a rerun): replace it atomically enough
            shutil.rmtree(final)
        tmp.rename(final)
        _fsync_dir(root)
        for old in complete_checkpoints(output)[:-keep_last]:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    distributed.barrier()
    return final


def read_meta(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_dir() or not is_complete(path):
        raise CheckpointError(f"{path}: not a complete ila-fast training checkpoint (no {MARKER} marker, "
                              ".metadata or trainer.json); pass a folder under <output>/checkpoints/")
    return json.loads((path / "trainer.json").read_text())


def load(path: str | Path, model, optimizer=None) -> dict:
    """Collective: load model (and optimizer) state in place, resharding as needed. Returns the meta."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    meta = read_meta(path)
    if optimizer is None:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

        state = {"model": get_model_state_dict(model)}
        dcp.load(state, checkpoint_id=str(path))
        set_model_state_dict(model, state["model"])
        return meta
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    return meta


def rng_state() -> dict:
    import random

    import numpy as np

    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(path: str | Path, rank: int) -> bool:
    import random

    import numpy as np

    file = Path(path) / "rng" / f"rank{rank}.pt"
    if not file.is_file():
        return False
    state = torch.load(file, weights_only=False)
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    return True


def load_model_state(path: str | Path) -> tuple[dict, dict]:
    """Read a checkpoint's full model state dict on one process, no process group: (state, meta)."""
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    import torch.distributed.checkpoint as dcp

    meta = read_meta(path)
    state: dict = {}
    _load_state_dict(state, storage_reader=dcp.FileSystemReader(str(path)), planner=_EmptyStateDictLoadPlanner(),
                     no_dist=True)
    return state["model"], meta
