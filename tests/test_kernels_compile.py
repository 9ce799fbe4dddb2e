"""Offline sm_90 (H100 / H200) compile check of every fused kernel: no GPU needed.

``python -m ila_fast.kernels.compile_report --scope check`` compiles every kernel x
autotune config x dtype (scope in ``compile_report.jobs``) with Triton's NVIDIA backend
in a process of its own (the tests run the interpreter; the report must compile). The
test fails on a compile error, on a config the autotuner may pick for a dtype that needs
more shared memory than one sm_90 block has (it would fail at launch), and on a default
config (the one ``ILA_FAST_AUTOTUNE=0`` and the GPU tests use) that spills registers.
It prints the table. ``ila-fast bench kernels --compile-report`` prints the full one.

It runs twice: with the installed Triton (3.7.1, what CUDA torch 2.13 needs) and with
Triton 3.6.0, the GPU machine's (registers and spills differ between the two). 3.6.0 is a
``pip install --target`` overlay cached in build/overlays/ (git-ignored), made here on
first use (from the registry, ~190 MB) and put first on PYTHONPATH of the report's process.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ila_fast.kernels.compile_report import SMEM_LIMIT, problems

SPILL_BOUND = 0  # bytes of spill stores + loads allowed in a default config
GPU_MACHINE_TRITON = "3.6.0"
OVERLAYS = Path(__file__).resolve().parents[1] / "build" / "overlays"


def triton_overlay(version: str) -> Path:
    """A folder holding only triton==version (no dependencies), made once and cached."""
    folder = OVERLAYS / f"triton-{version}"
    if (folder / "triton" / "__init__.py").exists():
        return folder
    partial = OVERLAYS / f".triton-{version}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                           "--target", str(partial), f"triton=={version}"], capture_output=True, text=True)
    assert proc.returncode == 0, f"pip could not install triton=={version} into {partial}:\n{proc.stderr[-2000:]}"
    partial.rename(folder)  # whole or not at all: a half-made overlay is never taken for a cached one
    return folder


@pytest.mark.parametrize("triton_version", ["installed", GPU_MACHINE_TRITON])
def test_every_kernel_config_fits_sm90(tmp_path, capsys, triton_version):
    pytest.importorskip("triton.backends.nvidia.compiler", reason="Triton without its NVIDIA backend")
    out = tmp_path / "report.json"
    env = dict(os.environ, TRITON_INTERPRET="0")
    if triton_version != "installed":
        env["PYTHONPATH"] = os.pathsep.join([str(triton_overlay(triton_version)), *filter(None, [
            os.environ.get("PYTHONPATH")])])
    proc = subprocess.run([sys.executable, "-m", "ila_fast.kernels.compile_report", "--scope", "check",
                           "--json", str(out)], env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    if triton_version != "installed":
        assert f"Triton {triton_version} NVIDIA backend" in proc.stdout, proc.stdout[:300]
    rows = json.loads(out.read_text())
    with capsys.disabled():
        print("\n" + proc.stdout)
    names = {r["kernel"] for r in rows}
    assert {"align_fwd", "align_bwd", "corr_stats", "corr_fwd_train", "corr_wgrad_train", "corr_du_train",
            "corr_dz", "corr_fwd_eval", "dense_fwd", "dense_dx", "dense_dw"} <= names, names
    assert {r["dtype"] for r in rows} == {"fp32", "bf16", "fp16"}
    full = [r for r in rows if r["full"]]
    assert full and all(r["regs"] > 0 for r in full), "no ptxas register counts: the log was not captured"
    bad = problems(rows, SPILL_BOUND)
    assert not bad, "\n".join(bad)
    assert max(r["smem"] for r in rows if r["kept"]) <= SMEM_LIMIT


def test_problems_flags_what_fails_on_a_gpu():
    """The check can fail: an over-limit kept config, a spilling default, a compile error."""
    base = dict(kernel="k", config="c", dtype="fp32", kept=True, default=False, smem=1024, spill=0)
    assert problems([base]) == []
    assert problems([dict(base, kept=False, smem=SMEM_LIMIT + 1)]) == []  # pruned for this dtype
    assert len(problems([dict(base, smem=SMEM_LIMIT + 1)])) == 1
    assert len(problems([dict(base, default=True, spill=8)])) == 1
    assert len(problems([dict(base, error="CompilationError: x")])) == 1


def test_triton36_interpreter_refuses_numpy_24_in_one_line():
    """Triton 3.6's interpreter fails on numpy >= 2.4 deep inside a launch; the kernels say so at import."""
    import numpy

    env = dict(os.environ, TRITON_INTERPRET="1",
               PYTHONPATH=os.pathsep.join([str(triton_overlay(GPU_MACHINE_TRITON)),
                                           *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run([sys.executable, "-c", "import ila_fast.kernels.alignment"], env=env,
                          capture_output=True, text=True, timeout=300)
    if tuple(int(p) for p in numpy.__version__.split(".")[:2]) < (2, 4):
        assert proc.returncode == 0, proc.stderr[-2000:]
    else:
        assert proc.returncode != 0
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("ila_fast.errors.MissingDependency: Triton 3.6.0's CPU interpreter"), last
        assert "numpy<2.4" in last
