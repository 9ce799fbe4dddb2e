"""DALI backend: the SamplePlan fed through ``fn.external_source`` into ``fn.decoders.video``.

Per clip the plan gives the encoded file, the frame indices, the crop box in coded pixels and
the colour matrix; the pipeline decodes exactly those frames (``frames=``), crops
(``fn.slice``), resizes (``fn.resize``), colour-jitters / grayscales (``fn.coord_transform``
with the plan's 3x3 matrix, see ``augment.color_affine``), clamps and normalises to FCHW
(``fn.crop_mirror_normalize``). With ``device="mixed"`` decoding runs on NVDEC and every later
op on the GPU; the output (B, T, 3, S, S) stays on the GPU, where the display rotation and
random erasing (``augment.rotate_and_erase_batch``) are applied with torch.
``device="cpu"`` runs the same graph on the CPU (DALI's CPU decoder takes VP8 / VP9 / MJPEG
only); the tests use it.

A video that fails inside DALI fails its whole batch: the backend then decodes that batch's
clips one by one to find the culprit, marks it bad (the plan replaces it from then on),
rebuilds the pipeline and resumes at the same step, so the epoch goes on.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from .augment import color_affine, rotate_and_erase_batch
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


class _BatchFailed(Exception):
    def __init__(self, message: str):
        super().__init__(message)


class DaliBackend:
    """Batches of one epoch from ``start_step``: dicts with a (B, T, 3, S, S) float32 'video'."""
    name = "dali"

    def __init__(self, plan: SamplePlan, paths: list[str], infos, input_size: int, frames: int,
                 device: str = "mixed", num_threads: int = 4, antialias: bool = False, prefetch: int = 2,
                 device_id: int | None = None):
        if device not in ("mixed", "cpu"):
            raise ValueError(f"DALI device {device!r} must be 'mixed' (GPU) or 'cpu'")
        _import_dali()
        self.plan, self.paths, self.infos = plan, paths, infos
        self.input_size, self.frames, self.device = input_size, frames, device
        self.num_threads, self.antialias, self.prefetch = max(1, num_threads), antialias, prefetch
        if device == "mixed":
            if not torch.cuda.is_available():
                raise RuntimeError("DALI device 'mixed' needs a GPU; use data.dali_device = 'cpu' "
                                   "(VP9 / MJPEG only) or data.backend = 'cpu'")
            self.device_id = torch.cuda.current_device() if device_id is None else device_id
        else:
            self.device_id = None
        self.codecs = DALI_GPU_CODECS if device == "mixed" else DALI_CPU_CODECS
        self.found: dict[int, tuple[str, str]] = {}  # bad videos discovered while decoding

    # -- the pipeline
    def _build(self, epoch: int, first_step: int, pending: dict):
        dali, fn, dmath, types = _import_dali()
        plan, steps = self.plan, self.plan.steps_per_epoch
        found = self.found
        shard = plan.shard(epoch)
        paths = self.paths

        def source(info):
            step = first_step + info.iteration
            if step >= steps:
                raise StopIteration
            specs = [plan.clip(epoch, p, found, shard) for p in plan.batch_positions(step)]
            pending[step] = specs
            enc, frames, anchor, shape, mats, offs = [], [], [], [], [], []
            for spec in specs:
                enc.append(np.fromfile(paths[spec.video], dtype=np.uint8))
                frames.append(np.asarray(spec.frames, dtype=np.int32))
                x, y, w, h = spec.raw_crop
                anchor.append(np.array([y, x], dtype=np.int32))
                shape.append(np.array([h, w], dtype=np.int32))
                m, t = color_affine(spec.augment)
                mats.append(m)
                offs.append(t)
            return enc, frames, anchor, shape, mats, offs

        size, antialias = self.input_size, self.antialias
        from ila_fast.config import PIXEL_MEAN, PIXEL_STD  # noqa: PLC0415

        @dali.pipeline_def(batch_size=plan.s.batch_size, num_threads=self.num_threads,
                           device_id=self.device_id, prefetch_queue_depth=self.prefetch, exec_dynamic=True)
        def clip_pipeline():
            enc, frames, anchor, shape, mat, off = fn.external_source(
                source=source, num_outputs=6, batch=True, batch_info=True,
                dtype=[types.UINT8, types.INT32, types.INT32, types.INT32, types.FLOAT, types.FLOAT],
                ndim=[1, 1, 1, 1, 2, 1])
            video = fn.decoders.video(enc, device=self.device, frames=frames)
            video = fn.slice(video, anchor, shape, axis_names="HW")
            video = fn.resize(video, size=[size, size], interp_type=types.INTERP_LINEAR, antialias=antialias,
                              dtype=types.FLOAT)
            video = fn.coord_transform(video, M=mat, T=off)
            video = dmath.clamp(video, 0.0, 255.0)
            return fn.crop_mirror_normalize(video, mean=list(PIXEL_MEAN), std=list(PIXEL_STD),
                                            output_layout="FCHW", dtype=types.FLOAT)

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

            result = torch.empty(dense.shape(), dtype=torch.float32, device=f"cuda:{self.device_id}")
            feed_ndarray(dense, result, cuda_stream=torch.cuda.current_stream(self.device_id))
            return result
        return torch.from_numpy(np.array(dense))

    def _find_culprits(self, specs) -> dict[int, tuple[str, str]]:
        """Decode each clip of a failed batch alone; return the videos that fail by themselves."""
        dali, fn, _, types = _import_dali()
        culprits = {}
        for spec in specs:
            @dali.pipeline_def(batch_size=1, num_threads=1, device_id=self.device_id, prefetch_queue_depth=1)
            def single(frames=list(spec.frames)):
                enc = fn.external_source(name="enc", dtype=types.UINT8, ndim=1)
                return fn.decoders.video(enc, device=self.device, frames=frames)
            try:
                pipe = single()
                pipe.build()
                pipe.feed_input("enc", [np.fromfile(self.paths[spec.video], dtype=np.uint8)])
                (out,) = pipe.run()
                got = out.shape()[0][0]
                if got != len(spec.frames):
                    culprits[spec.video] = ("decode_error",
                                            f"DALI decoded {got} of {len(spec.frames)} frames")
            except Exception as e:  # noqa: BLE001 - DALI raises RuntimeError for any decoder failure
                lines = [ln.strip() for ln in str(e).splitlines()]
                first = next((ln for ln in lines if "rror" in ln and "pipeline" not in ln),
                             lines[0] if lines else type(e).__name__)
                culprits[spec.video] = ("decode_error", f"DALI: {first[:200]}")
            finally:
                pipe = None
        return culprits

    def epoch(self, epoch: int, start_step: int = 0):
        steps = self.plan.steps_per_epoch
        step = start_step
        while step < steps:
            pending: dict[int, list] = {}
            pipe = self._build(epoch, step, pending)
            try:
                while step < steps:
                    try:
                        (out,) = pipe.run()
                        video = self._to_torch(out)
                    except (RuntimeError, _BatchFailed) as e:
                        specs = pending.get(step) or [self.plan.clip(epoch, p, self.found)
                                                      for p in self.plan.batch_positions(step)]
                        culprits = self._find_culprits(specs)
                        if not culprits:
                            raise
                        log.warning("DALI batch %d failed (%s); replacing %d video(s) and resuming", step,
                                    str(e).splitlines()[0][:120], len(culprits))
                        self.found.update(culprits)
                        break  # rebuild the pipeline at this step
                    specs = pending.pop(step)
                    video = rotate_and_erase_batch(video, specs)
                    yield {"video": video,
                           "label": torch.tensor([s.label for s in specs], dtype=torch.long),
                           "position": torch.tensor([s.position for s in specs], dtype=torch.long),
                           "view": torch.tensor([s.view for s in specs], dtype=torch.long),
                           "video_index": torch.tensor([s.video for s in specs], dtype=torch.long),
                           "specs": specs}
                    step += 1
            finally:
                del pipe
