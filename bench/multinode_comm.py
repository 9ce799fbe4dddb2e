"""gloo across nodes vs within one, on the multi-node cluster of ``slurm/cluster.sh start --nodes N``.

    python -m ila_fast.bench.multinode_comm --save bench/results/multinode_comm.json

Submits the same 2-rank job twice with submitit: 2 nodes x 1 task (the ranks talk over the nodes'
veth links and the controller's bridge) and 1 node x 2 tasks (loopback inside one namespace), one
after the other so they do not share the cores. Each rank measures, with the trainer's own start-up
(``ila_fast.slurm.entry.dist_env`` + ``setup_distributed``):

- rendezvous: from the call to the end of the first all-reduce (TCP store, gloo's connections, proof);
- per-step collectives of the tiny config as the trainer runs it (fp32, FSDP over 2 ranks): one
  all-gather of the image tower's parameters (FSDP gathers each block's shard; summed here into
  one call of the same bytes) and one all-reduce of the trainable gradients;
- all-reduce and all-gather of 64 KiB to 64 MiB, for the bandwidth.
Medians over ``--repeats`` after one warm-up call. The machine's other load counts in: on a shared
machine, compare the two layouts of one run, not runs of different days.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

SIZES = (64 << 10, 1 << 20, 16 << 20, 64 << 20)


def tiny_step_bytes() -> tuple[int, int]:
    """(image-tower parameter bytes, trainable parameter bytes) of the tiny config, fp32."""
    from ila_fast.config import load_config
    from ila_fast.model import build_model, is_trainable

    model = build_model(load_config("tiny").model)
    tower = sum(p.numel() for p in model.visual.parameters())
    trainable = sum(p.numel() for n, p in model.named_parameters() if is_trainable(n))
    return tower * 4, trainable * 4


def measure(repeats: int) -> dict:
    """One rank of the job: start-up, then the collectives; rank 0's result is the job's."""
    t0 = time.perf_counter()
    import socket

    import submitit
    import torch
    import torch.distributed as dist

    from ila_fast.slurm.entry import dist_env
    from ila_fast.train.distributed import setup_distributed, teardown_distributed

    env = dist_env(submitit.JobEnvironment())
    t_env = time.perf_counter()
    setup_distributed(env, timeout_s=120.0)
    rendezvous = time.perf_counter() - t_env
    world = dist.get_world_size()

    def timed(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            dist.barrier()
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def all_reduce(nbytes):
        t = torch.ones(nbytes // 4)
        return timed(lambda: dist.all_reduce(t))

    def all_gather(nbytes):   # each rank contributes nbytes / world: nbytes gathered, as FSDP does
        shard = torch.ones(nbytes // 4 // world)
        out = torch.empty(shard.numel() * world)
        return timed(lambda: dist.all_gather_into_tensor(out, shard))

    tower, trainable = tiny_step_bytes()
    result = {"host": socket.gethostname(), "rank": env.rank, "world": world, "master": env.master_addr,
              "import_and_env_s": t_env - t0, "rendezvous_s": rendezvous,
              "tiny_step": {"all_gather_bytes": tower, "all_reduce_bytes": trainable,
                            "all_gather_s": all_gather(tower), "all_reduce_s": all_reduce(trainable)},
              "all_reduce_s": {str(n): all_reduce(n) for n in SIZES},
              "all_gather_s": {str(n): all_gather(n) for n in SIZES}}
    teardown_distributed()
    return result


def run_layout(folder: Path, nodes: int, tasks: int, repeats: int, timeout_s: float) -> list[dict]:
    import submitit

    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    ex.update_parameters(slurm_nodes=nodes, slurm_ntasks_per_node=tasks, slurm_cpus_per_task=1, slurm_time=10,
                         slurm_srun_args=["--kill-on-bad-exit=1"], slurm_job_name="ila-bench-comm",
                         slurm_setup=["export OMP_NUM_THREADS=1"])
    job = ex.submit(measure, repeats)
    deadline = time.monotonic() + timeout_s
    while not job.done():
        if time.monotonic() > deadline:
            job.cancel(check=False)
            raise SystemExit(f"job {job.job_id} ({nodes} x {tasks}) did not end within {timeout_s:.0f} s")
        time.sleep(1)
    return job.results()


def table(rows: dict) -> str:
    def ms(x):
        return f"{1000 * x:.2f}"

    names = list(rows)
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    r0 = {k: v[0] for k, v in rows.items()}
    lines.append("| rendezvous (store + gloo + first all-reduce), ms, rank 0 / slowest | " +
                 " | ".join(f"{ms(r0[k]['rendezvous_s'])} / {ms(max(x['rendezvous_s'] for x in rows[k]))}"
                            for k in names) + " |")
    step = r0[names[0]]["tiny_step"]
    lines.append(f"| tiny step: all-gather of {step['all_gather_bytes'] / 2**20:.2f} MiB, ms | " +
                 " | ".join(ms(r0[k]["tiny_step"]["all_gather_s"]) for k in names) + " |")
    lines.append(f"| tiny step: all-reduce of {step['all_reduce_bytes'] / 2**20:.2f} MiB, ms | " +
                 " | ".join(ms(r0[k]["tiny_step"]["all_reduce_s"]) for k in names) + " |")
    for op in ("all_reduce", "all_gather"):
        for n in SIZES:
            size = f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"
            cells = []
            for k in names:
                t = r0[k][f"{op}_s"][str(n)]
                # bus bandwidth as NCCL reports it: all-reduce moves 2(W-1)/W of the bytes per rank,
                # all-gather (W-1)/W
                w = r0[k]["world"]
                factor = 2 * (w - 1) / w if op == "all_reduce" else (w - 1) / w
                cells.append(f"{ms(t)} ({n * factor / t / 1e9:.2f} GB/s)")
            lines.append(f"| {op.replace('_', '-')} {size}, ms (bus bandwidth) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--folder", default="/tmp/ila-fast-bench-comm", help="submitit's job folder")
    parser.add_argument("--save", help="write the results (JSON) here")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds each job may take")
    args = parser.parse_args(argv)
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])   # the job needs no importable copy
    rows = {}
    for name, nodes, tasks in (("2 nodes x 1 rank (veth + bridge)", 2, 1),
                               ("1 node x 2 ranks (loopback)", 1, 2)):
        rows[name] = run_layout(Path(args.folder) / f"{nodes}x{tasks}", nodes, tasks, args.repeats, args.timeout)
    print(table(rows))
    if args.save:
        Path(args.save).write_text(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "repeats": args.repeats,
                                               "layouts": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
