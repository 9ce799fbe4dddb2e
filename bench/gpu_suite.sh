#!/usr/bin/env bash
# Every GPU check of ila-fast in one command, built for a lent GPU machine: one command of at most
# 10 minutes, only $OUT comes back (at most 8 files, < 16 MiB each, at most 2 folders deep).
#
#   bench/gpu_suite.sh [OUT_DIR] [BUDGET_S]       OUT_DIR: default $OUT, else bench/results/gpu_<date>
#   bench/gpu_suite.sh --rehearse OUT_DIR         the same plan on a CPU: tiny shapes, interpreter
#   options: --only a,b  --limit STAGE=S  --wheelhouse DIR  --dali-parts DIR   (bench/gpu_suite.py -h)
#
# What it does: installs the wheels sent along (bench/wheelhouse, from bench/gpu_wheels.sh; with
# pip --target into scratch space, --no-index: a pip failure stops the suite and shows pip's
# error), puts the package on PYTHONPATH through a folder of links (no install, no setuptools,
# no git: the commit comes from bench/wheelhouse/commit.txt or ILA_SUITE_COMMIT, else git if
# present), probes the environment, then runs the stages below in value order. Each stage runs in
# a process session of its own; at its limit the whole session is killed (SIGTERM, then SIGKILL
# 5 s later), so nothing it started outlives it, and no stage starts an inner `timeout`. Every
# stage saves its JSON as rows finish, so a stage cut short keeps its finished rows. A stage
# whose Python modules are missing is reported as "not run: missing X", not skipped silently.
# At the end everything is packed into $OUT: summary.json (every figure), tables.txt (for people),
# logs.tar.gz (logs and JSON; no videos, no checkpoints).
#
# Budgets (seconds; BUDGET_S default 540, rehearsing 900; 15 s are kept back for the last kill and
# the packing, setup takes ~20 s of what is left). A stage may use the slack earlier stages left,
# never the budgets of the stages after it; --limit STAGE=S caps one stage. Rehearsal times measured
# on the 2-core CI machine shared with 5 other jobs (load ~19), 2026-12-07: 3 min 9 s in all; on the
# same machine nearly idle: 1 min 23 s (a 8, b 7, c 13, d 16, t 9, e 6, f cut at 15, g 3).
#   stage                                                       GPU budget  rehearsal budget / measured
#   (a) correctness    kernel tests, default configs (no tuning)     70        120 / 22
#   (b) bench_kernels  bench kernels --check at B/16                 100        120 / 20
#   (c) bench_train    B/16 8f: official-like, eager, compiled,      150        150 / 33
#                      compiled+fused; profile of one fused step   (rehearsal: official-like, eager)
#   (d) train_check    30 steps, checkpoint, resume 10 more           80        150 / 47
#   (t) data_transport CPU crops finished on the GPU (+ colour)       20         60 / 12
#   (e) memory         L/14 8f, L/14 336 px 16f (+AC): peak memory    60         60 / 22
#   (f) autotune       kernel tests, every config tuned (bonus)       20         60 / cut at 15 by the test
#   (g) dali           NVDEC tests, bench data GPU rows (only when   150         60 / 11
#                      DALI is installed or sent in parts)
# GPU budgets: cold compiles dominate (c) and (e) (regional compile of one block, ~20-40 s per
# model), (b) compiles the reference ops 10 times; (a) runs ~90 small tests at one config each.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null 2>&1; then
    echo "gpu_suite: no Python interpreter '$PY' (set PYTHON)" >&2
    exit 2
fi
PYTHON=$PY exec "$PY" bench/gpu_suite.py "$@"
