"""ila-fast: fast, dependable training and evaluation of ILA video recognizers.

The four code folders at the repository root are installed as subpackages of
``ila_fast`` through ``package_dir``, so nothing generic like ``data`` or
``train`` lands in site-packages.
"""
from setuptools import find_packages, setup

SUBPACKAGES = {"ila_fast.kernels": "kernels", "ila_fast.data": "data",
               "ila_fast.train": "train", "ila_fast.slurm": "slurm",
               "ila_fast.bench": "bench", "ila_fast.configs": "configs"}
ROOTS = {"ila_fast": "ila_fast", **SUBPACKAGES}
# Package discovery is explicit: each root and every folder below it with an __init__.py
# (ila_fast.model, ila_fast.commands, ...); nothing else is picked up.
PACKAGES = sorted({name for root, folder in ROOTS.items()
                   for name in [root, *(f"{root}.{sub}" for sub in find_packages(folder))]})

setup(
    name="ila-fast",
    version="0.1.0",
    description="Fast ILA (ICCV 2023) video recognition: model, Triton kernels, DALI data, FSDP2 trainer",
    python_requires=">=3.11",
    packages=PACKAGES,
    package_dir=ROOTS,
    install_requires=[
        "torch>=2.5",
        "triton>=3.6,<3.10; platform_system == 'Linux'",  # tested: 3.7.1, 3.9 (interpreter); GPU box: 3.6
        # numpy < 2.4 where triton 3.6 interprets kernels on a CPU (its interpreter fails on 2.4;
        # ila_fast.kernels refuses that pair in one line); triton 3.7+ and GPUs take any numpy
        "numpy",
        "einops",
        "open_clip_torch>=2.24",
        "timm>=0.9",  # the recipe's lr schedule is timm's CosineLRScheduler (open_clip installs timm too)
        "submitit>=1.5",
        # what users watch: progress bar, TensorBoard scalars, curve / confusion PNGs
        "tqdm",
        "tensorboard",
        "matplotlib",
    ],
    extras_require={
        # dev: DALI 2.4 for CUDA 13 (the smaller wheel) so make test exercises its CPU path
        # torchcodec 0.13: the last CPU build (later ones need CUDA torch); it loads FFmpeg 5 libraries
        "dev": ["pytest", "pytest-benchmark", "av", "nvidia-dali-cuda130>=2.4",
                "torchcodec==0.13.0; platform_system == 'Linux' and platform_machine == 'x86_64'"],
        "cpu-video": ["av"],
        "dali": ["nvidia-dali-cuda120"],
        "dali-cuda13": ["nvidia-dali-cuda130"],
        # bench-data: the official-style baseline row of `ila-fast bench data` (not needed otherwise)
        "bench-data": ["decord", "opencv-python-headless"],
    },
    package_data={"ila_fast.configs": ["*.toml"], "ila_fast.data.datasets": ["labels/*.csv"]},
    entry_points={"console_scripts": ["ila-fast = ila_fast.cli:main"]},
)
