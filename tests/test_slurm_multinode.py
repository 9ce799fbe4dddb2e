"""Training across real nodes: the multi-node cluster of `slurm/cluster.sh start --nodes 3` (.ci/run).

Each node is a network namespace of its own (own address on the cluster's bridge, own hostname,
own slurmd); nothing crosses between ranks on different nodes but TCP over those links. The tiny
model trains with gloo on the CPU, BatchNorm statistics frozen and no mixing, so that a step's
update does not depend on how its clips are split over ranks. Jobs are queued together when the
module starts; each test follows its own:

- local:      `ila-fast submit --local`, 2 processes on this machine: the reference;
- two_nodes:  --nodes 2 x 1 task: local's losses and final weights, bit for bit;
- hsdp:       --nodes 2 --tasks-per-node 2, parallelism hsdp (mesh 2 x 2): local's, within fp32 rounding;
- preempt:    2 nodes, USR2 after step 2: every rank saves, the job requeues and resumes, bit-identical
              to two_nodes;
- shrink:     2 nodes stopped at step 4, then resumed by a 1-node 1-task job (DCP reshards): local's
              steps 5-8 and weights;
- node_fails: 2 nodes, one of them ilafast3 (kept free of the other jobs), killed after the step-4
              checkpoint: the surviving rank fails within train.dist_step_timeout_s, the job is requeued,
              runs again when the node is back, resumes from the newest complete checkpoint;
- unreachable (last, alone): a node that resolves the master to an address it cannot reach; both
              sides name the other within train.dist_timeout_s.
Every wait has a deadline. Each job's timeline (rounds, nodes, states, saves, resumes) is printed.
The module takes 4-6 minutes on the 2-core machine (measured while it was shared, load average 10-15).
Skipped where no multi-node cluster answers (the reason says why: no Slurm, a single node, or no
network namespaces in this kernel), unless ILA_FAST_REQUIRE_SLURM=1 (CI), where that fails.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import train_helpers as h  # noqa: E402
from test_slurm_startup import slurm_answers  # noqa: E402
from test_slurm_train import CLI, assert_same_weights, last_step, logs, rounds, submit, wait_done  # noqa: E402
from test_train import assert_states_close  # noqa: E402

CLUSTER_SH = h.REPO / "slurm" / "cluster.sh"
PAIR = "ilafast1,ilafast2"   # the 2-node jobs; ilafast3 is kept for the node that dies
VICTIM = "ilafast3"
STEPS = 8
COMMON = {"train__freeze_bn_stats": True, "data__mix_p": 0.0, "train__max_steps": STEPS,
          "train__checkpoint_every_steps": 2}


def cluster_nodes() -> list[str]:
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], check=False, capture_output=True, text=True, timeout=30)
    return sorted(set(out.stdout.split()))


@pytest.fixture(scope="module")
def multinode():
    nodes = cluster_nodes() if slurm_answers() else []
    if not {"ilafast1", "ilafast2", VICTIM} <= set(nodes):
        check = subprocess.run([str(CLUSTER_SH), "netns-check"], check=False, capture_output=True, text=True,
                               timeout=30)
        why = (check.stdout.strip() if check.returncode else
               f"no 3-node cluster of slurm/cluster.sh answers (nodes: {nodes or 'none'}); "
               "start one with slurm/cluster.sh start --nodes 3")
        if os.environ.get("ILA_FAST_REQUIRE_SLURM") == "1":
            pytest.fail(f"ILA_FAST_REQUIRE_SLURM=1 but {why}")
        pytest.skip(why)
    return nodes


def write_config(folder: Path, root: Path, tasks: int = 1, **extra) -> Path:
    """The tiny run as a TOML file: a CPU job, 1 task per node unless ``tasks``."""
    from ila_fast.config import load_config, to_toml

    values = h.overrides(root, **{**COMMON, **extra})
    values.update({"slurm.gpus_per_node": 0, "slurm.tasks_per_node": tasks, "slurm.cpus_per_task": 1,
                   "slurm.time": "15", "slurm.env": ["OMP_NUM_THREADS=1"]})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.toml"
    path.write_text(to_toml(load_config(h.REPO / "configs" / "tiny.toml", values)))
    return path


def job_nodes(job: str) -> list[list[str]]:
    """Nodes of every round of the job (sacct -D), expanded."""
    out = subprocess.run(["sacct", "-j", job, "-D", "-X", "-n", "-P", "-o", "NodeList"], check=False,
                         capture_output=True, text=True, timeout=60).stdout.split()
    expand = (lambda e: subprocess.run(["scontrol", "show", "hostnames", e], capture_output=True, text=True,
                                       timeout=30).stdout.split())
    return [expand(e) if e != "None" else [] for e in out]


def timeline(name: str, job: str, run: Path) -> str:
    """One line per round (state, nodes, start, end), then each rank's saves, resumes, errors, requeues."""
    fields = "JobID,State,NodeList,Start,End"
    out = subprocess.run(["sacct", "-j", job, "-D", "-X", "-n", "-P", "-o", fields], check=False,
                         capture_output=True, text=True, timeout=60).stdout.strip()
    lines = [f"timeline {name} (job {job}, {run}):", *("  round " + r.replace("|", "  ") for r in out.splitlines())]
    pattern = re.compile(r"ila-fast\[[\d:]+\]: (task \d+/\d+ on \S+)|(stopped on request after saving step \d+)|"
                         r"(resumed from \S+ at step \d+[^\n]*)|(requeueing job [^\n]+)|(not requeued[^\n]*)|"
                         r"(\w+Error: [^\n]{0,160})")
    for path in sorted((run / "slurm").glob(f"{job}_*_log.*")):
        found = [next(g for g in m.groups() if g) for m in pattern.finditer(path.read_text(errors="replace"))]
        if found:
            lines.append(f"  {path.name}: " + " | ".join(found))
    return "\n".join(lines)


def wait_until(what: str, ready, limit_s: float, poll_s: float = 0.5):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        time.sleep(poll_s)
    pytest.fail(f"{what}: not within {limit_s:.0f} s")


def complete(run: Path, step: int) -> bool:
    return (run / "checkpoints" / f"step_{step:08d}" / "COMPLETE").exists()


@pytest.fixture(scope="module")
def queued(multinode, tmp_path_factory):
    """The --local reference first, then every job at once; USR2 to `preempt` after its step 2."""
    base = tmp_path_factory.mktemp("multinode")
    root = h.make_dataset(base / "videos")
    cfg = write_config(base / "cfg", root)
    local = subprocess.run([*CLI, "submit", "--config", str(cfg), "--output", str(base / "local"), "--local",
                            "--tasks-per-node", "2"], check=False, capture_output=True, text=True, timeout=600)
    assert local.returncode == 0, local.stdout + local.stderr
    pair = ["--nodes", "2", "--sbatch", f"nodelist={PAIR}"]
    jobs = {
        "two_nodes": submit(cfg, base / "two_nodes", *pair, "--gpus-per-node", "1")[0],   # declared GPUs
        "hsdp": submit(write_config(base / "cfg_hsdp", root, tasks=2, data__batch_size=1), base / "hsdp", *pair,
                       "--parallelism", "hsdp")[0],
        "preempt": submit(cfg, base / "preempt", *pair)[0],
        "shrink": submit(cfg, base / "shrink", *pair, "--max-steps", "4")[0],
        # ilafast3 and one other node: rank 1 on ilafast3 (Slurm orders a job's nodes by name)
        "node_fails": submit(write_config(base / "cfg_fail", root, train__epochs=6, train__max_steps=24,
                                          train__dist_step_timeout_s=20.0),
                             base / "node_fails", "--nodes", "2", "--sbatch", f"nodelist={VICTIM}",
                             "--set", "slurm.max_retries=2")[0],
    }
    death = {}
    events = {"preempt": lambda: last_step(base / "preempt") >= 2,
              # after the step-4 checkpoint and one step more: that step runs again after the resume
              "node_fails": lambda: complete(base / "node_fails", 4) and last_step(base / "node_fails") >= 5}
    deadline = time.monotonic() + 480
    while events and time.monotonic() < deadline:
        if "preempt" in events and events["preempt"]():
            del events["preempt"]
            subprocess.run(["scancel", "--signal=USR2", jobs["preempt"]], check=True, timeout=30)
        if "node_fails" in events and events["node_fails"]():
            del events["node_fails"]
            death["thread"] = threading.Thread(target=play_node_death, args=(jobs["node_fails"],
                                               base / "node_fails", death), daemon=True)
            death["thread"].start()
        time.sleep(0.5)
    assert not events, f"events that never became due: {sorted(events)}"
    yield base, jobs, death
    if "thread" in death:
        death["thread"].join(timeout=300)


def play_node_death(job: str, run: Path, record: dict) -> None:
    """Kill the job's node ilafast3 (every process in its namespace), then do what slurmctld would do
    after SlurmdTimeout (set it DOWN) once the surviving rank has failed, and bring the node back
    once the job waits in the queue. Outcomes and failures go to ``record``."""
    try:
        record["nodes"] = job_nodes(job)[-1]
        record["reached"] = last_step(run)
        record["killed_at"] = time.time()
        subprocess.run([str(CLUSTER_SH), "kill-node", VICTIM], check=True, timeout=60, capture_output=True)
        errors = run / "slurm" / "errors.jsonl"
        deadline = time.monotonic() + 90
        while not errors.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        record["error_seen"] = errors.exists()
        subprocess.run(["scontrol", "update", f"nodename={VICTIM}", "state=down", "reason=test: node killed"],
                       check=True, timeout=30)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and subprocess.run(
                ["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, timeout=30
        ).stdout.strip() != "PENDING":
            time.sleep(0.5)
        record["pending_seen"] = time.time()
    except Exception as e:  # noqa: BLE001 - the test reports it
        record["failure"] = repr(e)
    finally:
        done = subprocess.run([str(CLUSTER_SH), "restore-node", VICTIM], check=False, timeout=120,
                              capture_output=True, text=True)
        record["restored"] = done.returncode == 0 or done.stderr


def test_two_nodes_match_a_local_two_process_run(queued):
    base, jobs, _ = queued
    job, run = jobs["two_nodes"], base / "two_nodes"
    assert wait_done(job) == ["COMPLETED"]
    print(timeline("two_nodes", job, run))
    assert job_nodes(job) == [["ilafast1", "ilafast2"]]
    text = logs(run, job)
    # every rank derived the master's namespace address and its own interface towards it
    assert "rendezvous: master ilafast1 = 10.213.77.11, interface eth0" in text, text[-2000:]
    assert "world 2" in text and "on ilafast1" in text and "on ilafast2" in text
    assert h.losses(run) == h.losses(base / "local") and sorted(h.losses(run)) == list(range(1, STEPS + 1))
    assert_same_weights(run, base / "local")


def test_hsdp_two_by_two_across_nodes_matches(queued):
    base, jobs, _ = queued
    job, run = jobs["hsdp"], base / "hsdp"
    assert wait_done(job) == ["COMPLETED"]
    print(timeline("hsdp", job, run))
    text = logs(run, job)
    assert "world 4" in text
    assert "mesh (replicate 2, shard 2)" in text, text[-2000:]
    # 4 ranks x 1 clip, reduce-scatter inside a node then all-reduce across: the local run's
    # 2 ranks x 2 clips up to fp32 summation order
    mine, ref = h.losses(run), h.losses(base / "local")
    assert mine.keys() == ref.keys() == set(range(1, STEPS + 1))
    for step in mine:
        assert mine[step] == pytest.approx(ref[step], rel=1e-5)
    assert_states_close(h.trainable_state(run), h.trainable_state(base / "local"))


def test_preempted_two_node_job_saves_together_and_resumes_identically(queued):
    base, jobs, _ = queued
    job, run = jobs["preempt"], base / "preempt"
    assert wait_done(job) == ["COMPLETED"]
    print(timeline("preempt", job, run))
    assert rounds(job) == ["REQUEUED", "COMPLETED"]
    text = logs(run, job)
    saved = int(re.search(r"stopped on request after saving step (\d+)", text).group(1))
    assert 2 <= saved < STEPS and f"preempted: checkpoint saved at step {saved}" in text
    # both ranks stopped at the same step; rank 1 left the requeue to rank 0
    assert f"rank 1: preempted, checkpoint saved at step {saved}; rank 0 requeues" in text
    assert re.search(rf"resumed from \S+step_0*{saved} at step {saved}", text)
    assert all(len(nodes) == 2 for nodes in job_nodes(job))
    assert sorted(h.losses(run)) == list(range(1, STEPS + 1))
    wait_done(jobs["two_nodes"])
    assert h.losses(run) == h.losses(base / "two_nodes")
    assert_same_weights(run, base / "two_nodes")


def test_two_node_checkpoint_resumes_on_one_node(queued):
    base, jobs, _ = queued
    run = base / "shrink"
    assert wait_done(jobs["shrink"]) == ["COMPLETED"]
    assert complete(run, 4) and not complete(run, 6)
    cfg = run / "config.toml"   # what the 2-node job ran; the 1-node job changes the layout only
    # one rank takes the 4 clips of a step in one micro-step, as the 2 ranks did together (with 2
    # micro-steps of 2 a single rank's updates differ from the second step on, with or without a resume)
    job = submit(cfg, run, "--nodes", "1", "--tasks-per-node", "1", "--max-steps", str(STEPS),
                 "--set", "data.batch_size=4", "--sbatch", "nodelist=ilafast1")[0]
    assert wait_done(job) == ["COMPLETED"]
    print(timeline("shrink (2 nodes)", jobs["shrink"], run) + "\n" + timeline("shrink (1 node)", job, run))
    assert job_nodes(job) == [["ilafast1"]]
    text = logs(run, job)
    assert re.search(r"resumed from \S+step_0*4 at step 4 .*world size 2 -> 1", text), text[-2000:]
    mine, ref = h.losses(run), h.losses(base / "local")
    assert sorted(mine) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert mine[step] == pytest.approx(ref[step], rel=1e-5), step
    assert_states_close(h.trainable_state(run), h.trainable_state(base / "local"))


def test_node_death_fails_fast_requeues_and_resumes(queued):
    base, jobs, death = queued
    job, run = jobs["node_fails"], base / "node_fails"
    death["thread"].join(timeout=400)
    assert not death["thread"].is_alive(), "the node death sequence did not end within 400 s"
    assert "failure" not in death and death["restored"] is True, death
    assert VICTIM in death["nodes"] and len(death["nodes"]) == 2, death
    survivor = next(n for n in death["nodes"] if n != VICTIM)
    # gloo sees the dead peer at the next collective; train.dist_step_timeout_s = 20 bounds a silent one
    assert death["error_seen"], "the surviving rank did not fail within 90 s of its peer's node dying"
    first = json.loads((run / "slurm" / "errors.jsonl").read_text().splitlines()[0])
    assert first["host"] == survivor and first["rank"] == 0, first
    failed_after = time.mktime(time.strptime(first["time"], "%Y-%m-%dT%H:%M:%S")) - death["killed_at"]
    assert failed_after <= 20 + 2, f"the surviving rank failed {failed_after:.0f} s after the node died"
    assert wait_done(job, limit_s=600) == ["COMPLETED"]
    reached = death["reached"]
    print(timeline("node_fails", job, run) + f"\n  node {VICTIM} killed at step {reached} (last logged), "
          f"the surviving rank on {survivor} failed {max(0.0, failed_after):.0f} s later: {first['error'][:160]}")
    history = rounds(job)
    assert len(history) == 2 and history[0] in {"REQUEUED", "NODE_FAIL"} and history[1] == "COMPLETED", history
    assert VICTIM in job_nodes(job)[-1]   # back in service, it ran the requeued job
    text = logs(run, job)
    resumed = int(re.search(r"resumed from \S+step_0*(\d+) at step", text).group(1))
    # rank 0's log holds both rounds (metrics.jsonl keeps only the steps that count)
    before, after = (run / "slurm" / f"{job}_0_log.out").read_text().split("resumed from", 1)
    first_round, second_round = ({int(n): loss for n, loss in re.findall(r"step (\d+)/24 loss (\S+)", part)}
                                 for part in (before, after))
    died_at = max(first_round)
    assert died_at > resumed, (died_at, resumed)   # the node died after the checkpoint: steps were lost
    # the newest complete checkpoint at the death (every 2 steps; one at died_at may have been cut short)
    assert resumed in (died_at - died_at % 2, died_at - died_at % 2 - 2) and resumed >= 4, (resumed, died_at)
    assert sorted(second_round) == list(range(resumed + 1, 25))
    # the steps between the checkpoint and the death ran twice: identically (to the log's 4 decimals)
    assert all(first_round[k] == second_round[k] for k in range(resumed + 1, died_at + 1))
    assert h.losses(run).keys() == set(range(1, 25))


def _hosts_file(node: str) -> Path:
    return Path("/etc/netns") / node / "hosts"


def test_node_that_cannot_reach_the_master_is_named(multinode, tmp_path):
    """ilafast2 resolves ilafast1 to an address on the bridge that nobody holds; Slurm itself works
    (it uses NodeAddr), the rendezvous does not. Rank 0 names the missing rank and its host, rank 1
    names the master it could not reach; both within train.dist_timeout_s."""
    import cloudpickle
    import submitit

    import test_slurm_startup
    from test_slurm_startup import join_or_report, results_within

    cloudpickle.register_pickle_by_value(test_slurm_startup)   # the job imports no test module

    hosts = _hosts_file("ilafast2")
    original = hosts.read_text()
    ex = submitit.AutoExecutor(folder=tmp_path / "job", cluster="slurm")
    ex.update_parameters(slurm_nodes=2, slurm_ntasks_per_node=1, slurm_cpus_per_task=1, slurm_time=5,
                         slurm_srun_args=["--kill-on-bad-exit=1"], slurm_job_name="ila-test",
                         slurm_additional_parameters={"nodelist": PAIR})
    try:
        # in place: the file is bind-mounted over /etc/hosts in ilafast2's namespaces
        with open(hosts, "r+") as f:
            f.write(re.sub(r"^\S+ ilafast1$", "10.213.77.99 ilafast1", original, flags=re.M))
            f.truncate()
        job = ex.submit(join_or_report, -1, 8.0)
        (master_msg, master_wait), (node_msg, node_wait) = results_within(job, 180)
    finally:
        with open(hosts, "r+") as f:
            f.write(original)
            f.truncate()
        cloudpickle.unregister_pickle_by_value(test_slurm_startup)
    print(f"unreachable master (job {job.job_id}): rank 0 after {master_wait:.1f} s: {master_msg}\n"
          f"  rank 1 after {node_wait:.1f} s: {node_msg}")
    assert "1 of 2 ranks did not join within 8 s: rank 1 (host ilafast2)" in master_msg, master_msg
    assert ("rank 1 on ilafast2: could not reach rank 0 (host ilafast1)'s rendezvous store at "
            "10.213.77.99:") in node_msg, node_msg
    # rank 0 at its deadline; rank 1 at the end of the connect attempt running at the deadline (an
    # unanswered ARP on the bridge takes ~3 s to fail), 13 s measured on a loaded 2-core machine
    assert 8.0 <= master_wait < 12.0 and 8.0 <= node_wait < 16.0, (master_wait, node_wait)
