"""The training loop: the whole of it, readable in one place.

    trainer = Trainer(cfg, "runs/b16")     # resume="auto": from the newest complete checkpoint there
    summary = trainer.fit()

One optimizer step = ``accumulation`` micro-steps of ``data.batch_size`` clips on every rank
(gradient sync only on the last). Loss = soft-target cross-entropy on the (mixed, smoothed)
targets + ``aux_loss_weight`` x the alignment loss. Gradients are clipped by their global norm
when ``train.grad_clip`` > 0 (the recipe does not clip);
a non-finite loss or norm skips the optimizer update on the device (fused AdamW's ``found_inf``,
no host sync), is counted, and stops the run after ``max_bad_steps`` in a row (checked at every
log line, where the host reads the device's counters anyway). lr follows ``recipe.Schedule`` per
step, delta the alignment schedule per epoch.

Checkpoints (``checkpoint.py``) every ``checkpoint_every_steps`` or ``checkpoint_every_minutes``,
whichever first, at the end, and on request: ``request_save()`` only sets a flag (safe from a
signal handler); at the next step boundary the ranks agree on their flags over the CPU group and
save together. The loader position is saved as the step within the epoch, so a resumed run
repeats no batch and skips none, also with another world size (same ``total_batch``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import torch
import torch.distributed as dist

import ila_fast
from ila_fast.config import Config, accumulation_steps, config_hash, to_toml
from ila_fast.errors import UserError

from . import checkpoint, distributed, resume_check
from .distributed import DistEnv
from .monitor import Monitor
from .parallel import parallelize
from .recipe import Schedule, param_groups
from .start_checks import check_start
from .checkpoint_health import NoSpaceForCheckpoint, guarded_save
from .run_lock import RunLock, decided_on_rank0

log = logging.getLogger("ila_fast.train")


class TrainingStopped(UserError):
    """The run stopped on purpose (non-finite steps); the message says why and what to do."""


def _report(text: str) -> None:
    """A start-up decision on rank 0 (a damaged checkpoint, a stale lock, a changed config): one line."""
    print(f"ila-fast train: {text}", flush=True)


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


class Trainer:
    def __init__(self, cfg: Config, output: str | Path, resume: str | Path | None = "auto",
                 init: str | Path | None = None, env: DistEnv | None = None):
        self.cfg, self.output = cfg, Path(output)
        self.resume, self.init, self.env = resume, init, env
        self._save_requested = False
        self._stop_requested = False
        self.last_checkpoint: Path | None = None
        self.best_checkpoint: Path | None = None  # checkpoints/best (train.keep_best)

    # ------------------------------------------------------------------ requests
    def request_save(self, stop: bool = True) -> None:
        """Ask for a checkpoint at the next step boundary (and to return from fit() if ``stop``).

        Only sets flags, so it is safe to call from a signal handler, on any subset of ranks."""
        self._stop_requested = self._stop_requested or stop
        self._save_requested = True

    # ------------------------------------------------------------------ set-up
    def _build(self, env: DistEnv) -> None:
        from ila_fast.data import build_loader
        from ila_fast.data.datasets import class_names_for
        from ila_fast.model import build_model
        from ila_fast.model.ila import InterFrameAlignment

        cfg, tc = self.cfg, self.cfg.train
        self.device = device = env.device()
        self.precision = resolve_precision(tc.precision, device)
        self.compile = device.type == "cuda" if tc.compile is None else tc.compile
        self.accumulation = accumulation_steps(cfg, env.world)
        names, _ = class_names_for(cfg)  # model.class_names, data.labels, or data.dataset's bundled names
        check_start(cfg, self.init, names, resuming=self._resuming())  # before any video is probed

        # Data first: a bad list or too many bad videos should stop the run before any model work.
        # Rank 0 probes the videos (and writes the index); the others then read its index.
        def loader(split, mode=None):
            return build_loader(cfg.data, split, cfg.model.frames, cfg.model.input_size, cfg.model.num_classes,
                                rank=env.rank, world=env.world, device=device, mode=mode)

        def on_each_rank(fn):
            out = fn() if env.rank == 0 else None
            distributed.barrier()
            return out if env.rank == 0 else fn()

        self.train_loader = on_each_rank(lambda: loader("train"))
        self.val_loader = None
        if (cfg.data.val_list or cfg.data.dataset != "list") and tc.eval_every_epochs:
            self.val_loader = on_each_rank(lambda: loader("val", mode="val"))
        self.steps_per_epoch = len(self.train_loader) // self.accumulation
        if self.steps_per_epoch == 0:
            raise UserError(f"{cfg.data.train_list}: {len(self.train_loader)} batches of {cfg.data.batch_size} clips "
                            f"per rank is less than one optimizer step of train.total_batch = {tc.total_batch}; "
                            "lower train.total_batch or add videos")
        self.total_steps = tc.epochs * self.steps_per_epoch
        self.stop_step = min(self.total_steps, tc.max_steps) if tc.max_steps else self.total_steps

        # The same seed on every rank: FSDP shards identical initial weights.
        torch.manual_seed(tc.seed)
        # The class names go into every checkpoint (and exported file): predict / eval need no CSV.
        # Their count is checked where they are read: the loader for data.labels, the model here.
        model = build_model(cfg.model, class_names=names)
        self.class_names = names
        if self.init:
            load_initial_weights(model, self.init)
        for m in model.modules():
            if isinstance(m, InterFrameAlignment):
                m.freeze_bn_stats = tc.freeze_bn_stats
        model.to(device).train()
        if hasattr(model, "prepare_text_features"):
            model.prepare_text_features()  # before sharding: the text tower is never gathered in training
        self.model = parallelize(model, self.precision, self.compile, tc.activation_checkpointing == "block",
                                 tc.parallelism, device)
        self.optimizer = torch.optim.AdamW(param_groups(self.model, tc), betas=tuple(tc.betas), eps=tc.eps,
                                           fused=True)
        # the micro_batch lr schedule counts the loader's batches, leftovers at an epoch's end included
        self.schedule = Schedule(self.optimizer, tc, self.steps_per_epoch,
                                 micro_batches_per_epoch=len(self.train_loader), accumulation=self.accumulation)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # fp16 trains with a dynamic loss scale kept on the device; bf16 and fp32 need none.
        self.loss_scale = torch.tensor(2.0 ** 16, device=device) if self.precision == "fp16" else None
        self.scale_clean = torch.zeros((), device=device, dtype=torch.int64)
        self.bn_buffers = [b for n, b in self.model.named_buffers()
                           if n.endswith(("running_mean", "running_var", "num_batches_tracked"))]
        torch.manual_seed(tc.seed + 1000 * env.rank + 1)  # drop-path differs per rank

    def _choose_checkpoint(self, env: DistEnv) -> None:
        """Before anything is built: which checkpoint to resume from (damaged ones renamed aside, a
        config that changes what cannot change refused), decided on rank 0 for every rank."""
        self.resume_path, self.config_changes = decided_on_rank0(
            lambda: resume_check.choose_checkpoint(self.output, self.resume, to_toml(self.cfg), _report))

    def _resuming(self) -> bool:
        """Whether this start will resume a checkpoint (its weights, not CLIP's, are the start)."""
        if hasattr(self, "resume_path"):
            return self.resume_path is not None
        return bool(self.resume) and (self.resume != "auto" or checkpoint.latest_checkpoint(self.output) is not None)

    def _resume(self, env: DistEnv) -> None:
        self.step, self.epoch, self.step_in_epoch, self.pending_eval = 0, 0, 0, None
        if not hasattr(self, "resume_path"):
            self._choose_checkpoint(env)
        path = self.resume_path
        if path is None:
            decided_on_rank0(lambda: resume_check.settle_run_folder(self.output, self.resume, None, 0, False,
                                                                    _report) and None)
            return
        meta = checkpoint.read_meta(path)
        if meta["steps_per_epoch"] != self.steps_per_epoch:
            raise UserError(f"{path}: saved with {meta['steps_per_epoch']} steps per epoch, this run has "
                            f"{self.steps_per_epoch} (a different training list?); start a new --output")
        checkpoint.load(path, self.model, self.optimizer)
        # the loaded optimizer state carries the checkpoint's lrs and decays: this config's apply
        resume_check.apply_hyperparameters(self.optimizer, self.model, self.cfg.train)
        self.step, self.epoch, self.step_in_epoch = meta["step"], meta["epoch"], meta["step_in_epoch"]
        if meta.get("bad_videos"):
            self.train_loader.bad_log.load_state_dict(meta["bad_videos"])
        decided_on_rank0(lambda: resume_check.settle_run_folder(
            self.output, self.resume, path, self.step, meta.get("pending_eval") is not None, _report) and None)
        self.wall_before = meta.get("wall_time_s", 0.0)
        self.pending_eval = meta.get("pending_eval")
        if self.loss_scale is not None and meta.get("loss_scale"):
            self.loss_scale.fill_(meta["loss_scale"])
            self.scale_clean.fill_(meta.get("loss_scale_clean_steps", 0))
        restored = meta["world"] == env.world and checkpoint.restore_rng(path, env.rank)
        # each rank's own BatchNorm statistics (load gave every rank rank 0's): a bit-exact resume on every rank
        own_bn = meta["world"] == env.world and checkpoint.restore_rank_buffers(path, self.model, env.rank)
        self.resumed_from = path
        self.monitor_note = (f"resumed from {path} at step {self.step} (epoch {self.epoch}, step "
                             f"{self.step_in_epoch} of {self.steps_per_epoch})"
                             + ("" if restored else f"; world size {meta['world']} -> {env.world}, RNG reseeded"
                                if meta["world"] != env.world else "; its RNG file is missing or damaged: RNG reseeded")
                             + ("" if own_bn else "; every rank starts from rank 0's BatchNorm statistics"))

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        owns_group = not dist.is_initialized()
        # Every rank must join within dist_timeout_s and run the same config and versions (else one
        # line naming the ranks / hosts); collectives then time out after dist_step_timeout_s.
        env = distributed.setup_distributed(self.env, self.cfg.train.dist_timeout_s,
                                            identity={"config_hash": config_hash(self.cfg),
                                                      "ila_fast": ila_fast.__version__})
        lock = None

        def take_lock():
            nonlocal lock
            lock = RunLock.acquire(self.output, warn=_report)

        try:
            # one writer per run folder: taken on rank 0 before anything there is touched
            decided_on_rank0(take_lock)
            return self._fit(env)
        finally:
            if lock is not None:
                lock.release()
            if owns_group:
                distributed.teardown_distributed()

    def _fit(self, env: DistEnv) -> dict:
        from ila_fast.config_paths import check_paths
        from ila_fast.errors import one_line

        from .run_log import RunLog

        # every missing path of the config at once, before any work (and before a run folder exists)
        check_paths(self.cfg, ("train", "val") if self.cfg.data.val_list and self.cfg.train.eval_every_epochs
                    else ("train",))
        self.run_log = None
        if env.is_main:  # train.log: everything rank 0 prints from here on
            self.output.mkdir(parents=True, exist_ok=True)
            self.run_log = RunLog(self.output / "train.log")
        try:
            return self._fit_logged(env)
        except BaseException as e:
            if self.run_log is not None:
                self.run_log.write_only(f"ila-fast train: stopped by {type(e).__name__}: {one_line(e)}")
            raise
        finally:
            if self.run_log is not None:
                self.run_log.close()

    def _fit_logged(self, env: DistEnv) -> dict:
        cfg, tc = self.cfg, self.cfg.train
        self.monitor_note, self.resumed_from = None, None
        self.started, self.wall_before = time.time(), 0.0  # wall_before: resumed parts, up to their checkpoint
        self.clips_trained, self.train_seconds = 0, 0.0
        self._choose_checkpoint(env)
        self._build(env)
        self._resume(env)
        self.best_top = self._best_so_far()
        if env.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
            resume_check.write_run_config(self.output, to_toml(cfg), self.step, self.config_changes)
        monitor = Monitor(self.output, env.is_main, self.stop_step, self.step, self.steps_per_epoch,
                          run_log=self.run_log)
        self.sample_file = None
        if tc.log_samples:
            self.output.mkdir(parents=True, exist_ok=True)
            self.sample_file = open(self.output / f"samples.rank{env.rank}.jsonl", "a", buffering=1)
        monitor.message(f"ila-fast {ila_fast.__version__}: {cfg.model.arch} {cfg.model.dataset} "
                        f"{cfg.model.frames}x{cfg.model.input_size}, world {env.world} {self.model.mesh_description}, "
                        f"{self.device.type}, {self.precision}, compile {self.compile}, {self.accumulation} micro-step(s) of "
                        f"{cfg.data.batch_size} clips per step, {self.steps_per_epoch} steps per epoch, "
                        f"{self.total_steps} in all -> {self.output}")
        if self.monitor_note:
            monitor.message(self.monitor_note)
        if self.config_changes:  # also in config.toml's history
            monitor.record("config_change", self.step,
                           {"changes": {k: list(v) for k, v in self.config_changes.items()}})
        counters = {k: torch.zeros((), device=self.device)
                    for k in ("loss", "cls", "aux", "norm", "bad", "streak", "max_streak", "skipped")}
        status = "failed"
        try:
            if self.pending_eval is not None:  # saved at an epoch's end, before its evaluation
                self._evaluate(monitor, self.pending_eval)
            status = self._run(env, monitor, counters)
        except NoSpaceForCheckpoint:
            status = "stopped_no_space"
            raise
        finally:
            summary = self._summary(status, counters)
            monitor.close(summary)
            if self.sample_file is not None:
                self.sample_file.close()
        return summary

    def _run(self, env: DistEnv, monitor: Monitor, counters) -> str:
        cfg, tc = self.cfg, self.cfg.train
        interval = {"steps": 0, "clips": 0, "wait": 0.0, "start": time.perf_counter()}
        self._timeout_shortened = False
        last_save_time = time.monotonic()
        self.schedule.set(self.step)
        while self.step < self.stop_step:
            if self.step_in_epoch >= self.steps_per_epoch:
                self.epoch, self.step_in_epoch = self.epoch + 1, 0
            self.model.set_epoch(self.epoch)  # delta schedule (docs/recipe.md)
            self.train_loader.set_epoch(self.epoch)
            self.train_loader.load_state_dict({"epoch": self.epoch, "seed": cfg.data.seed,
                                               "step": self.step_in_epoch * self.accumulation})
            batches = iter(self.train_loader)
            while self.step_in_epoch < self.steps_per_epoch and self.step < self.stop_step:
                interval["wait"] += self._train_step(batches, counters)
                if not self._timeout_shortened:  # compiles and first collectives are behind us
                    distributed.shorten_timeout(tc.dist_step_timeout_s)
                    self._timeout_shortened = True
                self.step += 1
                self.step_in_epoch += 1
                interval["steps"] += 1
                interval["clips"] += tc.total_batch
                epoch_end = self.step_in_epoch == self.steps_per_epoch
                if epoch_end:  # the epoch's bad-video report and counts (the loader is not drawn to its end)
                    self._end_data_epoch(monitor, self.train_loader, self.epoch)
                eval_due = (epoch_end and self.val_loader is not None
                            and (self.epoch + 1) % tc.eval_every_epochs == 0)
                time_due = bool(tc.checkpoint_every_minutes) and \
                    time.monotonic() - last_save_time >= 60 * tc.checkpoint_every_minutes
                steps_due = bool(tc.checkpoint_every_steps) and self.step % tc.checkpoint_every_steps == 0
                # One tiny CPU all-reduce per step: a request on any rank, or rank clocks that disagree.
                save, stop, time_due = distributed.agree([int(self._save_requested), int(self._stop_requested),
                                                          int(time_due)])
                if self.step % tc.log_every_steps == 0 or self.step == self.stop_step or save or epoch_end:
                    self._log(monitor, counters, interval)
                self.schedule.set(self.step)  # after the log line, which shows the lr the step used
                if save or time_due or steps_due or self.step == self.stop_step:
                    self._save(env, pending_eval=self.epoch if eval_due else None)
                    last_save_time = time.monotonic()
                    interval["start"] = time.perf_counter()  # clips/s counts training, not saving
                    self._save_requested = False
                    if stop and self.step < self.stop_step:  # at the last step the run is simply done
                        self._stop_requested = False
                        monitor.message(f"stopped on request after saving step {self.step} -> {self.last_checkpoint}")
                        return "stopped_on_request"
                if eval_due:
                    self._evaluate(monitor, self.epoch)
                    interval["start"] = time.perf_counter()
        return "completed"

    def _train_step(self, batches, counters) -> float:
        """One optimizer step over ``accumulation`` micro-batches; returns the seconds spent waiting on data."""
        from ila_fast.data import soft_target_cross_entropy

        tc, wait = self.cfg.train, 0.0
        bn_saved = [b.clone() for b in self.bn_buffers]
        loss_sum = torch.zeros((), device=self.device)
        cls_sum, aux_sum = loss_sum.clone(), loss_sum.clone()
        for micro in range(self.accumulation):
            tick = time.perf_counter()
            batch = next(batches)
            wait += time.perf_counter() - tick
            if self.sample_file is not None:
                self.sample_file.write(json.dumps({"step": self.step, "micro": micro, "epoch": self.epoch,
                                                   "video_index": batch.video_index.tolist(),
                                                   "position": batch.position.tolist()}) + "\n")
            self.model.set_requires_gradient_sync(micro == self.accumulation - 1)
            out = self.model(batch.video)
            cls = soft_target_cross_entropy(out.logits.float(), batch.target.float())
            aux = out.aux_loss.float()
            loss = cls + tc.aux_loss_weight * aux
            scaled = loss / self.accumulation
            (scaled * self.loss_scale if self.loss_scale is not None else scaled).backward()
            loss_sum += loss.detach() / self.accumulation
            cls_sum += cls.detach() / self.accumulation
            aux_sum += aux.detach() / self.accumulation
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads, foreach=True)
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        scale = self.loss_scale
        norm = norm / scale if scale is not None else norm  # the true norm of the unscaled gradient
        # Unscale and clip in one multiply, on the device (no host sync).
        coef = torch.clamp(tc.grad_clip / (norm + 1e-6), max=1.0) if tc.grad_clip > 0 else torch.ones_like(norm)
        if scale is not None:
            coef = coef / scale
        if tc.grad_clip > 0 or scale is not None:
            torch._foreach_mul_(grads, coef)
        # The skip decision uses the global norm, which every rank computes identically (a
        # non-finite loss on any rank makes it non-finite everywhere).
        bad = ~(torch.isfinite(norm) & torch.isfinite(loss_sum))
        # A skipped step must not leave its (possibly non-finite) batch statistics behind either.
        for buffer, saved in zip(self.bn_buffers, bn_saved):
            buffer.copy_(torch.where(bad, saved, buffer))
        self.optimizer.found_inf = bad.float()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        # fp16: an overflowing gradient halves the loss scale; 2000 clean steps double it. Only a
        # non-finite loss counts towards the stop: overflow is the scaler's normal business.
        streak_bad = bad
        if scale is not None:
            grow = self.scale_clean >= 2000
            self.loss_scale = torch.where(bad, scale * 0.5, torch.where(grow, scale * 2.0, scale))
            self.scale_clean = torch.where(bad | grow, torch.zeros_like(self.scale_clean), self.scale_clean + 1)
            streak_bad = ~torch.isfinite(loss_sum)
        c = counters
        good = (~bad).float()
        c["loss"] += torch.nan_to_num(loss_sum * good)
        c["cls"] += torch.nan_to_num(cls_sum * good)
        c["aux"] += torch.nan_to_num(aux_sum * good)
        c["norm"] += torch.nan_to_num(norm * good)
        c["skipped"] += bad.float()
        c["bad"] += bad.float()
        c["streak"].copy_((c["streak"] + 1) * streak_bad.float())
        torch.maximum(c["max_streak"], c["streak"], out=c["max_streak"])
        return wait

    def _log(self, monitor: Monitor, counters, interval) -> None:
        """Read the device counters (the only host sync of the loop) and report them."""
        tc = self.cfg.train
        steps = interval["steps"]
        if steps == 0:
            return
        if dist.get_world_size() > 1:  # the log shows the mean over ranks (loss) and their sums (skips)
            packed = torch.stack([counters[k] for k in ("loss", "cls", "aux")])
            dist.all_reduce(packed)
            packed /= dist.get_world_size()
            values = {k: float(v) for k, v in counters.items()}
            values.update(zip(("loss", "cls", "aux"), packed.tolist()))
        else:
            values = {k: float(v) for k, v in counters.items()}
        if values["max_streak"] >= tc.max_bad_steps:
            raise TrainingStopped(f"{self.output}: {int(values['max_streak'])} optimizer steps in a row had a "
                                  f"non-finite loss or gradient norm (step {self.step}); the last complete "
                                  "checkpoint is intact: lower the learning rates or check the data, then resume")
        good = max(1.0, steps - values["bad"])
        elapsed = time.perf_counter() - interval["start"]
        self.clips_trained += interval["clips"]
        self.train_seconds += elapsed
        scalars = {"loss": values["loss"] / good, "loss_cls": values["cls"] / good, "loss_aux": values["aux"] / good,
                   "grad_norm": values["norm"] / good, "skipped_steps": values["skipped"],
                   "lr": self.optimizer.param_groups[0]["lr"], "clips_per_s": interval["clips"] / max(elapsed, 1e-9),
                   "data_wait": interval["wait"] / max(elapsed, 1e-9),
                   "delta": float(self._delta()), "bad_videos": float(len(self.train_loader.bad_log.bad))}
        for name, lr in self.schedule.lrs().items():
            scalars[f"lr/{name}"] = lr
        if self.device.type == "cuda":
            scalars["gpu_mem_gib"] = torch.cuda.max_memory_allocated(self.device) / 2 ** 30
        if values["bad"]:
            monitor.message(f"step {self.step}: {int(values['bad'])} step(s) skipped (non-finite loss or gradient)")
        monitor.step(self.step, self.epoch, scalars, advanced=steps)
        for k in ("loss", "cls", "aux", "norm", "bad", "max_streak"):
            counters[k].zero_()
        interval.update(steps=0, clips=0, wait=0.0, start=time.perf_counter())

    def _delta(self) -> float:
        block = self.model.visual.transformer.resblocks[0]
        return float(block.message_ila.delta) if hasattr(block, "message_ila") else 0.0  # model.ila = false

    def _evaluate(self, monitor: Monitor, epoch: int) -> None:
        from .evaluate import evaluate

        self.val_loader.set_epoch(epoch)  # its bad-video report is this training epoch's
        self.model.eval()
        try:
            with torch.no_grad():
                result = evaluate(self.model, self.val_loader, self.cfg.model.num_classes, env=self.env_used)
        finally:
            self.model.train()
        monitor.eval(self.step, epoch, {"top1": result.top1, "top5": result.top5,
                                        "mean_class_acc": result.mean_class_acc, "scored": float(result.scored)})
        if self.cfg.train.keep_best and (result.top1, result.top5) > self.best_top:
            # the same numbers on every rank (evaluate all-reduces), so every rank takes this branch
            self.best_top = (result.top1, result.top5)
            self._save(self.env_used, pending_eval=None, best={"top1": result.top1, "top5": result.top5,
                                                               "epoch": epoch, "step": self.step})
            monitor.message(f"best top-1 so far ({100 * result.top1:.2f} %): saved {self.best_checkpoint}")

    @staticmethod
    def _end_data_epoch(monitor: Monitor, loader, epoch: int) -> None:
        report = loader.end_epoch(epoch)
        if report and (report["new_bad_videos_this_epoch"] or report["replacements_this_epoch"]):
            monitor.message(f"epoch {epoch}: {report['dataset']}: {report['new_bad_videos_this_epoch']} new bad "
                            f"video(s), {report['replacements_this_epoch']} sample(s) replaced this epoch; "
                            f"{report['bad_videos']} of {report['videos']} bad so far")

    def _best_so_far(self) -> tuple[float, float]:
        """(top-1, top-5) of checkpoints/best, or below any result when there is none (a fresh run)."""
        path = checkpoint.best_checkpoint(self.output)
        self.best_checkpoint = path
        found = checkpoint.read_meta(path).get("eval") if path is not None else None
        value = (found["top1"], found["top5"]) if found else (-1.0, -1.0)
        return tuple(distributed.broadcast_object(value))

    def _save(self, env: DistEnv, pending_eval: int | None, best: dict | None = None) -> None:
        meta = {"step": self.step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                "steps_per_epoch": self.steps_per_epoch, "total_batch": self.cfg.train.total_batch,
                "world": env.world, "pending_eval": pending_eval, "version": ila_fast.__version__,
                "config_hash": config_hash(self.cfg), "time": time.time(),
                "loader": {"epoch": self.epoch, "step": self.step_in_epoch * self.accumulation},
                "loss_scale": float(self.loss_scale) if self.loss_scale is not None else None,
                "loss_scale_clean_steps": int(self.scale_clean), "class_names": self.class_names,
                "wall_time_s": self.wall_before + time.time() - self.started,
                "bad_videos": self.train_loader.bad_log.state_dict()}
        if best is not None:  # checkpoints/best: outside keep_last; its evaluation is done
            meta["eval"] = best
            self.best_checkpoint = guarded_save(self.output, self.step, self.model, self.optimizer, meta,
                                                   to_toml(self.cfg), self.cfg.train.keep_last, name=checkpoint.BEST)
            return
        self.last_checkpoint = guarded_save(self.output, self.step, self.model, self.optimizer, meta,
                                            to_toml(self.cfg), self.cfg.train.keep_last)

    def _summary(self, status: str, counters) -> dict:
        from .monitor import eval_summary

        now = time.time()
        tc = self.cfg.train
        return {"status": status, "step": self.step, "epoch": self.epoch, "total_steps": self.total_steps,
                "stop_step": self.stop_step, "epochs": tc.epochs,
                "epochs_done": round(self.step / self.steps_per_epoch, 4),
                "clips_seen": self.step * tc.total_batch,
                "wall_time_s": round(self.wall_before + now - self.started, 3),
                "wall_time_this_process_s": round(now - self.started, 3),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now)),
                # training steps only (no evaluation, no saving), this process
                "clips_per_s": round(self.clips_trained / self.train_seconds, 3) if self.train_seconds else None,
                **eval_summary(self.output),
                "best_checkpoint": str(self.best_checkpoint) if self.best_checkpoint else None,
                "last_checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
                "resumed_from": str(self.resumed_from) if self.resumed_from else None,
                "skipped_steps": float(counters["skipped"]),
                "bad_videos": self.train_loader.bad_log.summary(), "output": str(self.output)}

    @property
    def env_used(self) -> DistEnv:
        return DistEnv(rank=dist.get_rank(), world=dist.get_world_size())


def load_initial_weights(model, path: str | Path) -> None:
    """--init: an ila-fast model file, a trainer checkpoint folder, or an official ILA checkpoint."""
    from ila_fast.model.convert import FORMAT, convert_official

    path = Path(path)
    if not path.exists():
        raise UserError(f"--init {path}: no such file or folder")
    if path.is_dir():
        state, _ = checkpoint.load_model_state(path)
    else:
        raw = torch.load(path, map_location="cpu", weights_only=False)
        if isinstance(raw, dict) and raw.get("format") == FORMAT:
            state = raw["model"]
        else:
            converted, _ = convert_official(path, dataclasses.replace(model.cfg))
            state = converted.state_dict()
    missing, unexpected = model.load_state_dict(state, strict=False)  # class text features are not state
    if missing or unexpected:
        raise UserError(f"--init {path}: weights do not fit this model: missing {missing[:6]}, "
                        f"unexpected {unexpected[:6]}")

