"""CPU backend: a torch Dataset / DataLoader that executes the SamplePlan with PyAV (or torchcodec).

Worker processes decode. What they send depends on where the clips are finished (``transport``):

* ``"raw"`` (training on a GPU): each clip's crop as decoded (``RawClip``: uint8 YUV 4:2:0 planes,
  half the bytes of RGB); the loader converts, resizes, colours, normalises and erases on the GPU
  (``finish``), so a worker spends its CPU on what only a CPU does here, entropy decoding;
* ``"resized"`` (no GPU): workers also convert and resize (``resize_clip``) and send uint8 clips,
  so that work runs in parallel; the loader runs colour, normalisation and erasing
  (``augment.finish_batch``).

Both give the same numbers (``tests/test_data_transport.py``). A video that fails is replaced
inside the worker by the plan's next candidate, and the events travel back with the batch to the
main process, which counts them (``BadVideoLog``).
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from .augment import crop_resize, finish_batch
from .bad_videos import BadVideo
from .plan import SamplePlan

TRANSPORTS = ("raw", "resized")


def _as_bad_video(e: Exception) -> BadVideo:
    """Any failure while decoding or resizing a clip: a bad video, never a crash in a worker."""
    return BadVideo("decode_error", f"{type(e).__name__}: {str(e)[:160]}")


def raw_clip(decoder, path: str, spec, info, input_size: int):
    """The plan's clip of one video as decoded: a RawClip of the crop (scaled down in YUV first when
    much larger than the output, so memory does not grow with the source resolution). Any failure
    is a BadVideo: never a crash, never a clip of the wrong shape."""
    try:
        raw = decoder.decode_raw(path, spec.frames, info, crop=spec.raw_crop, out_size=input_size)
        planes = raw.rgb if raw.rgb is not None else raw.y
        x, y, w, h = raw.box
        if (raw.num_frames != len(spec.frames) or w < 1 or h < 1 or x + w > planes.shape[-1]
                or y + h > planes.shape[-2] or (raw.rgb is not None and raw.rgb.shape[1] != 3)):
            raise BadVideo("decode_error", f"decoded {raw.num_frames} frames, crop {raw.box} of planes "
                                           f"{tuple(planes.shape)}")
        return raw
    except BadVideo:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder failure is a bad video
        raise _as_bad_video(e) from None


CHUNK_PIXELS = 1 << 20  # crop pixels converted at once: float32 RGB of at most ~12 MB besides the planes


def resize_raw(raw, input_size: int, antialias: bool) -> torch.Tensor:
    """A RawClip, on its device -> (T, 3, S, S) float32 in whole levels: converted, then resized, a few
    frames at a time where the crop is large (the same numbers; memory bounded by CHUNK_PIXELS)."""
    w, h = raw.size
    step = max(1, CHUNK_PIXELS // max(1, w * h))
    chunks = [raw if step >= raw.num_frames else raw.select(slice(i, i + step))
              for i in range(0, raw.num_frames, step)]
    out = [crop_resize(c.to_rgb(), (0, 0, w, h), input_size, antialias, planar=True) for c in chunks]
    return out[0] if len(out) == 1 else torch.cat(out)


def resized_uint8(raw, input_size: int, antialias: bool) -> torch.Tensor:
    """``resize_raw`` as the uint8 clip a worker sends (the values are whole levels); a failure is a BadVideo."""
    try:
        return resize_raw(raw, input_size, antialias).to(torch.uint8)
    except Exception as e:  # noqa: BLE001 - any resize failure is a bad video
        raise _as_bad_video(e) from None


def resize_clip(decoder, path: str, spec, info, input_size: int, antialias: bool) -> torch.Tensor:
    """The plan's clip of one video, cropped and resized on the CPU: (T, 3, S, S) uint8."""
    return resized_uint8(raw_clip(decoder, path, spec, info, input_size), input_size, antialias)


def finish_raw_batch(raws: list, specs: list, input_size: int, antialias: bool, device) -> torch.Tensor:
    """RawClips of a batch -> (B, T, 3, S, S) float32 normalised clips on ``device``: conversion and
    resize there, clip by clip (crops differ in size), then ``finish_batch``."""
    device = torch.device(device)
    clips = [resize_raw(r.to(device, non_blocking=True), input_size, antialias) for r in raws]
    return finish_batch(torch.stack(clips), specs)


def decode_clip(decoder, path: str, spec, info, input_size: int, antialias: bool) -> torch.Tensor:
    """``resize_clip`` and the rest of the transform: (T, 3, S, S) float32, normalised."""
    return finish_batch(resize_clip(decoder, path, spec, info, input_size, antialias)[None], [spec])[0]


class PlanClips(Dataset):
    """Position -> the clip (resized uint8, or a RawClip: ``transport``) for one epoch of a plan (a
    map-style dataset)."""

    def __init__(self, plan: SamplePlan, paths: list[str], infos, epoch: int, input_size: int,
                 decoder: str = "auto", antialias: bool = False, known_bad: dict | None = None,
                 decoder_options: dict | None = None, transport: str = "resized"):
        self.plan, self.paths, self.infos = plan, paths, infos
        self.transport = transport
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
                clip = raw_clip(self.decoder, self.paths[spec.video], spec, info, self.input_size)
                if self.transport == "resized":
                    clip = resized_uint8(clip, self.input_size, self.antialias)
            except BadVideo as e:
                found[spec.video] = (e.reason, e.detail)
                continue
            return {"video": clip, "label": spec.label, "position": spec.position, "view": spec.view,
                    "video_index": spec.video, "spec": spec}


def collate(items: list[dict]) -> dict:
    # default_collate stacks resized clips straight into shared memory inside a worker (a plain
    # torch.stack would be copied there once more to reach the main process); RawClips differ in
    # size and travel as a list (their tensors through shared memory too)
    clips = [it["video"] for it in items]
    return {"video": default_collate(clips) if isinstance(clips[0], torch.Tensor) else clips,
            "label": torch.tensor([it["label"] for it in items], dtype=torch.long),
            "position": torch.tensor([it["position"] for it in items], dtype=torch.long),
            "view": torch.tensor([it["view"] for it in items], dtype=torch.long),
            "video_index": torch.tensor([it["video_index"] for it in items], dtype=torch.long),
            "specs": [it["spec"] for it in items]}


def loader_seed(seed: int, epoch: int) -> int:
    """The seed of an epoch's DataLoader generator: a function of (seed, epoch) alone."""
    return (seed * 1_000_003 + epoch * 7919 + 12345) % (2 ** 63)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: a worker ignores SIGTERM, SIGINT and SIGUSR2. A scheduler, torchrun
    (``killpg``) or Ctrl-C sends them to every process of the job, and only the main process decides
    what they mean (save, then stop: ``ila_fast.train.signals``); a worker killed by one would crash
    the run first. Workers still end with their main process (the DataLoader's own watchdog)."""
    import signal

    signal.set_wakeup_fd(-1)  # the main process's wakeup socket, inherited by fork: not this process's to use
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_IGN)


class CpuBackend:
    """Batches of one epoch from ``start_step``: dicts whose 'video' is a (B, T, 3, S, S) uint8 tensor
    of resized clips (transport "resized") or a list of RawClips ("raw"); ``finish`` of it and the
    batch's 'specs' is the normalised clip on a device."""
    name = "cpu"

    def __init__(self, plan: SamplePlan, paths: list[str], infos, input_size: int, num_workers: int = 4,
                 decoder: str = "auto", antialias: bool = False, pin_memory: bool = False,
                 decoder_options: dict | None = None, transport: str = "resized"):
        if transport not in TRANSPORTS:
            raise ValueError(f"transport {transport!r}: expected one of {TRANSPORTS}")
        self.transport = transport
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
                            self.antialias, self.known_bad, self.decoder_options, self.transport)
        batches = [list(self.plan.batch_positions(s)) for s in range(start_step, self.plan.steps_per_epoch)]
        if not batches:
            return iter(())
        # The DataLoader draws its workers' base seed when an iterator starts: from its own generator,
        # seeded by (seed, epoch), never from the global RNG, which a resume restores for dropout and
        # drop-path (an iterator started mid-epoch would otherwise shift every later draw).
        generator = torch.Generator().manual_seed(loader_seed(self.plan.s.seed, epoch))
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=self.num_workers, collate_fn=collate,
                            pin_memory=self.pin_memory, persistent_workers=False, generator=generator,
                            prefetch_factor=4 if self.num_workers else None,
                            worker_init_fn=ignore_stop_signals)
        return iter(loader)

    def finish(self, video, specs, device) -> torch.Tensor:
        """A batch's 'video' -> (B, T, 3, S, S) float32 normalised clips on ``device``."""
        if isinstance(video, list):
            return finish_raw_batch(video, specs, self.input_size, self.antialias, device)
        return finish_batch(video.to(device, non_blocking=True), specs)
