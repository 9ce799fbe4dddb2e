#!/usr/bin/env bash
# Download, on a machine with a package registry, the wheels the GPU machine lacks (it has torch,
# triton, timm, tensorboard, matplotlib, no registry): PyAV (CPU decoding for the synthetic
# training run), open_clip and its small pure-Python needs (the Kinetics text head's tokenizer),
# einops, submitit. ~37 MB, for CPython 3.12 on x86_64, into bench/wheelhouse/ (git-ignored; the
# device call carries it). DALI (~280 MB with its needs) travels in parts: bench/gpu_dali.py, bench/README.md.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-../.venv/bin/python}
mkdir -p wheelhouse
"$PY" -m pip download -q --python-version 3.12 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --only-binary=:all: --no-deps -d wheelhouse \
    av open_clip_torch ftfy regex wcwidth einops submitit cloudpickle typing_extensions
du -sh wheelhouse
