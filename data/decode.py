"""CPU decoders: the frames at given indices of one video, in coded orientation, as uint8 RGB.

Frame ``i`` follows the probe's rule (``probe.py``): the i-th frame FFmpeg outputs decoding the
main stream from the start. Videos indexed by pts are found by timestamp after a seek to the
key frame before each needed frame (only when that skips work); videos indexed by count (AVI
with B-frames, missing pts) are decoded from the start and their frames counted.

* ``PyAVDecoder`` converts only the frames it returns, and only the plan's crop of each (plus a
  one-pixel margin, so the chroma interpolation at the crop's edge is the full frame's). A crop
  more than ``PRESCALE_ABOVE`` times the output (4K sources) is first scaled down in YUV by FFmpeg's
  scaler, so a 4K clip costs about what a 1080p one does. Frames whose size differs from the probed size
  (a resolution change) are scaled to it. PyAV bundles its own FFmpeg.
* ``TorchCodecDecoder`` uses torchcodec's exact-seek decoder where torchcodec is installed
  (it needs system FFmpeg libraries and a CPU-compatible build).
* ``decode_all_then_sample`` is the naive baseline the benchmark compares against.
"""
from __future__ import annotations

import bisect
import dataclasses

import numpy as np
import torch

from .augment import yuv420_to_rgb_planes
from .bad_videos import BadVideo
from .probe import VideoInfo, ffmpeg_logs, ffmpeg_message

_YUV420 = {"yuv420p": False, "yuvj420p": True}  # -> full range?
_GRAY_BITS = {"gray": 8, "gray9le": 9, "gray10le": 10, "gray12le": 12, "gray14le": 14, "gray16le": 16}
# Codecs whose frames map one-to-one to packets and whose non-reference frames can be skipped safely
# (AV1 / VP9 pack hidden reference frames into packets: skipping them loses needed frames).
SKIP_NONREF_CODECS = frozenset({"h264", "hevc", "mpeg2video", "mpeg1video", "mpeg4"})
# Crops more than this many times the output size are scaled down in YUV first (4K sources): it
# bounds the planes a worker sends; below it a whole-frame YUV scale costs more than the resize
# it saves (720p: 2.0 here was 10% slower per clip than 4.0).
PRESCALE_ABOVE = 4.0
# Containers that declare their streams in the header: there the probe's stream index and reorder
# depth stand in for the frames FFmpeg's stream probe would otherwise decode at every open.
FAST_OPEN_CONTAINERS = frozenset({"mov", "matroska"})


def prescale_factor(crop_w: int, crop_h: int, out_size: int | None) -> float:
    """Scale applied in YUV before the crop is converted (1.0: none)."""
    if not out_size:
        return 1.0
    ratio = min(crop_w, crop_h) / (PRESCALE_ABOVE * out_size)
    return 1.0 / ratio if ratio > 1.0 else 1.0


class _Region:
    """The (x, y, w, h) box of one frame, kept as copied YUV 4:2:0 planes (with a one-chroma-sample
    margin, so the chroma interpolation at the box's edge is the full frame's) or as RGB for other
    formats; ``_raw_clip`` gathers the regions of a clip, which ``RawClip.to_rgb`` converts in one
    vectorised call."""

    def __init__(self, frame, box):
        x, y, w, h = box
        fmt = frame.format.name
        self.box = box
        if fmt in _GRAY_BITS:
            self.rgb = gray_to_rgb(frame, box)
            return
        if fmt not in _YUV420:  # swscale converts with the frame's range and matrix (limited when untagged)
            self.rgb = frame.to_ndarray(format="rgb24")[y:y + h, x:x + w]
            return
        self.rgb = None
        x0, y0 = max(0, (x - 2) & ~1), max(0, (y - 2) & ~1)
        x1, y1 = min(frame.width, x + w + 2), min(frame.height, y + h + 2)
        self.origin = (x0, y0)
        planes = []
        for p, plane in enumerate(frame.planes):
            buf = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
            s = 1 if p == 0 else 2
            planes.append(buf[y0 // s:-(-y1 // s), x0 // s:-(-x1 // s)].copy())
        self.planes = planes
        self.kind = (_YUV420[fmt] or int(getattr(frame, "color_range", 0) or 0) == 2,
                     int(getattr(frame, "colorspace", 0) or 0) == 1)


def gray_to_rgb(frame, box) -> np.ndarray:
    """The (x, y, w, h) box of a gray frame as (h, w, 3) uint8 RGB, in the frame's real range: tagged
    limited ("tv": 16..235 at 8 bits) is expanded to 0..255, anything else is full range (FFmpeg's
    convention for gray). swscale, and so PyAV's ``to_ndarray`` and torchcodec, take every gray
    frame as full range, the limited ones included: their black comes out 16, their white 235."""
    bits = _GRAY_BITS[frame.format.name]
    dtype = np.dtype(np.uint8) if bits == 8 else np.dtype("<u2")
    plane = frame.planes[0]
    x, y, w, h = box
    luma = np.frombuffer(plane, dtype).reshape(plane.height, plane.line_size // dtype.itemsize)[y:y + h, x:x + w]
    unit = float(1 << (bits - 8))
    if int(getattr(frame, "color_range", 0) or 0) == 1:  # AVCOL_RANGE_MPEG
        levels = (luma.astype(np.float32) - 16.0 * unit) * np.float32(255.0 / (219.0 * unit))
    else:
        levels = luma.astype(np.float32) * np.float32(255.0 / ((1 << bits) - 1))
    gray = np.clip(np.rint(levels), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


@dataclasses.dataclass
class RawClip:
    """The crop of a clip as decoded, before colour conversion and resize: YUV 4:2:0 planes
    (uint8, with the margin the chroma interpolation needs; ``box`` is the crop inside them) or,
    for other pixel formats, uint8 RGB of the crop. Small (a 4:2:0 crop is half the bytes of its
    RGB) and convertible on any device: ``to_rgb`` gives, there, the frames ``decode(planar=True)``
    gives on the CPU. Tensors inside travel through a DataLoader's shared memory as any do."""
    box: tuple[int, int, int, int]      # (x, y, w, h) in luma pixels of the planes
    y: torch.Tensor | None = None       # (T, H, W)
    u: torch.Tensor | None = None       # (T, ceil(H/2), ceil(W/2))
    v: torch.Tensor | None = None
    rgb: torch.Tensor | None = None     # (T, 3, h, w): the crop itself, whole levels
    full_range: bool = False
    bt709: bool = False

    @property
    def num_frames(self) -> int:
        return (self.rgb if self.rgb is not None else self.y).shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """(w, h) of the crop."""
        return self.box[2], self.box[3]

    def _map(self, fn) -> "RawClip":
        return dataclasses.replace(self, **{k: fn(getattr(self, k)) for k in ("y", "u", "v", "rgb")
                                            if getattr(self, k) is not None})

    def select(self, order: list[int] | slice) -> "RawClip":
        """The frames at these positions (repeats allowed), or a slice of them."""
        return self._map(lambda t: t[order])

    def to(self, device, non_blocking: bool = False) -> "RawClip":
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "RawClip":  # DataLoader(pin_memory=True) calls this on objects that have it
        return self._map(lambda t: t.pin_memory())

    def to_rgb(self) -> torch.Tensor:
        """(T, 3, h, w) float32 RGB in whole levels on the planes' device (channels-last when converted)."""
        if self.rgb is not None:
            return self.rgb.float()
        return yuv420_to_rgb_planes(self.y, self.u, self.v, full_range=self.full_range, bt709=self.bt709,
                                    box=self.box)


def _raw_clip(regions: list[_Region]) -> RawClip:
    """The regions of a clip (same box) as one RawClip: planes when all are alike, else RGB."""
    first = regions[0]
    x, y, w, h = first.box
    if first.rgb is None and all(r.rgb is None and r.kind == first.kind and r.planes[0].shape ==
                                 first.planes[0].shape for r in regions):
        ys, us, vs = (torch.from_numpy(np.stack([r.planes[p] for r in regions])) for p in range(3))
        return RawClip((x - first.origin[0], y - first.origin[1], w, h), ys, us, vs,
                       full_range=first.kind[0], bt709=first.kind[1])
    rgb = [torch.from_numpy(r.rgb).permute(2, 0, 1) if r.rgb is not None
           else _raw_clip([r]).to_rgb()[0].to(torch.uint8) for r in regions]  # whole levels: exact in uint8
    return RawClip((0, 0, w, h), rgb=torch.stack(rgb))


def _frames(container, stream, needed_pts: set[int] | None, drain_after: set[int] | None = None):
    """Decoded frames of ``stream``; with ``needed_pts``, non-reference frames not needed are skipped.

    ``drain_after``: once the packets of all these frames (pts) are sent, drain the decoder and
    stop. Every frame a packet references comes before it in decoding order, so those frames are
    complete then; draining releases them from the reorder buffer instead of decoding the
    packets that follow only to release them (the next seek resets the decoder)."""
    ctx = stream.codec_context
    pending = set(drain_after) if drain_after else None
    for packet in container.demux(stream):
        if needed_pts is not None:
            ctx.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in needed_pts else "NONREF"
        yield from packet.decode()
        if pending is not None:
            pending.discard(packet.pts)
            if not pending:
                ctx.skip_frame = "DEFAULT"
                yield from ctx.decode(None)
                return


class PyAVDecoder:
    name = "pyav"

    def __init__(self, threads: int = 1, seek: bool = True, skip_nonref: bool = True, drain: bool = True,
                 fast_open: bool = True):
        """``seek``: start at the key frame before each needed frame (else decode from the start);
        ``skip_nonref``: do not decode non-reference frames (most B-frames) that are not needed;
        ``drain``: drain the decoder after the last needed frame before a seek (or the end);
        ``fast_open``: open without decoding (see ``_open``)."""
        import av  # noqa: PLC0415 - optional dependency (pip install ila-fast[cpu-video])

        self.av = av
        self.threads, self.seek, self.skip_nonref, self.drain = threads, seek, skip_nonref, drain
        self.fast_open = fast_open

    def _open(self, path: str, info: VideoInfo):
        """The container, and whether the probe's reorder depth must be set on its decoder.

        FFmpeg's stream probe (avformat_find_stream_info) decodes the first frames of an H.264
        stream at every open, up to 7, to find how many frames the decoder must hold back for
        reordering: at 340x256 that is most of an open's cost, and more of a clip's cost at larger
        sizes. Where the container's header declares the streams, the probe has already found
        that depth, so the stream probe is told not to decode and the depth is set directly; and
        not to read on for 5 s of packets looking for what only decoding tells (the pixel format)."""
        if self.fast_open and info.container in FAST_OPEN_CONTAINERS and info.reorder_depth >= 0:
            return self.av.open(path, options={"skip_frame": "all"}, container_options={"analyzeduration": "1"},
                                metadata_errors="ignore"), True
        return self.av.open(path, metadata_errors="ignore"), False

    def decode(self, path: str, indices, info: VideoInfo, crop=None, out_size: int | None = None,
               planar: bool = False) -> np.ndarray | torch.Tensor:
        """(len(indices), h, w, 3) uint8 of the raw-pixel box ``crop`` (None: the whole frame);
        ``planar``: (len(indices), 3, h, w) float32 of the same values, as the transforms take them.

        With ``out_size``, a crop larger than ``PRESCALE_ABOVE * out_size`` comes back scaled
        down (its short side about that size); the caller resizes to the output anyway.
        Raises BadVideo when a frame cannot be delivered.
        """
        rgb = self.decode_raw(path, indices, info, crop, out_size).to_rgb()
        return rgb if planar else rgb.permute(0, 2, 3, 1).to(torch.uint8).contiguous().numpy()

    def decode_raw(self, path: str, indices, info: VideoInfo, crop=None, out_size: int | None = None) -> RawClip:
        """``decode`` before the colour conversion: the crop's planes as decoded (see RawClip)."""
        box = tuple(crop) if crop is not None else (0, 0, info.width, info.height)
        with ffmpeg_logs():
            try:
                by_pts = info.index_by == "pts"
                return self._decode(path, indices, info, box, out_size, seek=self.seek and by_pts,
                                    drain=self.drain and by_pts)
            except BadVideo as first:
                if first.detail.startswith("frame") and info.index_by == "pts":
                    # a seek that landed late or nowhere (MPEG-TS / PS), or a frame whose packet's pts
                    # differs from its own: decode from the start instead, without draining
                    return self._decode(path, indices, info, box, out_size, seek=False, drain=False)
                raise

    def _decode(self, path: str, indices, info: VideoInfo, box, out_size, seek: bool, drain: bool) -> RawClip:
        av = self.av
        wanted = sorted(set(int(i) for i in indices))
        if wanted and (wanted[0] < 0 or wanted[-1] >= info.num_frames):
            raise BadVideo("decode_error", f"frame {wanted[-1]} outside 0..{info.num_frames - 1}", path)
        by_count = info.index_by == "count"
        pts_to_index = ({p: i for i, p in enumerate(info.pts)} if info.pts is not None else None)

        def index_of(pts):
            if pts is None:
                return None
            if pts_to_index is not None:
                return pts_to_index.get(pts)
            q, r = divmod(pts - info.pts0, info.dpts or 1)
            return q if r == 0 and 0 <= q < info.num_frames else None

        f = prescale_factor(box[2], box[3], out_size)
        if f < 1.0:  # scale the whole frame in YUV, and the box with it
            sw, sh = max(2, round(info.width * f / 2) * 2), max(2, round(info.height * f / 2) * 2)
            fx, fy = sw / info.width, sh / info.height
            x0, y0 = int(box[0] * fx), int(box[1] * fy)
            x1 = min(sw, max(x0 + 1, round((box[0] + box[2]) * fx)))
            y1 = min(sh, max(y0 + 1, round((box[1] + box[3]) * fy)))
            size, cbox = (sw, sh), (x0, y0, x1 - x0, y1 - y0)
        else:
            size, cbox = (info.width, info.height), box

        def keep(frame) -> _Region:
            if (frame.width, frame.height) != size:  # a resolution change, or the 4K prescale
                frame = frame.reformat(width=size[0], height=size[1], interpolation="BILINEAR")
            return _Region(frame, cbox)

        wanted_lookup = set(wanted)
        # Skipping non-reference frames needs each packet's frame index (pts) and one decoding
        # thread (the skip setting is read as each packet is sent).
        skip_pts = ({info.frame_pts(i) for i in wanted}
                    if self.skip_nonref and not by_count and self.threads == 1 and info.codec in SKIP_NONREF_CODECS
                    else None)
        keys = [info.keyframes[bisect.bisect_right(info.keyframes, t) - 1] for t in wanted]
        # the frames decoded between two seeks (all of them without seeking): run_end[k] is the last
        # wanted frame of the run that wanted[k] begins, where the decoder is drained
        starts = [k for k in range(len(wanted)) if k == 0 or (seek and keys[k] > wanted[k - 1])]
        run_end = {k: end - 1 for k, end in zip(starts, starts[1:] + [len(wanted)])}
        got: dict[int, _Region] = {}
        try:
            container, set_depth = self._open(path, info)
            with container:
                stream = container.streams[info.stream]
                stream.thread_count = self.threads
                ctx = stream.codec_context
                ctx.skip_frame = "DEFAULT"
                frames_iter, position, counter = None, -1, -1
                for k, target in enumerate(wanted):
                    key = keys[k]
                    if frames_iter is None or (seek and key > position):
                        if seek:
                            container.seek(info.frame_pts(key), stream=stream, backward=True, any_frame=False)
                        if set_depth:  # after each seek too: flushing the decoder may reset it
                            ctx.reorder_depth = info.reorder_depth
                        run = wanted[k:run_end.get(k, len(wanted) - 1) + 1]
                        drain_after = {info.frame_pts(i) for i in run} if drain else None
                        frames_iter, position = _frames(container, stream, skip_pts, drain_after), -1
                    for frame in frames_iter:
                        if by_count:
                            counter += 1
                            idx = counter
                        else:
                            idx = index_of(frame.pts)
                            if idx is None:
                                continue
                        position = idx
                        if idx in got or idx not in wanted_lookup:
                            if idx >= target:
                                break
                            continue
                        got[idx] = keep(frame)  # the crop's planes copied: the decoded frame is released
                        if idx >= target:
                            break
                    if target not in got:
                        raise BadVideo("decode_error",
                                       f"frame {target} of {info.num_frames} was not delivered", path)
        except av.error.FFmpegError as e:
            raise BadVideo("decode_error", ffmpeg_message(e), path) from None
        raw = _raw_clip([got[i] for i in wanted])
        order = [int(i) for i in indices]
        if order == wanted:
            return raw
        lookup = {i: k for k, i in enumerate(wanted)}
        return raw.select([lookup[i] for i in order])


TORCHCODEC_CONTAINERS = frozenset({"mov", "matroska", "flv", "avi"})


class TorchCodecDecoder:
    name = "torchcodec"

    def __init__(self, threads: int = 1):
        from torchcodec.decoders import VideoDecoder  # noqa: PLC0415 - optional

        self.VideoDecoder = VideoDecoder
        self.threads = threads
        self._pyav = None

    @staticmethod
    def _pyav_decodes(info: VideoInfo) -> bool:
        # torchcodec's exact mode indexes frames as the rule does only in these containers (corpus tests:
        # MPEG-TS / PS fail), and not with untrusted timestamps or edit lists; it opens no AVI whose first
        # timestamp is not 0 ("Could not seek file to pts=0": a stream header that starts at frame 1), and
        # converts gray as full range even where it is tagged limited: PyAV decodes the rest
        return bool(info.index_by != "pts" or info.dali_issue or info.container not in TORCHCODEC_CONTAINERS
                    or (info.container == "avi" and info.frame_pts(0) != 0) or info.pix_fmt in _GRAY_BITS)

    def decode_raw(self, path: str, indices, info: VideoInfo, crop=None, out_size: int | None = None) -> RawClip:
        if self._pyav_decodes(info):
            return self._fallback().decode_raw(path, indices, info, crop, out_size)
        rgb = torch.from_numpy(self.decode(path, indices, info, crop, out_size)).permute(0, 3, 1, 2)
        return RawClip((0, 0, rgb.shape[-1], rgb.shape[-2]), rgb=rgb)

    def _fallback(self) -> PyAVDecoder:
        if self._pyav is None:
            self._pyav = PyAVDecoder(self.threads)
        return self._pyav

    def decode(self, path: str, indices, info: VideoInfo, crop=None, out_size: int | None = None,
               planar: bool = False) -> np.ndarray | torch.Tensor:
        if self._pyav_decodes(info):
            return self._fallback().decode(path, indices, info, crop, out_size, planar)
        try:
            decoder = self.VideoDecoder(path, seek_mode="exact", dimension_order="NHWC",
                                        num_ffmpeg_threads=self.threads, stream_index=info.stream)
            batch = decoder.get_frames_at(indices=[int(i) for i in indices])
            rotation = getattr(decoder.metadata, "rotation", None) or 0
        except Exception as e:  # noqa: BLE001 - torchcodec raises RuntimeError / ValueError / IndexError
            raise BadVideo("decode_error", str(e)[:200], path) from None
        frames = batch.data.numpy()
        k = round(rotation / 90) % 4
        if k:  # torchcodec (0.13+) returns frames upright; the pipeline expects coded orientation
            frames = np.ascontiguousarray(np.rot90(frames, -k, axes=(1, 2)))
        if crop is not None:
            x, y, w, h = crop
            frames = frames[:, y:y + h, x:x + w]
        return torch.from_numpy(frames).permute(0, 3, 1, 2).float() if planar else frames


def _torchcodec_error() -> str:
    """'' when torchcodec imports, else its import error's first line."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401, PLC0415
    except Exception as e:  # noqa: BLE001 - a broken install raises OSError / RuntimeError too
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
    return ""


def torchcodec_available() -> bool:
    return not _torchcodec_error()


def check_decoder(name: str) -> None:
    """Refuse, at loader build time, a ``data.cpu_decoder`` that cannot decode here (with the fix)."""
    from ila_fast.config import ConfigError  # noqa: PLC0415

    if name == "torchcodec":
        error = _torchcodec_error()
        if error:
            raise ConfigError(f"data.cpu_decoder = 'torchcodec', but torchcodec does not load ({error}). "
                              "Install it (pip install torchcodec; the CPU build needs system FFmpeg "
                              "libraries, e.g. apt install ffmpeg) or set data.cpu_decoder = 'pyav'")
        return
    if name == "auto" and torchcodec_available():
        return
    try:
        import av  # noqa: F401, PLC0415
    except ImportError as e:
        raise ConfigError(f"data.cpu_decoder = {name!r} needs PyAV, which does not import ({e}): "
                          "pip install 'ila-fast[cpu-video]' (or av)") from None


def make_decoder(name: str = "auto", threads: int = 1, **pyav_options):
    if name == "torchcodec" or (name == "auto" and torchcodec_available()):
        return TorchCodecDecoder(threads)
    try:
        return PyAVDecoder(threads, **pyav_options)
    except ImportError as e:
        raise ImportError("the CPU video backend needs PyAV: pip install 'ila-fast[cpu-video]' (or av)") \
            from e


def decode_all_then_sample(path: str, indices) -> np.ndarray:
    """Naive baseline: decode every frame (swscale RGB), then pick the indices."""
    import av  # noqa: PLC0415

    with av.open(path) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return np.stack([frames[min(int(i), len(frames) - 1)] for i in indices])
