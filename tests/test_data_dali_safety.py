"""DALI safety nets below the probe: the per-clip all-zero-frame check, the decoder's own words in every
reason, and 'unsupported by this backend' kept apart from 'broken'. DALI runs on the CPU here."""
import numpy as np
import pytest
from ila_fast.data.dataset import VideoDataset
from ila_fast.data.plan import PlanSettings, plan_for_dataset
from video_fixtures import S, T, corpus_videos, fixture_videos, read_indices_clip, write_list

pytest.importorskip("nvidia.dali", reason="DALI is in the dev extra")


def _run_unguarded(names, videos, batch_size=2):
    """A DALI backend over a plan that does NOT drop what the probe flagged: what DALI itself does."""
    from ila_fast.data.dali_backend import DaliBackend

    root = fixture_videos()["root"]
    lst = write_list(root, names, videos)
    ds = VideoDataset.load(lst, root)
    settings = PlanSettings(frames=T, input_size=S, batch_size=batch_size, crop_scales=(1.0,), test_clips=2,
                            test_crops=1, color_jitter_p=0.0, grayscale_p=0.0, erasing_p=0.0)
    plan = plan_for_dataset(ds, settings, "test")
    backend = DaliBackend(plan, [ds.full_path(i) for i in range(len(ds))], ds.infos, S, T, device="cpu",
                          num_threads=1)
    batches = list(backend.epoch(0))
    return backend, batches


def test_all_zero_frames_from_dali_are_caught_and_black_videos_pass(tmp_path):
    from ila_fast.data.synthetic import write_video

    corpus = corpus_videos()
    root = fixture_videos()["root"]
    black = write_video(root / "black.webm", np.zeros((24, 48, 64, 3), np.uint8), codec="vp9")
    videos = {"lying": corpus["header_undercounts"][0], "good": corpus["webm"][0], "black": black}
    backend, batches = _run_unguarded(["lying", "good", "black"], videos)
    # the AVI whose header says 16 of its 24 frames: DALI returns zeros for frames >= 16
    reason, detail = backend.found[0]
    assert reason == "unsupported_by_backend" and "all-zero frames" in detail
    assert set(backend.found) == {0}  # the black video's zero frames are right, and kept
    for batch in batches:
        for clip, spec in zip(batch["video"], batch["specs"]):
            assert spec.video != 0
            if spec.video == 1:
                assert read_indices_clip(clip) == list(spec.frames)
    assert any(spec.video == 2 for b in batches for spec in b["specs"])


def test_dali_failures_keep_the_decoders_own_line_and_refusals_are_not_broken():
    corpus = corpus_videos()
    videos = {"h264": corpus["mp4"][0], "sizes": corpus["resolution_change"][0], "good": corpus["webm"][0]}
    backend, _ = _run_unguarded(["h264", "sizes", "good", "good"], videos)
    reason, detail = backend.found[0]
    assert reason == "unsupported_by_backend", detail
    assert "Codec 27 (h264) is not supported by the CPU variant" in detail, detail  # DALI's log line
    reason, detail = backend.found[1]
    assert reason == "decode_error" and "Could not convert frame data" in detail, detail
    assert "Error in CPU operator" not in detail and "Current pipeline" not in detail


def test_two_dali_pipelines_give_the_same_batches_in_order_and_recover_from_a_failure(tmp_path):
    import shutil

    import torch
    from ila_fast.data.loader import build_loader

    from ila_fast.config import DataConfig

    v = dict(fixture_videos())
    stale = v["root"] / f"stale_pipelines_{tmp_path.name}.webm"
    shutil.copy(v["painted_vp9"], stale)
    v["stale"] = stale
    names = ["motion_vp9_0", "motion_vp9_1", "painted_vp9", "motion_vp9_2", "stale"] * 2
    lst = write_list(v["root"], names, v)

    def run(pipelines):
        cfg = DataConfig(root=str(v["root"]), train_list=str(lst), batch_size=2, num_workers=1, dali_device="cpu",
                         dali_pipelines=pipelines, max_bad_fraction=0.5, report_dir=str(tmp_path))
        return list(build_loader(cfg, "train", frames=T, input_size=S, num_classes=2, backend="dali", mode="val"))

    one, two = run(1), run(2)
    assert len(one) == len(two) == 5
    for a, b in zip(one, two):
        assert a.specs == b.specs and torch.equal(a.video, b.video)
    st = stale.stat()  # now break one video without changing its size or mtime: it fails inside DALI
    stale.write_bytes((b"garbage!" * (st.st_size // 8 + 1))[:st.st_size])
    import os

    os.utime(stale, ns=(st.st_atime_ns, st.st_mtime_ns))
    two = run(2)
    assert len(two) == 5 and all(names[s.video] != "stale" for b in two for s in b.specs)
    assert [s.position for b in two for s in b.specs] == list(range(10))
    stale.unlink()
