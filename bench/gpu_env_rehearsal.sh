#!/usr/bin/env bash
# The GPU machine's Python environment, rehearsed here: its Python (3.12), the wheelhouse alone
# (pip --no-index, the suite's own pip command), the package through the suite's folder of links.
#   1. every wheel in bench/wheelhouse installs for 3.12 (a wheel for the wrong Python fails here);
#   2. the wheels' modules import (open_clip excepted: it imports torch);
#   3. ila_fast's CLI answers (--version, --help, the suite's and the DALI tool's --help) and every
#      source file byte-compiles under 3.12;
#   4. bench/gpu_suite.sh itself runs on 3.12: installs the wheelhouse, probes, packs into $OUT.
# torch cannot be had for 3.12 here: this machine reaches no CPU build for 3.12 (download.pytorch.org
# is out of reach; PyPI's Linux torch is the CUDA build, which needs ~3 GB of NVIDIA libraries to
# import), so the probe ends the run with "torch does not import", and the stages themselves are
# rehearsed under the CI's Python (bench/gpu_suite.sh --rehearse).
#   bench/gpu_env_rehearsal.sh        (PY312=... to name the interpreter; exit 3: no 3.12 found)
set -euo pipefail
cd "$(dirname "$0")/.."

find_py312() {
    if [ -n "${PY312:-}" ]; then echo "$PY312"; return; fi
    for candidate in python3.12 /root/.pyenv/versions/3.12*/bin/python3.12 \
                     "$HOME"/.local/share/uv/python/cpython-3.12*/bin/python3.12; do
        if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
            echo "$candidate"; return
        fi
    done
    if command -v uv >/dev/null 2>&1 && uv python install 3.12 >/dev/null 2>&1; then uv python find 3.12; fi
}
PY312=$(find_py312)
if [ -z "$PY312" ]; then
    echo "gpu_env_rehearsal: no Python 3.12 here (python3.12, pyenv, uv); set PY312" >&2
    exit 3
fi
shopt -s nullglob
WHEELS=(bench/wheelhouse/*.whl)
if [ ${#WHEELS[@]} = 0 ]; then
    echo "gpu_env_rehearsal: bench/wheelhouse holds no wheels: run bench/gpu_wheels.sh first" >&2
    exit 3
fi
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ila-env312.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
echo "1. $("$PY312" --version) ($PY312): installing ${#WHEELS[@]} wheels with --no-index"
PIP_ROOT_USER_ACTION=ignore "$PY312" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
    --upgrade --target "$TMP/site" "${WHEELS[@]}"
echo "2. imports:"
PYTHONPATH="$TMP/site" "$PY312" -c '
import importlib
for name in ("av", "einops", "submitit", "ftfy", "regex", "cloudpickle", "wcwidth", "typing_extensions"):
    module = importlib.import_module(name)
    print("   " + name, getattr(module, "__version__", ""))
'
PKG=$("$PY312" -c 'import sys, pathlib; sys.path.insert(0, "bench"); import gpu_suite
print(gpu_suite.link_tree(pathlib.Path(sys.argv[1])))' "$TMP")
export PYTHONPATH="$PKG:$TMP/site"
echo "3. $("$PY312" -m ila_fast.cli --version); CLI help, suite and DALI tool help; byte-compile:"
"$PY312" -m ila_fast.cli --help >/dev/null
"$PY312" bench/gpu_suite.py --help >/dev/null
"$PY312" bench/gpu_dali.py --help >/dev/null
PYTHONPYCACHEPREFIX="$TMP/pycache" "$PY312" -m compileall -q ila_fast kernels data train slurm bench tests >/dev/null
echo "   ok"
echo "4. bench/gpu_suite.sh on $("$PY312" --version) (ends at its probe: no torch for 3.12 here):"
set +e
PYTHON=$PY312 PYTHONPATH= bench/gpu_suite.sh "$TMP/OUT" 60 >"$TMP/suite.log" 2>&1
rc=$?
set -e
"$PY312" - "$TMP/OUT/summary.json" "$rc" <<'EOF'
import json, sys
summary = json.load(open(sys.argv[1]))
pip = summary["setup"].get("pip", {})
assert pip.get("rc") == 0 and pip.get("wheels"), f"the suite's pip step failed: {pip}"
assert summary["layout"]["ok"], summary["layout"]
assert summary["suite"]["status"] == "environment probe failed" and sys.argv[2] == "2", summary["suite"]
log = summary["logs"]
assert "logs/env.err" in log and "logs/pip.log" in log, log
print(f"   pip: {len(pip['wheels'])} wheels in {pip['seconds']} s; probe: torch does not import; "
      f"status '{summary['suite']['status']}' (exit {sys.argv[2]}); "
      f"{len(summary['layout']['files'])} files packed, layout ok")
EOF
echo "gpu_env_rehearsal: ok"
