"""The GPU suite rehearsed on the CPU: the whole plan with tiny shapes, through the same packing.

One rehearsal (``bench/gpu_suite.sh --rehearse OUT --limit autotune=15``; the autotune stage's
rehearsal runs longer than that on purpose, to be cut at its limit) and checks of what a lent GPU
machine would send back: at most 8 files under OUT, each under 16 MiB, at most 2 folders deep;
every stage's JSON written while it ran; the cut stage's finished rows kept and none of its
processes left. Then the kill itself on a process tree, the pip failure, a missing module.
"""
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from ila_fast.bench import gpu_suite, gpu_suite_pack

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "bench" / "gpu_suite.sh"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite") / "OUT"
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop("TRITON_INTERPRET", None)  # the suite sets it for its stages
    start = time.monotonic()
    proc = subprocess.run([str(SUITE), "--rehearse", str(out), "--limit", "autotune=15"], env=env,
                          capture_output=True, text=True, timeout=1200)
    seconds = time.monotonic() - start
    print(f"\nrehearsal: {seconds:.0f} s\n{proc.stdout[-2000:]}")
    assert (out / "summary.json").is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    return proc, out, summary


def test_out_folder_comes_back_whole(rehearsal):
    proc, out, summary = rehearsal
    files = [p for p in out.rglob("*") if p.is_file()]
    assert sorted(p.name for p in files) == ["logs.tar.gz", "summary.json", "tables.txt"]
    assert len(files) <= 8
    for path in files:
        assert path.stat().st_size < 16 * 2**20
        assert len(path.relative_to(out).parts) - 1 <= 2
    assert summary["layout"]["ok"], summary["layout"]
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = tar.getnames()
    assert names and all(re.search(r"\.(out|err|json|log)$", n) for n in names), names  # no videos, no checkpoints
    assert any(n.endswith("train_check.json") for n in names)
    assert "== (c) bench_train" in (out / "tables.txt").read_text()


def test_layout_check_catches_what_would_not_come_back(tmp_path):
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "a" / "b" / "ok.txt").write_text("x")
    assert gpu_suite_pack.check_layout(tmp_path)["ok"]
    (tmp_path / "a" / "b" / "c" / "deep.txt").write_text("x")
    for i in range(8):
        (tmp_path / f"f{i}.txt").write_text("x")
    with open(tmp_path / "big.bin", "wb") as f:
        f.truncate(16 * 2**20)
    (tmp_path / "bad name.txt").write_text("x")
    problems = " | ".join(gpu_suite_pack.check_layout(tmp_path)["problems"])
    assert "folders deep" in problems and "files > 8" in problems and ">= 16 MiB" in problems
    assert "bad name.txt" in problems


def test_every_stage_ran_and_saved_rows_while_running(rehearsal):
    proc, out, summary = rehearsal
    stages = {s["stage"]: s for s in summary["stages"]}
    assert list(stages) == gpu_suite.NAMES
    assert summary["env"]["torch"] and summary["env"]["device"].startswith("CPU")
    for name, stage in stages.items():
        if name == "dali" and stage["status"] == "not run: missing nvidia.dali":
            continue  # DALI is in the dev extra; without it the stage says so, as on a GPU machine
        expected = "timeout" if name == "autotune" else "ok"
        assert stage["status"] == expected, (name, stage["status"], stage.get("runs"))
        assert stage["json"], f"{name}: no JSON"
        # The JSON folder held a file while the stage still ran ...
        assert stage["first_json_s"] is not None and stage["first_json_s"] < stage["seconds"], stage
        # ... and each table was rewritten as rows finished, not written once at the end (the
        # profile is one measurement, written once; the cut stage may be cut before its first row).
        for file, data in stage["json"].items():
            assert data["writes"] >= (1 if file == "profile.json" or name == "autotune" else 2), (name, file)
            assert data["complete"] is (name != "autotune"), (name, file)
    figures = stages["bench_kernels"]["json"]["bench_kernels.json"]
    assert figures["checks"] and all(c["ok"] for c in figures["checks"])
    assert {r["impl"] for r in figures["rows"]} == {"fused", "eager"}
    train = stages["bench_train"]["json"]["bench_train.json"]["rows"]
    assert [r["variant"] for r in train] == ["official-like", "eager"] and all(r["clips_per_s"] > 0 for r in train)
    assert len(stages["bench_train"]["json"]["profile.json"]["rows"]) >= 10
    checks = stages["train_check"]["json"]["train_check.json"]["checks"]
    assert checks["completed_2"] and checks["resumed_to_3"] and checks["checkpoint_written"], checks


def test_stage_cut_at_its_limit_keeps_rows_and_leaves_no_process(rehearsal):
    proc, out, summary = rehearsal
    cut = next(s for s in summary["stages"] if s["stage"] == "autotune")
    assert cut["status"] == "timeout" and cut["limit_s"] == 15
    run = cut["runs"][-1]
    assert run["timed_out"] and 15 <= run["seconds"] < 15 + gpu_suite.KILL_GRACE_S + 5
    assert cut["json"]["autotune.json"]["complete"] is False
    assert cut["left_behind"] == 0
    for stage in summary["stages"]:
        for r in stage.get("runs", []):
            assert not gpu_suite.session_members(r["sid"]), (stage["stage"], r["sid"])
    assert "autotune: timeout" in proc.stdout
    assert proc.returncode == 1  # a stage not ok


def test_kill_takes_the_whole_tree(tmp_path):
    """Children, a grandchild, one in a process group of its own and one ignoring SIGTERM: all gone."""
    pids = tmp_path / "pids"
    script = f"""
import os, signal, subprocess, sys, time
kids = [subprocess.Popen(["sleep", "300"]),
        subprocess.Popen(["bash", "-c", "sleep 300 & echo $! > {tmp_path}/grandchild; wait"]),
        subprocess.Popen([sys.executable, "-c", "import os, time; os.setpgid(0, 0); time.sleep(300)"]),
        subprocess.Popen([sys.executable, "-c",
                          "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"])]
time.sleep(1)
open("{pids}", "w").write(" ".join(str(k.pid) for k in kids))
time.sleep(300)
"""
    start = time.monotonic()
    with open(tmp_path / "out", "w") as so:
        run = gpu_suite.run_limited([sys.executable, "-c", script], 3, dict(os.environ), so, so)
    assert run["timed_out"] and time.monotonic() - start < 3 + gpu_suite.KILL_GRACE_S + 4
    tree = [int(p) for p in pids.read_text().split()] + [int((tmp_path / "grandchild").read_text())]
    assert run["killed_processes"] >= 6 and run["left_behind"] == 0
    time.sleep(0.2)
    assert not [p for p in tree if _alive(p)], "processes outlived their stage"


def test_pip_failure_stops_the_suite_with_pips_error(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "broken-1.0-py3-none-any.whl").write_bytes(b"not a zip file")
    out = tmp_path / "OUT"
    proc = subprocess.run([str(SUITE), "--rehearse", str(out), "--wheelhouse", str(wheels)],
                          env=dict(os.environ, PYTHON=sys.executable), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "pip failed" in proc.stderr and "broken-1.0-py3-none-any.whl" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["suite"]["status"] == "pip failed" and summary["stages"] == []


def test_missing_module_is_reported_per_stage(tmp_path):
    env = dict(os.environ)
    assert gpu_suite.missing_modules(sys.executable, env, ["json", "no_such_module_ila"]) == ["no_such_module_ila"]
    stage = dict(gpu_suite.STAGES[0], deps=["no_such_module_ila"])
    record = gpu_suite.run_stage(stage, 0, [stage], sys.executable, env, tmp_path, time.monotonic(), 100,
                                 "rehearse_budget", True)
    assert record["status"] == "not run: missing no_such_module_ila"


def test_header_states_the_budgets_in_use():
    """bench/gpu_suite.sh's header table lists each stage's GPU and rehearsal budgets as STAGES has them."""
    header = SUITE.read_text().split("set -uo pipefail")[0]
    for stage in gpu_suite.STAGES:
        line = re.search(rf"#\s+\({stage['letter']}\) {stage['name']}\s.*", header)
        assert line, stage["name"]
        numbers = [int(n) for n in re.findall(r"\b(\d+)\b", line.group(0).split(stage["name"], 1)[1])]
        assert stage["budget"] in numbers and stage["rehearse_budget"] in numbers, (stage["name"], numbers)
    assert f"default {gpu_suite.DEFAULT_BUDGET_S}" in header and f"{gpu_suite.PACK_RESERVE_S} s are kept" in header


def test_limit_uses_slack_but_never_later_budgets():
    stages = [dict(budget=10), dict(budget=20), dict(budget=30)]
    reserve = gpu_suite.PACK_RESERVE_S
    assert gpu_suite.stage_limit(stages, 0, 100 + reserve, "budget") == 50  # 100 - (20 + 30)
    assert gpu_suite.stage_limit(stages, 0, 40 + reserve, "budget") == 10   # its own budget first
    assert gpu_suite.stage_limit(stages, 2, 35 + reserve, "budget") == 35   # the last takes what is left
    assert gpu_suite.stage_limit(stages, 2, 5 + reserve, "budget") == 5


def test_device_python_environment():
    """The GPU machine's Python (3.12) with the wheelhouse alone: bench/gpu_env_rehearsal.sh. The
    wheelhouse is fetched first (bench/gpu_wheels.sh, a registry) when absent; without a 3.12
    interpreter or a registry the test says why it cannot run."""
    if not list((ROOT / "bench" / "wheelhouse").glob("*.whl")):
        fetch = subprocess.run([str(ROOT / "bench" / "gpu_wheels.sh")], capture_output=True, text=True, timeout=600,
                               env=dict(os.environ, PYTHON=sys.executable))
        if fetch.returncode != 0:
            pytest.skip(f"no wheelhouse and bench/gpu_wheels.sh failed (no registry?): {fetch.stderr[-300:]}")
    proc = subprocess.run([str(ROOT / "bench" / "gpu_env_rehearsal.sh")], capture_output=True, text=True,
                          timeout=600, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    if proc.returncode == 3:
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "layout ok" in proc.stdout and "gpu_env_rehearsal: ok" in proc.stdout
    print("\n" + proc.stdout)


def test_suite_stopped_from_outside_still_packs(tmp_path):
    """SIGTERM to the suite (an outer time limit) ends the running stage's session and packs."""
    out, scratch = tmp_path / "OUT", tmp_path / "scratch"
    scratch.mkdir()
    proc = subprocess.Popen([str(SUITE), "--rehearse", str(out), "--only", "correctness"],
                            env=dict(os.environ, PYTHON=sys.executable, TMPDIR=str(scratch)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(scratch.glob("ila-gpu-suite-*/json/correctness")) and time.monotonic() < deadline:
        time.sleep(0.2)  # the stage has started (its JSON folder exists)
    time.sleep(1)
    proc.send_signal(15)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3, stdout + stderr
    summary = json.loads((out / "summary.json").read_text())
    stage = summary["stages"][0]
    assert summary["suite"]["status"] == stage["status"] == "interrupted (SIGTERM)"
    assert summary["layout"]["ok"]
    assert stage["runs"] and stage["runs"][-1]["interrupted"] and stage["left_behind"] == 0
    assert not gpu_suite.session_members(stage["runs"][-1]["sid"])
