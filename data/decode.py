"""CPU decoders: the frames at given indices of one video, in coded orientation, as uint8 RGB.

Frame ``i`` follows the probe's rule (``probe.py``): the i-th frame FFmpeg outputs decoding the
main stream from the start. Videos indexed by pts are found by timestamp after a seek to the
key frame before each needed frame (only when that skips work); videos indexed by count (AVI
with B-frames, missing pts) are decoded from the start and their frames counted.

* ``PyAVDecoder`` converts only the frames it returns, and only the plan's crop of each (plus a
  one-pixel margin, so the chroma interpolation at the crop's edge is the full frame's). A crop
  much larger than the output (4K sources) is first scaled down in YUV by FFmpeg's scaler, so
  a 4K clip costs about what a 1080p one does. Frames whose size differs from the probed size
  (a resolution change) are scaled to it. PyAV bundles its own FFmpeg.
* ``TorchCodecDecoder`` uses torchcodec's exact-seek decoder where torchcodec is installed
  (it needs system FFmpeg libraries and a CPU-compatible build).
* ``decode_all_then_sample`` is the naive baseline the benchmark compares against.
"""
from __future__ import annotations

import bisect

import numpy as np

from .augment import yuv420_to_rgb
from .bad_videos import BadVideo
from .probe import VideoInfo, ffmpeg_logs, ffmpeg_message

_YUV420 = {"yuv420p": False, "yuvj420p": True}  # -> full range?
# Codecs whose frames map one-to-one to packets and whose non-reference frames can be skipped safely
# (AV1 / VP9 pack hidden reference frames into packets: skipping them loses needed frames).
SKIP_NONREF_CODECS = frozenset({"h264", "hevc", "mpeg2video", "mpeg1video", "mpeg4"})
PRESCALE_ABOVE = 2.0  # crops more than this many times the output size are scaled down in YUV first


def prescale_factor(crop_w: int, crop_h: int, out_size: int | None) -> float:
    """Scale applied in YUV before the crop is converted (1.0: none)."""
    if not out_size:
        return 1.0
    ratio = min(crop_w, crop_h) / (PRESCALE_ABOVE * out_size)
    return 1.0 / ratio if ratio > 1.0 else 1.0


class _Region:
    """The (x, y, w, h) box of one frame, kept as copied YUV 4:2:0 planes (with a one-chroma-sample
    margin, so the chroma interpolation at the box's edge is the full frame's) or as RGB for other
    formats; ``_to_rgb`` converts the regions of a clip in one vectorised call."""

    def __init__(self, frame, box):
        x, y, w, h = box
        fmt = frame.format.name
        self.box = box
        if fmt not in _YUV420:
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


def _to_rgb(regions: list[_Region]) -> np.ndarray:
    """(T, h, w, 3) uint8 RGB of the regions (same box; one conversion when all are alike)."""
    first = regions[0]
    x, y, w, h = first.box
    if first.rgb is None and all(r.rgb is None and r.kind == first.kind and r.planes[0].shape ==
                                 first.planes[0].shape for r in regions):
        ys, us, vs = (np.stack([r.planes[p] for r in regions]) for p in range(3))
        rgb = yuv420_to_rgb(ys, us, vs, full_range=first.kind[0], bt709=first.kind[1])
        ox, oy = x - first.origin[0], y - first.origin[1]
        return rgb[:, oy:oy + h, ox:ox + w]
    return np.stack([r.rgb if r.rgb is not None else _to_rgb([r])[0] for r in regions])


def _frames(container, stream, needed_pts: set[int] | None):
    """Decoded frames of ``stream``; with ``needed_pts``, non-reference frames not needed are skipped."""
    if needed_pts is None:
        yield from container.decode(stream)
        return
    ctx = stream.codec_context
    for packet in container.demux(stream):
        ctx.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in needed_pts else "NONREF"
        yield from packet.decode()


class PyAVDecoder:
    name = "pyav"

    def __init__(self, threads: int = 1, seek: bool = True, skip_nonref: bool = True):
        """``seek``: start at the key frame before each needed frame (else decode from the start);
        ``skip_nonref``: do not decode non-reference frames (most B-frames) that are not needed."""
        import av  # noqa: PLC0415 - optional dependency (pip install ila-fast[cpu-video])

        self.av = av
        self.threads, self.seek, self.skip_nonref = threads, seek, skip_nonref

    def decode(self, path: str, indices, info: VideoInfo, crop=None, out_size: int | None = None) -> np.ndarray:
        """(len(indices), h, w, 3) uint8 of the raw-pixel box ``crop`` (None: the whole frame).

        With ``out_size``, a crop larger than ``PRESCALE_ABOVE * out_size`` comes back scaled
        down (its short side about that size); the caller resizes to the output anyway.
        Raises BadVideo when a frame cannot be delivered.
        """
        box = tuple(crop) if crop is not None else (0, 0, info.width, info.height)
        with ffmpeg_logs():
            try:
                return self._decode(path, indices, info, box, out_size, seek=self.seek and info.index_by == "pts")
            except BadVideo as first:
                if first.detail.startswith("frame") and info.index_by == "pts":
                    # a seek that landed late or nowhere (MPEG-TS / PS): decode from the start instead
                    return self._decode(path, indices, info, box, out_size, seek=False)
                raise

    def _decode(self, path: str, indices, info: VideoInfo, box, out_size, seek: bool) -> np.ndarray:
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
        got: dict[int, _Region] = {}
        try:
            with av.open(path) as container:
                stream = container.streams[info.stream]
                stream.thread_count = self.threads
                frames_iter, position, counter = None, -1, -1
                for target in wanted:
                    key = info.keyframes[bisect.bisect_right(info.keyframes, target) - 1]
                    if frames_iter is None or (seek and key > position):
                        if seek:
                            container.seek(info.frame_pts(key), stream=stream, backward=True, any_frame=False)
                        frames_iter, position = _frames(container, stream, skip_pts), -1
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
        lookup = {i: k for k, i in enumerate(wanted)}
        rgb = _to_rgb([got[i] for i in wanted])
        return rgb[[lookup[int(i)] for i in indices]]


TORCHCODEC_CONTAINERS = frozenset({"mov", "matroska", "flv", "avi"})


class TorchCodecDecoder:
    name = "torchcodec"

    def __init__(self, threads: int = 1):
        from torchcodec.decoders import VideoDecoder  # noqa: PLC0415 - optional

        self.VideoDecoder = VideoDecoder
        self.threads = threads
        self._pyav = None

    def decode(self, path: str, indices, info: VideoInfo, crop=None, out_size: int | None = None) -> np.ndarray:
        # torchcodec's exact mode indexes frames as the rule does only in these containers (corpus tests:
        # MPEG-TS / PS fail), and not with untrusted timestamps or edit lists: PyAV decodes the rest
        if info.index_by != "pts" or info.dali_issue or info.container not in TORCHCODEC_CONTAINERS:
            if self._pyav is None:
                self._pyav = PyAVDecoder(self.threads)
            return self._pyav.decode(path, indices, info, crop, out_size)
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
        return frames


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
