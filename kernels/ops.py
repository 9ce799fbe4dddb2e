"""The fused ILA ops, with exactly the signatures of ``reference.py`` (``get_ops("triton")``).

    align_frames(z, points, delta, training) -> (aligned (B, T, L, D), pooled (B, T-1, 2, D))
    pair_correlation(z, dw_*, dw_bn_*, pw_*, pw_bn_*, training, momentum, eps) -> (B*(T-1), C, G, G)
    pair_correlation_dense(z, weight, bias, bn_*, training, momentum, eps) -> (B*(T-1), C, G, G)

Registration: every Triton launch sits inside a ``torch.library.custom_op`` (namespace
``ila_fast``) with a fake implementation and ``register_autograd``, whose backward is itself
a custom op, so ``torch.compile(fullgraph=True)`` keeps forward and backward in the graph
as opaque calls. We ship ``custom_op`` on every device, deliberately, not ``triton_op`` +
``wrap_triton`` on GPU:
- it is the one form we can test end to end here: under the interpreter ``triton_op``
  fails ``opcheck`` and compilation (environment.md), so a GPU-only ``triton_op`` path
  would ship untested;
- what ``triton_op`` buys is inductor seeing the kernel launches; it cannot fuse into a
  user kernel anyway, and these kernels are each a large, memory-bound pass over
  (B, T, L, D) where a per-op dispatch overhead of microseconds is noise;
- the launchers make no host syncs and no tensors from Python values (delta is read on
  the device when it is a tensor and passed as a kernel argument when it is a float; the
  BatchNorm statistics stay on the device; tests/test_kernels_graph_safe.py checks this),
  so the ops can be captured in a CUDA graph, with one precondition on the caller:
  autotuning must be finished before the capture. The autotuner benchmarks configs (and
  synchronises) on the first call per shape and dtype, so run one eager forward and
  backward at the captured shapes first (``torch.compile(mode="reduce-overhead")`` does
  such warm-up runs itself), or set ILA_FAST_AUTOTUNE=0 (one config, no tuning).
Revisit with a GPU: a ``triton_op`` twin is a small change in each op's file, and the
tests in tests/test_kernels_ops.py are what it must pass.
"""
from __future__ import annotations

from .alignment import align_frames
from .correlation import pair_correlation
from .dense_correlation import pair_correlation_dense

__all__ = ["align_frames", "pair_correlation", "pair_correlation_dense"]
