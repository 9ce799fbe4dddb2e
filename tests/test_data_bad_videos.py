"""Every bad-video case, on both backends: decoded or skipped, counted with the right reason,
replaced from the same shard, and the epoch completes; above the limit the run stops."""
import json
import os
import shutil

import pytest
import torch
from ila_fast.data.bad_videos import TooManyBadVideos
from ila_fast.data.dataset import probe_video
from ila_fast.data.loader import build_loader
from video_fixtures import S, T, fixture_videos, read_indices_clip, write_list

from ila_fast.config import DataConfig

pytest.importorskip("nvidia.dali", reason="DALI is in the dev extra")

# case -> what the probe says (None: a usable video)
PROBE = {
    "missing_file": "missing", "missing_dir": "missing", "missing_link": "missing",
    "empty": "empty_file", "truncated_webm": "truncated", "truncated_mp4": "truncated",
    "not_a_video": "not_a_video", "no_video_stream": "no_video_stream", "unsupported_codec": "unsupported_codec",
    "too_few_frames": None, "odd_size": None, "vfr": None, "rotated": None, "painted_h264": None,
}
# case -> outcome per backend ("decoded" or the reason it is skipped with)
OUTCOME = {
    "cpu": {**{k: v or "decoded" for k, v in PROBE.items()}, "stale": "decode_error"},
    # H.264 is refused by DALI's CPU decoder: PyAV decodes it instead (data.dali_fallback = "cpu")
    "dali": {**{k: v or "decoded" for k, v in PROBE.items()}, "stale": "decode_error"},
}
GOOD = ["painted_vp9", "motion_vp9_0", "motion_vp9_1", "motion_vp9_2"]


def test_probe_reasons():
    v = fixture_videos()
    for case, reason in PROBE.items():
        info = probe_video(v[case])
        assert info.bad == reason, (case, info.bad, info.detail)
    # the decoder's own line is kept in the reason
    assert "moov atom not found" in probe_video(v["truncated_mp4"]).detail
    assert "EBML header parsing failed" in probe_video(v["not_a_video"]).detail
    assert probe_video(v["too_few_frames"]).num_frames == 5
    assert probe_video(v["vfr"]).pts is not None
    assert probe_video(v["odd_size"]).width == 97


def _stale_copy(tmp_path, v):
    """A video that probes fine, then is overwritten (same size and mtime): it fails only when loading."""
    path = v["root"] / f"stale_{tmp_path.name}.webm"
    shutil.copy(v["painted_vp9"], path)
    v = dict(v, stale=path)
    return v, path


def _corrupt_keep_stamp(path):
    st = os.stat(path)
    size = st.st_size
    path.write_bytes((b"garbage!" * (size // 8 + 1))[:size])
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("backend", ["cpu", "dali"])
def test_every_bad_case_is_skipped_or_decoded_and_the_epoch_completes(backend, tmp_path):
    v, stale = _stale_copy(tmp_path, fixture_videos())
    cases = list(OUTCOME[backend])
    names = GOOD * 2 + cases
    lst = write_list(v["root"], names, v)
    cfg = DataConfig(root=str(v["root"]), train_list=str(lst), batch_size=3,
                     num_workers=2 if backend == "cpu" else 1, dali_device="cpu", cpu_decoder="pyav",
                     max_bad_fraction=0.5, report_dir=str(tmp_path), crop_scales=[1.0],
                     color_jitter_p=0.0, grayscale_p=0.0, erasing_p=0.0, mixup_alpha=0.0, cutmix_alpha=0.0)
    build_loader(cfg, "train", frames=T, input_size=S, num_classes=2, backend=backend)  # probes while intact
    _corrupt_keep_stamp(stale)
    for mode in ("train", "test"):
        loader = build_loader(cfg, "train", frames=T, input_size=S, num_classes=2, backend=backend, mode=mode)
        index_of = {n: i for i, n in enumerate(names)}
        skipped_ids = {index_of[c] for c, o in OUTCOME[backend].items() if o != "decoded"}
        used = set()
        steps = 0
        for batch in loader:
            steps += 1
            assert torch.isfinite(batch.video).all()
            for clip, spec in zip(batch.video, batch.specs):
                assert spec.video not in skipped_ids
                used.add(spec.video)
                name = names[spec.video]
                if name in ("painted_vp9", "vfr", "odd_size", "too_few_frames", "painted_h264"):
                    assert read_indices_clip(clip) == list(spec.frames), name
                if name == "rotated":
                    assert read_indices_clip(torch.rot90(clip, -1, dims=(-2, -1))) == list(spec.frames)
        assert steps == len(loader)  # the epoch completed
        report = json.loads(loader.bad_log.report_path.read_text())
        expected = {}
        for case, outcome in OUTCOME[backend].items():
            if outcome != "decoded":
                expected[outcome] = expected.get(outcome, 0) + 1
        got = {k: n for k, n in report["by_reason"].items() if n}
        if mode == "train":  # training drops the epoch's tail, so "stale" may not be met; count the rest
            got.pop("decode_error", None)
            expected.pop("decode_error", None)
        assert got == expected, (backend, mode, report)
        for case, outcome in OUTCOME[backend].items():
            if outcome == "decoded" and mode == "test":
                assert index_of[case] in used, case  # evaluation covers every usable video
        if mode == "test":
            assert {b["path"] for b in report["bad"] if b["reason"] == "decode_error"} == {stale.name}
            print(f"\n{backend} bad-video outcomes: " + ", ".join(f"{c} -> {o}" for c, o in OUTCOME[backend].items()))
    stale.unlink()


@pytest.mark.parametrize("backend", ["cpu", "dali"])
def test_above_the_bad_fraction_the_run_stops_with_the_list(backend, tmp_path):
    v = fixture_videos()
    names = GOOD * 4 + ["empty", "not_a_video"]
    lst = write_list(v["root"], names, v)
    cfg = DataConfig(root=str(v["root"]), train_list=str(lst), batch_size=2, num_workers=0, dali_device="cpu",
                     max_bad_fraction=0.05, report_dir=str(tmp_path))
    with pytest.raises(TooManyBadVideos) as e:  # the probe's verdicts stop it before the first step
        build_loader(cfg, "train", frames=T, input_size=S, num_classes=2, backend=backend)
    message = str(e.value)
    assert "2 of 18 videos cannot be used (2 unreadable)" in message and "allows (1 video)" in message
    assert "empty.webm: empty_file" in message
    report = json.loads(next(tmp_path.glob("*.bad_videos.rank0.json")).read_text())
    assert report["bad_videos"] == 2 and {b["reason"] for b in report["bad"]} == {"empty_file", "not_a_video"}
    # at the limit (2 of 18 <= 0.12) the same data trains through
    cfg.max_bad_fraction = 0.12
    loader = build_loader(cfg, "train", frames=T, input_size=S, num_classes=2, backend=backend)
    assert sum(1 for _ in loader) == len(loader)


@pytest.mark.parametrize("backend", ["cpu", "dali"])
def test_many_bad_videos_under_the_limit_train_a_whole_epoch(backend, tmp_path):
    v = fixture_videos()
    bad = ["missing_file", "missing_dir", "missing_link", "empty", "not_a_video", "truncated_webm"]
    names = GOOD + bad  # 6 of 10 bad
    lst = write_list(v["root"], names, v)
    cfg = DataConfig(root=str(v["root"]), train_list=str(lst), batch_size=2, num_workers=0, dali_device="cpu",
                     max_bad_fraction=0.6, report_dir=str(tmp_path), cpu_decoder="pyav", replace_attempts=1)
    for epoch in range(3):  # different permutations, every replacement chain from a usable video
        loader = build_loader(cfg, "train", frames=T, input_size=S, num_classes=2, backend=backend)
        loader.set_epoch(epoch)
        seen = [int(i) for b in loader for i in b.video_index]
        assert len(seen) == 10 and all(names[i] in GOOD for i in seen)
    report = json.loads(loader.bad_log.report_path.read_text())
    assert report["by_reason"]["missing"] == 3 and report["bad_videos"] == 6
    cfg.max_bad_fraction = 0.5  # 6 > 5: the stop names the files and the limit in videos
    with pytest.raises(TooManyBadVideos) as e:
        build_loader(cfg, "train", frames=T, input_size=S, num_classes=2, backend=backend)
    assert "6 of 10 videos cannot be used" in str(e.value) and "allows (5 videos)" in str(e.value)
    assert "a_directory.webm: missing a directory" in str(e.value)


def test_short_videos_can_be_skipped(tmp_path):
    v = fixture_videos()
    lst = write_list(v["root"], GOOD * 2 + ["too_few_frames"], v)
    cfg = DataConfig(root=str(v["root"]), train_list=str(lst), batch_size=3, num_workers=0, max_bad_fraction=0.5,
                     short_videos="skip", report_dir=str(tmp_path))
    loader = build_loader(cfg, "train", frames=T, input_size=S, num_classes=2, backend="cpu", mode="test")
    assert all(names != 8 for b in loader for names in b.video_index.tolist())
    assert loader.bad_log.report(0)["by_reason"]["too_few_frames"] == 1
