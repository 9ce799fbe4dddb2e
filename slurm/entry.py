"""What every task of an ``ila-fast submit`` job runs: a submitit ``Checkpointable`` around the trainer.

Preemption and time-out (Slurm sends USR2 ``slurm.signal_delay_s`` before the limit, to every task):
submitit's own handler would call ``checkpoint()`` on rank 0 alone and exit at once, which leaves
the other ranks in the middle of a step and no rank able to write a sharded checkpoint. So every
task installs its own USR2 handler, which only asks the trainer to save
(``trainer.request_save(stop=True)``, async-signal-safe). At the next step boundary all ranks agree,
write the checkpoint together and ``fit()`` returns "stopped_on_request"; then rank 0 stores the
resubmission (time-outs counted as submitit does: a signal after min(0.8 x limit, limit - 10 min)
counts, ``slurm.max_timeouts`` of them are allowed) and requeues the job with ``scontrol requeue``.

A job requeued from outside (``scontrol requeue``, a node failure) gets no signal and no save; it
simply starts again, and the trainer's ``resume="auto"`` continues from the newest complete
checkpoint. A training error is recorded (``errors.jsonl`` in the job folder, the task's log) and
requeued at most ``slurm.max_retries`` times; after that the job fails with the error.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

import submitit


def job_port(raw_job_id: str) -> int:
    """A rendezvous port from the job id, so that jobs sharing a node do not collide (20000-39999)."""
    digits = re.sub(r"\D", "", str(raw_job_id)) or "0"
    return 20000 + int(digits) % 20000


def log(message: str) -> None:
    print(f"ila-fast[{time.strftime('%H:%M:%S')}]: {message}", file=sys.stderr, flush=True)


class TrainJob(submitit.helpers.Checkpointable):
    """One training run (one output folder); picklable, resubmitted as itself with ``resume="auto"``."""

    def __init__(self, run_dir: str, time_limit_min: int, resume: str | None = "auto", init: str | None = None,
                 errors: int = 0):
        self.run_dir = str(run_dir)
        self.time_limit_min = time_limit_min
        self.resume = resume
        self.init = init
        self.errors = errors          # training errors so far (bounded by slurm.max_retries)
        self._runtime()

    def _runtime(self) -> None:
        self._trainer = None
        self._stop_requested = False
        self._timed_out = False
        self._started = time.time()

    def __getstate__(self):  # only the run's description travels in the pickle
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._runtime()

    # ------------------------------------------------------------------ the task

    def __call__(self) -> dict:
        job = submitit.JobEnvironment()
        # first of all, before the slow imports: from here on USR2 means "save and requeue" on every rank
        self._started = time.time()
        signal.signal(job._usr_sig(), self._on_preempt_signal)
        try:
            return self._run(job)
        finally:
            # done (or leaving to be requeued): a late USR2 must not kill the exiting process, which
            # would fail a completed job. Python resets its own handlers at exit, but not SIG_IGN.
            signal.signal(job._usr_sig(), signal.SIG_IGN)

    def _run(self, job) -> dict:
        from ila_fast.config import load_config

        cfg = load_config(Path(self.run_dir) / "config.toml")
        for item in cfg.slurm.env:   # NCCL_* and friends, before any process group exists
            name, value = item.split("=", 1)
            os.environ[name.strip()] = value
        env = dist_env(job)
        log(f"task {env.rank}/{env.world} on {socket.gethostname()} (local rank {env.local_rank}), job {job.job_id}, "
            f"master {env.master_addr}:{env.master_port}, run {self.run_dir}, errors so far {self.errors}")
        try:
            from ila_fast.train import Trainer

            # a resumed job never re-initialises from --init: resume="auto" finds its own checkpoints
            trainer = Trainer(cfg, self.run_dir, resume=self.resume, init=self.init, env=env)
            self._trainer = trainer
            if self._stop_requested:   # the signal came while the trainer was being built
                trainer.request_save(stop=True)
            summary = trainer.fit()
        except Exception as error:
            self._after_error(job, cfg, error)
            raise
        log(f"rank {env.rank}: fit() returned {summary.get('status')} at step {summary.get('step')}")
        if summary.get("status") == "stopped_on_request":
            self._requeue_after_save(job, summary)
        return summary

    def _on_preempt_signal(self, signum, frame) -> None:
        # async-signal-safe: flags only; the trainer saves at the next step boundary
        self._stop_requested = True
        walltime = time.time() - self._started
        limit = self.time_limit_min * 60
        self._timed_out = walltime >= min(0.8 * limit, limit - 600)
        if self._trainer is not None:
            self._trainer.request_save(stop=True)

    # ------------------------------------------------------------------ requeue

    def _requeue_after_save(self, job, summary: dict) -> None:
        case = "timed out" if self._timed_out else "preempted"
        if job.global_rank != 0:
            log(f"rank {job.global_rank}: {case}, checkpoint saved at step {summary.get('step')}; rank 0 requeues")
            sys.exit(0)
        self._requeue(job, timed_out=self._timed_out, errors=self.errors,
                      why=f"{case}: checkpoint saved at step {summary.get('step')}")

    def _after_error(self, job, cfg, error: Exception) -> None:
        folder = Path(os.environ.get("SUBMITIT_FOLDER", self.run_dir))
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "job_id": job.job_id, "rank": job.global_rank,
                  "host": socket.gethostname(), "attempt": self.errors + 1,
                  "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-4000:]}
        with open(folder / "errors.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        traceback.print_exc()
        if self.errors >= cfg.slurm.max_retries:
            log(f"rank {job.global_rank}: {record['error']} -- not requeued: {self.errors + 1} errors, "
                f"slurm.max_retries = {cfg.slurm.max_retries}")
            return  # the caller re-raises: submitit stores the error, the job fails
        # one requeue per error, whichever rank raises first (the others may still be in a collective)
        marker = folder / f".requeue_{job.job_id}_{self.errors}"
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            log(f"rank {job.global_rank}: {record['error']} -- another rank requeues the job")
            time.sleep(120)   # the requeue ends this task; exiting with an error first could end the other
            sys.exit(1)
        self._requeue(job, timed_out=False, errors=self.errors + 1,
                      why=f"error {self.errors + 1} of at most {cfg.slurm.max_retries + 1}: {record['error']}")

    def _requeue(self, job, timed_out: bool, errors: int, why: str) -> None:
        from submitit.core import utils

        paths = job.paths
        previous = utils.DelayedSubmission.load(paths.submitted_pickle)
        countdown = previous._timeout_countdown - int(timed_out)
        if countdown < 0:
            log(f"not requeued ({why}): timed out more than slurm.max_timeouts times")
            raise utils.UncompletedJobError(f"{why}; timed out more than slurm.max_timeouts times, not requeued")
        following = TrainJob(self.run_dir, self.time_limit_min, resume="auto", init=self.init, errors=errors)
        resubmission = utils.DelayedSubmission(following)
        resubmission.set_timeout(previous._timeout_min, countdown)
        with utils.temporary_save_path(paths.submitted_pickle) as tmp:
            resubmission.dump(tmp)
        log(f"requeueing job {job.job_id} ({why}; {countdown} time-outs left)")
        job._requeue(countdown)   # Slurm: scontrol requeue; local executor: exits with its requeue code
        sys.exit(-1)


def dist_env(job):
    """The trainer's DistEnv from submitit's JobEnvironment; rank hosts exported for start-up messages."""
    from ila_fast.slurm.network import rendezvous_route
    from ila_fast.train.distributed import DistEnv

    hosts = list(job.hostnames)
    per_node = max(1, job.num_tasks // max(1, job.num_nodes))
    os.environ["ILA_FAST_RANK_HOSTS"] = ",".join(hosts[min(r // per_node, len(hosts) - 1)]
                                                 for r in range(job.num_tasks))
    os.environ["LOCAL_WORLD_SIZE"] = str(per_node)   # what torchrun would set; HSDP's mesh reads it
    # one address every node reaches, and this node's interface towards it (slurm/network.py)
    route = rendezvous_route(hosts)
    log(f"rendezvous: {route.describe()}")
    return DistEnv(rank=job.global_rank, world=job.num_tasks, local_rank=job.local_rank,
                   master_addr=route.address, master_port=job_port(job.raw_job_id))
