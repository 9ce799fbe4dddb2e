"""ila-fast: fast, dependable training and evaluation of ILA video recognizers.

ILA (Tu et al., ICCV 2023) adds a learnable inter-frame alignment to every block of a
CLIP ViT. Subpackages: ``model`` (ViT + ILA blocks + heads + weight import), ``kernels``
(fused Triton ops and their references), ``data``, ``train``, ``slurm``, ``bench``.
"""
__version__ = "0.1.0"
