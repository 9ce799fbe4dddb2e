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
    """
    hosts = rank_hosts(env.world)
    host = socket.gethostname()
    # under torchrun the agent already hosts the store (MASTER_PORT is its port): every rank is a client,
    # and keys are kept apart per restart of the agent
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    prefix = f"{_JOIN}{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"
    try:
        store = dist.TCPStore(env.master_addr, env.master_port, env.world, is_master=env.rank == 0 and not agent_store,
                              timeout=datetime.timedelta(seconds=timeout_s), wait_for_workers=False)
    except Exception as e:  # noqa: BLE001 - any failure to connect means the same thing here
        where = f" (host {hosts[0]})" if hosts else ""
        raise RendezvousError(
            f"rank {env.rank} on {host}: could not reach rank 0{where}'s rendezvous store at "
            f"{env.master_addr}:{env.master_port} within {timeout_s:.0f} s: rank 0 did not start, crashed, "
            f"or the port is blocked ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    mine = dict(identity or {}, world=env.world, torch=torch.__version__)
    store.set(f"{prefix}{env.rank}", json.dumps(dict(mine, host=host)))
    keys = [f"{prefix}{r}" for r in range(env.world)]
    deadline = time.monotonic() + timeout_s
    while True:
        missing = [r for r, key in enumerate(keys) if not store.check([key])]
        if not missing:
            break
        if time.monotonic() > deadline:
            raise RendezvousError(
                f"rank {env.rank} on {host}: {len(missing)} of {env.world} ranks did not join within "
                f"{timeout_s:.0f} s: {_describe(missing, hosts)}. Look at those tasks' logs: they crashed before "
                "start-up, hang in an import, or run a different command.")
        time.sleep(0.2)
    infos = [json.loads(store.get(key)) for key in keys]
    joined_hosts = [info["host"] for info in infos]
    differ = []
    for key, value in mine.items():
        ranks = [r for r, info in enumerate(infos) if info.get(key) != value]
        if ranks:
            theirs = sorted({str(infos[r].get(key)) for r in ranks})
            differ.append(f"{key}: {value!r} here, {', '.join(theirs)} on {_describe(ranks, joined_hosts)}")
    if differ:
        raise RendezvousError(f"rank {env.rank} on {host}: the ranks do not run the same job: " + "; ".join(differ))
    return store


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
