"""AVI files as datasets ship them (UCF101 / HMDB51 are Xvid AVI files): MPEG-4 Part 2 with packed and with
unpacked B-frames, the packed stream copied into Matroska / MP4, AVI stream headers that start at frame 1,
gray and BGR pixel formats. Every video paints its frame numbers: each decoder must return exactly the
frames asked for, and gray must keep its real range."""
import av
import numpy as np
import pytest
from ila_fast.data.decode import PyAVDecoder, TorchCodecDecoder, gray_to_rgb, torchcodec_available
from ila_fast.data.probe import probe_video
from video_fixtures import N, avi_videos, corpus_loader, exact_corpus_clips, painted_frames, read_indices_raw


PACKED = {"xvid_packed", "xvid_packed_mkv", "xvid_packed_mp4"}
COUNTED = PACKED | {"mpeg4_bframes", "gray_ffv1"}  # AVI with inter-coded frames: decode-order timestamps
FIRST_PTS_1 = {"xvid_packed", "mpeg4_bframes", "mjpeg_start1", "gray_raw_start1"}
DALI_CPU_DECODES = {"mjpeg_start1"}  # MJPEG, timestamps trusted: DALI's CPU decoder takes it itself
GRAY = ("gray_raw", "gray_raw_start1", "gray_ffv1", "gray_limited_mkv")


def _packets_pts(path) -> list:
    with av.open(str(path)) as c:
        return [p.pts for p in c.demux(c.streams.video[0]) if p.size]


def test_what_ffmpeg_reports_for_these_files_and_what_the_probe_makes_of_it():
    for name, (path, _, count) in avi_videos().items():
        pts = _packets_pts(path)
        assert (pts[0] == 1) == (name in FIRST_PTS_1), (name, pts[:4])
        info = probe_video(path)
        assert info.bad is None, (name, info.detail)
        assert info.num_frames == count, name
        assert info.packed_bframes == (name in PACKED), name
        assert info.index_by == ("count" if name in COUNTED else "pts"), name
        assert bool(info.dali_issue) == (name in COUNTED), (name, info.dali_issue)
        if name in PACKED:
            assert "packed B-frames" in info.dali_issue, (name, info.dali_issue)
        if info.index_by == "pts":
            assert info.frame_pts(0) == pts[0], name  # frame 0 is the first timestamp, whatever it is
    assert probe_video(avi_videos()["xvid_packed"][0]).codec == "mpeg4"
    assert probe_video(avi_videos()["gray_raw"][0]).pix_fmt == "gray"


def test_packed_stream_timestamps_do_not_give_the_frame_order_but_decoding_from_the_start_does():
    # why these files are counted: FFmpeg outputs the painted frames 0..N-1 in order, stamped out of order
    path = avi_videos()["xvid_packed_mkv"][0]
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    assert read_indices_raw(np.stack([f.to_ndarray(format="rgb24") for f in frames])) == list(range(N))
    stamps = [f.pts for f in frames]
    assert stamps != sorted(stamps)


def test_frames_out_of_timestamp_order_are_counted_even_where_packing_is_not_recognised(monkeypatch):
    # the generic guard behind the packed-B-frame check: the probe's decode of the last GOP sees frames
    # come out of timestamp order, so the timestamps cannot give the rule's order
    from ila_fast.data import probe

    monkeypatch.setattr(probe, "_MPEG4_VOP", b"not a start code")
    for name in ("xvid_packed_mkv", "xvid_packed_mp4"):
        path, _, count = avi_videos()[name]
        info = probe_video(path)
        assert not info.packed_bframes and info.bad is None, (name, info.detail)
        assert info.index_by == "count" and info.num_frames == count, name
        assert "frames come out of timestamp order" in info.dali_issue, (name, info.dali_issue)
        frames = PyAVDecoder().decode(str(path), [2, 3, 5, 6, N - 1], info)
        assert read_indices_raw(frames) == [2, 3, 5, 6, N - 1], name


INDEX_SETS = [list(range(N)), [0, 3, 5, 9, 13, 17, 22, N - 1], [N - 1, 2, 2, 7, 0, 11], [12]]


def _decoders():
    out = [PyAVDecoder(), PyAVDecoder(seek=False, skip_nonref=False, drain=False, fast_open=False)]
    if torchcodec_available():
        out.append(TorchCodecDecoder())
    return out


@pytest.mark.parametrize("name", sorted(avi_videos()))
def test_every_cpu_decoder_returns_exactly_the_frames_asked_for(name):
    path, first, _ = avi_videos()[name]
    info = probe_video(path)
    for decoder in _decoders():
        for indices in INDEX_SETS:
            frames = decoder.decode(str(path), indices, info)
            assert frames.shape == (len(indices), 48, 64, 3), (name, decoder.name)
            assert read_indices_raw(frames) == [first + i for i in indices], (name, decoder.name, indices)
            # a full-height crop (the plan's kind) keeps the bands
            crop = decoder.decode(str(path), indices, info, crop=(9, 0, 30, 48))
            assert read_indices_raw(crop) == [first + i for i in indices], (name, decoder.name, "crop")


@pytest.mark.parametrize("name", GRAY + ("bgr_raw",))
def test_gray_and_rgb_formats_keep_their_levels(name):
    # painted frames are black and white: decoded they must be exactly 0 and 255 in every channel,
    # including the gray video stored as 16 / 235 and tagged limited range
    path, _, _ = avi_videos()[name]
    info = probe_video(path)
    expected = painted_frames()
    for decoder in _decoders():
        frames = decoder.decode(str(path), list(range(N)), info)
        assert np.array_equal(frames, expected), (name, decoder.name, np.abs(frames.astype(int) - expected).max())


@pytest.mark.parametrize("bits,tagged_limited", [(8, False), (8, True), (10, False), (10, True)])
def test_gray_conversion_uses_the_frames_range(bits, tagged_limited):
    fmt = "gray" if bits == 8 else "gray10le"
    top = (1 << bits) - 1
    rng = np.random.default_rng(bits)
    values = rng.integers(0, top + 1, size=(6, 10)).astype(np.uint8 if bits == 8 else np.uint16)
    values[0, :4] = [0, top, 16 << (bits - 8), 235 << (bits - 8)]
    frame = av.VideoFrame.from_ndarray(values, format=fmt)
    frame.color_range = 1 if tagged_limited else 2
    box = (1, 2, 7, 3)
    got = gray_to_rgb(frame, box)
    v = values[2:5, 1:8].astype(np.float64)
    unit = 2.0 ** (bits - 8)
    ref = (v - 16 * unit) * 255 / (219 * unit) if tagged_limited else v * 255 / top
    ref = np.clip(np.rint(ref), 0, 255)
    assert got.shape == (3, 7, 3) and got.dtype == np.uint8
    assert np.array_equal(got, np.repeat(ref[..., None], 3, axis=2))
    if tagged_limited:  # black and white of the limited range land on 0 and 255
        assert gray_to_rgb(frame, (2, 0, 2, 1)).tolist() == [[[0, 0, 0], [255, 255, 255]]]


def _loader(backend, names, mode="test", **overrides):
    return corpus_loader(avi_videos(), backend, names, mode, **overrides)


@pytest.mark.parametrize("mode,decoder", [("test", "pyav"), ("train", "pyav"), ("test", "torchcodec")])
def test_cpu_backend_returns_exactly_the_planned_frames(mode, decoder):
    if decoder == "torchcodec" and not torchcodec_available():
        pytest.skip("torchcodec is not installed (optional; needs system FFmpeg libraries)")
    videos = avi_videos()
    names = list(videos) * (2 if mode == "train" else 1)
    loader = _loader("cpu", names, mode, cpu_decoder=decoder)
    assert exact_corpus_clips(loader, names, videos) == set(names)
    assert not loader.bad_log.bad, loader.bad_log.summary()


def test_dali_backend_routes_what_its_decoder_refuses_or_would_misindex_to_the_cpu_decoder():
    pytest.importorskip("nvidia.dali", reason="DALI is in the dev extra")
    videos = avi_videos()
    names = list(videos)
    loader = _loader("dali", names)  # data.dali_fallback = "cpu", the default
    assert loader.backend.cpu_videos == {i for i, n in enumerate(names) if n not in DALI_CPU_DECODES}
    assert exact_corpus_clips(loader, names, videos) == set(names) and not loader.bad_log.bad


def test_dali_decodes_an_avi_that_starts_at_frame_1_itself_and_skips_the_rest_with_the_reason():
    pytest.importorskip("nvidia.dali", reason="DALI is in the dev extra")
    videos = avi_videos()
    names = list(videos)
    loader = _loader("dali", names, dali_fallback="skip")
    assert exact_corpus_clips(loader, names, videos) == DALI_CPU_DECODES
    bad = {names[v]: e for v, e in loader.bad_log.bad.items()}
    assert set(bad) == set(names) - DALI_CPU_DECODES
    for name, event in bad.items():
        assert event.reason == "unsupported_by_backend", (name, event)
        if name in PACKED:
            assert "packed B-frames" in event.detail, (name, event.detail)
