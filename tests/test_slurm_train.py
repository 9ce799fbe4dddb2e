"""ila-fast submit on the real local Slurm cluster: the tiny model trains with gloo on the CPU.

All jobs are queued at once when the module starts (they run side by side; the cluster declares
more CPUs than the machine has), then each test follows its own job:
- straight: a 2-task job; its final weights match the same run through --local (2 local processes);
- preempt:  the same job, sent USR2 after step 2 -> saves, requeues, resumes, ends bit-identical;
- timelimit: a real 2-minute limit, several rounds in a row (each ends with a save) until complete;
- requeue:  an outside `scontrol requeue` (no signal, no save) resumes from the newest checkpoint;
- sweep:    2 points -> one job array, two run folders;
- error:    training raises -> requeued slurm.max_retries = 1 time, then FAILED, error in --status.
Skipped where no Slurm cluster answers, unless ILA_FAST_REQUIRE_SLURM=1 (CI), where that fails.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import train_helpers as h
from test_slurm_startup import slurm, slurm_answers  # noqa: F401  (the fixture)

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}
CLI = [sys.executable, "-m", "ila_fast.cli"]


def write_config(folder: Path, root: Path, **extra) -> Path:
    """The tiny run as a full TOML file (what a user would keep), CPU job of 2 tasks."""
    from ila_fast.config import load_config, to_toml

    values = h.overrides(root, **{"train__max_steps": 6, "train__checkpoint_every_steps": 2, **extra})
    values.update({"slurm.gpus_per_node": 0, "slurm.tasks_per_node": 2, "slurm.cpus_per_task": 1,
                   "slurm.time": "15", "slurm.env": ["OMP_NUM_THREADS=1"]})
    path = folder / "run.toml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(to_toml(load_config(h.REPO / "configs" / "tiny.toml", values)))
    return path


def submit(config: Path, output: Path, *options: str) -> list[str]:
    out = subprocess.run([*CLI, "submit", "--config", str(config), "--output", str(output), *options],
                         check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return re.findall(r"submitted job (\S+)", out.stdout)


def _sacct_states(job: str, *flags: str) -> list[str]:
    out = subprocess.run(["sacct", "-j", job, *flags, "-X", "-n", "-P", "-o", "State"], check=False,
                         capture_output=True, text=True, timeout=60)
    return [s.split()[0] for s in out.stdout.split() if s.strip()]


def states(job: str) -> list[str]:
    """The current state of the job (of each task of an array)."""
    return _sacct_states(job)


def rounds(job: str) -> list[str]:
    """State of every round of the job, requeued ones first (sacct -D)."""
    return _sacct_states(job, "-D")


def wait_done(job: str, limit_s: float = 480) -> list[str]:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        now = states(job)
        if now and all(s in TERMINAL for s in now):
            time.sleep(1)   # accounting of the last round settles
            return now
        time.sleep(2)
    status = subprocess.run([*CLI, "submit", "--status", job], check=False, capture_output=True, text=True).stdout
    pytest.fail(f"job {job} did not end within {limit_s:.0f} s: {states(job)}\n{status}")


def last_step(run: Path) -> int:
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [json.loads(line).get("step", 0) for line in path.read_text().splitlines() if '"loss"' in line]
    return max(steps, default=0)


def logs(run: Path, job: str) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted((run / "slurm").glob(f"{job}_*_log.*")))


def assert_same_weights(a: Path, b: Path):
    sa, sb = h.trainable_state(a), h.trainable_state(b)
    assert sa.keys() == sb.keys() and len(sa) > 10
    for k in sa:
        assert (sa[k] == sb[k]).all(), (k, (sa[k] - sb[k]).abs().max())


def step_seconds(run: Path) -> float:
    """Seconds per training step of a finished run (from its metrics' timestamps)."""
    times = [json.loads(line)["time"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if '"kind": "train"' in line]
    return (times[-1] - times[0]) / max(1, len(times) - 1)


@pytest.fixture(scope="module")
def queued(slurm, tmp_path_factory):  # noqa: F811 - the imported fixture
    """The --local run first (alone: it also measures this machine's step time), then every job at
    once, with the outside events played while they run: USR2 to the preempted job after its step 2,
    `scontrol requeue` of another after its step-2 checkpoint."""
    base = tmp_path_factory.mktemp("slurm_runs")
    root = h.make_dataset(base / "videos")
    cfg = write_config(base / "cfg", root)
    local = subprocess.run([*CLI, "submit", "--config", str(cfg), "--output", str(base / "local"), "--local"],
                           check=False, capture_output=True, text=True, timeout=600)
    assert local.returncode == 0, local.stdout + local.stderr
    # ~200 s of training at the measured speed: more than one 2-minute round holds (Slurm signals
    # 60-90 s in, as it signals up to 30 s before signal_delay_s) even if the job runs 2x faster
    # than the --local run measured (its mean step counts 2 checkpoint saves; one job ran 1.4x
    # faster). No low cap: with one of 300 steps, a fresh-clone run finished inside its first round.
    steps = max(12, min(5000, round(200 / step_seconds(base / "local"))))
    long = write_config(base / "cfg_long", root, train__epochs=steps // 4 + 1, train__max_steps=steps,
                        train__checkpoint_every_steps=0)
    jobs = {"timelimit": submit(long, base / "timelimit", "--time", "2", "--set", "slurm.signal_delay_s=30",
                                "--set", "slurm.max_timeouts=20")[0], "timelimit_steps": steps,
            "straight": submit(cfg, base / "straight")[0], "preempt": submit(cfg, base / "preempt")[0],
            "requeue": submit(write_config(base / "cfg_requeue", root, train__epochs=6, train__max_steps=24),
                              base / "requeue")[0]}
    jobs["sweep"] = submit(cfg, base / "sweep", "--tasks-per-node", "1", "--max-steps", "2",
                           "--sweep", "train.lr_mit=1e-2,2e-2")
    jobs["error"] = submit(cfg, base / "error", "--tasks-per-node", "1", "--set", "data.train_list=missing.txt",
                           "--set", "slurm.max_retries=1")[0]
    events = {"preempt": lambda: last_step(base / "preempt") >= 2,
              "requeue": lambda: (base / "requeue" / "checkpoints" / "step_00000002" / "COMPLETE").exists()}
    deadline = time.monotonic() + 300
    while events and time.monotonic() < deadline:
        for name, ready in list(events.items()):
            if ready():
                del events[name]
                command = ["scancel", "--signal=USR2"] if name == "preempt" else ["scontrol", "requeue"]
                subprocess.run([*command, jobs[name]], check=True)
        time.sleep(0.5)
    assert not events, f"events that never became due: {sorted(events)}"
    return base, jobs


def test_two_task_job_matches_a_local_two_process_run(queued):
    base, jobs = queued
    assert wait_done(jobs["straight"]) == ["COMPLETED"]
    assert json.loads((base / "straight" / "summary.json").read_text())["status"] == "completed"
    assert h.losses(base / "straight") == h.losses(base / "local")
    assert_same_weights(base / "straight", base / "local")


def test_preemption_signal_saves_requeues_and_resumes_to_the_same_state(queued):
    base, jobs = queued
    job, run = jobs["preempt"], base / "preempt"
    assert wait_done(job) == ["COMPLETED"]
    assert rounds(job) == ["REQUEUED", "COMPLETED"]
    text = logs(run, job)
    saved = int(re.search(r"stopped on request after saving step (\d+)", text).group(1))
    assert 2 <= saved < 6 and f"preempted: checkpoint saved at step {saved}" in text
    assert re.search(rf"resumed from \S+step_0*{saved} at step {saved}", text)
    assert sorted(h.losses(run)) == [1, 2, 3, 4, 5, 6]
    wait_done(jobs["straight"])
    assert h.losses(run) == h.losses(base / "straight")
    assert_same_weights(run, base / "straight")
    status = subprocess.run([*CLI, "submit", "--status", job], check=False, capture_output=True, text=True).stdout
    assert "REQUEUED" in status and "COMPLETED" in status and "newest complete checkpoint: step 6" in status


def test_real_time_limit_over_several_rounds_ends_complete(queued):
    base, jobs = queued
    job, run, steps = jobs["timelimit"], base / "timelimit", jobs["timelimit_steps"]
    assert wait_done(job, limit_s=900) == ["COMPLETED"]
    history = rounds(job)
    text = logs(run, job)
    saves = [int(s) for s in re.findall(r"stopped on request after saving step (\d+)", text)]
    resumes = [int(s) for s in re.findall(r"resumed from \S+ at step (\d+)", text)]
    assert len(history) >= 2 and history[-1] == "COMPLETED" and set(history[:-1]) == {"REQUEUED"}, history
    # every round but the last ended on the time-limit signal with a save; the next resumed from it
    assert len(re.findall(r"timed out: checkpoint saved at step", text)) == len(history) - 1
    assert saves == resumes == sorted(saves) and len(saves) == len(history) - 1, (saves, resumes)
    assert sorted(h.losses(run)) == list(range(1, steps + 1))   # every step exactly once


def test_outside_requeue_resumes_from_the_newest_complete_checkpoint(queued):
    base, jobs = queued
    job, run = jobs["requeue"], base / "requeue"
    assert wait_done(job) == ["COMPLETED"]
    assert rounds(job) == ["REQUEUED", "COMPLETED"]
    text = logs(run, job)
    assert "stopped on request" not in text   # no signal, no save: killed where it was
    resumed = int(re.search(r"resumed from \S+step_0*(\d+) at step", text).group(1))
    before, after = (run / "slurm" / f"{job}_0_log.out").read_text().split("resumed from", 1)
    logged = lambda text: {int(n): float(x) for n, x in re.findall(r"step (\d+)/24 loss (\S+)", text)}
    first, second = logged(before), logged(after)
    reached = max(first)    # the last step logged before the kill
    newest = reached - reached % 2    # checkpoints every 2 steps; the one at `reached` may have been cut short
    assert 2 <= resumed < 24 and resumed in (newest, newest - 2), (resumed, reached)
    assert min(second) == resumed + 1 and sorted(set(first) | set(second)) == list(range(1, 25))
    # the steps after that checkpoint ran twice (before the kill, after the resume): identically,
    # to the 4 decimals the log shows
    rerun = set(first) & set(second)
    assert all(first[k] == second[k] for k in rerun), {k: (first[k], second[k]) for k in rerun}
    # metrics.jsonl keeps each step once: the first round's lines past the resumed step were dropped
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    kept = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train"]
    assert [step for step, _ in kept] == list(range(1, 25)), kept
    assert all(f"{loss:.4f}" == f"{second[step]:.4f}" for step, loss in kept if step in second)


def test_sweep_is_one_job_array_with_a_folder_per_point(queued):
    base, jobs = queued
    ids = jobs["sweep"]
    assert len(ids) == 2 and {i.split("_")[0] for i in ids} == {ids[0].split("_")[0]}
    assert sorted(i.split("_")[1] for i in ids) == ["0", "1"]
    assert wait_done(ids[0].split("_")[0]) == ["COMPLETED", "COMPLETED"]
    for point, lr in (("lr_mit=0.01", 0.01), ("lr_mit=0.02", 0.02)):
        run = base / "sweep" / point
        assert json.loads((run / "summary.json").read_text())["step"] == 2
        assert f"lr_mit = {lr}" in (run / "config.toml").read_text()


def test_failing_job_is_retried_within_the_bound_then_reported(queued):
    base, jobs = queued
    job, run = jobs["error"], base / "error"
    assert wait_done(job) == ["FAILED"]
    assert rounds(job) == ["REQUEUED", "FAILED"]   # slurm.max_retries = 1: one requeue, then the end
    errors = [json.loads(line) for line in (run / "slurm" / "errors.jsonl").read_text().splitlines()]
    assert [e["attempt"] for e in errors] == [1, 2] and all("missing.txt" in e["error"] for e in errors)
    status = subprocess.run([*CLI, "submit", "--status", job], check=False, capture_output=True, text=True).stdout
    assert "FAILED" in status and "missing.txt" in status and "error (attempt 2" in status
