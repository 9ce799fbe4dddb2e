"""pytest-benchmark: one batch of 8x224 training clips per backend, side by side.

    .venv/bin/pytest bench/test_bench_data.py --benchmark-group-by=param:codec

The official-style baseline is decord get_batch + cv2 transforms; the CPU backend seeks; DALI runs
on the CPU (VP9) here and on NVDEC when a GPU is present. ``ila-fast bench data`` prints the
fuller table (worker counts, trainer consumption rate on a GPU).
"""
import argparse
import tempfile
from pathlib import Path

import pytest
import torch
from ila_fast.bench.data_table import _make_data, _OfficialStyleClips, _plan, official_style_missing

ARGS = argparse.Namespace(frames_per_clip=8, input_size=224, batch_size=8)


@pytest.fixture(scope="module")
def data():
    folder = tempfile.mkdtemp(prefix="ila_bench_data_")
    return {codec: _make_data(Path(folder), codec, 4, 96, (320, 240)) for codec in ("h264", "vp9")}


def _one_batch(backend_name, codec, data):
    ds, plan, _ = _plan(data[codec], ARGS, 4)
    paths = [ds.full_path(i) for i in range(len(ds))]
    if backend_name == "official-style":
        if official_style_missing():
            pytest.skip(f"the official-style baseline {official_style_missing()}")
        loader = torch.utils.data.DataLoader(_OfficialStyleClips(plan, paths, 224), batch_size=8)
        return lambda: next(iter(loader))
    if backend_name == "cpu-pyav":
        from ila_fast.data.cpu_backend import CpuBackend

        backend = CpuBackend(plan, paths, ds.infos, 224, num_workers=0, decoder="pyav")
        return lambda: next(backend.epoch(0))
    from ila_fast.data.dali_backend import DaliBackend

    device = "mixed" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and codec != "vp9":
        pytest.skip("DALI's CPU decoder takes VP9, not H.264")
    backend = DaliBackend(plan, paths, ds.infos, 224, 8, device=device, num_threads=2)
    return lambda: next(backend.epoch(0))


@pytest.mark.parametrize("codec", ["h264", "vp9"])
@pytest.mark.parametrize("backend", ["official-style", "cpu-pyav", "dali"])
def test_batch_of_training_clips(benchmark, backend, codec, data):
    if backend == "dali":
        pytest.importorskip("nvidia.dali")
    torch.set_num_threads(1)
    fn = _one_batch(backend, codec, data)
    batch = benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)
    video = batch["video"] if isinstance(batch, dict) else batch[0]
    assert video.shape == (8, 8, 3, 224, 224)
