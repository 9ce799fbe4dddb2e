"""One loader over either backend: plan, bad-video accounting, device transfer, mixing, resume.

    loader = build_loader(cfg.data, "train", frames=cfg.model.frames, input_size=cfg.model.input_size,
                          num_classes=cfg.model.num_classes, rank=rank, world=world, device="cuda")
    for epoch in range(start_epoch, epochs):
        loader.set_epoch(epoch)
        for batch in loader:          # batch.video (B, T, 3, S, S) on the device, batch.target (B, K)
            ...
        state = loader.state_dict()   # saved with the model; load_state_dict() resumes mid-epoch
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from .bad_videos import BadEvent, BadVideoLog, bad_limit
from .dataset import VideoDataset
from .mixup import mix_batch, smooth_one_hot
from .plan import ClipSpec, PlanSettings, SamplePlan, plan_for_dataset

log = logging.getLogger("ila_fast.data")


@dataclass
class Batch:
    video: torch.Tensor         # (B, T, 3, S, S) float32, normalised, on the device
    label: torch.Tensor         # (B,) int64
    target: torch.Tensor        # (B, K) soft targets (mixed and smoothed in training)
    position: torch.Tensor      # (B,) sample ids: positions in this rank's epoch
    view: torch.Tensor          # (B,) evaluation view (clip * crops + crop)
    video_index: torch.Tensor   # (B,) dataset index of the video actually used
    specs: list[ClipSpec]


class VideoLoader:
    """Iterates one epoch of a plan with a backend; counts bad videos; resumable by step."""

    def __init__(self, backend, plan: SamplePlan, bad_log: BadVideoLog, num_classes: int, device="cpu",
                 label_smoothing: float = 0.1, mix: bool = True):
        self.backend, self.plan, self.bad_log = backend, plan, bad_log
        self.num_classes, self.device = num_classes, torch.device(device)
        self.label_smoothing = label_smoothing if plan.mode == "train" else 0.0
        self.mix = mix and plan.mode == "train"
        self.epoch, self.step = 0, 0
        self._ended: int | None = None  # the last epoch whose bad-video report was written

    def __len__(self) -> int:
        return self.plan.steps_per_epoch

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.step = epoch, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "seed": self.plan.s.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed", self.plan.s.seed) != self.plan.s.seed:
            raise ValueError(f"loader state was saved with seed {state['seed']}, "
                             f"this run uses {self.plan.s.seed}")
        self.epoch, self.step = int(state["epoch"]), int(state["step"])

    def __iter__(self):
        epoch = self.epoch
        self.bad_log.check()  # the probe's verdicts alone may already exceed the limit
        known = getattr(self.backend, "known_bad", None)
        if known is not None:  # videos that failed while loading are not tried again
            found = self.bad_log.bad.items()
            known.update({v: (e.reason, e.detail) for v, e in found if v not in self.plan.bad})
        for raw in self.backend.epoch(epoch, self.step):
            specs = raw["specs"]
            for spec in specs:
                for video, reason, detail in spec.skipped:
                    self.bad_log.record(BadEvent(video, reason, detail, spec.position))
                if self.plan.num_frames[spec.video] < self.plan.s.frames:
                    self.bad_log.short_repeated.add(spec.video)
            video = raw["video"]
            if isinstance(video, list) or video.dtype == torch.uint8:  # CPU backend: finished on the device
                video = self.backend.finish(video, specs, self.device)
            else:
                video = video.to(self.device, non_blocking=True)
            label = raw["label"].to(self.device, non_blocking=True)
            if self.mix:
                video, target = mix_batch(video, label, self.plan.mix(epoch, self.step), self.num_classes,
                                          self.label_smoothing)
            else:
                target = smooth_one_hot(label, self.num_classes, self.label_smoothing)
            self.step += 1
            yield Batch(video, label, target, raw["position"], raw["view"], raw["video_index"], specs)
        self.end_epoch(epoch)
        self.epoch, self.step = epoch + 1, 0

    def end_epoch(self, epoch: int) -> dict | None:
        """Write the epoch's bad-video report (once): a trainer that stops drawing batches at its last
        optimizer step calls it, as the end of an iteration does. Returns the report (None if written)."""
        if self._ended == epoch:
            return None
        self._ended = epoch
        return self.bad_log.end_epoch(epoch)


def resolve_backend(name: str) -> str:
    if name != "auto":
        return name
    from .dali_backend import dali_available  # noqa: PLC0415

    return "dali" if dali_available() and torch.cuda.is_available() else "cpu"


def build_loader(data_cfg, split: str, frames: int, input_size: int, num_classes: int, rank: int = 0,
                 world: int = 1, device="cpu", mode: str | None = None, backend: str | None = None,
                 dataset: VideoDataset | None = None) -> VideoLoader:
    """A loader for ``split`` ("train" or "val") of ``data_cfg`` (a DataConfig).

    ``mode`` defaults to "train" for the training list and "test" (4 clips x 3 crops) for the
    validation list; pass "val" for single-view evaluation.
    """
    list_path = data_cfg.train_list if split == "train" else data_cfg.val_list
    if dataset is None and getattr(data_cfg, "dataset", "list") != "list":  # a dataset as downloaded
        from .datasets import load_dataset  # noqa: PLC0415

        dataset = load_dataset(data_cfg, split, num_classes)
    if dataset is None:
        if not list_path:
            raise ValueError(f"data.{split}_list is not set")
        dataset = VideoDataset.load(list_path, data_cfg.root, data_cfg.labels, num_classes,
                                    index_dir=data_cfg.index_dir, workers=max(1, data_cfg.num_workers),
                                    missing=data_cfg.missing)
    mode = mode or ("train" if split == "train" else "test")
    settings = PlanSettings.from_config(data_cfg, frames, input_size)
    backend = resolve_backend(backend or data_cfg.backend)
    codecs = None
    if backend == "dali":
        from .dali_backend import DALI_CPU_CODECS, DALI_GPU_CODECS  # noqa: PLC0415

        codecs = DALI_GPU_CODECS if data_cfg.dali_device == "mixed" else DALI_CPU_CODECS
    if backend == "cpu":
        from .decode import check_decoder  # noqa: PLC0415

        check_decoder(data_cfg.cpu_decoder)  # refuse a decoder that cannot work now, not per video
    max_bad = bad_limit(data_cfg.max_bad_fraction, len(dataset))
    cpu_videos = []
    if backend == "dali" and data_cfg.dali_fallback == "cpu":  # decode those with PyAV instead of skipping them
        cpu_videos = [i for i, info in enumerate(dataset.infos)
                      if not info.bad and (info.dali_issue or info.codec not in codecs)]
        if cpu_videos:
            log.info("%s: %d of %d videos decode on the CPU (DALI would decode them wrongly or not at all)",
                     dataset.list_path, len(cpu_videos), len(dataset))
        codecs = None
    plan = plan_for_dataset(dataset, settings, mode, rank, world, supported_codecs=codecs, max_bad=max_bad,
                            backend_checks=backend == "dali" and data_cfg.dali_fallback == "skip")
    report_dir = Path(data_cfg.report_dir) if data_cfg.report_dir else dataset.list_path.parent
    report = report_dir / f"{dataset.list_path.stem}.bad_videos.rank{rank}.json"
    bad_log = BadVideoLog(dataset.paths, data_cfg.max_bad_fraction, report, name=str(dataset.list_path))
    bad_log.record_known(plan.bad)
    if plan.bad:  # the up-front report: what the probe already knows (missing files included)
        log.warning("%s", bad_log.summary())
        bad_log.write_report(epoch=None)
    paths = [dataset.full_path(i) for i in range(len(dataset))]
    if backend == "dali":
        from .dali_backend import DaliBackend  # noqa: PLC0415

        impl = DaliBackend(plan, paths, dataset.infos, input_size, frames, device=data_cfg.dali_device,
                           num_threads=max(1, data_cfg.num_workers), antialias=data_cfg.antialias,
                           pipelines=data_cfg.dali_pipelines, cpu_videos=cpu_videos)
    elif backend == "cpu":
        from .cpu_backend import CpuBackend  # noqa: PLC0415

        # on a GPU the workers only decode and the GPU converts and resizes; without one the
        # workers resize too, in parallel, rather than the main process alone
        on_gpu = torch.device(device).type == "cuda"
        impl = CpuBackend(plan, paths, dataset.infos, input_size, num_workers=data_cfg.num_workers,
                          decoder=data_cfg.cpu_decoder, antialias=data_cfg.antialias, pin_memory=on_gpu,
                          transport="raw" if on_gpu else "resized")
    else:
        raise ValueError(f"unknown data backend {backend!r}")
    return VideoLoader(impl, plan, bad_log, num_classes, device, data_cfg.label_smoothing)
