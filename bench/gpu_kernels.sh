#!/usr/bin/env bash
# The fused kernels on a GPU machine: the kernel tests on the compiled kernels (autotuning
# off: each kernel's default config; then on, for the dtype x shape sweeps), then
# `ila-fast bench kernels --check` at the real shapes (float64 check of every output and
# gradient, times, roofline fractions), saved as JSON.
#
#   bench/gpu_kernels.sh OUT_DIR            (from bench/gpu_suite.sh: bench/gpu_kernels.sh "$OUT")
#
# Needs ila_fast importable (pip install --no-deps -e . in the checkout) and a CUDA GPU.
# Writes OUT_DIR/kernel_tests_autotune0.txt, kernel_tests_autotune1.txt, kernels.txt, kernels.json.
set -uo pipefail
OUT=${1:?usage: bench/gpu_kernels.sh OUT_DIR}
PY=${PYTHON:-python}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
unset TRITON_INTERPRET
status=0
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU')" || exit 2

TESTS="tests/test_kernels_alignment.py tests/test_kernels_correlation.py tests/test_kernels_ops.py
       tests/test_kernels_graph_safe.py"
# shellcheck disable=SC2086
ILA_FAST_AUTOTUNE=0 timeout 900 "$PY" -m pytest -q -p no:cacheprovider $TESTS 2>&1 \
    | tee "$OUT/kernel_tests_autotune0.txt" || status=1
# shellcheck disable=SC2086
ILA_FAST_AUTOTUNE=1 timeout 900 "$PY" -m pytest -q -p no:cacheprovider -k "matches_reference" \
    tests/test_kernels_alignment.py tests/test_kernels_correlation.py 2>&1 \
    | tee "$OUT/kernel_tests_autotune1.txt" || status=1
timeout 900 "$PY" -m ila_fast.cli bench kernels --check --save "$OUT/kernels.json" 2>&1 \
    | tee "$OUT/kernels.txt" || status=1
exit $status
