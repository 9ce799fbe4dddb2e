"""Start-up checks as 2-task jobs on the real local Slurm cluster (slurm/cluster.sh start; .ci/run does it).

Skipped where no Slurm cluster answers, unless ILA_FAST_REQUIRE_SLURM=1 (CI), where that fails.
"""
import os
import shutil
import subprocess
import sys
import time

import pytest


def slurm_answers() -> bool:
    if shutil.which("sinfo") is None or shutil.which("srun") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], check=False, capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return False
    usable = {"idle", "mixed", "allocated", "completing", "planned"}
    return out.returncode == 0 and any(s.rstrip("*~#$@+!%") in usable for s in out.stdout.split())


@pytest.fixture(scope="session")
def slurm():
    if not slurm_answers():
        if os.environ.get("ILA_FAST_REQUIRE_SLURM") == "1":
            pytest.fail("ILA_FAST_REQUIRE_SLURM=1 but no Slurm cluster answers (slurm/cluster.sh start)")
        pytest.skip("no Slurm cluster answers here (start one with slurm/cluster.sh start, as root on Debian)")


def executor(folder, tasks=2, timeout_min=5):
    import submitit

    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    ex.update_parameters(slurm_ntasks_per_node=tasks, slurm_cpus_per_task=1, slurm_time=timeout_min,
                         slurm_srun_args=["--kill-on-bad-exit=1"], slurm_job_name="ila-test")
    return ex


def join_or_report(skip_rank: int, timeout_s: float, identity: str | None = None):
    """Every task: rendezvous as the Slurm entry point would; ``skip_rank`` exits before joining."""
    import submitit
    from ila_fast.slurm.entry import dist_env
    from ila_fast.train.distributed import RendezvousError, setup_distributed, teardown_distributed

    env = dist_env(submitit.JobEnvironment())
    if env.rank == skip_rank:
        return "exited before joining"
    start = time.monotonic()
    same = {"config_hash": "same" if identity is None else f"{identity}{env.rank}"}
    try:
        setup_distributed(env, timeout_s, same)   # what the trainer calls: rendezvous, gloo, first all-reduce
        teardown_distributed()
        return ("joined", time.monotonic() - start)
    except RendezvousError as e:
        return (str(e), time.monotonic() - start)


@pytest.fixture(scope="module", autouse=True)
def _pickle_helpers_by_value():
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def results_within(job, limit_s: float = 300):
    """job.results(), or a failure naming the job's state after limit_s: never a wait without end
    (submitit waits forever when the cluster's accounting database is gone)."""
    deadline = time.monotonic() + limit_s
    while not job.done():
        if time.monotonic() > deadline:
            state = job.state
            job.cancel(check=False)
            pytest.fail(f"job {job.job_id} did not end within {limit_s:.0f} s (state {state})")
        time.sleep(1)
    return job.results()


def node_of(job) -> str:
    """The node a one-node job ran on: this machine's name on a single-node cluster, ilafastN on the
    multi-node one of slurm/cluster.sh."""
    return subprocess.run(["sacct", "-j", job.job_id, "-X", "-n", "-o", "NodeList%60"], check=False,
                          capture_output=True, text=True, timeout=60).stdout.strip()


def test_rank_that_never_joins_is_named_within_the_timeout(slurm, tmp_path):
    jobs = [executor(tmp_path / "a").submit(join_or_report, 1, 6.0),    # rank 1 missing
            executor(tmp_path / "b").submit(join_or_report, -1, 20.0),  # all join
            executor(tmp_path / "c").submit(join_or_report, -1, 20.0, "hash")]  # configs differ
    missing, joined, differ = (results_within(job) for job in jobs)
    message, waited = missing[0]
    host = node_of(jobs[0])
    assert missing[1] == "exited before joining"
    assert f"1 of 2 ranks did not join within 6 s: rank 1 (host {host})" in message
    assert 6.0 <= waited < 12.0
    assert [r[0] for r in joined] == ["joined", "joined"]
    other = node_of(jobs[2])
    for rank, (msg, _) in enumerate(differ):
        assert "do not run the same job: config_hash" in msg and f"rank {1 - rank} (host {other})" in msg
