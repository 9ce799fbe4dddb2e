"""Compatibility guards, applied only where needed.

torchvision wheels pulled by open_clip are built for CUDA torch. With the CPU torch
their C extension fails to load and ``import torchvision`` dies registering fake
kernels for ``nms`` / ``qnms`` whose schemas were never defined. If (and only if) the
extension cannot load, define those two schemas so torchvision (and open_clip) import.
GPU machines with a matching torchvision are untouched.
"""
from __future__ import annotations

import importlib.util
import os
import sys

_guarded = False


def guard_torchvision() -> None:
    global _guarded
    if _guarded or "torchvision" in sys.modules:
        return
    _guarded = True
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    import torch

    folder = list(spec.submodule_search_locations)[0]
    candidates = [os.path.join(folder, f) for f in os.listdir(folder) if f.startswith("_C") and f.endswith(".so")]
    try:
        for path in candidates:
            torch.ops.load_library(path)
        if candidates:
            return
    except OSError:
        pass
    lib = torch.library.Library("torchvision", "DEF")  # noqa: F841 - kept alive below
    for op in ("nms", "qnms"):
        lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    guard_torchvision.library = lib  # the Library object must outlive this call


def import_open_clip():
    """Import open_clip behind the torchvision guard, with an install hint if missing."""
    guard_torchvision()
    try:
        import open_clip
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("open_clip is needed for CLIP weights and tokenization: pip install open_clip_torch") from e
    return open_clip
