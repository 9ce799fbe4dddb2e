"""Parallelism applied in one place: activation checkpointing, torch.compile per block, FSDP2.

    model = parallelize(model, cfg.train, precision, compile=True, device=device)

Order, per ILA block of the image tower:
1. ``torch.compile`` of the block (regional compilation: one small graph, compiled once and reused
   by every block of the same shape);
2. activation checkpointing around the compiled block (``checkpointed``). It sits outside
   the compiled region on purpose: its recomputation runs under ``ila_fast.model.ila.recomputing``
   so BatchNorm statistics are not updated twice for one batch, and that context cannot be traced;
3. FSDP2 ``fully_shard`` of the block, then of the root; the text tower (frozen, never run in
   training: the class text features are cached) stays outside FSDP, whole on every rank.

``MixedPrecisionPolicy(param_dtype=bf16 | fp16, reduce_dtype=fp32)``: parameters compute in
the low precision and gradients are reduced in fp32; the ILA branch's BatchNorms normalise in
fp32 with fp32 running statistics (``ila_fast.model.ila.BatchNorm2d``; the fused ops do the same).
Frozen CLIP weights have ``requires_grad=False``: no gradient, no reduce-scatter, no optimizer
state. ``train.parallelism = "hsdp"`` shards inside a node and replicates across nodes.
"""
from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist
from torch import nn

PARAM_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def checkpointed(block: nn.Module) -> nn.Module:
    """Recompute ``block`` in the backward pass instead of keeping its activations.

    torch's wrapper keeps state-dict names clean in ``get_state_dict`` (checkpoints do not depend on
    whether activation checkpointing was on).
    """
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper

    from ila_fast.model.ila import recomputing

    return checkpoint_wrapper(block, checkpoint_impl=CheckpointImpl.NO_REENTRANT,
                              context_fn=lambda: (contextlib.nullcontext(), recomputing()))


def device_mesh(parallelism: str, device: torch.device):
    """1-D mesh over all ranks (FSDP), or 2-D (replicate across nodes, shard inside one) for HSDP."""
    from torch.distributed.device_mesh import init_device_mesh

    world = dist.get_world_size()
    if parallelism == "hsdp":
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", torch.cuda.device_count() or world))
        if world % per_node or world == per_node:
            return init_device_mesh(device.type, (world,))
        return init_device_mesh(device.type, (world // per_node, per_node), mesh_dim_names=("replicate", "shard"))
    return init_device_mesh(device.type, (world,))


def blocks_of(model: nn.Module) -> nn.ModuleList:
    return model.visual.transformer.resblocks


def parallelize(model: nn.Module, precision: str, compile: bool, activation_checkpointing: bool,
                parallelism: str, device: torch.device) -> nn.Module:
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = device_mesh(parallelism, device)
    names = mesh.mesh_dim_names or ("shard",)
    # for the start-up line: which ranks shard and which replicate (HSDP falls back to FSDP on one node)
    model.mesh_description = "mesh (" + ", ".join(f"{n} {s}" for n, s in zip(names, mesh.mesh.shape)) + ")"
    policy = MixedPrecisionPolicy(param_dtype=PARAM_DTYPES[precision], reduce_dtype=torch.float32)
    shard = dict(mesh=mesh, mp_policy=policy)
    blocks = blocks_of(model)
    for i, block in enumerate(blocks):
        if compile:
            block.compile(dynamic=False)  # static shapes: a few batch sizes recompile; no symbolic-shape surprises
        if activation_checkpointing:
            block = blocks[i] = checkpointed(block)
        fully_shard(block, **shard)
    # The text tower never runs in training (the class text features are cached) and is frozen:
    # it stays whole on every rank, outside FSDP, so it is never gathered nor reduced. FSDP also
    # cannot shard 0-d parameters (CLIP's logit_scale).
    ignored = {p for p in model.parameters() if p.ndim == 0}
    for name in ("token_embedding", "transformer", "ln_final"):
        if hasattr(model, name):
            ignored |= set(getattr(model, name).parameters())
    for name in ("positional_embedding", "text_projection"):
        if isinstance(getattr(model, name, None), nn.Parameter):
            ignored.add(getattr(model, name))
    fully_shard(model, **shard, ignored_params=ignored or None)
    return model

