"""CPU backend: a torch Dataset / DataLoader that executes the SamplePlan with PyAV (or torchcodec).

Worker processes decode, crop and resize (``resize_clip``) and send uint8 clips; the loader
runs colour, normalisation, rotation and erasing on the device (``augment.finish_batch``). A
video that fails is replaced inside the worker by the plan's next candidate, and the events
travel back with the batch to the main process, which counts them (``BadVideoLog``).
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from .augment import crop_resize, finish_batch
from .bad_videos import BadVideo
from .plan import SamplePlan


def resize_clip(decoder, path: str, spec, info, input_size: int, antialias: bool) -> torch.Tensor:
    """The plan's clip of one video, cropped and resized on the CPU: (T, 3, S, S) uint8. The decoder
    converts only the crop (scaled down in YUV first when much larger than the output, so memory
    does not grow with the source resolution). Any failure is a BadVideo: never a crash, never a
    clip of the wrong shape."""
    try:
        frames = decoder.decode(path, spec.frames, info, crop=spec.raw_crop, out_size=input_size, planar=True)
        if frames.ndim != 4 or frames.shape[0] != len(spec.frames) or frames.shape[1] != 3:
            raise BadVideo("decode_error", f"decoded frames of shape {tuple(frames.shape)}")
        box = (0, 0, frames.shape[-1], frames.shape[-2])
        return crop_resize(frames, box, input_size, antialias, planar=True).to(torch.uint8)
    except BadVideo:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder failure is a bad video, never a crash
        raise BadVideo("decode_error", f"{type(e).__name__}: {str(e)[:160]}") from None


def decode_clip(decoder, path: str, spec, info, input_size: int, antialias: bool) -> torch.Tensor:
    """``resize_clip`` and the rest of the transform: (T, 3, S, S) float32, normalised."""
    return finish_batch(resize_clip(decoder, path, spec, info, input_size, antialias)[None], [spec])[0]


class PlanClips(Dataset):
    """Position -> resized uint8 clip for one epoch of a plan (a map-style dataset)."""

    def __init__(self, plan: SamplePlan, paths: list[str], infos, epoch: int, input_size: int,
                 decoder: str = "auto", antialias: bool = False, known_bad: dict | None = None,
                 decoder_options: dict | None = None):
        self.plan, self.paths, self.infos = plan, paths, infos
        self.decoder_options = dict(decoder_options or {})  # PyAVDecoder levers (threads, seek, skip_nonref)
        self.known_bad = dict(known_bad or {})  # found bad in earlier epochs: not tried again
        self.epoch, self.input_size, self.decoder_name, self.antialias = epoch, input_size, decoder, antialias
        self._decoder = None
        self._shard = None

    def __len__(self) -> int:
        return len(self.plan)

    @property
    def decoder(self):
        if self._decoder is None:  # built lazily, inside each worker
            from .decode import make_decoder  # noqa: PLC0415

            self._decoder = make_decoder(self.decoder_name, **self.decoder_options)
        return self._decoder

    def __getitem__(self, position: int) -> dict:
        if self._shard is None:
            self._shard = self.plan.shard(self.epoch)
        found: dict[int, tuple[str, str]] = dict(self.known_bad)
        while True:
            spec = self.plan.clip(self.epoch, position, found, self._shard)
            info = self.infos[spec.video]
            try:
                clip = resize_clip(self.decoder, self.paths[spec.video], spec, info, self.input_size,
                                   self.antialias)
            except BadVideo as e:
                found[spec.video] = (e.reason, e.detail)
                continue
            return {"video": clip, "label": spec.label, "position": spec.position, "view": spec.view,
                    "video_index": spec.video, "spec": spec}


def collate(items: list[dict]) -> dict:
    # default_collate stacks the clips straight into shared memory inside a worker (a plain
    # torch.stack would be copied there once more to reach the main process)
    return {"video": default_collate([it["video"] for it in items]),
            "label": torch.tensor([it["label"] for it in items], dtype=torch.long),
            "position": torch.tensor([it["position"] for it in items], dtype=torch.long),
            "view": torch.tensor([it["view"] for it in items], dtype=torch.long),
            "video_index": torch.tensor([it["video_index"] for it in items], dtype=torch.long),
            "specs": [it["spec"] for it in items]}


class CpuBackend:
    """Batches of one epoch from ``start_step``: dicts with a (B, T, 3, S, S) uint8 'video' (resized;
    ``augment.finish_batch`` of it and its 'specs' is the normalised clip)."""
    name = "cpu"

    def __init__(self, plan: SamplePlan, paths: list[str], infos, input_size: int, num_workers: int = 4,
                 decoder: str = "auto", antialias: bool = False, pin_memory: bool = False,
                 decoder_options: dict | None = None):
        self.plan, self.paths, self.infos = plan, paths, infos
        self.decoder_options = dict(decoder_options or {})
        self.input_size, self.num_workers, self.decoder = input_size, num_workers, decoder
        self.antialias, self.pin_memory = antialias, pin_memory
        self.known_bad: dict[int, tuple[str, str]] = {}  # filled by the loader from its bad-video log

    @property
    def decoder_name(self) -> str:
        from .decode import make_decoder  # noqa: PLC0415

        return make_decoder(self.decoder).name

    def epoch(self, epoch: int, start_step: int = 0):
        dataset = PlanClips(self.plan, self.paths, self.infos, epoch, self.input_size, self.decoder,
                            self.antialias, self.known_bad, self.decoder_options)
        batches = [list(self.plan.batch_positions(s)) for s in range(start_step, self.plan.steps_per_epoch)]
        if not batches:
            return iter(())
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=self.num_workers, collate_fn=collate,
                            pin_memory=self.pin_memory, persistent_workers=False,
                            prefetch_factor=4 if self.num_workers else None)
        return iter(loader)
