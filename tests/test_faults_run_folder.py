"""Faults around the run folder: two runs started into one --output, a stale lock, a disk that
fills up before or during a save. Real processes where the fault is between processes."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import train_helpers as h  # noqa: E402

from ila_fast.train import Trainer  # noqa: E402
from ila_fast.train import checkpoint_health  # noqa: E402
from ila_fast.train.checkpoint import complete_checkpoints  # noqa: E402
from ila_fast.train.checkpoint_health import (CheckpointSaveFailed, NoSpaceForCheckpoint,  # noqa: E402
                                              checkpoint_problem)
from ila_fast.train.run_lock import LOCK_NAME, RunFolderBusy, RunLock  # noqa: E402


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return h.make_dataset(tmp_path_factory.mktemp("videos"))


def run(root, output, **extra) -> dict:
    return Trainer(h.tiny_config(root, **extra), output).fit()


def train_command(root, out, **extra) -> list[str]:
    values = h.overrides(root, **extra)
    sets = [f'{k}="{v}"' if isinstance(v, str) else f"{k}={str(v).lower() if isinstance(v, bool) else v}"
            for k, v in values.items()]
    cmd = [sys.executable, "-m", "ila_fast.cli", "train", "--config", "tiny", "--output", str(out)]
    return cmd + [a for s in sets for a in ("--set", s)]


def train_steps(out: Path) -> list[int]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r["step"] for r in map(json.loads, lines) if r["kind"] == "train"]


# ---------------------------------------------------------------- one writer per run folder

def test_lock_refuses_a_second_holder_and_a_foreign_host_and_is_released(tmp_path, monkeypatch):
    lock = RunLock.acquire(tmp_path)
    holder = json.loads((tmp_path / LOCK_NAME).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    with pytest.raises(RunFolderBusy, match=f"another run is writing here \\(pid {os.getpid()} on host"):
        RunLock.acquire(tmp_path)  # a second open file description: flock refuses it, even in-process
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "started": 0}))
    with pytest.raises(RunFolderBusy, match="names a run on another host \\(pid 1 on host elsewhere.example"):
        RunLock.acquire(tmp_path)
    # the same Slurm job, requeued onto another node after a crash: its own earlier lock is taken over
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "started": 0,
                                                  "slurm_job": "4242"}))
    warnings = []
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    RunLock.acquire(tmp_path, warn=warnings.append).release()
    assert len(warnings) == 1 and "this Slurm job's earlier run (pid 1 on host elsewhere.example" in warnings[0]


def test_second_train_into_one_folder_is_refused_and_a_stale_lock_is_taken_over(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    # 2 loader workers: forked children that outlive their killed parent a moment must not keep the lock
    first = subprocess.Popen(train_command(dataset, out, train__epochs=20, train__max_steps=200, data__num_workers=2),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in first.stdout:
            lines.append(line)
            if line.startswith("epoch 0 step 1/"):
                break
        assert first.poll() is None, "".join(lines)[-3000:]
        second = subprocess.run(train_command(dataset, out, train__epochs=20, train__max_steps=200),
                                capture_output=True, text=True, timeout=300)
        err = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(err) == 1, second.stdout + second.stderr
        assert f"{out}: another run is writing here (pid {first.pid} on host {socket.gethostname()}" in err[0]
        assert first.poll() is None  # the first run was not disturbed
    finally:
        first.kill()  # SIGKILL: the lock file stays behind, naming a dead process
        first.wait(timeout=60)
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == first.pid
    summary = run(dataset, out, train__max_steps=1)
    assert summary["status"] == "completed"
    printed = capsys.readouterr().out
    assert f"taking over a stale lock (pid {first.pid} on host {socket.gethostname()}" in printed
    assert "that process is gone" in printed and not (out / LOCK_NAME).exists()


def test_under_torchrun_rank_0_takes_the_lock_and_every_rank_hears_the_refusal(dataset, tmp_path):
    out = tmp_path / "run"
    held = RunLock.acquire(out)  # another run holds the folder
    try:
        cmd = train_command(dataset, out, train__max_steps=1)
        cmd[1:3] = ["-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(_free_port()),
                    "-m", "ila_fast.cli"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    finally:
        held.release()
    text = done.stdout + done.stderr
    # torchrun prints its own traceback for a failed rank; the ranks print no traceback of ours
    assert done.returncode != 0 and "trainer.py" not in text and "run_lock.py" not in text, text[-3000:]
    # both ranks stop on the same one line (none waits at a barrier for the other), exit 2
    assert "exitcode: 2" in text
    assert text.count(f"{out}: another run is writing here (pid {os.getpid()}") == 2, text[-3000:]
    assert not (out / "checkpoints").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- a disk that fills up

def test_too_little_space_stops_before_the_save_and_resumes_after(dataset, tmp_path, monkeypatch):
    out = tmp_path / "run"
    keep = dict(train__checkpoint_every_steps=1, train__keep_last=2)
    run(dataset, out, train__max_steps=2, **keep)
    step2 = out / "checkpoints" / "step_00000002"
    monkeypatch.setattr(checkpoint_health, "free_bytes", lambda folder: 1000)
    with pytest.raises(NoSpaceForCheckpoint) as stopped:
        run(dataset, out, train__max_steps=4, **keep)
    message = str(stopped.value)
    assert "\n" not in message and message.startswith(f"{out / 'checkpoints'}: 1000 bytes free")
    size = checkpoint_health.checkpoint_bytes(step2)
    assert f"needs {int(size * 1.05) + (16 << 20)}" in message and f"{step2} is intact" in message
    assert [p.name for p in complete_checkpoints(out)] == ["step_00000001", "step_00000002"]
    assert checkpoint_problem(step2) is None and not list((out / "checkpoints").glob(".tmp_*"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "stopped_no_space" and summary["step"] == 3
    monkeypatch.undo()  # space freed
    summary = run(dataset, out, train__max_steps=4, **keep)
    assert summary["status"] == "completed" and summary["resumed_from"].endswith("step_00000002")
    assert train_steps(out) == [1, 2, 3, 4]


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 72 MiB tmpfs (root only): room for two checkpoints of the tiny model (17 MB each) and the rest."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the free-space probe test covers the check")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=72m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_during_a_save_reports_the_save_and_keeps_the_previous_checkpoint(dataset, small_tmpfs,
                                                                                      monkeypatch):
    out = small_tmpfs / "run"
    keep = dict(train__checkpoint_every_steps=1, train__keep_last=1)
    run(dataset, out, train__max_steps=2, **keep)
    step2 = out / "checkpoints" / "step_00000002"
    assert [p.name for p in complete_checkpoints(out)] == [step2.name]
    size = checkpoint_health.checkpoint_bytes(step2)
    filler = small_tmpfs / "filler"
    with open(filler, "wb") as f:  # leave half a checkpoint free
        f.write(b"\0" * (checkpoint_health.free_bytes(small_tmpfs) - size // 2))
    # the real check first (a real process): refused before the save, in one line, exit 2
    done = subprocess.run(train_command(dataset, out, train__max_steps=4, **keep), capture_output=True, text=True,
                          timeout=300)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1 and "bytes free, the next checkpoint needs" in err[0], \
        done.stdout + done.stderr
    assert json.loads((out / "summary.json").read_text())["status"] == "stopped_no_space"
    # a probe that misjudges (another writer fills the disk meanwhile): the save itself hits ENOSPC
    monkeypatch.setattr(checkpoint_health, "free_bytes", lambda folder: 1 << 40)
    with pytest.raises(CheckpointSaveFailed) as failed:
        run(dataset, out, train__max_steps=4, **keep)
    message = str(failed.value)
    # the save's own error (torch.save's zip writer or the OS: ENOSPC), and how little was left
    assert "\n" not in message and "saving the checkpoint of step 3 failed: " in message
    assert "[Errno 28]" in message or "unexpected pos" in message, message
    free = int(message.split(" bytes were free there")[0].rsplit("(", 1)[1])
    assert free < size // 2
    assert f"{step2} is intact" in message
    assert [p.name for p in complete_checkpoints(out)] == [step2.name] and checkpoint_problem(step2) is None
    assert not list((out / "checkpoints").glob(".tmp_*"))  # the partial save gave its space back
    summary = json.loads((out / "summary.json").read_text())  # never left empty
    assert summary["status"] == "failed" and summary["step"] == 3
    monkeypatch.undo()
    filler.unlink()  # space freed: the same command resumes
    summary = run(dataset, out, train__max_steps=4, **keep)
    assert summary["status"] == "completed" and summary["resumed_from"].endswith("step_00000002")
    assert train_steps(out) == [1, 2, 3, 4]
