"""The probe: what the loaders need to know about one video, from one pass over its packets.

The frame-index rule, for every container: frame ``i`` is the i-th frame FFmpeg outputs when it
decodes the video's main stream from the start (presentation order, the frames an edit list
discards not included). The probe counts frames by that rule and says how a decoder can find
frame ``i`` again:

* ``index_by = "pts"``: every packet has a unique timestamp, so frame i is the frame with the
  i-th smallest pts of the kept (not discarded) packets; decoders may seek to a key frame;
* ``index_by = "count"``: the timestamps cannot be trusted (any codec with inter frames in AVI,
  which stores decode-order timestamps; MPEG-4 Part 2 with packed B-frames in any container;
  packets without pts; duplicates); the probe decodes the stream once to count its frames and
  decoders count frames from the start.

Packed B-frames (DivX / Xvid AVI files, as UCF101's and HMDB51's): a packet holds a P-frame and the
B-frame shown before it, and a small "N-VOP" packet later stands in for the delayed frame. FFmpeg
decodes such a stream right from the start, one frame per packet, but the packets' timestamps are
not the frames' (the AVI demuxer's first is 1, and frames come out stamped 1, 2, 4, 3, 5, 7, 6, ...),
so finding frame i by timestamp gives its neighbour. Such streams are indexed by counting wherever
they are stored (also after a stream copy into MP4 / Matroska). A guard for what no rule names: where
the probe's decode of the last GOP sees frames come out of timestamp order, it counts too.

It also records what DALI would get wrong (``dali_issue``): a header frame count that is not
the real count, a resolution change, frames hidden by an edit list, untrusted timestamps, a main
stream that is not the first video stream, a container where DALI's indexing is not verified
(MPEG-TS / PS, FLV, raw streams: DALI builds its own index there).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .bad_videos import BadVideo

# Container signatures: a file that starts like a video but does not open is "truncated",
# anything else that does not open is "not_a_video".
_MAGIC = (b"\x1aE\xdf\xa3", b"RIFF", b"\x47", b"\x00\x00\x01\xba", b"FLV")
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")
_NOT_MAIN = 1024 | 2048 | 1048576  # dispositions: attached_pic, timed_thumbnails, still_image
DALI_CONTAINERS = frozenset({"mov", "matroska", "avi"})  # where DALI's frame indices are tested to follow the rule
_KEY_FRAME_SPACING = 8  # intra-only streams: decode every 8th frame to see the frame size
_MPEG4_VOP = b"\x00\x00\x01\xb6"  # MPEG-4 Part 2 start code of a coded picture (VOP)


def missing_reason(path: Path) -> str:
    """Why ``path`` is not a readable file ("" when it is one)."""
    if path.is_file():
        return ""
    if path.is_symlink():
        return f"dangling symlink to {os.readlink(path)}"
    if path.is_dir():
        return "a directory"
    return "no such file"


@dataclass
class VideoInfo:
    """What the loaders need to know about one video, from one probe."""
    num_frames: int = 0
    width: int = 0            # coded (raw) size of the first frame; later frames are scaled to it
    height: int = 0
    rotation: int = 0         # degrees counter-clockwise to display upright (multiple of 90)
    codec: str = ""           # codec family (h264, hevc, av1, vp9, ...), not the decoder's name
    fps: float = 0.0
    pix_fmt: str = ""
    pts0: int = 0             # constant frame rate: pts of frame i = pts0 + i * dpts
    dpts: int = 0
    pts: list[int] | None = None          # variable frame rate: every frame's pts, presentation order
    keyframes: list[int] = field(default_factory=list)  # frame indices of key frames
    bad: str | None = None    # a reason from bad_videos.REASONS, or None
    detail: str = ""
    stream: int = 0           # container stream index of the main video stream
    index_by: str = "pts"     # "pts" (seekable) or "count" (decode from the start and count)
    dali_issue: str = ""      # why DALI would decode this video wrongly; "" when it should not
    container: str = ""       # FFmpeg's demuxer (mov, matroska, mpegts, mpeg, avi, flv, ...)
    reorder_depth: int = -1   # the decoder's frame reorder delay FFmpeg's stream probe found (-1: unknown)
    packed_bframes: bool = False  # MPEG-4 Part 2 with DivX-style packed B-frames (two pictures in a packet)

    @property
    def quarter_turns(self) -> int:
        """Counter-clockwise quarter turns to display upright (np.rot90's k)."""
        return (round(self.rotation / 90)) % 4

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as displayed, after rotation."""
        return (self.height, self.width) if self.quarter_turns % 2 else (self.width, self.height)

    def frame_pts(self, i: int) -> int:
        return self.pts[i] if self.pts is not None else self.pts0 + i * self.dpts

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "VideoInfo":
        return cls(**d)


def _classify_unopenable(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(12)
    if head.startswith(_MAGIC) or head[4:8] in _MP4_BOXES:
        return "truncated"
    return "not_a_video"


def main_video_stream(container):
    """The stream FFmpeg would pick, never an attached picture or thumbnail: the most frames wins."""
    streams = [s for s in container.streams.video if not int(s.disposition) & _NOT_MAIN]
    if not streams:
        raise BadVideo("no_video_stream", "only attached pictures / thumbnails")
    if len(streams) == 1:
        return streams[0]
    try:
        best = container.streams.best("video")
    except Exception:  # noqa: BLE001 - no best stream
        best = None
    # FFmpeg's own choice can be a one-frame thumbnail marked "default": count the packets
    counts = {s.index: 0 for s in streams}
    try:
        for packet in container.demux(*streams):
            if packet.size:
                counts[packet.stream.index] += 1
    except Exception:  # noqa: BLE001 - a broken file shows when the chosen stream is demuxed
        pass
    container.seek(0)
    return max(streams, key=lambda s: (counts[s.index], s is best, -s.index))


def codec_family(ctx) -> str:
    """'av1' for libdav1d, 'h264' for h264: the codec's canonical name."""
    codec = getattr(ctx, "codec", None)
    return getattr(codec, "canonical_name", None) or (ctx.name or "")


def ffmpeg_logs():
    """A context that keeps FFmpeg's error lines out of stderr while PyAV appends the last one to the
    exception it raises ('...; last error log: [h264] ...'): the decoder's own words reach the reason."""
    import av.logging  # noqa: PLC0415

    if av.logging.get_level() is None:
        av.logging.set_level(av.logging.ERROR)
    return av.logging.Capture()


def ffmpeg_message(e: Exception, limit: int = 300) -> str:
    """An FFmpeg error as one line: its message and the decoder's last error log line, without the path."""
    text = " ".join(str(e).split())
    head, sep, tail = text.partition("; last error log: ")
    head = head.split(": '/", 1)[0]  # "...: '<path>'" adds nothing: the report names the file
    return (head + (f"; {tail}" if sep else ""))[:limit]


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Probe one video with PyAV: demux every packet, decode key frames and the last GOP.

    Never raises for a bad file: the returned info carries the reason in ``bad``.
    """
    try:
        with ffmpeg_logs():
            return _probe(Path(path))
    except BadVideo as e:
        return VideoInfo(bad=e.reason, detail=e.detail)


def _probe(path: Path) -> VideoInfo:
    try:
        import av  # noqa: PLC0415 - optional dependency (the dev / cpu-video extras)
    except ImportError as e:
        raise ImportError("probing videos needs PyAV: pip install 'ila-fast[cpu-video]' (or av)") from e

    why = missing_reason(path)
    if why:
        raise BadVideo("missing", why)
    if path.stat().st_size == 0:
        raise BadVideo("empty_file", "0 bytes")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise BadVideo(_classify_unopenable(path), ffmpeg_message(e)) from None
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            raise BadVideo("no_video_stream", f"streams: {', '.join(kinds)}")
        stream = main_video_stream(container)
        ctx = stream.codec_context
        if ctx is None or ctx.codec is None:
            name = (ctx.name if ctx is not None else "") or "unknown"
            raise BadVideo("unsupported_codec", f"no decoder for codec {name!r}")
        info = VideoInfo(width=ctx.width, height=ctx.height, codec=codec_family(ctx), stream=stream.index,
                         container=container.format.name.split(",")[0],
                         fps=float(stream.average_rate or stream.guessed_rate or 0),
                         pix_fmt=ctx.format.name if ctx.format is not None else "",
                         reorder_depth=int(getattr(ctx, "reorder_depth", -1)))
        packets, sizes, info.packed_bframes = _demux(av, container, stream, info.codec == "mpeg4")
        issues = []
        demuxer = container.format.name.split(",")[0]
        if demuxer not in DALI_CONTAINERS:
            issues.append(f"DALI's frame indexing is not verified for the {demuxer} container")
        if stream.index != container.streams.video[0].index:
            issues.append(f"the main video stream is stream {stream.index}, not the first video stream")
        kept = [(pts, key) for pts, key, discard in packets if not discard]
        if len(kept) < len(packets):
            issues.append(f"an edit list discards {len(packets) - len(kept)} pre-roll frames")
        if not kept:
            raise BadVideo("too_few_frames", "no video frames")
        pts = [p for p, _ in kept]
        trusted = None not in pts and len(set(pts)) == len(pts)
        if container.format.name == "avi" and not ctx.codec.intra_only:
            trusted = False  # AVI stores decode-order timestamps: B-frames come out mis-stamped
        if info.packed_bframes:
            trusted = False  # packet timestamps are not the frames' (see the module docstring)
        disorder = trusted and not _index_by_pts(container, stream, info, kept, len(packets), sizes)
        if not trusted or disorder:
            why = ("packed B-frames: two pictures in one packet" if info.packed_bframes else
                   "frames come out of timestamp order" if disorder else
                   f"{pts.count(None)} packets without pts" if None in pts else "duplicate pts" if
                   len(set(pts)) < len(pts) else "AVI stores decode-order timestamps")
            issues.append(f"its timestamps do not give the frame order ({why})")
            _index_by_count(av, container, stream, info, sizes)
        header = int(stream.frames or 0)
        if header and header != info.num_frames and header != len(packets):
            issues.append(f"the header says {header} frames, the stream has {info.num_frames}")
        if len(sizes) > 1:
            shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:3])
            issues.append(f"the frame size changes mid-stream ({shown})")
        info.dali_issue = "; ".join(issues)
    return info


def _demux(av, container, stream, mpeg4: bool = False) -> tuple[list, set, bool]:
    """Every packet's (pts, key, discarded); frame sizes from decoding key frames on the way; and, for
    MPEG-4 Part 2 (``mpeg4``), whether a packet holds two pictures (packed B-frames)."""
    packets, sizes, packed = [], set(), False
    ctx = stream.codec_context
    since_decoded = _KEY_FRAME_SPACING
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            packets.append((packet.pts, packet.is_keyframe, packet.is_discard))
            if mpeg4 and not packed:
                packed = bytes(packet).count(_MPEG4_VOP) > 1
            since_decoded += 1
            if packet.is_keyframe and since_decoded >= _KEY_FRAME_SPACING:
                since_decoded = 0
                try:  # a resolution change needs a key frame: its size shows here
                    sizes.update((f.width, f.height) for f in ctx.decode(packet))
                except av.error.FFmpegError:
                    pass  # a broken frame is found when the tail is decoded, or while loading
    except av.error.FFmpegError as e:
        if not packets:
            raise BadVideo("truncated", f"demuxing failed: {ffmpeg_message(e)}") from None
        raise BadVideo("truncated",
                       f"demuxing stopped after {len(packets)} packets: {ffmpeg_message(e)}") from None
    try:
        ctx.flush_buffers()
    except Exception:  # noqa: BLE001 - nothing to flush
        pass
    return packets, sizes, packed


def _index_by_pts(container, stream, info: VideoInfo, kept: list, all_packets: int, sizes: set) -> bool:
    """Index by pts; False (nothing raised) when the decoded frames come out of timestamp order, which
    the rule (output order) then does not follow: the caller counts instead."""
    pts = sorted(p for p, _ in kept)
    _check_complete(container, stream, pts, all_packets)
    order = {p: i for i, p in enumerate(pts)}
    info.num_frames = len(pts)
    info.keyframes = sorted(order[p] for p, key in kept if key)
    if not info.keyframes or info.keyframes[0] != 0:
        info.keyframes = [0] + info.keyframes  # decoding starts at the stream start anyway
    steps = {b - a for a, b in zip(pts, pts[1:])}
    if len(steps) <= 1:
        info.pts0, info.dpts = pts[0], (steps.pop() if steps else 1)
    else:
        info.pts = pts
    # Decode from the last key frame to the end: a cut-off file loses its last frames here,
    # and the first decoded frame gives the display rotation.
    last_key = info.keyframes[-1]
    wanted = set(pts[last_key:])
    tail = _decode_frames(container, stream, wanted, seek_pts=info.frame_pts(last_key))
    if tail["count"] == 0 and tail["error"] is None:  # MPEG-TS / PS: the seek lands nowhere useful
        tail = _decode_frames(container, stream, wanted, seek_pts=None)
    if tail["error"] is None and tail["disorder"]:
        return False
    if tail["error"] is not None or tail["count"] < len(pts) - last_key:
        why = f" ({tail['error']})" if tail["error"] else ""
        raise BadVideo("truncated", f"only {tail['count']} of the last {len(pts) - last_key} frames decode{why}")
    _finish(info, tail, sizes)
    return True


def _index_by_count(av, container, stream, info: VideoInfo, sizes: set) -> None:
    """Untrusted timestamps: decode everything once and count what FFmpeg outputs."""
    out = _decode_frames(container, stream, None, seek_pts=None)
    if out["error"] is not None:
        raise BadVideo("truncated", f"decoding stopped after {out['count']} frames ({out['error']})")
    if out["count"] == 0:
        raise BadVideo("too_few_frames", "no frame decodes")
    info.num_frames = out["count"]
    info.keyframes = [0]
    info.index_by = "count"
    info.pts0, info.dpts, info.pts = 0, 1, None
    _finish(info, out, sizes)


def _finish(info: VideoInfo, decoded: dict, sizes: set) -> None:
    info.rotation = decoded["rotation"]
    sizes.update(decoded["sizes"])
    if info.width <= 0 or info.height <= 0:
        info.width, info.height = decoded["first_size"]


def _check_complete(container, stream, pts: list[int], all_packets: int) -> None:
    """A cut-off file often still demuxes: compare with what its header promises."""
    expected = int(stream.frames or 0)
    if expected and all_packets < expected:
        raise BadVideo("truncated", f"{all_packets} of the {expected} frames in the header are present")
    if len(container.streams) == 1 and container.duration and stream.time_base and len(pts) > 1:
        step = (pts[-1] - pts[0]) / (len(pts) - 1)
        end = float((pts[-1] + step) * stream.time_base)
        promised = container.duration / 1_000_000
        if end < 0.9 * promised - 0.1:
            raise BadVideo("truncated", f"frames end at {end:.2f} s of the {promised:.2f} s in the header")


def _decode_frames(container, stream, wanted: set[int] | None, seek_pts: int | None) -> dict:
    """Decode (after a seek, or from the start) and count the frames in ``wanted`` (None: all)."""
    import av  # noqa: PLC0415

    out = {"count": 0, "error": None, "rotation": 0, "first_size": (0, 0), "sizes": set(), "disorder": False}
    try:
        if seek_pts is None:  # from the start: a fresh demuxer (seeking to 0 fails in MPEG-TS)
            with av.open(container.name, metadata_errors="ignore") as fresh:
                _count(fresh.decode(fresh.streams[stream.index]), wanted, out)
        else:
            container.seek(seek_pts, stream=stream, backward=True, any_frame=False)
            _count(container.decode(stream), wanted, out)
    except av.error.FFmpegError as e:
        out["error"] = ffmpeg_message(e, 200)
    return out


def _count(frames, wanted: set[int] | None, out: dict) -> None:
    """Count the frames of ``wanted`` (None: all) as they decode; note rotation, sizes, and whether the
    wanted frames come out of timestamp order."""
    seen = set()
    last = None
    for frame in frames:
        if wanted is None:
            out["count"] += 1
        elif frame.pts in wanted and frame.pts not in seen:
            seen.add(frame.pts)
            out["count"] = len(seen)
            out["disorder"] |= last is not None and frame.pts < last
            last = frame.pts
        else:
            continue
        out["sizes"].add((frame.width, frame.height))
        if out["count"] == 1:
            out["rotation"] = int(round(frame.rotation or 0))
            out["first_size"] = (frame.width, frame.height)
