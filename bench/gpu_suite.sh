#!/usr/bin/env bash
# Every check that needs a GPU, in one command, in under 9 minutes on one H100 / H200:
#   1. the kernel tests on the compiled kernels and `ila-fast bench kernels --check` (bench/gpu_kernels.sh)
#   2. the DALI GPU tests (NVDEC), when DALI is importable, and the CPU backend's crops finished on
#      the GPU against the CPU's (tests/test_data_transport.py)
#   3. `ila-fast bench train` at B/16 8f and L/14 8f (official-like vs eager / compiled / fused / +AC)
#   4. 50 training steps of B/16 8f on synthetic videos: loss falls, nothing non-finite, checkpoint,
#      resume on the GPU (bench/gpu_train_check.py)
# Every result lands under OUT_DIR (default bench/results/gpu_<date>) with env.json (device, versions,
# date, command) and suite.json (what passed). Installs nothing from the network: run
# bench/gpu_wheels.sh beforehand where a registry is reachable and carry bench/wheelhouse along.
#   bench/gpu_suite.sh [OUT_DIR]          (also: make gpu-suite)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/results/gpu_$(date +%Y%m%d)}
PY=${PYTHON:-python}
mkdir -p "$OUT"
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1
T_KERNELS=${T_KERNELS:-200} T_DALI=${T_DALI:-40} T_DATA=${T_DATA:-30} T_BENCH=${T_BENCH:-130} T_TRAIN=${T_TRAIN:-110}

if [ -d bench/wheelhouse ]; then
    "$PY" -m pip install -q --no-index --no-deps bench/wheelhouse/*.whl 2>&1 | tail -2
fi
"$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>&1 | tail -2
"$PY" - "$OUT" "$*" <<'PYEOF' || exit 2
import json, subprocess, sys, time, torch
out, command = sys.argv[1], sys.argv[2]
if not torch.cuda.is_available():
    sys.exit("gpu_suite: no CUDA GPU here")
import triton
env = {"device": torch.cuda.get_device_name(), "capability": torch.cuda.get_device_capability(),
       "torch": torch.__version__, "cuda": torch.version.cuda, "triton": triton.__version__,
       "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": f"bench/gpu_suite.sh {command}".strip(),
       "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()}
json.dump(env, open(f"{out}/env.json", "w"), indent=1)
print(env)
PYEOF

declare -A STATUS
run_stage() {  # name, timeout, command...
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    echo "=== $name (limit ${limit}s)"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    STATUS[$name]="rc=$rc seconds=$((SECONDS - start))"
    tail -25 "$OUT/$name.log"
}

run_stage kernels "$T_KERNELS" env PYTHON="$PY" bench/gpu_kernels.sh "$OUT"
if "$PY" -c "import nvidia.dali" 2>/dev/null; then
    run_stage dali "$T_DALI" "$PY" -m pytest -q -p no:cacheprovider tests/test_data_gpu.py
else
    STATUS[dali]="skipped: nvidia.dali not importable (the ~200 MB wheel exceeds one device call)"
fi
run_stage data_cuda "$T_DATA" "$PY" -m pytest -q -p no:cacheprovider tests/test_data_transport.py
run_stage bench_train "$T_BENCH" "$PY" -m ila_fast.cli bench train --configs k400_b16_8f k400_l14_8f \
    --steps 5 --warmup 2 --save "$OUT/train.json"
run_stage train_check "$T_TRAIN" "$PY" bench/gpu_train_check.py "$OUT/train_check"

{
    echo "{"
    first=1
    for k in "${!STATUS[@]}"; do
        [ $first = 1 ] || echo ","
        first=0
        printf '  "%s": "%s"' "$k" "${STATUS[$k]}"
    done
    echo ""
    echo "}"
} > "$OUT/suite.json"
cat "$OUT/suite.json"
