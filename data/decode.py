"""CPU decoders: the frames at given indices of one video, in coded orientation, as uint8 RGB.

Frame ``i`` is the i-th frame in presentation order (the probe's sorted timestamps), which is
what DALI's ``frames=`` argument means too, also for variable frame rate videos.

* ``PyAVDecoder`` seeks to the key frame before each needed frame (only when that skips work),
  decodes forward and converts only the frames it returns; PyAV bundles its own FFmpeg.
* ``TorchCodecDecoder`` uses torchcodec's exact-seek decoder where torchcodec is installed
  (it needs system FFmpeg libraries and a CPU-compatible build).
* ``decode_all_then_sample`` is the naive baseline the benchmark compares against.
"""
from __future__ import annotations

import bisect

import numpy as np

from .augment import yuv420_to_rgb
from .bad_videos import BadVideo
from .dataset import VideoInfo

_YUV420 = {"yuv420p": False, "yuvj420p": True}  # -> full range?


def _frame_to_rgb(frames) -> np.ndarray:
    """Convert decoded av.VideoFrames (same format) to (T, H, W, 3) uint8."""
    first = frames[0]
    fmt = first.format.name
    if fmt in _YUV420:
        h, w = first.height, first.width
        planes = [[], [], []]
        for fr in frames:
            for p, plane in enumerate(fr.planes):
                buf = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
                planes[p].append(buf[:, :plane.width])
        y, u, v = (np.stack(p) for p in planes)
        full = _YUV420[fmt] or int(getattr(first, "color_range", 0) or 0) == 2
        bt709 = int(getattr(first, "colorspace", 0) or 0) == 1
        return yuv420_to_rgb(y[:, :h, :w], u, v, full_range=full, bt709=bt709)
    return np.stack([fr.to_ndarray(format="rgb24") for fr in frames])


class PyAVDecoder:
    name = "pyav"

    def __init__(self, threads: int = 1):
        import av  # noqa: PLC0415 - optional dependency (pip install ila-fast[cpu-video])

        self.av = av
        self.threads = threads

    def decode(self, path: str, indices, info: VideoInfo) -> np.ndarray:
        """(len(indices), H, W, 3) uint8; raises BadVideo when a frame cannot be delivered."""
        try:
            return self._decode(path, indices, info, seek=True)
        except BadVideo as first:
            if first.detail.startswith("frame"):  # a seek that landed late: decode from the start instead
                return self._decode(path, indices, info, seek=False)
            raise

    def _decode(self, path: str, indices, info: VideoInfo, seek: bool) -> np.ndarray:
        av = self.av
        wanted = sorted(set(int(i) for i in indices))
        if wanted and (wanted[0] < 0 or wanted[-1] >= info.num_frames):
            raise BadVideo("decode_error", f"frame {wanted[-1]} outside 0..{info.num_frames - 1}", path)
        pts_to_index = ({p: i for i, p in enumerate(info.pts)} if info.pts is not None else None)

        def index_of(pts):
            if pts is None:
                return None
            if pts_to_index is not None:
                return pts_to_index.get(pts)
            q, r = divmod(pts - info.pts0, info.dpts or 1)
            return q if r == 0 and 0 <= q < info.num_frames else None

        wanted_lookup = set(wanted)
        got = {}
        try:
            with av.open(path) as container:
                stream = container.streams.video[0]
                stream.thread_count = self.threads
                frames_iter, position = None, -1
                for target in wanted:
                    key = info.keyframes[bisect.bisect_right(info.keyframes, target) - 1]
                    if frames_iter is None or (seek and key > position):
                        if seek:
                            container.seek(info.frame_pts(key), stream=stream, backward=True, any_frame=False)
                        frames_iter, position = container.decode(stream), -1
                    for frame in frames_iter:
                        idx = index_of(frame.pts)
                        if idx is None:
                            continue
                        position = idx
                        if idx in got or idx not in wanted_lookup:
                            if idx >= target:
                                break
                            continue
                        got[idx] = frame
                        if idx >= target:
                            break
                    if target not in got:
                        raise BadVideo("decode_error",
                                       f"frame {target} of {info.num_frames} was not delivered", path)
        except av.error.FFmpegError as e:
            raise BadVideo("decode_error", str(e)[:200], path) from None
        rgb = _frame_to_rgb([got[i] for i in wanted])
        lookup = {i: k for k, i in enumerate(wanted)}
        return rgb[[lookup[int(i)] for i in indices]]


class TorchCodecDecoder:
    name = "torchcodec"

    def __init__(self, threads: int = 1):
        from torchcodec.decoders import VideoDecoder  # noqa: PLC0415 - optional

        self.VideoDecoder = VideoDecoder
        self.threads = threads

    def decode(self, path: str, indices, info: VideoInfo) -> np.ndarray:
        try:
            decoder = self.VideoDecoder(path, seek_mode="exact", dimension_order="NHWC",
                                        num_ffmpeg_threads=self.threads)
            batch = decoder.get_frames_at(indices=[int(i) for i in indices])
            rotation = getattr(decoder.metadata, "rotation", None) or 0
        except Exception as e:  # noqa: BLE001 - torchcodec raises RuntimeError / ValueError / IndexError
            raise BadVideo("decode_error", str(e)[:200], path) from None
        frames = batch.data.numpy()
        k = round(rotation / 90) % 4
        if k:  # torchcodec (0.13+) returns frames upright; the pipeline expects coded orientation
            frames = np.ascontiguousarray(np.rot90(frames, -k, axes=(1, 2)))
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


def make_decoder(name: str = "auto", threads: int = 1):
    if name == "torchcodec" or (name == "auto" and torchcodec_available()):
        return TorchCodecDecoder(threads)
    try:
        return PyAVDecoder(threads)
    except ImportError as e:
        raise ImportError("the CPU video backend needs PyAV: pip install 'ila-fast[cpu-video]' (or av)") \
            from e


def decode_all_then_sample(path: str, indices) -> np.ndarray:
    """Naive baseline: decode every frame (swscale RGB), then pick the indices."""
    import av  # noqa: PLC0415

    with av.open(path) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return np.stack([frames[min(int(i), len(frames) - 1)] for i in indices])
