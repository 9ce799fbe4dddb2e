"""The GPU suite's driver (bench/gpu_suite.sh runs it): stages in value order under one time budget,
each in a process session of its own that is killed whole when its limit comes, then everything
packed into at most 8 files under the output folder. Standard library only: it runs on any
python3 >= 3.8, before anything knows whether torch imports.

Stages, their budgets and what each writes are in STAGES; bench/gpu_suite.sh's header lists the
same budgets (tests/test_gpu_suite_rehearsal.py checks that they agree).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:  # imported as ila_fast.bench.gpu_suite (tests)
    from .gpu_dali import join_parts
    from .gpu_suite_pack import pack
except ImportError:  # run as bench/gpu_suite.py: its folder is on sys.path
    from gpu_dali import join_parts
    from gpu_suite_pack import pack

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BUDGET_S = 540   # the device runs one command for at most 600 s
REHEARSE_BUDGET_S = 900  # a CPU rehearsal: the sum of the rehearsal budgets, less slack
PACK_RESERVE_S = 15      # kept back for killing the last stage and packing
SETUP_BUDGET_S = 60      # wheel install + the environment probe (measured ~20 s)
KILL_GRACE_S = 5         # SIGTERM, then SIGKILL this much later

KERNEL_TESTS = ["tests/test_kernels_alignment.py", "tests/test_kernels_correlation.py",
                "tests/test_kernels_ops.py", "tests/test_kernels_graph_safe.py"]
PYTEST = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "ila_fast.bench.pytest_rows"]


def _stage(letter, name, title, budget, rehearse_budget, deps, gpu, rehearse, env=None):
    return dict(letter=letter, name=name, title=title, budget=budget, rehearse_budget=rehearse_budget,
                deps=deps, gpu=gpu, rehearse=rehearse, env=env or {})


# Commands are lists of argv lists, run one after the other under the stage's one limit. "{PY}",
# "{J}" (this stage's JSON folder) and "{W}" (scratch space, never sent back) are filled in.
# Budgets in seconds: GPU ones chosen from the CPU rehearsal's structure (what compiles, how many
# rows) and H100 rates; rehearsal ones from the CPU rehearsal's measured times (x ~2 for load).
STAGES = [
    _stage("a", "correctness", "kernel correctness tests, default configs (autotune off)", 70, 120,
           ["pytest"],
           [[*PYTEST, "--suite-rows", "{J}/correctness.json", *KERNEL_TESTS]],
           [[*PYTEST, "--suite-rows", "{J}/correctness.json", "-k", "stride0", "tests/test_kernels_alignment.py",
             "tests/test_kernels_correlation.py"]],
           env={"ILA_FAST_AUTOTUNE": "0"}),
    _stage("b", "bench_kernels", "bench kernels --check at B/16 (vs reference, vs torch.compile(reference))",
           100, 120, [],
           [["-m", "ila_fast.cli", "bench", "kernels", "--check", "--shapes", "b16",
             "--save", "{J}/bench_kernels.json"]],
           [["-m", "ila_fast.cli", "bench", "kernels", "--check", "--shapes", "tiny", "--ops", "align",
             "--iters", "1", "--no-compile", "--save", "{J}/bench_kernels.json"]]),
    _stage("c", "bench_train", "bench train B/16 8f: official-like vs FSDP2 eager / compiled / compiled+fused, "
           "profile of one compiled+fused step", 150, 150, [],
           [["-m", "ila_fast.cli", "bench", "train", "--configs", "k400_b16_8f", "--variants", "official-like",
             "eager", "compiled", "compiled+fused", "--steps", "5", "--warmup", "2",
             "--save", "{J}/bench_train.json", "--profile", "{J}/profile.json"]],
           [["-m", "ila_fast.cli", "bench", "train", "--configs", "tiny", "--variants", "official-like", "eager",
             "--batch", "2", "--steps", "1", "--warmup", "1", "--save", "{J}/bench_train.json",
             "--profile", "{J}/profile.json"]]),
    _stage("d", "train_check", "30 training steps, checkpoint, resume for 10 more", 80, 150, ["av", "open_clip"],
           [["bench/gpu_train_check.py", "{W}/train_check", "--steps", "30", "--resume-steps", "10",
             "--json", "{J}/train_check.json"]],
           [["bench/gpu_train_check.py", "{W}/train_check", "--config", "tiny", "--steps", "2",
             "--resume-steps", "1", "--batch", "4", "--workers", "1", "--size", "96x72",
             "--json", "{J}/train_check.json"]]),
    _stage("t", "data_transport", "CPU backend's crops finished on the GPU vs on the CPU (transport, colour)", 20, 60,
           ["pytest", "av"],
           [[*PYTEST, "--suite-rows", "{J}/data_transport.json", "tests/test_data_transport.py"],
            [*PYTEST, "--suite-rows", "{J}/recipe_color.json", "tests/test_recipe_color.py", "-k", "gpu"]],
           [[*PYTEST, "--suite-rows", "{J}/data_transport.json", "tests/test_data_transport.py",
             "-k", "gpu or finish"],
            [*PYTEST, "--suite-rows", "{J}/recipe_color.json", "tests/test_recipe_color.py", "-k", "gpu"]]),
    _stage("e", "memory", "L/14 8f and L/14 336 px 16f: peak memory, compiled+fused (and +AC at 336 px)", 60, 60, [],
           [["-m", "ila_fast.cli", "bench", "train", "--configs", "k400_l14_8f", "--variants", "compiled+fused",
             "--steps", "2", "--warmup", "1", "--save", "{J}/memory_l14.json"],
            ["-m", "ila_fast.cli", "bench", "train", "--configs", "k400_l14_336_16f", "--variants",
             "compiled+fused", "+ac", "--steps", "1", "--warmup", "1", "--save", "{J}/memory_l14_336.json"]],
           [["-m", "ila_fast.cli", "bench", "train", "--configs", "tiny", "--variants", "eager", "--batch", "2",
             "--steps", "1", "--warmup", "0", "--save", "{J}/memory_l14.json"]]),
    _stage("f", "autotune", "autotune sweep: kernel tests with every config tuned", 20, 60, ["pytest"],
           [[*PYTEST, "--suite-rows", "{J}/autotune.json", "-k", "matches_reference",
             "tests/test_kernels_alignment.py", "tests/test_kernels_correlation.py"]],
           # more than its rehearsal budget on purpose: the rehearsal shows a stage cut at its limit
           [[*PYTEST, "--suite-rows", "{J}/autotune.json", "-k", "matches_reference",
             "tests/test_kernels_alignment.py", "tests/test_kernels_correlation.py"]],
           env={"ILA_FAST_AUTOTUNE": "1"}),
    _stage("g", "dali", "DALI on the GPU: NVDEC tests, bench data GPU rows vs the CPU backend", 150, 60,
           ["nvidia.dali", "av", "pytest"],
           [[*PYTEST, "--suite-rows", "{J}/dali.json", "tests/test_data_gpu.py"],
            ["-m", "ila_fast.cli", "bench", "data", "--videos", "4", "--gops", "16", "--clips", "48", "--rounds", "1",
             "--workers", "0,4", "--data", "{W}/bench_data", "--save", "{J}/bench_data.json"]],
           [["bench/gpu_dali.py", "rehearse", "--payload-mib", "24", "--part-mib", "7"],
            [*PYTEST, "--suite-rows", "{J}/dali.json", "tests/test_data_gpu.py"]]),
]
NAMES = [s["name"] for s in STAGES]
OPTIONAL = {"dali"}  # run only when asked for (--only) or when DALI is installed


# ---------------------------------------------------------------------------------------------
# Process sessions: start, wait with a limit, kill whole


def session_members(sid: int) -> list[int]:
    """PIDs whose session or process group is ``sid`` (from /proc; no ps needed)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        state, pgrp, session = fields[0], int(fields[2]), int(fields[3])
        if state != "Z" and sid in (pgrp, session):
            members.append(int(entry.name))
    return members


def kill_session(sid: int) -> int:
    """SIGTERM the process group and every process of the session, SIGKILL what is left after
    KILL_GRACE_S. Returns how many processes were still alive when it started."""
    alive = session_members(sid)
    if not alive:
        return 0
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in [-sid, *session_members(sid)]:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + (KILL_GRACE_S if sig == signal.SIGTERM else 2)
        while session_members(sid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not session_members(sid):
            break
    return len(alive)


def run_limited(argv: list[str], limit: float, env: dict, stdout, stderr, watch: Path | None = None) -> dict:
    """Run argv in a new session; kill the whole session at ``limit`` s (and any leftovers at the end).
    With ``watch``, note when that folder first holds a JSON file (proof of rows written as they go)."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                            cwd=ROOT, start_new_session=True)
    first_json, timed_out, interrupted = None, False, None
    try:
        while proc.poll() is None:
            if watch is not None and first_json is None and any(watch.glob("*.json")):
                first_json = time.monotonic() - start
            if time.monotonic() - start >= limit:
                timed_out = True
                break
            time.sleep(0.2)
    except Interrupted as error:  # the suite itself is stopped: take the stage with it
        interrupted = f"interrupted ({error})"
    leftovers = kill_session(proc.pid)
    rc = proc.wait()
    return dict(rc=rc, timed_out=timed_out, interrupted=interrupted, seconds=round(time.monotonic() - start, 1),
                sid=proc.pid,
                first_json_s=None if first_json is None else round(first_json, 1),
                killed_processes=leftovers, left_behind=len(session_members(proc.pid)))


# ---------------------------------------------------------------------------------------------
# Set-up: wheels, the package on the path, the environment probe


def link_tree(work: Path) -> Path:
    """ila_fast importable without installing it: a folder of links mirroring setup.py's
    package_dir (ila_fast/ plus kernels, data, train, slurm, bench, configs as its subpackages)."""
    pkg = work / "pkg" / "ila_fast"
    pkg.mkdir(parents=True)
    for item in (ROOT / "ila_fast").iterdir():
        if item.name != "__pycache__":
            (pkg / item.name).symlink_to(item)
    for sub in ("kernels", "data", "train", "slurm", "bench", "configs"):
        (pkg / sub).symlink_to(ROOT / sub)
    return pkg.parent


def find_commit() -> str:
    """The caller's record (ILA_SUITE_COMMIT or bench/wheelhouse/commit.txt), else git, else unknown."""
    if os.environ.get("ILA_SUITE_COMMIT"):
        return os.environ["ILA_SUITE_COMMIT"]
    for path in (ROOT / "bench" / "wheelhouse" / "commit.txt", ROOT / "bench" / "commit.txt"):
        if path.is_file():
            return path.read_text().strip()
    if shutil.which("git"):
        proc = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=40"], cwd=ROOT,
                              capture_output=True, text=True)
        if proc.returncode == 0:
            return proc.stdout.strip() + " (git on the machine)"
    return "unknown (no commit.txt, no git)"


PROBE = r"""
import json, platform, subprocess, sys, time
info = {"python": platform.python_version(), "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
import torch
info.update(torch=torch.__version__, cuda=torch.version.cuda, gpu=torch.cuda.is_available())
if torch.cuda.is_available():
    info.update(device=torch.cuda.get_device_name(), capability=list(torch.cuda.get_device_capability()),
                gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    try:
        info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                        capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception as e:
        info["driver"] = f"unknown ({type(e).__name__})"
else:
    info["device"] = f"CPU ({platform.machine()}), no GPU"
try:  # as the package imports open_clip: behind the guard for a torchvision built for another torch
    from ila_fast.compat import guard_torchvision
    guard_torchvision()
except Exception as e:
    info["torchvision_guard"] = f"failed ({type(e).__name__}: {e})"
for mod in ("triton", "numpy", "av", "open_clip", "nvidia.dali", "torchvision", "einops", "submitit"):
    try:
        info[mod] = __import__(mod, fromlist=["_"]).__version__
    except Exception as e:
        info[mod] = f"missing ({type(e).__name__})"
json.dump(info, open(sys.argv[1], "w"), indent=1)
print(json.dumps(info))
"""


def missing_modules(py: str, env: dict, modules: list[str]) -> list[str]:
    if not modules:
        return []
    code = ("import importlib.util, sys\n"
            "def has(m):\n    try:\n        return importlib.util.find_spec(m) is not None\n"
            "    except Exception:\n        return False\n"
            f"print(' '.join(m for m in {modules!r} if not has(m)))")
    proc = subprocess.run([py, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    return proc.stdout.split() if proc.returncode == 0 else list(modules)


def install_wheels(py: str, wheels: list[Path], target: Path, log: Path) -> dict:
    argv = [py, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
            "--disable-pip-version-check", "--upgrade", "--target", str(target), *map(str, wheels)]
    start = time.monotonic()
    with open(log, "w") as f:
        f.write("$ " + " ".join(argv) + "\n")
        f.flush()
        proc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    return dict(rc=proc.returncode, seconds=round(time.monotonic() - start, 1), wheels=[w.name for w in wheels])


# ---------------------------------------------------------------------------------------------
# The run


class Interrupted(Exception):
    """SIGTERM / SIGINT to the suite (an outer time limit): stop the stage, pack what there is."""


def _interrupt(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def stage_limit(stages: list[dict], index: int, remaining: float, budget_key: str) -> float:
    """The stage's budget, plus any slack earlier stages left that later stages' budgets do not need."""
    later = sum(s[budget_key] for s in stages[index + 1:])
    usable = remaining - PACK_RESERVE_S
    return max(0.0, min(usable, max(stages[index][budget_key], usable - later)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="every GPU check in one command (see bench/gpu_suite.sh)")
    parser.add_argument("out", nargs="?", help="output folder (default: $OUT, else bench/results/gpu_<date>)")
    parser.add_argument("budget", nargs="?", type=float, default=None,
                        help=f"seconds for everything (default {DEFAULT_BUDGET_S}; rehearsing {REHEARSE_BUDGET_S})")
    parser.add_argument("--rehearse", action="store_true",
                        help="the whole plan on a CPU with tiny shapes (interpreter), through the same packing")
    parser.add_argument("--only", default="", help=f"comma list of stages, from {','.join(NAMES)}")
    parser.add_argument("--limit", action="append", default=[], metavar="STAGE=S",
                        help="override one stage's budget (repeatable)")
    parser.add_argument("--wheelhouse", default=None,
                        help="wheels to install first (default: bench/wheelhouse on a GPU run; none when rehearsing)")
    parser.add_argument("--dali-parts", default=None, metavar="DIR",
                        help="parts stored by bench/gpu_dali.py store: joined, checked, installed first")
    args = parser.parse_args(argv)
    started = time.monotonic()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _interrupt)
    if args.budget is None:
        args.budget = REHEARSE_BUDGET_S if args.rehearse else DEFAULT_BUDGET_S
    out = Path(args.out or os.environ.get("OUT") or ROOT / "bench" / "results" / f"gpu_{time.strftime('%Y%m%d_%H%M')}")
    out.mkdir(parents=True, exist_ok=True)
    py = os.environ.get("PYTHON") or "python3"
    work = Path(tempfile.mkdtemp(prefix="ila-gpu-suite-"))
    (work / "logs").mkdir()
    budget_key = "rehearse_budget" if args.rehearse else "budget"
    limits = {}
    for item in args.limit:
        name, _, seconds = item.partition("=")
        if name not in NAMES or not seconds.replace(".", "", 1).isdigit():
            parser.error(f"--limit {item}: expected STAGE=SECONDS with STAGE one of {','.join(NAMES)}")
        limits[name] = float(seconds)
    only = [s for s in args.only.split(",") if s]
    if set(only) - set(NAMES):
        parser.error(f"--only: unknown stage(s) {','.join(set(only) - set(NAMES))}; choose from {','.join(NAMES)}")
    summary = {"suite": {"command": " ".join(["bench/gpu_suite.sh", *(argv if argv is not None else sys.argv[1:])]),
                         "mode": "rehearse (CPU, tiny shapes)" if args.rehearse else "gpu", "budget_s": args.budget,
                         "python": py, "commit": find_commit(), "work": str(work)},
               "setup": {}, "stages": []}
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("OUT", None)
    if args.rehearse:
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)
    site = work / "site"
    paths = [str(link_tree(work))]
    wheels = []
    default_wheels = None if args.rehearse else ROOT / "bench" / "wheelhouse"
    wheelhouse = Path(args.wheelhouse) if args.wheelhouse else default_wheels
    if wheelhouse is not None:
        wheels = sorted(wheelhouse.glob("*.whl"))
        if not wheels:
            summary["setup"]["wheelhouse"] = f"{wheelhouse}: no wheels (run bench/gpu_wheels.sh and carry it)"
    if args.dali_parts:
        try:
            wheels += join_parts(Path(args.dali_parts), work / "dali")
            summary["setup"]["dali_parts"] = "joined, checksum ok"
        except (OSError, ValueError) as error:
            summary["setup"]["dali_parts"] = f"FAILED: {error}"
            print(f"gpu_suite: DALI parts: {error}", file=sys.stderr)
    if wheels:
        result = install_wheels(py, wheels, site, work / "logs" / "pip.log")
        summary["setup"]["pip"] = result
        if result["rc"] != 0:
            text = (work / "logs" / "pip.log").read_text()
            print(f"gpu_suite: pip failed (rc {result['rc']}); the suite stops here:\n{text[-4000:]}", file=sys.stderr)
            summary["suite"]["status"] = "pip failed"
            return finish(summary, work, out, started, 2)
        paths.append(str(site))
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p])
    env_json = work / "env.json"
    with open(work / "logs" / "env.out", "w") as so, open(work / "logs" / "env.err", "w") as se:
        probe = run_limited([py, "-c", PROBE, str(env_json)], SETUP_BUDGET_S, env, so, se)
    summary["env"] = json.loads(env_json.read_text()) if env_json.is_file() else {"probe": probe}
    if probe["rc"] != 0:
        print("gpu_suite: the environment probe failed (torch does not import?); the suite stops here:\n"
              + (work / "logs" / "env.err").read_text()[-2000:], file=sys.stderr)
        summary["suite"]["status"] = "environment probe failed"
        return finish(summary, work, out, started, 2)
    if not args.rehearse and not summary["env"].get("gpu"):
        print("gpu_suite: no CUDA GPU here (use --rehearse on a CPU)", file=sys.stderr)
        summary["suite"]["status"] = "no GPU"
        return finish(summary, work, out, started, 2)
    dali_present = "nvidia.dali" not in missing_modules(py, env, ["nvidia.dali"])
    chosen, not_chosen = [], []
    for stage in STAGES:
        wanted = stage["name"] in only if only else (stage["name"] not in OPTIONAL or dali_present)
        if wanted:
            chosen.append(dict(stage, **{budget_key: limits.get(stage["name"], stage[budget_key])},
                               cap=limits.get(stage["name"])))
        elif not only:
            not_chosen.append(dict(stage=stage["name"], letter=stage["letter"], title=stage["title"],
                                          status="not run: missing nvidia.dali (send it in parts: bench/README.md)"))
    failures = 0
    for index, stage in enumerate(chosen):
        record = run_stage(stage, index, chosen, py, env, work, started, args.budget, budget_key, args.rehearse)
        summary["stages"].append(record)
        failures += record["status"] != "ok"
        print(f"gpu_suite: ({stage['letter']}) {stage['name']}: {record['status']} in {record.get('seconds', 0)} s",
              flush=True)
        if record["status"].startswith("interrupted"):
            summary["suite"]["status"] = record["status"]
            return finish(summary, work, out, started, 3)
    summary["stages"] += not_chosen
    summary["suite"]["status"] = "ok" if not failures else f"{failures} stage(s) not ok"
    return finish(summary, work, out, started, 0 if not failures else 1)


def run_stage(stage, index, chosen, py, env, work, started, budget, budget_key, rehearse) -> dict:
    name = stage["name"]
    record = dict(stage=name, letter=stage["letter"], title=stage["title"], budget_s=stage[budget_key])
    missing = missing_modules(py, env, stage["deps"])
    if missing:
        record["status"] = f"not run: missing {', '.join(missing)}"
        return record
    remaining = budget - (time.monotonic() - started)
    limit = stage_limit(chosen, index, remaining, budget_key)
    if stage.get("cap") is not None:  # --limit: this stage's limit, no slack added
        limit = min(limit, stage["cap"])
    record["limit_s"] = round(limit, 1)
    if limit < 5:
        record["status"] = "not run: no time left"
        return record
    jdir = work / "json" / name
    jdir.mkdir(parents=True)
    fill = {"{PY}": py, "{J}": str(jdir), "{W}": str(work)}

    def sub(text):
        for key, value in fill.items():
            text = text.replace(key, value)
        return text

    stage_env = dict(env, **{k: sub(v) for k, v in stage["env"].items()})
    commands = stage["rehearse" if rehearse else "gpu"]
    deadline = time.monotonic() + limit
    record["commands"], record["runs"] = [], []
    with open(work / "logs" / f"{name}.out", "w") as so, open(work / "logs" / f"{name}.err", "w") as se:
        for command in commands:
            argv = [py] + [sub(a) for a in command]
            record["commands"].append(" ".join(argv))
            so.write(f"$ {' '.join(argv)}\n")
            so.flush()
            run = run_limited(argv, max(1.0, deadline - time.monotonic()), stage_env, so, se, watch=jdir)
            record["runs"].append(run)
            if run["timed_out"] or run["interrupted"]:
                break
    runs = record["runs"]
    record["seconds"] = round(sum(r["seconds"] for r in runs), 1)
    record["left_behind"] = sum(r["left_behind"] for r in runs)
    offset, record["first_json_s"] = 0.0, None  # from the stage's start, across its commands
    for run in runs:
        if run["first_json_s"] is not None:
            record["first_json_s"] = round(offset + run["first_json_s"], 1)
            break
        offset += run["seconds"]
    record["json"] = {}
    for path in sorted(jdir.glob("*.json")):
        try:
            record["json"][path.name] = json.loads(path.read_text())
        except ValueError as error:
            record["json"][path.name] = {"unreadable": str(error)}
    for argv, run in zip(record["commands"], runs):
        if run["rc"] == 5 and " pytest " in argv:  # pytest: no test ran (all skipped here, e.g. no GPU)
            run["rc"], run["note"] = 0, "pytest collected no test to run (rc 5)"
    failed = [r["rc"] for r in runs if r["rc"] != 0]
    record["status"] = (runs[-1]["interrupted"] or "timeout" if runs[-1]["timed_out"] or runs[-1]["interrupted"]
                        else f"failed (rc {failed[0]})" if failed else "ok")
    return record


def finish(summary: dict, work: Path, out: Path, started: float, rc: int) -> int:
    summary["suite"]["elapsed_s"] = round(time.monotonic() - started, 1)
    summary["suite"]["exit_code"] = rc
    layout = pack(summary, work, out)
    print(f"gpu_suite: {summary['suite'].get('status')}; {len(layout['files'])} files in {out} "
          f"({'layout ok' if layout['ok'] else 'LAYOUT PROBLEM: ' + '; '.join(layout['problems'])})")
    shutil.rmtree(work, ignore_errors=True)
    return rc if layout["ok"] else max(rc, 1)


if __name__ == "__main__":
    sys.exit(main())
