"""Training checkpoints that survive anything: torch.distributed.checkpoint, complete or invisible.

Layout under ``<output>/checkpoints/``:

    step_00001200/            a complete checkpoint (only complete ones carry this name)
        .metadata, *.distcp   model + optimizer, sharded (DCP; reshards on load)
        trainer.json          step, epoch, loader position, ila-fast version, config hash, world size
        config.toml           the resolved config of the run
        rng/rank{r}.pt        each rank's RNG states
        bn/rank{r}.pt         each rank's BatchNorm statistics (the sharded state holds rank 0's)
        COMPLETE              written last
    .tmp_step_00001300/       a save in progress: never picked, removed by the next run
    best/                     the same contents, at the best evaluation so far (train.keep_best);
                              trainer.json adds its "eval"; never pruned, never resumed from by default

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
BEST = "best"  # checkpoints/best: the best evaluation so far, outside keep_last
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
        old_best = root / f".old_{BEST}"
        if old_best.is_dir() and not (root / BEST).exists():  # killed while replacing the best: keep the old one
            old_best.rename(root / BEST)
        for p in root.iterdir():
            if p.name.startswith((".tmp_step_", f".tmp_{BEST}", ".old_")):
                shutil.rmtree(p, ignore_errors=True)


def best_checkpoint(output: str | Path) -> Path | None:
    """``checkpoints/best``: the complete checkpoint of the best evaluation so far (train.keep_best)."""
    path = checkpoint_root(output) / BEST
    return path if is_complete(path) else None


def save(output: str | Path, step: int, model, optimizer, meta: dict, config_toml: str, keep_last: int,
         name: str | None = None) -> Path:
    """Collective: every rank calls it. Returns the complete checkpoint's folder.

    ``name``: a folder name other than ``step_<step>`` (``BEST``): that folder is replaced, and
    neither counts towards ``keep_last`` nor is pruned by it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    root = checkpoint_root(output)
    final = root / (name or f"step_{step:08d}")
    tmp = root / f".tmp_{final.name}"
    rank = dist.get_rank()
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    distributed.barrier()
    model_state, optim_state = get_state_dict(model, optimizer)
    # tensors every rank holds (BatchNorm statistics) are written from rank 0, not from whichever rank
    # DCP's balancing picks per tensor: the consolidated model (eval, export) then has one rank's BN
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(tmp),
             planner=dcp.DefaultSavePlanner(dedup_save_to_lowest_rank=True))
    (tmp / "rng").mkdir(exist_ok=True)
    torch.save(rng_state(), tmp / "rng" / f"rank{rank}.pt")
    (tmp / "bn").mkdir(exist_ok=True)
    torch.save(rank_buffers(model), tmp / "bn" / f"rank{rank}.pt")
    distributed.barrier()
    if rank == 0:
        _write_file(tmp / "trainer.json", json.dumps(meta, indent=1))
        _write_file(tmp / "config.toml", config_toml)
        _write_file(tmp / MARKER, f"step {step}\n")
        _fsync_dir(tmp)
        # a complete save of the same name (a rerun, a new best): moved aside until the new one is in place
        previous = root / f".old_{final.name}"
        if final.exists():
            if previous.exists():
                shutil.rmtree(previous)
            final.rename(previous)
        tmp.rename(final)
        _fsync_dir(root)
        shutil.rmtree(previous, ignore_errors=True)
        for old in complete_checkpoints(output)[:-keep_last] if name is None else []:
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
    try:
        dcp.load(state, checkpoint_id=str(path))
    except (Exception, dcp.api.CheckpointException) as e:  # shards of the right size with the wrong bytes
        raise CheckpointError(f"{path}: damaged checkpoint: its shards cannot be read "
                              f"({type(e).__name__}: {str(e).strip().splitlines()[-1][:160]}); move it aside "
                              "(or --resume an older one) and start again") from e
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
    try:
        state = torch.load(file, weights_only=False)
    except Exception:  # noqa: BLE001 - a damaged RNG file: reseeded (the caller says so), not a traceback
        return False
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    return True


BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


def rank_buffers(model) -> dict:
    """This rank's BatchNorm statistics (the ILA branch's): each rank normalises its own batches, so
    they differ per rank, while the sharded state keeps one copy."""
    return {n: b.detach().cpu().clone() for n, b in model.named_buffers() if n.endswith(BN_STATS)}


def restore_rank_buffers(path: str | Path, model, rank: int) -> bool:
    """Put rank ``rank``'s own BatchNorm statistics from checkpoint ``path`` back into ``model``
    (after ``load``, which gives every rank rank 0's). False when the checkpoint has none for it."""
    file = Path(path) / "bn" / f"rank{rank}.pt"
    if not file.is_file():
        return False
    try:
        saved = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated or garbage: the same answer
        raise CheckpointError(f"{file}: unreadable ({type(e).__name__}), truncated or damaged; move "
                              f"{Path(path).name} aside to resume from the checkpoint before it") from None
    buffers = {n: b for n, b in model.named_buffers() if n.endswith(BN_STATS)}
    if saved.keys() != buffers.keys():
        raise CheckpointError(f"{file}: BatchNorm statistics of another model ({len(saved)} tensors, this "
                              f"model has {len(buffers)}); resume with the config the run was saved with")
    with torch.no_grad():
        for name, buffer in buffers.items():
            buffer.copy_(saved[name])
    return True


def load_model_state(path: str | Path) -> tuple[dict, dict]:
    """Read a checkpoint's full model state dict on one process, no process group: (state, meta)."""
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    import torch.distributed.checkpoint as dcp

    from .checkpoint_health import require_good

    meta = read_meta(require_good(path))
    state: dict = {}
    try:
        _load_state_dict(state, storage_reader=dcp.FileSystemReader(str(path)),
                         planner=_EmptyStateDictLoadPlanner(), no_dist=True)
    except (Exception, dcp.api.CheckpointException) as e:  # shards of the right size with the wrong bytes
        raise CheckpointError(f"{path}: damaged checkpoint: its shards cannot be read "
                              f"({type(e).__name__}: {str(e).strip().splitlines()[-1][:160]})") from e
    return state["model"], meta
