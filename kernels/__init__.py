"""ILA's fused ops and their PyTorch references.

``get_ops(name)`` returns the implementation the model's ``kernels`` switch names:
``"reference"`` (plain PyTorch, ``kernels/reference.py``) or ``"triton"`` (fused Triton
kernels registered as torch custom ops). Every implementation exposes the same three
functions: ``align_frames``, ``pair_correlation`` and ``pair_correlation_dense``
(signatures in ``reference.py``).
"""
from __future__ import annotations

import importlib
from types import SimpleNamespace

IMPLEMENTATIONS = {"reference": "ila_fast.kernels.reference", "triton": "ila_fast.kernels.ops"}
OP_NAMES = ("align_frames", "pair_correlation", "pair_correlation_dense")


def resolve_kernels(name: str) -> str:
    """"auto" is the fused ops on a GPU and the reference ops elsewhere (the interpreter is for tests)."""
    if name != "auto":
        return name
    import torch

    return "triton" if torch.cuda.is_available() else "reference"


def get_ops(name: str) -> SimpleNamespace:
    name = resolve_kernels(name)
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"unknown kernel implementation {name!r}; choose one of {sorted(IMPLEMENTATIONS)}")
    module = importlib.import_module(IMPLEMENTATIONS[name])
    return SimpleNamespace(**{op: getattr(module, op) for op in OP_NAMES})
