"""Tiny generated videos for the data tests (written once per test session into a temp folder).

Good videos paint each frame's index as 6 horizontal bands (bit b of the index: band b white
or black), so a loader's output tells which frames it really decoded, after any crop that
keeps the full height and any resize.
"""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from ila_fast.data.synthetic import render_motion, write_video

from ila_fast.config import PIXEL_MEAN, PIXEL_STD

BITS = 6
W, H, N = 64, 48, 24   # fixture video size and length
T = 8                  # frames per clip in the tests
S = 32                 # input size in the tests


def painted_frames(n: int = N, h: int = H, w: int = W) -> np.ndarray:
    frames = np.zeros((n, h, w, 3), np.uint8)
    band = h // BITS
    for i in range(n):
        for b in range(BITS):
            if (i >> b) & 1:
                frames[i, b * band:(b + 1) * band] = 255
    return frames


def read_indices_raw(frames: np.ndarray) -> list[int]:
    """(T, H, W, 3) uint8 painted frames -> frame indices."""
    band = frames.shape[1] // BITS
    return [sum(int(f[b * band + band // 2, :, :].mean() > 128) << b for b in range(BITS)) for f in frames]


def read_indices_clip(clip) -> list[int]:
    """(T, 3, S, S) normalised clip of a painted video (full-height crop) -> frame indices."""
    x = clip.float().cpu().numpy() * np.array(PIXEL_STD).reshape(1, 3, 1, 1) + np.array(PIXEL_MEAN).reshape(1, 3, 1, 1)
    s = x.shape[-2]
    band = s / BITS
    out = []
    for f in x:
        rows = [f[:, int((b + 0.5) * band), :].mean() for b in range(BITS)]
        out.append(sum(int(r > 128) << b for b, r in enumerate(rows)))
    return out


def exact_corpus_clips(loader, names: list[str], corpus: dict) -> set[str]:
    """Run the loader over the corpus list ``names``: every clip must be finite and hold exactly the
    frames its spec asked for (painted numbers start at the video's first index). Returns the
    names of the videos that gave clips."""
    seen = set()
    for batch in loader:
        assert torch.isfinite(batch.video).all()
        for clip, spec in zip(batch.video, batch.specs):
            name = names[spec.video]
            assert read_indices_clip(clip) == [corpus[name][1] + i for i in spec.frames], (name, spec.frames)
            seen.add(name)
    return seen


def _truncate(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def _audio_only(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libopus", rate=48000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 9600), np.float32), format="flt", layout="mono")
        frame.sample_rate = 48000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@functools.lru_cache(maxsize=None)
def fixture_videos() -> dict[str, Path]:
    """name -> path of every fixture video (good ones and one per bad case)."""
    root = Path(tempfile.mkdtemp(prefix="ila_data_tests_"))
    atexit.register(shutil.rmtree, root, True)
    paint = painted_frames()
    v = {}
    v["painted_vp9"] = write_video(root / "painted_vp9.webm", paint, codec="vp9")
    v["painted_h264"] = write_video(root / "painted_h264.mp4", paint, codec="h264")
    rng = np.random.default_rng(0)
    for k in range(3):
        v[f"motion_vp9_{k}"] = write_video(root / f"motion_vp9_{k}.webm", render_motion("rotate", N, H, W, rng),
                                           codec="vp9")
    v["motion_h264_0"] = write_video(root / "motion_h264_0.mp4", render_motion("scale", N, H, W, rng))
    v["motion_mjpeg"] = write_video(root / "motion_mjpeg.avi", render_motion("translate_y", N, H, W, rng),
                                    codec="mjpeg")  # full-range yuvj420p, also decoded by DALI's CPU decoder
    # the bad-video cases
    (root / "empty.webm").write_bytes(b"")
    v["empty"] = root / "empty.webm"
    long_clip = render_motion("translate_x", 64, H, W, rng)
    full_webm = write_video(root / "long.webm", long_clip, codec="vp9")
    full_mp4 = write_video(root / "long.mp4", long_clip, codec="h264")
    v["truncated_webm"] = _truncate(full_webm, root / "truncated.webm", 0.5)
    v["truncated_mp4"] = _truncate(full_mp4, root / "truncated.mp4", 0.6)
    (root / "not_a_video.webm").write_bytes(b"this is a text file, not a video\n" * 40)
    v["not_a_video"] = root / "not_a_video.webm"
    v["no_video_stream"] = _audio_only(root / "audio_only.webm")
    unknown = bytearray(v["motion_vp9_0"].read_bytes())
    at = unknown.find(b"V_VP9")
    unknown[at:at + 5] = b"V_QQ9"  # a codec id no decoder knows
    (root / "unknown_codec.webm").write_bytes(bytes(unknown))
    v["unsupported_codec"] = root / "unknown_codec.webm"
    v["too_few_frames"] = write_video(root / "short.webm", paint[:5], codec="vp9")
    v["odd_size"] = write_video(root / "odd_97x61.webm", painted_frames(N, 61, 97), codec="vp9")
    pts, t = [], 0
    for i in range(N):
        pts.append(t)
        t += 20 if i % 3 else 70
    v["vfr"] = write_video(root / "vfr.webm", paint, codec="vp9", pts=pts)
    v["rotated"] = write_video(root / "rotated.webm", paint, codec="vp9", rotation=90)
    # listed but not files: each is a bad video with reason "missing"
    v["missing_file"] = root / "gone.webm"
    (root / "a_directory.webm").mkdir()
    v["missing_dir"] = root / "a_directory.webm"
    (root / "dangling.webm").symlink_to(root / "deleted.webm")
    v["missing_link"] = root / "dangling.webm"
    v["root"] = root
    return v


def write_list(root: Path, names: list[str], videos: dict[str, Path], name: str = "list.txt",
               labels: list[int] | None = None) -> Path:
    """A list file (official format) naming fixture videos relative to ``root``."""
    lines = [f"{videos[n].relative_to(root)} {labels[i] if labels else i % 2}" for i, n in enumerate(names)]
    path = Path(tempfile.mkdtemp(dir=root)) / name
    path.write_text("\n".join(lines) + "\n")
    return path


def corpus_loader(videos: dict[str, tuple], backend: str, names: list[str], mode: str = "test", **overrides):
    """A loader over fixture ``videos`` (name -> (path, ...)) with every augmentation off, so each clip
    shows its painted frame numbers as decoded; ``overrides`` are DataConfig fields (cpu_decoder: pyav)."""
    from ila_fast.config import DataConfig
    from ila_fast.data.loader import build_loader

    root = fixture_videos()["root"]
    lst = write_list(root, names, {n: videos[n][0] for n in names})
    overrides.setdefault("cpu_decoder", "pyav")
    cfg = DataConfig(root=str(root), train_list=str(lst), batch_size=4, num_workers=0, dali_device="cpu",
                     max_bad_fraction=1.0, test_clips=3, test_crops=1, crop_scales=[1.0],
                     color_jitter_p=0.0, grayscale_p=0.0, erasing_p=0.0, mixup_alpha=0.0, cutmix_alpha=0.0,
                     **overrides)
    return build_loader(cfg, "train", frames=T, input_size=S, num_classes=2, backend=backend, mode=mode)


# ---------------------------------------------------------------- the container / stream corpus
# name -> (file name, encoder, container options); every video shows painted frames, H.264 and
# MPEG-2 with B-frames (presentation order != decode order)
CONTAINERS = {
    "mp4": ("c.mp4", "libx264"), "mov": ("c.mov", "libx264"), "mkv": ("c.mkv", "libx264"),
    "webm": ("c.webm", "libvpx-vp9"), "avi": ("c.avi", "libx264"), "avi_mjpeg": ("cj.avi", "mjpeg"),
    "ts": ("c.ts", "libx264"), "mpg": ("c.mpg", "mpeg2video"), "flv": ("c.flv", "libx264"),
    "mkv_vp9": ("c9.mkv", "libvpx-vp9"), "mkv_av1": ("c1.mkv", "libsvtav1"),  # AV1: decoded by libdav1d
}
GOP = 8
CUT_AT = 11  # the edit-list cut starts at painted frame 11 (key frame 8 kept as hidden pre-roll)


def _encode(path: Path, encoder: str, frames: np.ndarray, fmt: str | None = None) -> Path:
    """Painted frames -> a file, closed GOPs of 8, B-frames where the codec has them."""
    import av

    options = {"g": str(GOP)}
    if encoder == "libx264":
        options.update({"bf": "2", "preset": "veryfast",
                        "x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0:open-gop=0"})
    elif encoder == "mpeg2video":
        options.update({"bf": "2", "qscale": "2"})
    elif encoder == "libvpx-vp9":
        options.update({"deadline": "realtime", "cpu-used": "8", "crf": "20", "b:v": "0"})
    elif encoder == "mjpeg":
        options["qscale"] = "2"
    elif encoder == "libsvtav1":
        options.update({"preset": "12", "crf": "30"})
    pix_fmt = "yuvj420p" if encoder == "mjpeg" else "yuv420p"
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(encoder, rate=25)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        s.options = options
        for image in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _copy_cut(src: Path, dst: Path, cut: int) -> Path:
    """What `ffmpeg -ss T -c copy` writes: packets from the key frame before the cut, shifted so the
    cut is at time 0; the mp4 muxer stores the pre-roll as an edit list (its packets are discarded)."""
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        ist = i.streams.video[0]
        ost = o.add_stream_from_template(ist)
        step = int(1 / (ist.average_rate * ist.time_base))
        key = (cut // GOP) * GOP
        for p in i.demux(ist):
            if p.size == 0 or p.pts is None or p.pts < key * step:
                continue
            p.pts -= cut * step
            p.dts -= cut * step
            p.stream = ost
            o.mux(p)
    return dst


def _remux(src: Path, dst: Path, fmt: str, drop_pts: bool) -> Path:
    """The same packets in another container; ``drop_pts``: only key frames keep a pts."""
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w", format=fmt) as o:
        ist = i.streams.video[0]
        ost = o.add_stream_from_template(ist)
        for p in i.demux(ist):
            if p.size == 0:
                continue
            if drop_pts and not p.is_keyframe:
                p.pts = None
            p.stream = ost
            o.mux(p)
    return dst


def _thumbnail_first(path: Path, encoder: str, frames: np.ndarray) -> Path:
    """Stream 0: a one-frame grey MJPEG thumbnail; stream 1: the painted video."""
    import av

    with av.open(str(path), "w") as c:
        thumb = c.add_stream("mjpeg", rate=25)
        thumb.width, thumb.height, thumb.pix_fmt = W, H, "yuvj420p"
        s = c.add_stream(encoder, rate=25)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = {"g": str(GOP), "deadline": "realtime", "cpu-used": "8"} if "vpx" in encoder else {"g": str(GOP)}
        grey = av.VideoFrame.from_ndarray(np.full((H, W, 3), 128, np.uint8), format="rgb24")
        for p in [*thumb.encode(grey), *thumb.encode()]:
            c.mux(p)
        for image in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _resolution_change(path: Path, frames: np.ndarray, at: int) -> Path:
    """VP9 in WebM whose frames from ``at`` on are coded at 1.5x the size (a new key frame)."""
    import av

    big = np.repeat(np.repeat(frames[at:], 3, axis=1), 3, axis=2)[:, ::2, ::2]  # 1.5x, bands kept
    parts = [_encode(path.with_suffix(".a.webm"), "libvpx-vp9", frames[:at]),
             _encode(path.with_suffix(".b.webm"), "libvpx-vp9", big)]
    with av.open(str(path), "w") as o:
        ost = None
        offset = 0
        for part in parts:
            with av.open(str(part)) as i:
                ist = i.streams.video[0]
                if ost is None:
                    ost = o.add_stream_from_template(ist)
                last = 0
                for p in i.demux(ist):
                    if p.size == 0:
                        continue
                    last = max(last, p.pts)
                    p.pts += offset
                    p.dts += offset
                    p.stream = ost
                    o.mux(p)
                offset += last + int(1 / (ist.average_rate * ist.time_base))
            part.unlink()
    return path


def _header_undercounts(path: Path, frames: np.ndarray, claimed: int) -> Path:
    """An MJPEG AVI whose header (avih and strh) says ``claimed`` frames instead of len(frames)."""
    import struct

    _encode(path, "mjpeg", frames)
    data = bytearray(path.read_bytes())
    avih = data.find(b"avih")
    struct.pack_into("<I", data, avih + 8 + 16, claimed)  # dwTotalFrames
    strh = data.find(b"strh")
    struct.pack_into("<I", data, strh + 8 + 32, claimed)  # dwLength
    path.write_bytes(bytes(data))
    return path


@functools.lru_cache(maxsize=None)
def corpus_videos() -> dict[str, tuple[Path, int, int]]:
    """name -> (path, painted index of frame 0, frame count) of the container / stream corpus."""
    root = Path(fixture_videos()["root"]) / "corpus"
    root.mkdir(exist_ok=True)
    paint = painted_frames()
    out = {}
    for name, (fname, encoder) in CONTAINERS.items():
        out[name] = (_encode(root / fname, encoder, paint), 0, N)
    out["edit_list"] = (_copy_cut(out["mp4"][0], root / "cut.mp4", CUT_AT), CUT_AT, N - CUT_AT)
    out["raw_h264"] = (_remux(out["mp4"][0], root / "raw.h264", "h264", False), 0, N)  # no timestamps at all
    out["ts_missing_pts"] = (_remux(out["mp4"][0], root / "nopts.ts", "mpegts", True), 0, N)
    out["thumbnail_first_mp4"] = (_thumbnail_first(root / "thumb.mp4", "libx264", paint), 0, N)
    out["thumbnail_first_mkv"] = (_thumbnail_first(root / "thumb.mkv", "libvpx-vp9", paint), 0, N)
    out["resolution_change"] = (_resolution_change(root / "sizes.webm", paint, 12), 0, N)
    out["header_undercounts"] = (_header_undercounts(root / "lying.avi", paint, 16), 0, N)
    return out


# ---------------------------------------------------------------- AVI files as datasets ship them
# UCF101 and HMDB51 are Xvid AVI files: MPEG-4 Part 2 with "packed" B-frames (a P-frame and the
# B-frame shown before it in one packet, an N-VOP packet later standing in for the delayed frame).
# FFmpeg's AVI demuxer reports their first timestamp as 1. The encoder in FFmpeg writes B-frames
# unpacked, so the fixture packs them itself, as DivX / Xvid do (the inverse of FFmpeg's
# mpeg4_unpack_bframes filter), and marks the stream packed as they do (DivX user data ending in 'p').
MPEG4_VOP = b"\x00\x00\x01\xb6"
DIVX_PACKED_USER_DATA = b"\x00\x00\x01\xb2DivX503b1393p"


def _vop_type(packet: bytes) -> str:
    """'I', 'P', 'B' or 'S': the coding type of the packet's first picture (VOP)."""
    at = packet.find(MPEG4_VOP)
    return "IPBS"[packet[at + 4] >> 6]


def _mpeg4_bframe_packets(frames: np.ndarray, fps: int = 25) -> list[bytes]:
    """Painted frames -> MPEG-4 Part 2 packets in decoding order, two B-frames between references."""
    import io

    import av

    with av.open(io.BytesIO(), "w", format="avi") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.options = {"g": str(GOP), "bf": "2", "qscale": "2"}
        packets = [bytes(p) for image in frames
                   for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24"))]
        packets += [bytes(p) for p in s.encode()]
    assert "B" in {_vop_type(p) for p in packets}, "the encoder wrote no B-frames"
    return packets


def _n_vop(fps: int = 25) -> bytes:
    """A not-coded P picture (N-VOP): type P, no whole second passed, time increment 0 in the
    VOL's bits (FFmpeg writes log2(fps) rounded up for an integer rate), vop_coded = 0, stuffing."""
    bits = "01" + "0" + "1" + "0" * max(1, (fps - 1).bit_length()) + "1" + "0"
    bits += "0" + "1" * (-(len(bits) + 1) % 8)
    return MPEG4_VOP + int(bits, 2).to_bytes(len(bits) // 8, "big")


def _pack_bframes(packets: list[bytes], fps: int = 25) -> list[bytes]:
    """DivX-style packing: each reference picture carries the first B-frame that follows it in
    decoding order, the other B-frames move one packet later, an N-VOP ends the group; one packet per
    frame still. The first packet gets the DivX user data that marks the stream packed."""
    head = packets[0].find(MPEG4_VOP)
    packets = [packets[0][:head] + DIVX_PACKED_USER_DATA + packets[0][head:]] + packets[1:]
    out, k = [], 0
    while k < len(packets):
        ref, k = packets[k], k + 1
        bframes = []
        while k < len(packets) and _vop_type(packets[k]) == "B":
            bframes.append(packets[k])
            k += 1
        out += [ref + bframes[0], *bframes[1:], _n_vop(fps)] if bframes else [ref]
    return out


def _write_mpeg4_avi(path: Path, packets: list[bytes], size: tuple[int, int], fourcc: str, fps: int = 25) -> Path:
    """MPEG-4 Part 2 packets (decoding order) into an AVI, one per frame period, as VfW muxers write."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
        s.codec_context.codec_tag = fourcc
        for i, data in enumerate(packets):
            p = av.Packet(data)
            p.stream, p.pts, p.dts, p.time_base = s, i, i, Fraction(1, fps)
            p.is_keyframe = _vop_type(data) == "I"
            c.mux(p)
    return path


def _avi_starts_at(path: Path, frame: int) -> Path:
    """Set the AVI stream header's start (strh dwStart): FFmpeg then stamps packet k with ``frame + k``."""
    import struct

    data = bytearray(path.read_bytes())
    strh = data.find(b"strh")
    struct.pack_into("<I", data, strh + 8 + 28, frame)  # dwStart
    path.write_bytes(bytes(data))
    return path


def _gray_video(path: Path, encoder: str, frames: np.ndarray, limited: bool = False) -> Path:
    """Painted frames as a gray (luma-only) video; ``limited``: black 16 / white 235, tagged "tv" range
    (the tag survives in Matroska; AVI has no place for it)."""
    import av

    luma = frames[..., 0]  # painted frames are black or white: R = G = B
    if limited:
        luma = (16 + luma.astype(np.int32) * 219 // 255).astype(np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream(encoder, rate=25)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "gray"
        if limited:
            s.codec_context.color_range = 1
        for image in luma:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="gray")
            if limited:
                frame.color_range = 1
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _bgr_rawvideo(path: Path, frames: np.ndarray) -> Path:
    """Uncompressed BGR AVI (the 'DIB ' kind): an RGB pixel format, bottom-up rows in the file."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("rawvideo", rate=25)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "bgr24"
        for image in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                c.mux(p)
    return path


@functools.lru_cache(maxsize=None)
def avi_videos() -> dict[str, tuple[Path, int, int]]:
    """name -> (path, painted index of frame 0, frame count) of the AVI corpus (and the same packed
    stream copied into Matroska and MP4, as `ffmpeg -i x.avi -c copy x.mkv` does)."""
    root = Path(fixture_videos()["root"]) / "avi"
    root.mkdir(exist_ok=True)
    paint = painted_frames()
    size = (W, H)
    unpacked = _mpeg4_bframe_packets(paint)
    out = {}
    out["xvid_packed"] = (_write_mpeg4_avi(root / "xvid_packed.avi", _pack_bframes(unpacked), size, "XVID"), 0, N)
    out["mpeg4_bframes"] = (_write_mpeg4_avi(root / "mpeg4_bframes.avi", unpacked, size, "FMP4"), 0, N)
    out["xvid_packed_mkv"] = (_remux(out["xvid_packed"][0], root / "xvid_packed.mkv", "matroska", False), 0, N)
    out["xvid_packed_mp4"] = (_remux(out["xvid_packed"][0], root / "xvid_packed.mp4", "mp4", False), 0, N)
    out["mjpeg_start1"] = (_avi_starts_at(_encode(root / "mjpeg_start1.avi", "mjpeg", paint), 1), 0, N)
    out["gray_raw"] = (_gray_video(root / "gray_raw.avi", "rawvideo", paint), 0, N)
    out["gray_raw_start1"] = (_avi_starts_at(_gray_video(root / "gray_raw_start1.avi", "rawvideo", paint), 1), 0, N)
    out["gray_ffv1"] = (_gray_video(root / "gray_ffv1.avi", "ffv1", paint), 0, N)
    out["gray_limited_mkv"] = (_gray_video(root / "gray_limited.mkv", "ffv1", paint, limited=True), 0, N)
    out["bgr_raw"] = (_bgr_rawvideo(root / "bgr_raw.avi", paint), 0, N)
    return out
