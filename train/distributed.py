"""Distributed set-up from the standard torchrun variables; one process needs no launcher.

``DistEnv.from_environ()`` reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT
(absent: a single process). ``setup_distributed`` always leaves a process group behind, so the
trainer has one code path: NCCL on a GPU, gloo on a CPU, and for a single process an in-memory
store (no port, no launcher). A second gloo group carries the trainer's control flags (save /
stop requests) on the CPU, so agreeing on them never waits on the GPU stream.
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ila_fast.errors import UserError


@dataclass
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @classmethod
    def from_environ(cls) -> DistEnv:
        env = os.environ
        if "WORLD_SIZE" not in env:
            return cls()
        return cls(rank=int(env.get("RANK", 0)), world=int(env["WORLD_SIZE"]),
                   local_rank=int(env.get("LOCAL_RANK", 0)), master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
                   master_port=int(env.get("MASTER_PORT", 29500)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self) -> torch.device:
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank % torch.cuda.device_count())
        return torch.device("cpu")


_CONTROL_GROUP = None


def setup_distributed(env: DistEnv | None = None, timeout_s: float = 600.0,
                      identity: dict | None = None) -> DistEnv:
    """Initialise the default process group for ``env`` (torchrun variables when None).

    Several ranks meet in ``rendezvous`` first (bounded by ``timeout_s``; the missing ranks and any
    rank whose ``identity`` (config hash, version) differs are named), then one all-reduce checks
    the backend really communicates."""
    global _CONTROL_GROUP
    env = env or DistEnv.from_environ()
    device = env.device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return env
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    watch_launcher()
    if env.world == 1:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    else:
        store = rendezvous(env, timeout_s, identity)
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, store=dist.PrefixStore("ila_fast/pg", store), rank=env.rank,
                                world_size=env.world, timeout=timeout, **kwargs)
        check_first_collective(env, device)
    _CONTROL_GROUP = dist.new_group(backend="gloo") if backend != "gloo" else dist.group.WORLD
    return env


def control_group():
    """The CPU (gloo) group for control flags."""
    return _CONTROL_GROUP


def agree(flags: list[int]) -> list[int]:
    """Elementwise max of small integer flags over all ranks, on the CPU group (cheap, no GPU sync)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return list(flags)
    t = torch.tensor(flags, dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_CONTROL_GROUP)
    return t.tolist()


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier(group=_CONTROL_GROUP)


def broadcast_object(obj, src: int = 0):
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=_CONTROL_GROUP)
    return box[0]


def teardown_distributed() -> None:
    global _CONTROL_GROUP
    if dist.is_initialized():
        dist.destroy_process_group()
    _CONTROL_GROUP = None


# ---------------------------------------------------------------- no rank outlives its launcher

_WATCHING = False


def watch_launcher(interval_s: float = 0.5) -> bool:
    """Under torchrun, stop this rank (and its loader workers) within ``interval_s`` of the launcher's death.

    torchrun starts every rank in a session of its own, so a launcher killed alone (SIGKILL, a node
    agent giving up) leaves its ranks training as orphans, which then race the next run in the same
    folder. A daemon thread watches the parent pid; when it changes (the rank was re-parented),
    SIGKILL goes to the rank's process group: the rank and its loader workers, nothing else
    (torchrun made the rank a group leader). No save: the launcher is gone, so is the job; the
    newest complete checkpoint stays. Returns whether a watch runs (only under torchrun: a run
    started from a shell must survive that shell, e.g. under nohup)."""
    global _WATCHING
    if _WATCHING or "TORCHELASTIC_RUN_ID" not in os.environ:
        return _WATCHING
    import signal
    import threading

    launcher = os.getppid()

    def stop_rank() -> None:
        if os.environ.get("LOCAL_RANK", "0") == "0":  # one line per node
            os.write(2, f"ila-fast: the launcher (pid {launcher}) is gone; stopping this node's ranks now, "
                        "without saving (the newest complete checkpoint is kept)\n".encode())
        if os.getpgid(0) == os.getpid():
            os.killpg(os.getpid(), signal.SIGKILL)
        os._exit(1)

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(interval_s)
        stop_rank()

    threading.Thread(target=watch, name="ila-fast-launcher-watch", daemon=True).start()
    _WATCHING = True
    return True


# ---------------------------------------------------------------- start-up that never hangs silently

_JOIN = "ila_fast/join/"


class RendezvousError(UserError, RuntimeError):
    """Start-up failed; the message names the ranks / hosts at fault."""


def rank_hosts(world: int) -> list[str] | None:
    """Expected host of each rank, from ILA_FAST_RANK_HOSTS (comma separated; the Slurm entry point sets it)."""
    hosts = [h for h in os.environ.get("ILA_FAST_RANK_HOSTS", "").split(",") if h]
    return hosts if len(hosts) == world else None


def _describe(ranks: list[int], hosts: list[str] | None) -> str:
    if not hosts:
        return "ranks " + ", ".join(map(str, ranks))
    return ", ".join(f"rank {r} (host {hosts[r]})" for r in ranks)


def rendezvous(env: DistEnv, timeout_s: float, identity: dict | None = None):
    """Meet every rank in a TCPStore that rank 0 hosts, before any backend starts; returns the store.

    Each rank announces its host, world size, torch version and ``identity`` and waits at most
    ``timeout_s`` for the others. Raises RendezvousError naming the ranks that did not join (and
    the hosts they were expected on), or those whose world size / identity / versions differ.

    Every rank reports the same outcome in one line, whatever the timing: whether everyone joined
    is one verdict in the store, set once (``compare_set``) by the first rank to see all joined or
    to run out of time, and read by all; and the store's owner leaves only after every rank that
    joined has read what it needs (or ``ACK_WAIT_S``), since its exit closes the store under them.
    A store that closes all the same (its owner was killed) is one line too.
    """
    hosts = rank_hosts(env.world)
    host = socket.gethostname()
    # under torchrun the agent already hosts the store (MASTER_PORT is its port): every rank is a client,
    # and keys are kept apart per restart of the agent
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    owner = env.rank == 0 and not agent_store
    prefix = f"{_JOIN}{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"
    try:
        store = dist.TCPStore(env.master_addr, env.master_port, env.world, is_master=owner,
                              timeout=datetime.timedelta(seconds=timeout_s), wait_for_workers=False)
    except Exception as e:  # noqa: BLE001 - any failure to connect means the same thing here
        where = f" (host {hosts[0]})" if hosts else ""
        raise RendezvousError(
            f"rank {env.rank} on {host}: could not reach rank 0{where}'s rendezvous store at "
            f"{env.master_addr}:{env.master_port} within {timeout_s:.0f} s: rank 0 did not start, crashed, "
            f"or the port is blocked ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    try:
        _meet(store, env, host, hosts, prefix, owner, timeout_s,
              dict(identity or {}, world=env.world, torch=torch.__version__))
    except dist.DistError as e:  # the store went away mid-way: its owner (rank 0 or torchrun's agent) stopped
        owner_name = "torchrun's agent" if agent_store else "rank 0"
        raise RendezvousError(
            f"rank {env.rank} on {host}: {owner_name}'s rendezvous store at "
            f"{env.master_addr}:{env.master_port} closed during start-up: {owner_name} stopped; its log says "
            f"why ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return store


ACK_WAIT_S = 30.0   # how long the store's owner waits for the other ranks to read a failed start-up's verdict
_JOINED = "all joined"


def _meet(store, env: DistEnv, host: str, hosts, prefix: str, owner: bool, timeout_s: float,
          mine: dict) -> None:
    store.set(f"{prefix}{env.rank}", json.dumps(dict(mine, host=host)))
    keys = [f"{prefix}{r}" for r in range(env.world)]
    verdict_key = f"{prefix}verdict"
    deadline = time.monotonic() + timeout_s

    def leave(message: str):
        store.set(f"{prefix}read/{env.rank}", "1")
        if owner:  # the store dies with this process: first let every rank that joined read its verdict
            until = time.monotonic() + min(timeout_s, ACK_WAIT_S)
            while time.monotonic() < until:
                joined = [r for r, key in enumerate(keys) if store.check([key])]
                if all(store.check([f"{prefix}read/{r}"]) for r in joined):
                    break
                time.sleep(0.05)
        raise RendezvousError(f"rank {env.rank} on {host}: {message}")

    while True:
        present = [store.check([key]) for key in keys]
        missing = [r for r, ok in enumerate(present) if not ok]
        if not missing or store.check([verdict_key]) or time.monotonic() > deadline:
            proposal = _JOINED if not missing else (
                f"{len(missing)} of {env.world} ranks did not join within {timeout_s:.0f} s: "
                f"{_describe(missing, hosts)}. Look at those tasks' logs: they crashed before start-up, hang "
                "in an import, or run a different command.")
            verdict = store.compare_set(verdict_key, "", proposal).decode()  # the first proposal stands
            if verdict != _JOINED:
                leave(verdict)
            break
        time.sleep(0.2)
    infos = [json.loads(store.get(key)) for key in keys]
    joined_hosts = [info["host"] for info in infos]
    differ = []
    for key, value in mine.items():
        ranks = [r for r, info in enumerate(infos) if info.get(key) != value]
        if ranks:
            theirs = sorted({str(infos[r].get(key)) for r in ranks})
            differ.append(f"{key}: {value!r} here, {', '.join(theirs)} on {_describe(ranks, joined_hosts)}")
    if differ:  # every rank differs from some other then: each says so, from its own side
        leave("the ranks do not run the same job: " + "; ".join(differ))


def check_first_collective(env: DistEnv, device: torch.device) -> None:
    """One all-reduce right after init: proves the backend communicates (bounded by the group timeout)."""
    probe = torch.ones(1, device=device)
    dist.all_reduce(probe)
    if int(probe.item()) != env.world:
        raise RendezvousError(f"rank {env.rank}: the first all-reduce gave {probe.item()}, expected {env.world}: "
                              "the process group is broken")


def shorten_timeout(timeout_s: float) -> None:
    """Collective timeout of the default group from now on (call after the first step, as torchtitan does:
    the first step may compile for minutes; later a dead rank should be noticed in minutes, not 30)."""
    from torch.distributed import distributed_c10d

    if dist.is_initialized() and dist.get_world_size() > 1:
        distributed_c10d._set_pg_timeout(datetime.timedelta(seconds=timeout_s))
