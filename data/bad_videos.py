"""Bad videos: the reasons a video is skipped, their accounting, the JSON report and the stop rule.

A bad video never stops a run by itself: it is skipped, counted by reason and replaced by
another sample of the same shard (see ``SamplePlan.clip``). Only when more than
``max_bad_fraction`` of the dataset has turned out unreadable does the run stop, with the list.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("ila_fast.data")

# reason -> what it means. Reasons found by the probe are known before the first step;
# ``decode_error`` is found while loading.
REASONS = {
    "missing": "the listed path is not a file (missing, a directory, or a dangling symlink)",
    "empty_file": "the file has zero bytes",
    "not_a_video": "not a media file FFmpeg can open",
    "truncated": "the container is recognised but cut short (header, packets or last frames missing)",
    "no_video_stream": "the file has no video stream (audio only, subtitles, ...)",
    "unsupported_codec": "no decoder for the video codec in this backend",
    "too_few_frames": "fewer decodable frames than the clip needs",
    "decode_error": "decoding failed while loading",
    "unsupported_by_backend": "a valid video this backend cannot decode correctly (codec, stream layout); "
                              "the CPU backend decodes it",
}
# Reasons that say the file itself is fine; reported apart from the broken ones.
BACKEND_REASONS = frozenset({"unsupported_by_backend"})


def bad_limit(max_fraction: float, videos: int) -> int:
    """The most bad videos a dataset of ``videos`` tolerates: at least one when the fraction is > 0."""
    if max_fraction <= 0:
        return 0
    return max(1, math.floor(max_fraction * videos + 1e-9))


class BadVideo(Exception):
    """One video cannot be used; ``reason`` is a key of ``REASONS``."""

    def __init__(self, reason: str, detail: str = "", path: str = ""):
        assert reason in REASONS, reason
        self.reason, self.detail, self.path = reason, detail, path
        super().__init__(f"{path}: {reason}: {detail}" if path else f"{reason}: {detail}")


class TooManyBadVideos(RuntimeError):
    """More than ``max_bad_fraction`` of the dataset is unreadable; the message lists the videos."""


@dataclass
class BadEvent:
    video: int          # index in the dataset
    reason: str
    detail: str = ""
    position: int = -1  # position in the epoch at which it was met (first time)


class BadVideoLog:
    """Counts bad videos (each once) and replacements (each time) for one dataset.

    ``record`` is called in the main process with the events the backends return beside each
    batch; ``end_epoch`` logs a summary and writes the JSON report.
    """

    def __init__(self, paths: list[str], max_fraction: float, report_path: str | os.PathLike | None = None,
                 name: str = "data"):
        self.paths = paths
        self.max_fraction = max_fraction
        self.report_path = Path(report_path) if report_path else None
        self.name = name
        self.bad: dict[int, BadEvent] = {}
        self.replacements = 0
        self.epoch_replacements = 0
        self.epoch_new = 0                  # videos first found bad this epoch
        self.per_epoch: list[dict] = []     # one entry per finished epoch: its own counts
        self.short_repeated: set[int] = set()

    @property
    def limit(self) -> int:
        """The most bad videos a run tolerates (at least one when max_fraction > 0)."""
        return bad_limit(self.max_fraction, len(self.paths))

    def record(self, event: BadEvent) -> None:
        self.replacements += 1
        self.epoch_replacements += 1
        if event.video not in self.bad:
            self.bad[event.video] = event
            self.epoch_new += 1
            log.warning("%s: skipping %s (%s: %s)", self.name, self.paths[event.video], event.reason,
                        event.detail or REASONS[event.reason])
        self.check()

    def record_known(self, bad: dict[int, tuple[str, str]]) -> None:
        """Register the bad videos the probe found, before the first step (not yet 'met')."""
        for video, (reason, detail) in bad.items():
            self.bad.setdefault(video, BadEvent(video, reason, detail, -1))
        self.check()

    def by_reason(self) -> dict[str, int]:
        counts = {reason: 0 for reason in REASONS}
        for event in self.bad.values():
            counts[event.reason] += 1
        return counts

    def check(self) -> None:
        if len(self.bad) > self.limit:
            listing = "\n".join(f"  {self.paths[e.video]}: {e.reason} {e.detail}".rstrip()
                                for e in sorted(self.bad.values(), key=lambda e: e.video))
            where = f" (report: {self.report_path})" if self.report_path else ""
            if self.report_path:
                self.write_report(epoch=None)
            unsupported = sum(e.reason in BACKEND_REASONS for e in self.bad.values())
            # missing files named on this first line (the one a user sees): a wrong data.root shows at once
            missing = [self.paths[e.video] for e in sorted(self.bad.values(), key=lambda e: e.video)
                       if e.reason == "missing"]
            broken = len(self.bad) - unsupported - len(missing)
            parts = ([f"{len(missing)} missing: {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}"]
                     if missing else [])
            parts += [f"{broken} unreadable"] if broken or not missing else []
            parts += [f"{unsupported} unsupported by this backend"] if unsupported else []
            what = "; ".join(parts)
            hint = (" Videos unsupported by this backend decode with data.backend = 'cpu'." if unsupported else "")
            raise TooManyBadVideos(
                f"{self.name}: {len(self.bad)} of {len(self.paths)} videos cannot be used ({what}), more than "
                f"max_bad_fraction = {self.max_fraction} allows ({self.limit} video"
                f"{'' if self.limit == 1 else 's'}){where}. Fix or remove them, or raise "
                f"data.max_bad_fraction.{hint}\n{listing}")

    def summary(self) -> str:
        counts = {k: v for k, v in self.by_reason().items() if v}
        parts = ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"
        return (f"{self.name}: {len(self.bad)} bad videos of {len(self.paths)} ({parts}); "
                f"{self.epoch_replacements} samples replaced this epoch")

    def report(self, epoch: int | None) -> dict:
        return {
            "dataset": self.name,
            "epoch": epoch,
            "videos": len(self.paths),
            "bad_videos": len(self.bad),
            "bad_fraction": len(self.bad) / max(1, len(self.paths)),
            "max_bad_fraction": self.max_fraction,
            "by_reason": self.by_reason(),
            "replacements_this_epoch": self.epoch_replacements,
            "new_bad_videos_this_epoch": self.epoch_new,
            "replacements_total": self.replacements,
            "per_epoch": self.per_epoch,
            "short_videos_repeated": len(self.short_repeated),
            "bad": [{"path": self.paths[e.video], "index": e.video, "reason": e.reason, "detail": e.detail,
                     "first_position": e.position} for e in sorted(self.bad.values(), key=lambda e: e.video)],
        }

    def write_report(self, epoch: int | None) -> Path | None:
        if self.report_path is None:
            return None
        try:
            self.report_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.report_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.report(epoch), indent=1))
            os.replace(tmp, self.report_path)
        except OSError as e:  # a read-only data folder must not stop training
            log.warning("cannot write the bad-video report %s (%s); set data.report_dir", self.report_path, e)
            return None
        return self.report_path

    def end_epoch(self, epoch: int) -> dict:
        """Close an epoch: its counts join ``per_epoch``, the report is written, the epoch counters reset."""
        log.info("epoch %d: %s", epoch, self.summary())
        self.per_epoch = [e for e in self.per_epoch if e["epoch"] != epoch]
        self.per_epoch.append({"epoch": epoch, "new_bad_videos": self.epoch_new,
                               "replacements": self.epoch_replacements, "bad_videos_so_far": len(self.bad)})
        report = self.report(epoch)
        self.write_report(epoch)
        self.epoch_replacements = self.epoch_new = 0
        return report

    def state_dict(self) -> dict:
        """What a checkpoint keeps, so a resumed run counts on (and tries no known-bad video again)."""
        return {"bad": [[e.video, e.reason, e.detail, e.position] for e in self.bad.values()],
                "replacements": self.replacements, "epoch_replacements": self.epoch_replacements,
                "epoch_new": self.epoch_new, "per_epoch": self.per_epoch}

    def load_state_dict(self, state: dict) -> None:
        for video, reason, detail, position in state.get("bad", []):
            if 0 <= video < len(self.paths) and reason in REASONS:
                self.bad.setdefault(video, BadEvent(video, reason, detail, position))
        self.replacements = state.get("replacements", 0)
        self.epoch_replacements = state.get("epoch_replacements", 0)
        self.epoch_new = state.get("epoch_new", 0)
        self.per_epoch = list(state.get("per_epoch", []))
