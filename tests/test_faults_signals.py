"""Real faults, real processes: signals to a whole run, a launcher killed alone, a whole 2-rank tree
killed in the middle of a save, and start-up verdicts whatever the timing.

Every run is the tiny model on a tiny synthetic dataset (a few steps, 2 loader workers), started
as a user would (``ila-fast train``, under ``torchrun --nproc_per_node 2`` with gloo on the CPU);
resumed runs are compared bit for bit with a straight run of the same command: every parameter,
the optimizer state and each rank's BatchNorm statistics. Every wait has a deadline.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import train_helpers as h  # noqa: E402

from ila_fast.train.checkpoint import complete_checkpoints, latest_checkpoint  # noqa: E402

STEPS = 8          # every run's train.max_steps (4 steps per epoch); signals come after step 2
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return h.make_dataset(tmp_path_factory.mktemp("videos"))


# ---------------------------------------------------------------- running and watching processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings(dataset: Path, **extra) -> list[str]:
    """The tiny run as KEY=VALUE items: 2 loader workers, a checkpoint every 2 steps."""
    values = h.overrides(dataset, **{"data__num_workers": 2, "train__epochs": 3, "train__max_steps": STEPS,
                                     "train__checkpoint_every_steps": 2, **extra})
    return [f'{k}="{v}"' if isinstance(v, str) else f"{k}={str(v).lower() if isinstance(v, bool) else v}"
            for k, v in values.items()]


def train_command(output: Path, dataset: Path, ranks: int = 1, **extra) -> list[str]:
    """`ila-fast train` as a user types it; under torchrun for several ranks (the README's command)."""
    launcher = [sys.executable, "-m", "ila_fast.cli"] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}", "--master_port",
        str(free_port()), "-m", "ila_fast.cli"]
    return [*launcher, "train", "--config", "tiny", "--output", str(output),
            *[a for s in settings(dataset, **extra) for a in ("--set", s)]]


STARTED: list[Run] = []


@pytest.fixture(autouse=True)
def _no_process_left_behind():
    """A test that fails half-way kills what it started (and the processes under it)."""
    yield
    while STARTED:
        run = STARTED.pop()
        if run.proc.poll() is None:
            kill_tree(run.proc.pid)


class Run:
    """A process started in a session of its own (as a shell starts a job); its output read by a thread."""

    def __init__(self, command: list[str], env: dict | None = None):
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True, env=env or ENV)
        STARTED.append(self)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not any(re.search(pattern, line) for line in self.lines):
            assert self.proc.poll() is None or self.reader.is_alive(), \
                f"ended ({self.proc.returncode}) before {pattern!r}:\n{self.text[-4000:]}"
            assert time.monotonic() < deadline, f"no {pattern!r} within {timeout:.0f} s:\n{self.text[-4000:]}"
            time.sleep(0.05)

    def finish(self, timeout: float = 300) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(self.proc.pid)
            pytest.fail(f"did not end within {timeout:.0f} s:\n{self.text[-4000:]}")
        self.reader.join(timeout=30)
        return code


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()   # [state, ppid, pgrp, ...]


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants now (torchrun's ranks live in sessions of their own, their
    loader workers in the ranks' groups: only the parent links find them all)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))):
            children.setdefault(int(stat[1]), []).append(int(entry))
    found = [pid]
    for p in found:
        found.extend(children.get(p, []))
    return found


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def kill_tree(pid: int, signum=signal.SIGKILL) -> list[int]:
    pids = tree(pid)
    for p in pids:
        try:
            os.kill(p, signum)
        except ProcessLookupError:
            pass
    return pids


def wait_gone(pids: list[int], timeout: float) -> float:
    start = time.monotonic()
    while any(alive(p) for p in pids):
        assert time.monotonic() - start < timeout, \
            f"still running {timeout:.0f} s later: {[(p, _stat(p)) for p in pids if alive(p)]}"
        time.sleep(0.1)
    return time.monotonic() - start


# ---------------------------------------------------------------- what a run leaves behind

def full_state(checkpoint: Path) -> dict:
    """Everything a checkpoint holds, flat: every parameter, the optimizer state and each rank's
    BatchNorm statistics (``bn/rank{r}``), read without a process group."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    state: dict = {}
    _load_state_dict(state, storage_reader=dcp.FileSystemReader(str(checkpoint)),
                     planner=_EmptyStateDictLoadPlanner(), no_dist=True)
    for file in sorted((checkpoint / "bn").glob("rank*.pt")):
        state[f"bn/{file.stem}"] = torch.load(file, weights_only=True)
    flat: dict = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}/{k}", v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{prefix}/{i}", v)
        else:
            flat[prefix] = value
    walk("", state)
    return flat


def assert_identical(a: Path, b: Path, ranks: int) -> None:
    """Bit-identical final checkpoints; each rank's own BatchNorm statistics included."""
    sa, sb = full_state(latest_checkpoint(a)), full_state(latest_checkpoint(b))
    assert sa.keys() == sb.keys()
    assert sum(k.startswith("/optim/state") for k in sa) > 10
    assert sum(k.startswith("/model/") for k in sa) > 10
    assert {k.split("/")[2] for k in sa if k.startswith("/bn/")} == {f"rank{r}" for r in range(ranks)}
    for k in sa:
        if isinstance(sa[k], torch.Tensor):
            assert torch.equal(sa[k], sb[k]), (k, (sa[k].double() - sb[k].double()).abs().max())
        else:
            assert sa[k] == sb[k], (k, sa[k], sb[k])
    assert h.losses(a) == h.losses(b)


def summary(output: Path) -> dict:
    return json.loads((output / "summary.json").read_text())


def saved_after_signal(run: Run) -> int:
    """The step a stop request saved, checked to be the next step boundary: the steps logged after
    the signal's line are that step (and at most the one whose line was on its way)."""
    text = run.text
    saved = int(re.search(r"stopped on request after saving step (\d+)", text).group(1))
    after = text.split("saving at the next step, then stopping", 1)[1]
    logged = [int(s) for s in re.findall(r"^epoch \d+ step (\d+)/", after, flags=re.M)]
    assert logged and logged[-1] == saved and set(logged) <= {saved - 1, saved}, (logged, saved)
    return saved


# ---------------------------------------------------------------- one process, 2 loader workers

@pytest.fixture(scope="module")
def straight(dataset, tmp_path_factory):
    """The uninterrupted runs every interrupted one must equal, by world size (started on first use)."""
    runs: dict[int, Path] = {}

    def get(ranks: int) -> Path:
        if ranks not in runs:
            out = tmp_path_factory.mktemp(f"straight{ranks}") / "run"
            run = Run(train_command(out, dataset, ranks))
            assert run.finish() == 0, run.text[-4000:]
            assert summary(out)["status"] == "completed" and summary(out)["step"] == STEPS
            runs[ranks] = out
        return runs[ranks]
    return get


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR2],
                         ids=["SIGTERM", "SIGINT", "SIGUSR2"])
def test_signal_to_the_process_group_saves_at_the_next_step_and_resumes_identically(
        dataset, tmp_path, straight, signum):
    out = tmp_path / "run"
    run = Run(train_command(out, dataset))
    run.wait_for(r"^epoch 0 step 2/")
    workers = [p for p in tree(run.proc.pid) if p != run.proc.pid]
    assert len(workers) >= 2, "the loader workers are not running"
    os.killpg(run.proc.pid, signum)   # what a terminal's Ctrl-C and most schedulers do: the whole group
    assert run.finish() == 0, run.text[-4000:]
    text = run.text
    name = "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name
    # one line, not one per process
    assert text.count("saving at the next step, then stopping") == 1, text[-4000:]
    assert f"ila-fast train: {name}: saving at the next step" in text
    assert "Traceback" not in text and "killed by signal" not in text
    saved = saved_after_signal(run)
    assert 3 <= saved < STEPS and summary(out)["status"] == "stopped_on_request"
    assert latest_checkpoint(out).name == f"step_{saved:08d}"
    assert f"ila-fast train: stopped on {signal.Signals(signum).name} after saving step {saved}" in text
    assert f"run the same command again: ila-fast train --config tiny --output {out}" in text
    again = Run(train_command(out, dataset))
    assert again.finish() == 0, again.text[-4000:]
    assert f"resumed from {latest_checkpoint(out).parent / f'step_{saved:08d}'}" in again.text
    assert_identical(out, straight(1), ranks=1)


SAVE_BLOCKS = """
import os, sys, time
from pathlib import Path
from ila_fast.train import checkpoint
real = checkpoint._write_file
def blocking(path, text):  # the first save never finishes
    if path.name == "trainer.json" and path.parent.name.startswith(".tmp_step_"):
        Path(os.environ["BLOCK_FLAG"]).touch()
        while True:
            time.sleep(0.5)
    real(path, text)
checkpoint._write_file = blocking
from ila_fast.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_second_signal_stops_at_once_without_saving(dataset, tmp_path):
    out, flag = tmp_path / "run", tmp_path / "blocked"
    command = train_command(out, dataset, train__checkpoint_every_steps=0)
    run = Run([sys.executable, "-c", SAVE_BLOCKS, *command[3:]], env={**ENV, "BLOCK_FLAG": str(flag)})
    run.wait_for(r"^epoch 0 step 1/")
    os.killpg(run.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 120
    while not flag.exists():   # the requested save is under way, and hangs
        assert time.monotonic() < deadline and run.proc.poll() is None, run.text[-4000:]
        time.sleep(0.1)
    time.sleep(2.5)            # past the window in which a repeat is taken for a launcher's copy
    pids = tree(run.proc.pid)
    assert len(pids) >= 3, f"the main process and 2 loader workers expected: {pids}"
    sent = time.monotonic()
    os.killpg(run.proc.pid, signal.SIGINT)
    assert run.finish(timeout=30) == 128 + signal.SIGINT   # its output closed too: no worker holds it
    assert time.monotonic() - sent < 5, "the second signal did not stop the run at once"
    wait_gone(pids, timeout=1)
    assert "Ctrl-C (SIGINT) again: stopping now, without saving" in run.text
    assert complete_checkpoints(out) == []


# ---------------------------------------------------------------- two ranks under torchrun

def test_sigterm_to_every_process_under_torchrun_saves_and_resumes_identically(dataset, tmp_path, straight):
    """SIGTERM to every process of the job at once (Slurm's scancel signals the whole step): torchrun
    forwards its copy to each rank's group, so every rank and worker gets it twice."""
    out = tmp_path / "run"
    run = Run(train_command(out, dataset, ranks=2))
    run.wait_for(r"^epoch 0 step 2/")
    pids = tree(run.proc.pid)
    assert len(pids) >= 7, f"torchrun, 2 ranks, 4 workers expected: {pids}"
    kill_tree(run.proc.pid, signal.SIGTERM)
    run.finish()   # torchrun itself exits 1 after a signal (it re-raises it): the ranks' exits are what count
    text = run.text
    assert "exitcode" not in text and "ChildFailedError" not in text, text[-4000:]
    assert "killed by signal" not in text, text[-4000:]
    assert text.count("saving at the next step, then stopping") == 1, text[-4000:]
    saved = saved_after_signal(run)
    assert 3 <= saved < STEPS and summary(out)["status"] == "stopped_on_request"
    assert latest_checkpoint(out).name == f"step_{saved:08d}"
    assert "to continue from it, run the same torchrun command again (same --output)" in text
    again = Run(train_command(out, dataset, ranks=2))
    assert again.finish() == 0, again.text[-4000:]
    assert f"resumed from {latest_checkpoint(out).parent / f'step_{saved:08d}'}" in again.text
    assert_identical(out, straight(2), ranks=2)


def test_ranks_stop_when_the_launcher_alone_is_killed(dataset, tmp_path):
    out = tmp_path / "run"
    run = Run(train_command(out, dataset, ranks=2, train__epochs=100, train__max_steps=400))
    run.wait_for(r"^epoch 0 step 2/")
    pids = tree(run.proc.pid)
    assert len(pids) >= 7, f"torchrun, 2 ranks, 4 workers expected: {pids}"
    os.kill(run.proc.pid, signal.SIGKILL)
    try:
        took = wait_gone(pids, timeout=10)
    finally:   # orphans left by a failure must not train on for minutes
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    run.reader.join(timeout=30)
    assert "the launcher (pid %d) is gone; stopping this node's ranks now" % run.proc.pid in run.text
    steps = h.losses(out)
    time.sleep(2)
    assert h.losses(out) == steps and max(steps) < 400   # nothing trains on
    print(f"every rank and loader worker gone {took:.1f} s after the launcher's SIGKILL")


BLOCKING_SAVE = str(Path(__file__).parent / "train_blocking_save.py")


def test_sigkill_of_the_whole_tree_during_a_save_resumes_bit_exact_on_every_rank(dataset, tmp_path, straight):
    out, flag = tmp_path / "run", tmp_path / "blocked"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
               str(free_port()), BLOCKING_SAVE, str(out), *settings(dataset)]
    run = Run(command, env={**ENV, "ILA_TEST_BLOCK_SAVE_AT": "4", "ILA_TEST_BLOCK_FLAG": str(flag)})
    deadline = time.monotonic() + 300
    while not flag.exists():
        assert run.proc.poll() is None and time.monotonic() < deadline, run.text[-4000:]
        time.sleep(0.1)
    wait_gone(kill_tree(run.proc.pid), timeout=10)
    run.finish()
    partial = out / "checkpoints" / ".tmp_step_00000004"
    assert (partial / ".metadata").is_file() and not (partial / "COMPLETE").exists()   # killed mid-save
    assert sorted((partial / "bn").iterdir()) == [partial / "bn" / "rank0.pt", partial / "bn" / "rank1.pt"]
    assert [p.name for p in complete_checkpoints(out)] == ["step_00000002"]
    again = Run(train_command(out, dataset, ranks=2))
    assert again.finish() == 0, again.text[-4000:]
    assert f"resumed from {out / 'checkpoints' / 'step_00000002'} at step 2" in again.text
    reference = straight(2)
    assert_identical(out, reference, ranks=2)
    # the ranks' statistics do differ (each normalises its own clips), and the sharded copy is rank 0's
    final = full_state(latest_checkpoint(reference))
    means = [k for k in final if k.startswith("/bn/rank0/") and k.endswith("running_mean")]
    assert means and any(not torch.equal(final[k], final[k.replace("rank0", "rank1")]) for k in means)
    for k in means:
        assert torch.equal(final[k], final["/model/" + k.split("/", 3)[3]])


# ---------------------------------------------------------------- start-up verdicts, whatever the timing

RENDEZVOUS = """
import json, os, sys, time
import torch.distributed as dist
rank, world, port, delay, slow_get, timeout = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                               float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]))
if slow_get:  # a rank that reads the others' announcements slowly: the race of a real cluster, every time
    real = dist.TCPStore
    class SlowStore:
        def __init__(self, *args, **kwargs):
            self.store = real(*args, **kwargs)
        def __getattr__(self, name):
            return getattr(self.store, name)
        def get(self, key):
            time.sleep(slow_get)
            return self.store.get(key)
    dist.TCPStore = SlowStore
from ila_fast.train.distributed import DistEnv, RendezvousError, rendezvous
def listening():  # rank 0's store is up: a delay counts from there, not from this process's slower imports
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        rows += open(table).read().splitlines()[1:] if os.path.exists(table) else []
    return any(r.split()[1].endswith(":%04X" % port) and r.split()[3] == "0A" for r in rows)
while rank and delay and not listening():
    time.sleep(0.05)
time.sleep(delay)
start = time.monotonic()
try:
    identity = {"config_hash": sys.argv[7] + str(rank)}
    rendezvous(DistEnv(rank=rank, world=world, master_port=port), timeout, identity)
    result = "joined"
except RendezvousError as e:
    result = str(e)
print("RESULT " + json.dumps([result, time.monotonic() - start]), flush=True)
"""


def rendezvous_ranks(ranks: list[tuple], world: int, timeout: float, identity: str = "same") -> list[Run]:
    """(rank, delay_s, slow_get_s) per started rank; ranks not listed never start."""
    port = free_port()
    env = {k: v for k, v in ENV.items() if not k.startswith("TORCHELASTIC")}
    return [Run([sys.executable, "-c", RENDEZVOUS, str(rank), str(world), str(port), str(delay), str(slow),
                 str(timeout), identity], env=env) for rank, delay, slow in ranks]


def outcome(run: Run) -> tuple[str, float]:
    assert run.finish(timeout=120) == 0, run.text[-4000:]   # a traceback would exit 1
    found = re.search(r"^RESULT (.*)$", run.text, flags=re.M)
    assert found, run.text[-4000:]
    message, waited = json.loads(found.group(1))
    return message, waited


def test_identity_mismatch_is_one_line_on_every_rank_while_the_owner_finishes_first():
    # rank 0 (the store's owner) finds the difference at once; rank 1 still reads for 2 x 1 s
    runs = rendezvous_ranks([(0, 0.0, 0.0), (1, 0.0, 1.0)], world=2, timeout=20, identity="hash")
    for rank, run in enumerate(runs):
        message, _ = outcome(run)
        assert message.startswith(f"rank {rank} on ") and "\n" not in message
        other = 1 - rank
        expected = f"do not run the same job: config_hash: 'hash{rank}' here, hash{other} on rank {other} (host "
        assert expected in message


def test_missing_rank_is_the_same_verdict_on_every_rank_that_joined():
    # rank 2 never starts; rank 1 joins 1.5 s after rank 0's store is up, so rank 0 runs out of time first
    # and would close the store under rank 1
    runs = rendezvous_ranks([(0, 0.0, 0.0), (1, 1.5, 0.0)], world=3, timeout=6)
    messages = [outcome(run)[0] for run in runs]
    for rank, message in enumerate(messages):
        assert message.startswith(f"rank {rank} on ")
        assert "1 of 3 ranks did not join within 6 s: ranks 2. Look at those tasks' logs" in message
    assert messages[0].split(":", 1)[1] == messages[1].split(":", 1)[1]   # the same verdict, word for word


def test_store_owner_killed_during_start_up_is_one_line():
    runs = rendezvous_ranks([(0, 0.0, 0.0), (1, 0.0, 0.0)], world=3, timeout=60)
    deadline = time.monotonic() + 60   # imports may take seconds on a busy machine
    while not _connected(runs[1].proc.pid):   # rank 1 reached rank 0's store; both wait for rank 2
        assert time.monotonic() < deadline and runs[1].proc.poll() is None, runs[1].text[-4000:]
        time.sleep(0.2)
    time.sleep(1)
    os.kill(runs[0].proc.pid, signal.SIGKILL)
    runs[0].finish()
    message, waited = outcome(runs[1])
    assert message.startswith("rank 1 on ") and "rank 0's rendezvous store at 127.0.0.1:" in message
    assert "closed during start-up" in message and waited < 30


def _connected(pid: int) -> bool:
    """Whether process ``pid`` holds an established TCP connection (rank 1 reached rank 0's store)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        if any(r.split()[3] == "01" and r.split()[9] in inodes for r in rows):
            return True
    return False
