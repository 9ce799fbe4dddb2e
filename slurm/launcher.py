"""``ila-fast submit``: queue a training run (or a sweep, as one job array) on Slurm with submitit.

    ila-fast submit --config configs/k400_l14_8f.toml --output runs/l14 --nodes 4 --gpus-per-node 8 \\
        --partition gpu --time 2-00:00:00
    ila-fast submit ... --sweep train.lr_mit=1e-4,2e-4 --sweep data.batch_size=4,8   # 4 array tasks
    ila-fast submit ... --dry-run       # print the sbatch script and exit
    ila-fast submit ... --local         # the same entry point on this machine (submitit's local executor)
    ila-fast submit --status 1234       # state of each round, last log lines, the error if any

Cluster defaults come from the config's [slurm] section; command-line options override them, and
the resolved config (what the job runs) is written to each run folder before anything is queued.
The job folder (OUTPUT/slurm) keeps submitit's logs and pickles, a copy of the config and jobs.jsonl.
No torch / submitit import at module level: the CLI lists commands without them.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import sys
import time
from pathlib import Path

# command-line option -> [slurm] key
SLURM_OPTIONS = ("nodes", "gpus_per_node", "tasks_per_node", "cpus_per_task", "mem", "time", "partition",
                 "account", "qos", "constraint", "job_name")


def add_arguments(parser) -> None:
    parser.add_argument("--config", help="run config (TOML), with an optional [slurm] section of cluster defaults")
    parser.add_argument("--output", help="run folder (a sweep: one sub-folder per point)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                        help="sweep a config key; several --sweep make their product, submitted as one job array")
    g = parser.add_argument_group("resources (override [slurm])")
    g.add_argument("--nodes", type=int, help="nodes to run on")
    g.add_argument("--gpus-per-node", type=int, help="0 for a CPU job; one task per GPU")
    g.add_argument("--tasks-per-node", type=int, help="default: one per GPU")
    g.add_argument("--cpus-per-task", type=int, help="CPU cores per task (data workers)")
    g.add_argument("--mem", help="memory per node, sbatch syntax (e.g. 400G)")
    g.add_argument("--time", help="time limit: minutes, HH:MM:SS or D-HH:MM:SS")
    g.add_argument("--partition", help="Slurm partition")
    g.add_argument("--account", help="Slurm account to charge")
    g.add_argument("--qos", help="Slurm quality of service")
    g.add_argument("--constraint", help="node features, sbatch --constraint syntax")
    g.add_argument("--job-name", help="Slurm job name")
    g.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. --sbatch exclude=node7 --sbatch exclusive=")
    t = parser.add_argument_group("training")
    t.add_argument("--parallelism", choices=("fsdp", "hsdp"), help="FSDP over all ranks, or HSDP (shard inside "
                                                                    "a node, replicate across nodes)")
    t.add_argument("--max-steps", type=int, help="train.max_steps")
    t.add_argument("--init", help="initialise from this checkpoint (a resumed job continues its own instead)")
    m = parser.add_argument_group("mode")
    m.add_argument("--local", action="store_true", help="run on this machine with submitit's local executor "
                                                        "(waits for the end)")
    m.add_argument("--dry-run", action="store_true", help="print the resolved sbatch script and exit")
    m.add_argument("--status", metavar="JOB", help="job id (or job folder): state of each round, logs, error")
    m.add_argument("--wait", action="store_true", help="wait for the job(s) to end; exit 1 if one failed")


# ---------------------------------------------------------------- resolving

def sweep_points(sweeps: list[str]) -> list[dict]:
    """``["a.b=1,2", "c.d=x,y"]`` -> the product as a list of override dicts (values parsed as TOML)."""
    from ila_fast.config import ConfigError, parse_overrides

    axes = []
    for item in sweeps:
        if "=" not in item or not item.split("=", 1)[1].strip():
            raise ConfigError(f"--sweep {item}: expected KEY=V1,V2,... e.g. --sweep train.lr_mit=1e-4,2e-4")
        key, values = item.split("=", 1)
        axes.append([parse_overrides([f"{key.strip()}={v.strip()}"]) for v in values.split(",")])
    return [dict(kv for point in combo for kv in point.items()) for combo in itertools.product(*axes)]


def point_name(point: dict) -> str:
    """A folder name for a sweep point: ``lr_mit=0.0001,batch_size=4``."""
    name = ",".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in point.items())
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", name) or "run"


def command_overrides(args) -> dict:
    """The command line's resource / training options as config overrides (so the saved config is the truth)."""
    from ila_fast.config import load_config, parse_overrides

    overrides = parse_overrides(args.set)
    for key in SLURM_OPTIONS:
        value = getattr(args, key)
        if value is not None:
            overrides[f"slurm.{key}"] = value
    if args.sbatch:
        base = load_config(args.config, {k: v for k, v in overrides.items() if k == "slurm.sbatch"})
        overrides["slurm.sbatch"] = list(base.slurm.sbatch) + list(args.sbatch)
    if args.parallelism:
        overrides["train.parallelism"] = args.parallelism
    if args.max_steps is not None:
        overrides["train.max_steps"] = args.max_steps
    return overrides


def sbatch_parameters(cfg) -> dict:
    """[slurm] -> submitit SlurmExecutor parameters (sbatch options one to one; extras passed through)."""
    from ila_fast.config import ConfigError, slurm_time_minutes

    s = cfg.slurm
    limit = slurm_time_minutes(s.time)
    # Slurm checks limits every 30 s and signals up to 30 s before the asked delay; the signal must not
    # come while the tasks are still starting (start-up takes up to a minute on a busy node)
    if s.signal_delay_s + 30 + 60 > limit * 60:
        raise ConfigError(f"slurm.signal_delay_s = {s.signal_delay_s} s: with slurm.time = {s.time!r} Slurm could "
                          f"signal before the tasks have started (it signals up to 30 s early); the limit must "
                          f"exceed signal_delay_s + 90 s (e.g. --set slurm.signal_delay_s={max(0, limit * 60 - 90)})")
    params = {"job_name": s.job_name or f"ila-{cfg.name}", "nodes": s.nodes, "ntasks_per_node": s.tasks,
              "cpus_per_task": s.cpus_per_task, "time": limit, "signal_delay_s": s.signal_delay_s,
              # one failing task ends the step at once instead of leaving the others in a collective
              "srun_args": ["--kill-on-bad-exit=1"]}
    if s.gpus_per_node:
        params["gpus_per_node"] = s.gpus_per_node
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(s, key):
            params[key] = getattr(s, key)
    if s.setup:
        params["setup"] = list(s.setup)
    extra = {}
    if s.mem:
        extra["mem"] = s.mem
    for item in s.sbatch:
        key, value = (part.strip() for part in item.split("=", 1))
        extra[key.lstrip("-").replace("_", "-")] = value if value else True
    if extra:
        params["additional_parameters"] = extra
    return params


def sbatch_script(params: dict, folder: Path, array: int | None = None) -> str:
    """The sbatch script submitit will write, for --dry-run."""
    from submitit.slurm import slurm

    command = " ".join([sys.executable, "-u -m submitit.core._submit", str(folder)])
    return slurm._make_sbatch_string(command=command, folder=folder, map_count=array, **params)


# ---------------------------------------------------------------- submit

def run(args) -> int:
    if args.status:
        from ila_fast.slurm.status import print_status

        return print_status(args.status)
    if not args.config or not args.output:
        print("ila-fast submit: --config and --output are required (or --status JOB)", file=sys.stderr)
        return 2
    from ila_fast.config import config_hash, load_config, slurm_time_minutes, to_toml

    overrides = command_overrides(args)
    points = sweep_points(args.sweep) if args.sweep else [{}]
    output = Path(args.output).resolve()
    runs = []   # (run folder, resolved config) per point: every point is checked before anything is queued
    for point in points:
        cfg = load_config(args.config, {**overrides, **point})
        runs.append((output / point_name(point) if args.sweep else output, cfg, point))
    cfg0 = runs[0][1]
    job_folder = output / "slurm"
    params = sbatch_parameters(cfg0)
    if args.dry_run:
        print(sbatch_script(params, job_folder, array=len(runs) if len(runs) > 1 else None))
        for run_dir, cfg, point in runs:  # the command line's overrides, then the sweep point's
            shown = " ".join(f"{k}={v!r}" for k, v in {**overrides, **point}.items()) or "none"
            print(f"# run {run_dir}  config hash {config_hash(cfg)}  overrides: {shown}")
        return 0

    import submitit
    from ila_fast.slurm.entry import TrainJob

    job_folder.mkdir(parents=True, exist_ok=True)
    for run_dir, cfg, _ in runs:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.toml").write_text(to_toml(cfg))
    (job_folder / "config.toml").write_text(to_toml(cfg0))
    limit_min = slurm_time_minutes(cfg0.slurm.time)
    try:
        executor = submitit.AutoExecutor(folder=job_folder, cluster="local" if args.local else "slurm",
                                         slurm_max_num_timeout=cfg0.slurm.max_timeouts)
    except RuntimeError as e:   # no srun: not on a Slurm login node
        print(f"ila-fast submit: {e} (use --local to run here)", file=sys.stderr)
        return 2
    if args.local:
        executor.update_parameters(timeout_min=limit_min, tasks_per_node=cfg0.slurm.tasks,
                                   cpus_per_task=cfg0.slurm.cpus_per_task)
    else:
        executor.update_parameters(**{f"slurm_{k}": v for k, v in params.items()})
    with executor.batch():   # one job, or one array for a sweep
        pending = [executor.submit(TrainJob(str(run_dir), limit_min, init=args.init)) for run_dir, _, _ in runs]
    jobs = list(pending)
    _record(job_folder, jobs, runs, args)
    for job, (run_dir, _, point) in zip(jobs, runs):
        paths = job.paths
        print(f"submitted job {job.job_id}{'  ' + str(point) if point else ''}\n  run folder: {run_dir}\n"
              f"  logs: {paths.stdout}\n        {paths.stderr}\n  follow: tail -F {paths.stdout} {paths.stderr}")
    print(f"  status: ila-fast submit --status {jobs[0].job_id.split('_')[0]}", flush=True)
    if args.wait or args.local:   # a local job lives only as long as this process
        return _wait(jobs)
    return 0


def _record(job_folder: Path, jobs, runs, args) -> None:
    """jobs.jsonl in the job folder, and an index entry so that --status JOB finds the folder."""
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "job_ids": [j.job_id for j in jobs],
             "runs": [str(r) for r, _, _ in runs], "points": [p for _, _, p in runs], "argv": sys.argv[1:],
             "local": bool(args.local)}
    with open(job_folder / "jobs.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")
    index = job_index()
    index.mkdir(parents=True, exist_ok=True)
    (index / jobs[0].job_id.split("_")[0]).write_text(str(job_folder) + "\n")


def job_index() -> Path:
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "ila-fast" / "jobs"


def _wait(jobs) -> int:
    failed = 0
    for job in jobs:
        try:
            job.results()
        except Exception as e:  # noqa: BLE001 - reported, counted
            failed += 1
            print(f"job {job.job_id} failed: {str(e).splitlines()[0]}", file=sys.stderr)
    return 1 if failed else 0
