"""Resuming is continuing the same run: the checkpoint's config against the new one, key by key.

    path, changes = choose_checkpoint(output, resume, new_toml, report)   # rank 0, before building
    apply_hyperparameters(optimizer, model, cfg.train)   # after the optimizer state is loaded
    settle_run_folder(output, resume, path, step, rerun_eval, report)   # rollback, metrics.jsonl
    write_run_config(output, toml_text, step, changes)  # config.toml with its history

Keys that define the run cannot change mid-run: the model, the data the loader positions index
(lists, labels, dataset and split, seed, short-video policy), the schedule's length, warm-up and
kind, ``total_batch`` and the seed. The optimizer's hyper-parameters (lrs, weight decays,
``min_lr``, ``warmup_lr``, betas, eps) may change and are applied for real: the loaded optimizer
state carries the old values, so they are set again from the config after the load (the schedule,
per step or timm's per micro-batch, then computes each lr from them and the step). Every other key (logging, checkpoint
cadence, workers, batch size per GPU, precision, ...) changes how the run runs, not what it is.
Each change is reported, recorded in ``metrics.jsonl`` and in ``config.toml``'s history.
"""
from __future__ import annotations

import os
import time
import tomllib
from pathlib import Path

from ila_fast.errors import UserError

# Keys that only change how the model runs, not its weights.
MODEL_RUNTIME = frozenset({"model.kernels", "model.official_eval_bn", "model.clip_weights"})
FIXED = frozenset({"data.train_list", "data.val_list", "data.labels", "data.dataset", "data.split", "data.seed",
                   "data.short_videos", "train.epochs", "train.warmup_epochs", "train.lr_schedule",
                   "train.total_batch", "train.seed"})
HYPER_PREFIXES = ("train.lr_", "train.wd_")
HYPER = frozenset({"train.min_lr", "train.warmup_lr", "train.betas", "train.eps"})
HISTORY = "# ---- history: what changed between restarts (the keys above are the current ones) ----"


def _flatten(config: dict) -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def compare(saved_toml: str, new_toml: str) -> dict[str, tuple]:
    """Every key whose value differs: {dotted key: (old, new)}; an unset key is None."""
    old, new = _flatten(tomllib.loads(saved_toml)), _flatten(tomllib.loads(new_toml))
    return {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)}


def is_fixed(key: str) -> bool:
    return key in FIXED or (key.startswith("model.") and key not in MODEL_RUNTIME)


def is_hyperparameter(key: str) -> bool:
    return key in HYPER or key.startswith(HYPER_PREFIXES)


def _value(value) -> str:
    from ila_fast.config import _toml_value

    return "(unset)" if value is None else _toml_value(value)


def describe(changes: dict[str, tuple]) -> str:
    return ", ".join(f"{k} {_value(a)} -> {_value(b)}" for k, (a, b) in changes.items())


def refuse_fixed(changes: dict[str, tuple], checkpoint: str | Path) -> None:
    fixed = {k: v for k, v in changes.items() if is_fixed(k)}
    if not fixed:
        return
    back = " ".join(f"--set {k}={_value(a)}" for k, (a, _) in fixed.items() if a is not None)
    raise UserError(f"{checkpoint}: this config changes what cannot change mid-run: {describe(fixed)}; "
                    f"to continue the run set {'them' if len(fixed) > 1 else 'it'} back"
                    + (f" ({back})" if back else "") + ", to start over use --resume none (the checkpoints are "
                    "moved aside, not deleted), or give a new --output")


def apply_hyperparameters(optimizer, model, train_cfg) -> None:
    """Set every optimizer group's initial lr, weight decay, betas and eps from ``train_cfg`` (after
    a load put the checkpoint's there); the schedule then sets ``lr`` from ``initial_lr``."""
    from .recipe import param_groups

    fresh = {g["name"]: g for g in param_groups(model, train_cfg)}
    for group in optimizer.param_groups:
        source = fresh.get(group.get("name"))
        if source is None:  # a group the recipe does not make: leave the loaded values
            continue
        group["initial_lr"] = source["initial_lr"]
        group["lr"] = source["lr"]
        group["weight_decay"] = source["weight_decay"]
        group["betas"] = tuple(train_cfg.betas)
        group["eps"] = train_cfg.eps


def write_run_config(output: str | Path, toml_text: str, step: int, changes: dict[str, tuple]) -> None:
    """``config.toml`` = the resolved config now, then the history lines kept from the previous file
    plus one for ``changes`` (written atomically)."""
    path = Path(output) / "config.toml"
    history = []
    if path.is_file():
        lines = path.read_text().splitlines()
        if HISTORY in lines:
            history = [line for line in lines[lines.index(HISTORY) + 1:] if line.startswith("# ")]
    if changes:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        history.append(f"# resumed at step {step}, {when}: {describe(changes)}")
    text = toml_text + ("\n" + HISTORY + "\n" + "\n".join(history) + "\n" if history else "")
    tmp = path.with_name(".config.toml.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def choose_checkpoint(output: str | Path, resume, new_toml: str, report) -> tuple[str | None, dict]:
    """Rank 0, before anything is built: (the checkpoint to resume from, the config changes).

    ``resume``: "auto" (the newest good checkpoint; damaged ones are renamed aside), a checkpoint
    folder (refused when damaged), or None (start over). Keys that cannot change are refused here;
    a different ila-fast version, or a changed config, is reported in one line naming both."""
    import json

    import ila_fast

    from . import checkpoint
    from .checkpoint_health import checkpoint_for_reading, pick_resumable

    checkpoint.remove_partial(output)  # leftovers of interrupted saves: the run lock makes them ours
    if resume == "auto":
        path = pick_resumable(output, report)
    elif resume:  # a checkpoint folder, or a run folder (its newest checkpoint); refused when damaged
        path = checkpoint_for_reading(resume)
    else:
        return None, {}
    if path is None:
        return None, {}
    meta = json.loads((path / "trainer.json").read_text())
    changes = compare((path / "config.toml").read_text(), new_toml)
    refuse_fixed(changes, path)
    version = meta.get("version")
    if version != ila_fast.__version__:
        report(f"{path}: written by ila-fast {version}, this is ila-fast {ila_fast.__version__}; "
               "resuming (the checkpoint format is checked as it loads)")
    import hashlib

    new_hash = hashlib.sha256(new_toml.encode()).hexdigest()[:16]  # = config_hash of the new config
    if changes or meta.get("config_hash") != new_hash:
        report(f"{path}: config changed since this checkpoint (hash {meta.get('config_hash')} -> {new_hash}): "
               f"{describe(changes) or 'no key differs'}; applied from step {meta.get('step')}")
    return str(path), changes


def settle_run_folder(output: str | Path, resume, path: str | None, step: int, rerun_eval: bool,
                      report) -> Path | None:
    """Rank 0, after the checkpoint loaded: a rollback (``--resume PATH`` with newer checkpoints
    here) or a start-over (``--resume none``) moves the checkpoints off this line into
    ``checkpoints/superseded_<time>/``; then ``metrics.jsonl`` drops what this run will log again.
    Returns the superseded folder (None if nothing moved)."""
    from .checkpoint import checkpoint_root
    from .checkpoint_health import drop_metrics_after, supersede

    aside = None
    if resume is None:
        aside = supersede(output, keep=None, newer_than=None, report=report)
    elif resume != "auto" and path is not None:
        ours = Path(path).resolve().parent == checkpoint_root(output).resolve()
        aside = supersede(output, keep=Path(path), newer_than=step if ours else None, report=report)
    dropped = drop_metrics_after(output, step, rerun_eval, aside)
    if dropped and aside is not None:
        report(f"{Path(output) / 'metrics.jsonl'}: {dropped} line(s) past step {step} moved to "
               f"{aside.name}/metrics.dropped.jsonl")
    return aside
