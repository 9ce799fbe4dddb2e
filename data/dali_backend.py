"""DALI backend: the SamplePlan fed through ``fn.external_source`` into ``fn.decoders.video``.

Per clip the plan gives the encoded file, the frame indices and the crop box in coded pixels;
the pipeline decodes exactly those frames (``frames=``), crops (``fn.slice``), resizes to whole
levels (``fn.resize`` to uint8) and lays the clip out as FCHW (``fn.transpose``). With
``device="mixed"`` decoding runs on NVDEC and every later op on the GPU; the uint8 output
(B, T, 3, S, S) stays on the GPU, where colour (per-frame jitter or the per-clip map),
normalisation, the display rotation and random erasing run with torch (``augment.finish_batch``,
the same code that finishes the CPU backend's clips, so both give the same numbers).
``device="cpu"`` runs the same graph on the CPU (DALI's CPU decoder takes VP8 / VP9 / MJPEG
only); the tests use it.

A video that fails inside DALI fails its whole batch: the backend then decodes that batch's
clips one by one to find the culprit, marks it bad (the plan replaces it from then on),
rebuilds the pipeline and resumes at the same step, so the epoch goes on.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import torch

from .augment import finish_batch
from .plan import SamplePlan

log = logging.getLogger("ila_fast.data")

# What DALI's video decoder accepts (see the fn.decoders.video documentation).
DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})
DALI_GPU_CODECS = DALI_CPU_CODECS | {"h264", "hevc", "av1", "mpeg4"}


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def _import_dali():
    try:
        import nvidia.dali as dali  # noqa: PLC0415
        import nvidia.dali.fn as fn  # noqa: PLC0415
        import nvidia.dali.math as dmath  # noqa: PLC0415
        import nvidia.dali.types as types  # noqa: PLC0415
    except ImportError as e:
        raise ImportError("the DALI backend needs NVIDIA DALI: pip install 'ila-fast[dali]' (CUDA 12) or "
                          "'ila-fast[dali-cuda13]' (CUDA 13)") from e
    return dali, fn, dmath, types


_STAND_IN_SIDE = 16


def _stand_in_video(frames: int) -> np.ndarray:
    """A tiny grey VP9 video (both DALI decoders read VP9), decoded in place of a CPU-routed clip."""
    import io  # noqa: PLC0415

    import av  # noqa: PLC0415

    buf = io.BytesIO()
    with av.open(buf, "w", format="webm") as c:
        s = c.add_stream("libvpx-vp9", rate=25)
        s.width = s.height = _STAND_IN_SIDE
        s.pix_fmt = "yuv420p"
        s.options = {"deadline": "realtime", "cpu-used": "8"}
        grey = av.VideoFrame.from_ndarray(np.full((_STAND_IN_SIDE, _STAND_IN_SIDE, 3), 128, np.uint8), format="rgb24")
        for _ in range(frames):
            for p in s.encode(grey):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return np.frombuffer(buf.getvalue(), dtype=np.uint8).copy()


class _CapturedStderr:
    """Capture what native code writes to file descriptor 2 (DALI / FFmpeg log lines)."""

    def __enter__(self):
        import sys  # noqa: PLC0415
        import tempfile  # noqa: PLC0415

        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        self.lines: list[str] = []
        return self

    def __exit__(self, *exc):
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        text = self._file.read().decode("utf-8", "replace")
        self._file.close()
        self.lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return False


def _dali_error_line(message: str) -> str:
    """The line of a DALI exception that says what failed (after 'encountered:'), without boilerplate."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    if "encountered:" in lines:
        after = lines[lines.index("encountered:") + 1:]
        for ln in after:
            if not ln.startswith(("C++ context", "Current pipeline")):
                return ln.split(" failed: ", 1)[-1] if ln.startswith("Assert on") else ln
    return next((ln for ln in lines if "rror" in ln and "pipeline" not in ln), lines[0] if lines else "")


def _classify_dali_failure(error: str, said: list[str]) -> tuple[str, str]:
    """(reason, detail): a codec DALI refuses is 'unsupported_by_backend', anything else 'decode_error'."""
    own = [ln for ln in said if ln.startswith("[") and not ln.startswith("[W ")][-2:]
    detail = "DALI: " + "; ".join([error[:160], *(ln[:200] for ln in own)])
    if any("not supported" in ln for ln in [error, *own]):
        return "unsupported_by_backend", detail
    return "decode_error", detail


class _BatchFailed(Exception):
    def __init__(self, message: str):
        super().__init__(message)


class DaliBackend:
    """Batches of one epoch from ``start_step``: dicts with a (B, T, 3, S, S) float32 'video'."""
    name = "dali"

    def __init__(self, plan: SamplePlan, paths: list[str], infos, input_size: int, frames: int,
                 device: str = "mixed", num_threads: int = 4, antialias: bool = False, prefetch: int = 2,
                 device_id: int | None = None, pipelines: int = 1, cpu_videos=()):
        if device not in ("mixed", "cpu"):
            raise ValueError(f"DALI device {device!r} must be 'mixed' (GPU) or 'cpu'")
        _import_dali()
        self.plan, self.paths, self.infos = plan, paths, infos
        self.input_size, self.frames, self.device = input_size, frames, device
        self.num_threads, self.antialias, self.prefetch = max(1, num_threads), antialias, prefetch
        if pipelines < 1:
            raise ValueError(f"data.dali_pipelines = {pipelines} must be >= 1")
        self.pipelines = pipelines  # decoder pipelines behind this backend (one NVDEC engine each on a GPU)
        # videos DALI would decode wrongly (or not at all), decoded by PyAV instead (data.dali_fallback = "cpu")
        self.cpu_videos = frozenset(cpu_videos)
        self._stand_in = _stand_in_video(frames) if self.cpu_videos else None
        if device == "mixed":
            if not torch.cuda.is_available():
                raise RuntimeError("DALI device 'mixed' needs a GPU; use data.dali_device = 'cpu' "
                                   "(VP9 / MJPEG only) or data.backend = 'cpu'")
            self.device_id = torch.cuda.current_device() if device_id is None else device_id
        else:
            self.device_id = None
        self.codecs = DALI_GPU_CODECS if device == "mixed" else DALI_CPU_CODECS
        self.found: dict[int, tuple[str, str]] = {}  # bad videos discovered while decoding
        self._black_ok: set = set()  # (video, frames) whose all-zero DALI frames the CPU decoder confirmed
        self._reference = None  # a PyAV decoder, built when an all-zero frame needs checking

    # -- the pipeline
    def _build(self, epoch: int, first_step: int, pending: dict, stride: int = 1):
        dali, fn, _, types = _import_dali()
        plan, steps = self.plan, self.plan.steps_per_epoch
        found = self.found
        shard = plan.shard(epoch)
        paths = self.paths

        def source(info):
            step = first_step + info.iteration * stride  # pipeline k of P takes steps k, k + P, ...
            if step >= steps:
                raise StopIteration
            specs = [plan.clip(epoch, p, found, shard) for p in plan.batch_positions(step)]
            pending[step] = specs
            enc, frames, anchor, shape = [], [], [], []
            for spec in specs:
                if spec.video in self.cpu_videos:  # decoded on the CPU after the run: DALI gets a tiny stand-in
                    enc.append(self._stand_in)
                    frames.append(np.arange(len(spec.frames), dtype=np.int32))
                    anchor.append(np.zeros(2, np.int32))
                    shape.append(np.full(2, _STAND_IN_SIDE, np.int32))
                    continue
                enc.append(np.fromfile(paths[spec.video], dtype=np.uint8))
                frames.append(np.asarray(spec.frames, dtype=np.int32))
                x, y, w, h = spec.raw_crop
                anchor.append(np.array([y, x], dtype=np.int32))
                shape.append(np.array([h, w], dtype=np.int32))
            return enc, frames, anchor, shape

        size, antialias = self.input_size, self.antialias

        @dali.pipeline_def(batch_size=plan.s.batch_size, num_threads=self.num_threads,
                           device_id=self.device_id, prefetch_queue_depth=self.prefetch, exec_dynamic=True)
        def clip_pipeline():
            enc, frames, anchor, shape = fn.external_source(
                source=source, num_outputs=4, batch=True, batch_info=True,
                dtype=[types.UINT8, types.INT32, types.INT32, types.INT32], ndim=[1, 1, 1, 1])
            video = fn.decoders.video(enc, device=self.device, frames=frames)
            # per-frame maxima of the decoded frames: an all-zero frame is checked against the CPU decoder
            peaks = fn.reductions.max(video, axes=[1, 2, 3])
            video = fn.slice(video, anchor, shape, axis_names="HW")
            # resized to whole levels (uint8), as the CPU backend's clips
            video = fn.resize(video, size=[size, size], interp_type=types.INTERP_LINEAR, antialias=antialias,
                              dtype=types.UINT8)
            # colour and the rest run on the uint8 clips in torch (augment.finish_batch)
            return fn.transpose(video, perm=[0, 3, 1, 2], output_layout="FCHW"), peaks

        pipe = clip_pipeline()
        pipe.build()
        return pipe

    def _to_torch(self, out) -> torch.Tensor:
        shapes = out.shape()
        bad = [i for i, s in enumerate(shapes) if s[0] != self.frames]
        if bad:
            got = [shapes[i][0] for i in bad]
            raise _BatchFailed(f"samples {bad} decoded {got} frames, not {self.frames}")
        dense = out.as_tensor()
        if self.device == "mixed":
            from nvidia.dali.plugin.pytorch import feed_ndarray  # noqa: PLC0415

            result = torch.empty(dense.shape(), dtype=torch.uint8, device=f"cuda:{self.device_id}")
            feed_ndarray(dense, result, cuda_stream=torch.cuda.current_stream(self.device_id))
            return result
        return torch.from_numpy(np.array(dense))

    def _find_culprits(self, specs) -> dict[int, tuple[str, str]]:
        """Decode each clip of a failed batch alone; return the videos that fail by themselves.

        DALI's exception names only its own assertion; FFmpeg's and DALI's log lines (what the
        decoder said) go to stderr, so they are captured here and kept in the reason.
        """
        dali, fn, _, types = _import_dali()
        culprits = {}
        for spec in specs:
            @dali.pipeline_def(batch_size=1, num_threads=1, device_id=self.device_id, prefetch_queue_depth=1)
            def single(frames=list(spec.frames)):
                enc = fn.external_source(name="enc", dtype=types.UINT8, ndim=1)
                return fn.decoders.video(enc, device=self.device, frames=frames)
            pipe = None
            with _CapturedStderr() as said:
                try:
                    pipe = single()
                    pipe.build()
                    pipe.feed_input("enc", [np.fromfile(self.paths[spec.video], dtype=np.uint8)])
                    (out,) = pipe.run()
                    got = out.shape()[0][0]
                    error = None if got == len(spec.frames) else f"DALI decoded {got} of {len(spec.frames)} frames"
                except Exception as e:  # noqa: BLE001 - DALI raises RuntimeError for any decoder failure
                    error = _dali_error_line(str(e)) or type(e).__name__
                finally:
                    pipe = None
            if error is not None:
                culprits[spec.video] = _classify_dali_failure(error, said.lines)
        return culprits

    def _cpu_clips(self, video: torch.Tensor, specs) -> dict[int, tuple[str, str]]:
        """Decode the clips of CPU-routed videos with PyAV into the uint8 batch ``video`` (before
        ``finish_batch``); returns failures."""
        from .bad_videos import BadVideo  # noqa: PLC0415
        from .cpu_backend import resize_clip  # noqa: PLC0415

        failed = {}
        for sample, spec in enumerate(specs):
            if spec.video not in self.cpu_videos:
                continue
            if self._reference is None:
                self._reference = self._make_reference()
            try:
                clip = resize_clip(self._reference, self.paths[spec.video], spec, self.infos[spec.video],
                                   self.input_size, self.antialias)
            except BadVideo as e:
                failed[spec.video] = (e.reason, e.detail)
                continue
            video[sample] = clip.to(video.device)
        return failed

    def _make_reference(self):
        from .decode import PyAVDecoder  # noqa: PLC0415

        return PyAVDecoder()

    def _check_zero_frames(self, peaks, specs) -> dict[int, tuple[str, str]]:
        """Videos whose DALI clip has all-zero frames where the CPU decoder's frames are not."""
        wrong = {}
        for sample, spec in enumerate(specs):
            if spec.video in self.cpu_videos:
                continue
            zero = [k for k, peak in enumerate(np.asarray(peaks[sample]).reshape(-1)) if peak == 0]
            key = (spec.video, tuple(spec.frames[k] for k in zero))
            if not zero or key in self._black_ok:
                continue
            if self._reference is None:
                self._reference = self._make_reference()
            try:
                frames = self._reference.decode(self.paths[spec.video], [spec.frames[k] for k in zero],
                                                self.infos[spec.video])
            except Exception:  # noqa: BLE001 - the CPU decoder cannot tell: keep DALI's frames
                self._black_ok.add(key)
                continue
            lit = [spec.frames[k] for k, f in zip(zero, frames) if f.max() > 0]
            if lit:
                wrong[spec.video] = ("unsupported_by_backend",
                                     f"DALI returned all-zero frames {lit[:4]} where the video is not black")
            else:
                self._black_ok.add(key)  # a black source frame: DALI is right
        return wrong

    def epoch(self, epoch: int, start_step: int = 0):
        """Batches from ``start_step``; with ``pipelines`` > 1, pipeline k decodes steps k, k+P, ...
        (each its own decoder: on a GPU, NVDEC engines work in parallel) and batches come out in order."""
        steps = self.plan.steps_per_epoch
        step = start_step
        while step < steps:
            base = step
            count = min(self.pipelines, steps - base)
            pendings: list[dict[int, list]] = [{} for _ in range(count)]
            pipes = [self._build(epoch, base + k, pendings[k], stride=count) for k in range(count)]
            try:
                while step < steps:
                    pending = pendings[(step - base) % count]
                    pipe = pipes[(step - base) % count]
                    try:
                        out, peaks = pipe.run()
                        video = self._to_torch(out)
                        if self.device == "mixed":
                            peaks = peaks.as_cpu()
                        wrong = self._check_zero_frames(peaks, pending[step])
                        if wrong:
                            log.warning("DALI batch %d: %d clip(s) with all-zero frames; replacing them", step,
                                        len(wrong))
                            self.found.update(wrong)
                            break  # rebuild the pipelines at this step
                    except (RuntimeError, _BatchFailed) as e:
                        specs = pending.get(step) or [self.plan.clip(epoch, p, self.found)
                                                      for p in self.plan.batch_positions(step)]
                        culprits = self._find_culprits(specs)
                        if not culprits:
                            raise
                        log.warning("DALI batch %d failed (%s); replacing %d video(s) and resuming", step,
                                    str(e).splitlines()[0][:120], len(culprits))
                        self.found.update(culprits)
                        break  # rebuild the pipelines at this step
                    specs = pending.pop(step)
                    failed = self._cpu_clips(video, specs) if self.cpu_videos else {}
                    if failed:
                        log.warning("batch %d: %d CPU-decoded clip(s) failed; replacing them", step, len(failed))
                        self.found.update(failed)
                        break  # rebuild the pipelines at this step
                    video = finish_batch(video, specs)
                    yield {"video": video,
                           "label": torch.tensor([s.label for s in specs], dtype=torch.long),
                           "position": torch.tensor([s.position for s in specs], dtype=torch.long),
                           "view": torch.tensor([s.view for s in specs], dtype=torch.long),
                           "video_index": torch.tensor([s.video for s in specs], dtype=torch.long),
                           "specs": specs}
                    step += 1
            finally:
                del pipes
