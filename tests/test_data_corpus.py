"""The frame-index rule on a generated corpus: every container, B-frames, an edit-list cut, MPEG-TS / PS,
a thumbnail stream first, a header that under-counts, a resolution change, missing timestamps. Each video paints its frame
numbers, so a clip shows which frames it really holds: exact frames, or a skip with the named reason."""
import pytest
from ila_fast.data.probe import probe_video
from video_fixtures import corpus_loader, corpus_videos, exact_corpus_clips

# what the probe must find DALI would get wrong (a substring of info.dali_issue); absent: nothing
DALI_ISSUES = {
    "avi": "timestamps do not give the frame order (AVI stores decode-order timestamps)",
    "raw_h264": "timestamps do not give the frame order (24 packets without pts)",
    "ts_missing_pts": "timestamps do not give the frame order (21 packets without pts)",
    "edit_list": "edit list discards 3 pre-roll frames",
    "ts": "not verified for the mpegts container", "mpg": "not verified for the mpeg container",
    "flv": "not verified for the flv container",
    "thumbnail_first_mp4": "main video stream is stream 1",
    "thumbnail_first_mkv": "main video stream is stream 1",
    "resolution_change": "frame size changes mid-stream (64x48, 96x72)",
    "header_undercounts": "header says 16 frames, the stream has 24",
}
DALI_CPU_DECODES = {"webm", "mkv_vp9", "avi_mjpeg"}  # VP9 / MJPEG without an issue: exact frames on DALI (cpu)


def test_probe_counts_frames_by_the_rule():
    for name, (path, first, count) in corpus_videos().items():
        info = probe_video(path)
        assert info.bad is None, (name, info.detail)
        assert info.num_frames == count, name
        assert (DALI_ISSUES.get(name, "") in info.dali_issue) and (bool(info.dali_issue) == (name in DALI_ISSUES)), \
            (name, info.dali_issue)
        assert info.stream == (1 if name.startswith("thumbnail") else 0), name
        assert info.index_by == ("count" if name in ("avi", "raw_h264", "ts_missing_pts") else "pts"), name
    assert probe_video(corpus_videos()["mpg"][0]).codec == "mpeg2video"
    assert probe_video(corpus_videos()["mkv_av1"][0]).codec == "av1"  # the family, not the decoder (libdav1d)


def _loader(backend, names, mode="test", **overrides):
    return corpus_loader(corpus_videos(), backend, names, mode, **overrides)


@pytest.mark.parametrize("mode,decoder", [("test", "pyav"), ("train", "pyav"), ("test", "torchcodec")])
def test_cpu_backend_returns_exactly_the_planned_frames(mode, decoder):
    from ila_fast.data.decode import torchcodec_available

    if decoder == "torchcodec" and not torchcodec_available():
        pytest.skip("torchcodec is not installed (optional; needs system FFmpeg libraries)")
    corpus = corpus_videos()
    names = list(corpus) * (2 if mode == "train" else 1)  # training: random frames in every segment
    loader = _loader("cpu", names, mode, cpu_decoder=decoder)
    seen = exact_corpus_clips(loader, names, corpus)
    assert not loader.bad_log.bad, loader.bad_log.summary()
    assert seen == set(names)


def test_dali_decodes_what_it_can_and_skips_the_rest_with_the_reason():
    pytest.importorskip("nvidia.dali", reason="DALI is in the dev extra")
    corpus = corpus_videos()
    names = list(corpus)
    loader = _loader("dali", names, dali_fallback="skip")
    assert exact_corpus_clips(loader, names, corpus) == DALI_CPU_DECODES
    bad = {names[v]: e for v, e in loader.bad_log.bad.items()}
    assert set(bad) == set(names) - DALI_CPU_DECODES
    for name, event in bad.items():
        assert event.reason == "unsupported_by_backend", (name, event)
        if name in DALI_ISSUES:
            assert DALI_ISSUES[name] in event.detail, (name, event.detail)
        else:
            assert "is not decoded by this backend" in event.detail, (name, event.detail)
    summary = loader.bad_log.summary()
    assert "unsupported_by_backend" in summary and "decode_error" not in summary


@pytest.mark.parametrize("pipelines", [1, 2])
def test_dali_backend_routes_what_dali_gets_wrong_to_the_cpu_decoder(pipelines):
    pytest.importorskip("nvidia.dali", reason="DALI is in the dev extra")
    corpus = corpus_videos()
    names = list(corpus)
    loader = _loader("dali", names, dali_pipelines=pipelines)  # data.dali_fallback = "cpu", the default
    assert loader.backend.cpu_videos == {i for i, n in enumerate(names) if n not in DALI_CPU_DECODES}
    assert exact_corpus_clips(loader, names, corpus) == set(names) and not loader.bad_log.bad
