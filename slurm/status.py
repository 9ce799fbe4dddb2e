"""``ila-fast submit --status JOB``: every round of a job (requeues included), its logs and its error.

Reads Slurm accounting (``sacct -D`` lists each requeued round), the job folder that
``ila-fast submit`` recorded, submitit's result files and the entry point's ``errors.jsonl``.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SACCT_FIELDS = "JobID,State,ExitCode,Start,End,Elapsed,NodeList"


def job_folder(job: str) -> Path | None:
    """The job folder from a job id (the index ``ila-fast submit`` writes) or a path."""
    from ila_fast.slurm.launcher import job_index

    if Path(job).is_dir():
        path = Path(job)
        return path / "slurm" if (path / "slurm").is_dir() else path
    entry = job_index() / job.split("_")[0]
    return Path(entry.read_text().strip()) if entry.exists() else None


def sacct_rounds(job_id: str) -> list[dict]:
    """One row per round of the job (``-D``: requeued rounds too) and per array task; [] without sacct."""
    try:
        out = subprocess.run(["sacct", "-j", job_id, "-D", "-X", "-P", "-n", "-o", SACCT_FIELDS],
                             check=False, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    names = SACCT_FIELDS.split(",")
    return [dict(zip(names, line.split("|"))) for line in out.stdout.splitlines() if line.strip()]


def latest_step(run_dir: Path) -> int | None:
    """Step of the newest complete checkpoint (its COMPLETE marker), read without importing the trainer."""
    steps = [int(p.parent.name.split("_")[-1]) for p in run_dir.glob("checkpoints/step_*/COMPLETE")]
    return max(steps) if steps else None


def _tail(path: Path, lines: int) -> list[str]:
    if not path.exists():
        return []
    return path.read_text(errors="replace").splitlines()[-lines:]


def print_status(job: str, lines: int = 12, out=sys.stdout) -> int:
    folder = job_folder(job)
    job_id = job.split("_")[0] if not Path(job).is_dir() else None
    entries = []
    if folder is not None and (folder / "jobs.jsonl").exists():
        entries = [json.loads(line) for line in (folder / "jobs.jsonl").read_text().splitlines() if line.strip()]
        if job_id:
            entries = [e for e in entries if any(j.split("_")[0] == job_id for j in e["job_ids"])] or entries[-1:]
        else:
            entries = entries[-1:]
            job_id = entries[0]["job_ids"][0].split("_")[0] if entries else None
    if job_id is None:
        print(f"ila-fast submit --status: no job {job!r} (neither a job id that ila-fast submit recorded "
              "nor a job folder)", file=sys.stderr)
        return 2
    rows = sacct_rounds(job_id)
    print(f"job {job_id}" + (f"  folder {folder}" if folder else "  (no job folder recorded)"), file=out)
    for row in rows:
        print(f"  {row['JobID']:<14} {row['State']:<12} exit {row['ExitCode']:<6} {row['Start']} -> {row['End']}"
              f"  ({row['Elapsed']}, {row['NodeList']})", file=out)
    if not rows:
        print("  (no accounting rows: sacct unavailable or job unknown)", file=out)
    if folder is None:
        return 0
    errors = [json.loads(line) for line in _tail(folder / "errors.jsonl", 1000)]
    runs = dict(zip(entries[0]["job_ids"], entries[0]["runs"])) if entries else {}
    for task_job, run_dir in runs.items():
        step = latest_step(Path(run_dir))
        print(f"\n{task_job}: run {run_dir}  newest complete checkpoint: "
              f"{'step ' + str(step) if step is not None else 'none'}", file=out)
        outcome = _outcome(folder / f"{task_job}_0_result.pkl")
        if outcome:
            print(f"  result: {outcome}", file=out)
        for error in [e for e in errors if e["job_id"] == task_job][-3:]:
            print(f"  error (attempt {error['attempt']}, rank {error['rank']} on {error['host']}, {error['time']}): "
                  f"{error['error']}", file=out)
        for stream in ("out", "err"):
            tail = _tail(folder / f"{task_job}_0_log.{stream}", lines)
            if tail:
                print(f"  --- {folder / f'{task_job}_0_log.{stream}'} (last {len(tail)} lines)", file=out)
                for line in tail:
                    print(f"  | {line}", file=out)
    return 0


def _outcome(path: Path) -> str | None:
    if not path.exists():
        return None
    try:
        import cloudpickle  # submitit's dependency

        kind, value = cloudpickle.loads(path.read_bytes())
    except Exception as e:  # noqa: BLE001 - a status report must not fail on one bad file
        return f"unreadable result file {path}: {e}"
    if kind == "error":
        return "error:\n    " + "\n    ".join(str(value).strip().splitlines()[-6:])
    return f"{kind}: {value if not isinstance(value, dict) else {k: value[k] for k in list(value)[:6]}}"
