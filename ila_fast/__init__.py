"""ila-fast: fast, dependable training and evaluation of ILA video recognizers.

ILA (Tu et al., ICCV 2023) adds a learnable inter-frame alignment to every block of a
CLIP ViT. Subpackages: ``model`` (ViT + ILA blocks + heads + weight import), ``kernels``
(fused Triton ops and their references), ``data``, ``train``, ``slurm``, ``bench``.
"""
import os as _os
import sys as _sys

__version__ = "0.1.0"

# The fused kernels run in Triton's interpreter on machines without a GPU, and triton reads
# that choice once, when it is first imported. Make it here, at ila_fast's first import and
# before anything (open_clip does) can import triton in compiled mode. No NVIDIA device node
# means no CUDA GPU; kernels/alignment.py re-checks with torch and falls back to the
# reference ops (with a warning) if triton was loaded in the wrong mode anyway.
if ("triton" not in _sys.modules and "TRITON_INTERPRET" not in _os.environ
        and not any(_os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg"))):
    _os.environ["TRITON_INTERPRET"] = "1"
