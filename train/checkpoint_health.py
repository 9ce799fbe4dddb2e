"""Which checkpoint a run may trust, what happens to the others, and saving on a disk that may
fill up. Never deletes a checkpoint.

    problem = checkpoint_problem(path)        # None, or what is wrong ("shard __0_0.distcp has 812 of ...")
    good = pick_resumable(output, report)     # newest good checkpoint; damaged ones renamed step_N.damaged
    folder = checkpoint_for_reading(path)     # eval / predict / export: refused in one line when damaged
    moved = supersede(output, keep, newer_than, report)    # -> checkpoints/superseded_<time>/
    final = guarded_save(output, step, model, optimizer, ...)   # checkpoint.save behind a free-space check

A checkpoint is good when its ``COMPLETE`` marker is there, DCP's ``.metadata`` unpickles, every
shard it names is present with at least the bytes it says, and ``trainer.json`` and
``config.toml`` parse. A damaged one is renamed aside (``step_N.damaged``) so that no later start
trips over it, and the run falls back to the newest good one. Checkpoints that are all damaged
are refused with the choices: a restart that silently began at step 0 would prune them away.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from .checkpoint import MARKER, NAME, CheckpointError, checkpoint_root

DAMAGED = ".damaged"
SUPERSEDED = "superseded_"


def step_folders(output: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every ``step_N`` folder, complete or not, oldest first."""
    root = checkpoint_root(output)
    if not root.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in root.iterdir() if (m := NAME.match(p.name)) and p.is_dir())


def checkpoint_problem(path: str | Path) -> str | None:
    """What is wrong with the checkpoint folder ``path``, in a few words; None when it is usable."""
    from torch.distributed.checkpoint import FileSystemReader

    path = Path(path)
    if not path.is_dir():
        return "not a folder"
    if not (path / MARKER).is_file():
        return f"no {MARKER} marker (an unfinished save)"
    if not (path / ".metadata").is_file():
        return "no .metadata (DCP's index of the shards)"
    try:
        meta = json.loads((path / "trainer.json").read_text())
        int(meta["step"]), int(meta["epoch"])
    except FileNotFoundError:
        return "no trainer.json"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"trainer.json does not parse ({type(e).__name__}: {str(e)[:80]})"
    try:
        import tomllib

        tomllib.loads((path / "config.toml").read_text())
    except FileNotFoundError:
        return "no config.toml"
    except (OSError, ValueError) as e:
        return f"config.toml does not parse ({type(e).__name__}: {str(e)[:80]})"
    try:
        metadata = FileSystemReader(str(path)).read_metadata()
        needed: dict[str, int] = {}
        for info in metadata.storage_data.values():
            needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    except Exception as e:  # noqa: BLE001 - a pickle cut short or garbage raises anything
        return f".metadata cannot be read ({type(e).__name__}: {str(e)[:80]})"
    for name, size in sorted(needed.items()):
        shard = path / name
        if not shard.is_file():
            return f"shard {name} is missing"
        have = shard.stat().st_size
        if have < size:
            return f"shard {name} has {have} of the {size} bytes .metadata says"
    return None


def require_good(path: str | Path) -> Path:
    """``path`` if it is a good checkpoint, else CheckpointError naming it and what is wrong."""
    path = Path(path)
    problem = checkpoint_problem(path)
    if problem:
        raise CheckpointError(f"{path}: damaged checkpoint: {problem}; use another checkpoint folder "
                              f"(<output>/checkpoints/step_*)")
    return path


def _aside(path: Path, suffix: str) -> Path:
    target = path.with_name(path.name + suffix)
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}{suffix}.{n}")
        n += 1
    path.rename(target)
    return target


def pick_resumable(output: str | Path, report) -> Path | None:
    """Rank 0 at start-up: the newest good checkpoint of ``output``; damaged newer ones are renamed
    ``step_N.damaged`` with one ``report`` line each. None when the run has no checkpoint at all;
    CheckpointError when it has some but none is good."""
    root = checkpoint_root(output)
    for step, folder in reversed(step_folders(output)):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        moved = _aside(folder, DAMAGED)
        report(f"{folder}: damaged checkpoint ({problem}); renamed to {moved.name}; trying the one before")
    damaged = sorted(p.name for p in root.glob(f"step_*{DAMAGED}*")) if root.is_dir() else []
    if damaged:
        raise CheckpointError(f"{root}: no good checkpoint to resume from, only damaged ones ({', '.join(damaged)}); "
                              "resume from another with --resume PATH, start over with --resume none (they are "
                              "moved into checkpoints/superseded_<time>/, nothing is deleted), or use a new --output")
    return None


def supersede(output: str | Path, keep: Path | None, newer_than: int | None, report) -> Path | None:
    """Move checkpoints off the line being resumed into ``checkpoints/superseded_<time>/``.

    ``newer_than`` = the step of a checkpoint of this run (a rollback): the ones after it move.
    ``newer_than`` None (starting over, or resuming from another run's checkpoint): every
    checkpoint of this run moves, damaged ones included. Returns the folder, or None if nothing moved.
    """
    root = checkpoint_root(output)
    if not root.is_dir():
        return None
    moving = [p for s, p in step_folders(output) if p != keep and (newer_than is None or s > newer_than)]
    if newer_than is None:  # starting over: the old line's damaged and best checkpoints go too
        moving += [p for p in root.glob(f"step_*{DAMAGED}*") if p.is_dir()]
        moving += [p for p in (root / "best",) if p.is_dir()]
    if not moving:
        return None
    target = root / f"{SUPERSEDED}{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while target.exists():
        target = root / f"{SUPERSEDED}{time.strftime('%Y%m%d-%H%M%S')}.{n}"
        n += 1
    target.mkdir()
    for p in sorted(moving):
        p.rename(target / p.name)
    why = (f"newer than the resumed step {newer_than}" if newer_than is not None
           else "not on the line this run continues")
    report(f"{root}: moved {len(moving)} checkpoint(s) {why} into {target.name}/ "
           f"({', '.join(p.name for p in sorted(moving))}); nothing was deleted")
    return target


def drop_metrics_after(output: str | Path, step: int, rerun_eval: bool, aside: Path | None) -> int:
    """Rewrite ``metrics.jsonl`` without the records a resumed run writes again (train lines past
    ``step``, eval lines past it, or at it when that evaluation is re-run), atomically. The dropped
    lines go to ``aside/metrics.dropped.jsonl`` when a superseded folder was made. Returns how many."""
    import os

    path = Path(output) / "metrics.jsonl"
    if not path.is_file():
        return 0
    kept, dropped = [], []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
            at = int(record["step"])
        except (ValueError, KeyError, TypeError):
            dropped.append(line)  # a line cut by a kill
            continue
        late = at > step or (rerun_eval and record.get("kind") == "eval" and at == step)
        (dropped if late else kept).append(line)
    if not dropped:
        return 0
    if aside is not None:
        (aside / "metrics.dropped.jsonl").write_text("".join(f"{d}\n" for d in dropped))
    tmp = path.with_name(".metrics.jsonl.tmp")
    with open(tmp, "w") as f:
        f.write("".join(f"{k}\n" for k in kept))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(dropped)


def checkpoint_bytes(path: str | Path) -> int:
    """Bytes on disk of one checkpoint folder."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# ---------------------------------------------------------------- saving on a disk that may fill up

MARGIN_BYTES = 16 << 20     # besides the checkpoint: metrics, summary, TensorBoard, the rename
MARGIN_FRACTION = 0.05      # a checkpoint grows a little (trainer.json, RNG and BN files)


class NoSpaceForCheckpoint(CheckpointError):
    """Too little free space for the next checkpoint; nothing was written."""


class CheckpointSaveFailed(CheckpointError):
    """A save failed with an OS error (a full disk, permissions); the previous checkpoint is intact."""


def free_bytes(folder: Path) -> int:
    import shutil

    return shutil.disk_usage(folder).free


def state_bytes(model, optimizer) -> int:
    """What a first checkpoint will take: every parameter and buffer at full size, plus AdamW's two
    fp32 moments of each trainable parameter (DTensor.numel is the global size)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    total += sum(b.numel() * b.element_size() for b in model.buffers())
    total += sum(2 * 4 * p.numel() for g in optimizer.param_groups for p in g["params"])
    return total


def space_problem(output: str | Path, estimate: int) -> str | None:
    """Rank 0 before a save: a one-line refusal when the run's folder has less free space than the
    last checkpoint's size (or ``estimate`` before the first) plus a margin; else None."""
    from .checkpoint import latest_checkpoint

    root = checkpoint_root(output)
    probe = root if root.is_dir() else Path(output)
    last = latest_checkpoint(output)
    size = checkpoint_bytes(last) if last is not None else estimate
    need = int(size * (1 + MARGIN_FRACTION)) + MARGIN_BYTES
    free = free_bytes(probe)
    if free >= need:
        return None
    basis = f"the last checkpoint {last.name} is {size} bytes" if last is not None else f"about {size} bytes"
    kept = f"the previous checkpoint {last} is intact" if last is not None else "no checkpoint was written yet"
    return (f"{probe}: {free} bytes free, the next checkpoint needs {need} ({basis}, plus a margin); stopped "
            f"before saving, {kept}: free space there (or move --output) and run the same command again")


def _os_error(error: BaseException) -> OSError | None:
    """The OSError behind a failed save: itself, in DCP's per-rank failures, or in its causes."""
    seen = set()
    stack = [error]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError):
            return e
        failures = getattr(e, "failures", None)
        if isinstance(failures, dict):
            stack += [pair[0] if isinstance(pair, tuple) else pair for pair in failures.values()]
        stack += [e.__cause__, e.__context__]
    return None


def guarded_save(output, step: int, model, optimizer, meta: dict, config_toml: str, keep_last: int,
                 **kwargs) -> Path:
    """``checkpoint.save`` behind a free-space check (refused before anything is written:
    NoSpaceForCheckpoint), with an OS error during the save reported as itself
    (CheckpointSaveFailed names the folder and the error; the partial save is removed)."""
    import shutil

    import torch.distributed as dist

    from . import checkpoint
    from .run_lock import decided_on_rank0

    def check():
        problem = space_problem(output, state_bytes(model, optimizer))
        if problem:
            raise NoSpaceForCheckpoint(problem)

    decided_on_rank0(check)
    try:
        return checkpoint.save(output, step, model, optimizer, meta, config_toml, keep_last, **kwargs)
    except BaseException as e:
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        root = checkpoint_root(output)
        free = shutil.disk_usage(root if root.is_dir() else Path(output)).free  # measured now, not the probe
        error = _os_error(e)
        # torch.save reports a full disk as a RuntimeError of its zip writer ("unexpected pos"): a
        # disk with (almost) nothing left is that cause; anything else is a bug and keeps its traceback
        if error is None and free >= MARGIN_BYTES:
            raise
        world = dist.get_world_size() if dist.is_initialized() else 1
        if world == 1:  # alone, nobody else writes there: give the space back now
            for p in root.glob(".tmp_*"):
                shutil.rmtree(p, ignore_errors=True)
        last = checkpoint.latest_checkpoint(output)
        kept = f"the previous checkpoint {last} is intact" if last is not None else "no earlier checkpoint"
        if error is not None:
            what = f"[Errno {error.errno}] {error.strerror or error}"
            what += f": {error.filename}" if error.filename else ""
        else:
            what = f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:160]}"
        raise CheckpointSaveFailed(f"{root}: saving the checkpoint of step {step} failed: {what} ({free} bytes "
                                   f"were free there); {kept}; free space (or fix the folder) and run the same "
                                   "command again") from e


def checkpoint_for_reading(path: str | Path) -> Path:
    """eval / predict / export: a checkpoint folder, or a run folder's newest checkpoint, refused
    in one line naming the folder and what is wrong when it is damaged (nothing is renamed: these
    commands only read)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint folder")
    if (path / "checkpoints").is_dir() and not (path / MARKER).exists() and not (path / ".metadata").exists():
        found = step_folders(path)
        if not found:
            raise CheckpointError(f"{path}: a run folder with no checkpoint yet")
        newest = found[-1][1]
        problem = checkpoint_problem(newest)
        if problem:
            good = next((p for _, p in reversed(found[:-1]) if checkpoint_problem(p) is None), None)
            other = f"; the newest good one is {good}: pass it" if good else "; it has no good one"
            raise CheckpointError(f"{newest}: damaged checkpoint: {problem}{other}")
        return newest
    return require_good(path)
