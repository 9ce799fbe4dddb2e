"""Distributed set-up from the standard torchrun variables; one process needs no launcher.

``DistEnv.from_environ()`` reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT
(absent: a single process). ``setup_distributed`` always leaves a process group behind, so the
trainer has one code path: NCCL on a GPU, gloo on a CPU, and for a single process an in-memory
store (no port, no launcher). A second gloo group carries the trainer's control flags (save /
stop requests) on the CPU, so agreeing on them never waits on the GPU stream.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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


def setup_distributed(env: DistEnv | None = None, timeout_s: float = 600.0) -> DistEnv:
    """Initialise the default process group for ``env`` (torchrun variables when None)."""
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
        store = dist.TCPStore(env.master_addr, env.master_port, env.world, is_master=env.rank == 0,
                              timeout=timeout, wait_for_workers=False)
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, store=store, rank=env.rank, world_size=env.world, timeout=timeout,
                                **kwargs)
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
