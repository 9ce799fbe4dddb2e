"""Distributed start-up that never hangs silently.

1. ``rendezvous``: every rank announces itself (rank, host, world size, config hash, ila-fast and
   torch versions) in a TCP store that rank 0 hosts, and waits at most ``timeout_s`` for the others.
   On time-out every waiting rank fails with the list of ranks that did not join and the hosts they
   were expected on; ranks that joined but disagree on the world size, config or versions are named
   too. All of this happens before NCCL is initialised, so nothing blocks in a collective.
2. ``init_process_group_checked``: the process group on that same store, then one small all-reduce
   that proves the backend really communicates, bounded by the same timeout.
3. ``shorten_timeout``: after the first training step (which may compile for minutes) the collective
   timeout drops to a few minutes, as torchtitan does, so a rank that dies mid-run is noticed soon.
"""
from __future__ import annotations

import json
import os
import socket
import time
from datetime import timedelta

_JOIN = "ila_fast/join/"


class RendezvousError(RuntimeError):
    """Start-up failed; the message names the ranks / hosts at fault."""


def _expected_hosts(world: int) -> list[str] | None:
    """Host of each rank, from ILA_FAST_RANK_HOSTS (comma separated; set by the Slurm entry point)."""
    hosts = os.environ.get("ILA_FAST_RANK_HOSTS", "")
    hosts = [h for h in hosts.split(",") if h]
    return hosts if len(hosts) == world else None


def _describe(ranks: list[int], hosts: list[str] | None) -> str:
    if not hosts:
        return "ranks " + ", ".join(map(str, ranks))
    return ", ".join(f"rank {r} (host {hosts[r]})" for r in ranks)


def rendezvous(rank: int, world: int, master_addr: str, master_port: int, timeout_s: float,
               identity: dict | None = None):
    """Meet all ranks in a TCPStore hosted by rank 0; returns the store.

    ``identity``: what must be equal on every rank (e.g. config hash, versions); compared here.
    Raises RendezvousError naming the ranks that did not join or disagree.
    """
    import torch
    import torch.distributed as dist

    hosts = _expected_hosts(world)
    host = socket.gethostname()
    try:
        store = dist.TCPStore(master_addr, master_port, world, is_master=rank == 0,
                              timeout=timedelta(seconds=timeout_s), wait_for_workers=False)
    except Exception as e:  # noqa: BLE001 - any connection failure means the same thing here
        where = f" (host {hosts[0]})" if hosts else ""
        raise RendezvousError(
            f"rank {rank} on {host}: could not reach rank 0{where}'s rendezvous store at {master_addr}:{master_port} "
            f"within {timeout_s:.0f} s: rank 0 did not start, crashed, or the port is blocked ({e})") from None
    mine = dict(identity or {}, world=world, host=host, torch=torch.__version__)
    store.set(f"{_JOIN}{rank}", json.dumps(mine))
    keys = [f"{_JOIN}{r}" for r in range(world)]
    deadline = time.monotonic() + timeout_s
    while True:
        missing = [r for r, k in enumerate(keys) if not store.check([k])]
        if not missing:
            break
        if time.monotonic() > deadline:
            raise RendezvousError(
                f"rank {rank} on {host}: {len(missing)} of {world} ranks did not join within {timeout_s:.0f} s: "
                f"{_describe(missing, hosts)}. Look at those tasks' logs: they crashed before start-up, hang in "
                f"an import, or run a different command.")
        time.sleep(0.2)
    infos = [json.loads(store.get(k)) for k in keys]
    odd = {key: [r for r, info in enumerate(infos) if info.get(key) != mine.get(key)]
           for key in mine if key != "host"}
    odd = {key: ranks for key, ranks in odd.items() if ranks}
    if odd:
        lines = [f"{key}: here {mine[key]!r}, on {_describe(ranks, [i['host'] for i in infos])}: "
                 f"{sorted({str(infos[r].get(key)) for r in ranks})}" for key, ranks in odd.items()]
        raise RendezvousError(f"rank {rank} on {host}: the ranks do not run the same job: " + "; ".join(lines))
    return store


def init_process_group_checked(rank: int, world: int, store, backend: str, timeout_s: float,
                               device=None) -> None:
    """init_process_group on the rendezvous store, then one all-reduce that must sum to ``world``."""
    import torch
    import torch.distributed as dist

    dist.init_process_group(backend, store=dist.PrefixStore("ila_fast/pg", store), rank=rank,
                            world_size=world, timeout=timedelta(seconds=timeout_s))
    probe = torch.ones(1, device=device)
    dist.all_reduce(probe)
    if int(probe.item()) != world:
        raise RendezvousError(f"rank {rank}: the first all-reduce over {backend} gave {probe.item()}, "
                              f"expected {world}: the process group is broken")


def shorten_timeout(timeout_s: float) -> None:
    """Set the collective timeout of the default process group (after the first step)."""
    import torch.distributed as dist
    from torch.distributed import distributed_c10d

    if dist.is_initialized():
        distributed_c10d._set_pg_timeout(timedelta(seconds=timeout_s))
