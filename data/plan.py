"""SamplePlan: the single source of randomness of the data pipeline.

For (seed, epoch, rank, world size, step) the plan says, per clip, which video, which frames,
which crop box and which augmentation parameters; the backends (DALI, CPU) only execute it.
Every random draw comes from a generator keyed by (seed, epoch, global position, attempt), so

* the same plan gives the same clips on any backend, in any worker order;
* a run resumes from any step without replaying the ones before;
* the global order does not depend on the world size: rank r of w takes positions r, r+w, ...
  of one permutation, so shards are disjoint and no sample is seen twice in an epoch.

Frame sampling follows ILA (docs/recipe.md): T equal segments, seg = (n-1)/T, segment i spans
round(seg*i)..round(seg*(i+1)) inclusive (Python's round, half to even, as numpy's); training
draws one frame per segment and single-view evaluation takes each segment's midpoint. Multi-clip
evaluation (``test_clip_frames = "official"``) uses the official multi-view support: T segments of
floor(n/T) frames from frame 0 (the last n mod T frames unused; for n < T the official fixed
positions), K evenly spaced, deterministic frames per segment where the official sampler draws
them at random (so its test numbers vary run to run); ``"spread"`` spreads the K clips inside the
training segments over the whole video instead.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .bad_videos import TooManyBadVideos

MODES = ("train", "val", "test")
COLOR_JITTER_MODES = ("per_frame", "per_clip")
ERASE_FILLS = ("zeros", "noise")
MIX_PARTNERS = ("randperm", "reverse")
TEST_CLIP_FRAMES = ("official", "spread")
_TAG_ORDER, _TAG_CLIP, _TAG_REPLACE, _TAG_MIX, _TAG_JITTER, _TAG_PARTNER = 1, 2, 3, 4, 5, 6


# ---------------------------------------------------------------- ILA's frame sampling

def segment_bounds(num_frames: int, frames: int) -> list[tuple[int, int]]:
    """Inclusive (start, end) of each of the T segments of an n-frame video."""
    seg = (num_frames - 1) / frames
    return [(round(seg * i), round(seg * (i + 1))) for i in range(frames)]


def train_indices(num_frames: int, frames: int, rng: np.random.Generator) -> list[int]:
    """One uniformly random frame per segment (bounds inclusive)."""
    return [int(rng.integers(s, e + 1)) for s, e in segment_bounds(num_frames, frames)]


def midpoint_indices(num_frames: int, frames: int) -> list[int]:
    return [(s + e) // 2 for s, e in segment_bounds(num_frames, frames)]


def clip_indices(num_frames: int, frames: int, clip: int, clips: int) -> list[int]:
    """``test_clip_frames = "spread"``: clip ``clip`` of ``clips`` evenly spaced clips over the training
    segments: in each segment the frame at (clip+1)/(clips+1). With one clip this is the segment midpoint.
    """
    return [s + ((clip + 1) * (e - s)) // (clips + 1) for s, e in segment_bounds(num_frames, frames)]


def official_test_support(num_frames: int, frames: int) -> list[list[int]]:
    """The frames the official multi-view test sampler can pick for each of the T positions.

    It is mmaction's training sampler with ``clip_len 1, num_clips T``: with L = n // T >= 1,
    position i draws from i*L .. i*L + L - 1 (the last n mod T frames are never used); for n < T
    the positions are fixed, ``round(i * n / T)`` (half to even) wrapped modulo n.
    """
    length = num_frames // frames
    if length >= 1:
        return [list(range(i * length, (i + 1) * length)) for i in range(frames)]
    fixed = np.around(np.arange(frames) * (num_frames / frames)).astype(np.int64) % num_frames
    return [[int(i)] for i in fixed]


def official_clip_indices(num_frames: int, frames: int, clip: int, clips: int) -> list[int]:
    """``test_clip_frames = "official"``: clip ``clip`` of ``clips``, inside the official support,
    deterministic: in each position's L frames the centre of the clip-th of ``clips`` equal parts."""
    return [support[((2 * clip + 1) * len(support)) // (2 * clips)]
            for support in official_test_support(num_frames, frames)]


# ---------------------------------------------------------------- spatial boxes

def multiscale_crop(width: int, height: int, input_size: int, resize_ratio: float, scales,
                    max_aspect_gap: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """ILA's training crop, as a box (x, y, w, h) in source pixels of the (upright) frame.

    The official pipeline resizes the short side to resize_ratio * input_size, picks a crop of
    size base * scale per axis (scales at most ``max_aspect_gap`` steps apart, sizes within 3
    pixels of the input size snapped to it) at one of 5 fixed positions (corners, centre), then
    resizes the crop to input_size. We compute the same box in source pixels and resize once.
    """
    short = round(resize_ratio * input_size)
    f = short / min(width, height)
    vw, vh = int(width * f + 0.5), int(height * f + 0.5)
    base = min(vw, vh)
    sizes = [int(base * s) for s in scales]
    crop_h = [input_size if abs(x - input_size) < 3 else x for x in sizes]
    crop_w = [input_size if abs(x - input_size) < 3 else x for x in sizes]
    pairs = [(w, h) for i, h in enumerate(crop_h) for j, w in enumerate(crop_w)
             if abs(i - j) <= max_aspect_gap]
    cw, ch = pairs[int(rng.integers(len(pairs)))]
    cw, ch = min(cw, vw), min(ch, vh)
    ws, hs = (vw - cw) // 4, (vh - ch) // 4
    offsets = [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)]
    ox, oy = offsets[int(rng.integers(len(offsets)))]
    return _to_source((ox, oy, cw, ch), f, width, height)


def _to_source(box, f: float, width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0 = round(box[0] / f), round(box[1] / f)
    x1, y1 = round((box[0] + box[2]) / f), round((box[1] + box[3]) / f)
    x0, y0 = min(max(0, x0), width - 1), min(max(0, y0), height - 1)
    x1, y1 = min(max(x0 + 1, x1), width), min(max(y0 + 1, y1), height)
    return (x0, y0, x1 - x0, y1 - y0)


def eval_crop(width: int, height: int, crop: int, crops: int) -> tuple[int, int, int, int]:
    """Evaluation crop ``crop`` of ``crops`` (1: centre; 3: left/centre/right or top/centre/bottom).

    The short side is resized to the input size and an input-sized square is cut, i.e. a
    square of the short side in source pixels.
    """
    side = min(width, height)
    long_free = max(width, height) - side
    offset = long_free // 2 if crops == 1 else (0, long_free // 2, long_free)[crop]
    return (offset, 0, side, side) if width >= height else (0, offset, side, side)


def display_box_to_raw(box, quarter_turns: int, raw_w: int, raw_h: int) -> tuple[int, int, int, int]:
    """Map a box of the upright frame, np.rot90(raw, k), back to the raw (coded) frame."""
    x, y, w, h = box
    k = quarter_turns % 4
    if k == 0:
        return (x, y, w, h)
    if k == 1:
        return (raw_w - y - h, x, h, w)
    if k == 2:
        return (raw_w - x - w, raw_h - y - h, w, h)
    return (y, raw_h - x - w, h, w)


# ---------------------------------------------------------------- the plan

@dataclass(frozen=True)
class FrameJitter:
    """One frame's draw of torchvision's ColorJitter: the order of its four operations (indices into
    ``color.OPS``: brightness, contrast, saturation, hue) and their factors (float32 values, as
    torchvision draws them; hue as a fraction of a turn)."""
    order: tuple[int, int, int, int]
    brightness: float
    contrast: float
    saturation: float
    hue: float


@dataclass(frozen=True)
class AugmentParams:
    """Photometric and erasing parameters of one training clip (identity when disabled).

    ``color_mode`` "per_frame" (the official recipe): ``frame_jitter`` holds each frame's jitter
    (empty: not jittered) and ``grayscale`` is PIL's integer luma, all on whole 8-bit levels
    (``data/color.py``); the per-clip fields stay at identity. "per_clip": one affine colour map
    per clip from the per-clip fields (``augment.color_affine``).
    """
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue_degrees: float = 0.0
    grayscale: bool = False
    erase: tuple[int, int, int, int] | None = None  # (x, y, w, h) on the output, upright
    erase_seed: int = 0                             # seeds the erased region's noise (erase_fill "noise")
    color_mode: str = "per_clip"
    frame_jitter: tuple[FrameJitter, ...] = ()
    erase_fill: str = "zeros"                       # "zeros" (the mean colour) or "noise" (N(0, 1) per pixel)


@dataclass(frozen=True)
class ClipSpec:
    """One clip to produce, as decided by the plan."""
    position: int                        # position in this rank's epoch (the sample id)
    global_position: int
    video: int                           # index in the dataset
    label: int
    view: int                            # evaluation view (clip * crops + crop); 0 in training
    frames: tuple[int, ...]
    crop: tuple[int, int, int, int]      # (x, y, w, h) in source pixels of the upright frame
    quarter_turns: int                   # display rotation (np.rot90 k) to apply after cropping
    raw_crop: tuple[int, int, int, int]  # the same box in the coded frame
    augment: AugmentParams = field(default_factory=AugmentParams)
    skipped: tuple[tuple[int, str, str], ...] = ()  # (video, reason, detail) replaced on the way here


@dataclass(frozen=True)
class MixSpec:
    mode: str                             # "none", "mixup" or "cutmix"
    lam: float = 1.0                      # weight of the clip itself (after box correction)
    box: tuple[int, int, int, int] | None = None  # cutmix (y0, y1, x0, x1) on the output
    partner: tuple[int, ...] | None = None        # clip i mixes with partner[i]; None: the batch reversed


class NoUsableReplacement(TooManyBadVideos):
    """Every candidate of a position's replacement chain was bad."""


@dataclass
class PlanSettings:
    """The sampling and augmentation settings the plan needs (a subset of DataConfig)."""
    frames: int
    input_size: int
    seed: int = 0
    batch_size: int = 8
    test_clips: int = 4
    test_crops: int = 3
    resize_ratio: float = 256 / 224
    crop_scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)
    max_aspect_gap: int = 1
    color_jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    erasing_p: float = 0.25
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    mix_switch_p: float = 0.5
    mix_p: float = 1.0
    replace_attempts: int = 16
    short_videos: str = "repeat"
    color_jitter: str = "per_frame"
    erase_fill: str = "zeros"
    mix_partner: str = "randperm"
    test_clip_frames: str = "official"

    def __post_init__(self):
        for key, allowed in (("color_jitter", COLOR_JITTER_MODES), ("erase_fill", ERASE_FILLS),
                             ("mix_partner", MIX_PARTNERS), ("test_clip_frames", TEST_CLIP_FRAMES)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} = {getattr(self, key)!r} is not one of {list(allowed)}")

    @classmethod
    def from_config(cls, data_cfg, frames: int, input_size: int) -> "PlanSettings":
        names = set(cls.__dataclass_fields__) - {"frames", "input_size"}
        values = {n: getattr(data_cfg, n) for n in names}
        values["crop_scales"] = tuple(values["crop_scales"])
        return cls(frames=frames, input_size=input_size, **values)


class SamplePlan:
    """Which clip each (epoch, rank, position) gets; pure Python, deterministic, resumable.

    ``num_frames`` / ``sizes`` (coded width, height) / ``quarter_turns`` / ``labels`` describe the
    videos (from the probe index); ``bad`` maps videos the probe found unusable to
    (reason, detail). Training shards take ``len // world`` samples per rank (the tail of each
    epoch's permutation, different every epoch, is dropped so ranks step together); evaluation
    shards cover every video exactly once, with all its views.
    """

    def __init__(self, settings: PlanSettings, num_frames: list[int], sizes: list[tuple[int, int]],
                 labels: list[int], quarter_turns: list[int] | None = None, mode: str = "train",
                 rank: int = 0, world: int = 1, bad: dict[int, tuple[str, str]] | None = None,
                 max_bad: int | None = None):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in [0, {world})")
        self.s, self.mode, self.rank, self.world = settings, mode, rank, world
        self.num_frames, self.sizes, self.labels = list(num_frames), list(sizes), list(labels)
        self.quarter_turns = list(quarter_turns) if quarter_turns is not None else [0] * len(labels)
        self.bad = dict(bad or {})
        self.max_bad = max_bad  # the dataset's bad-video limit: a replacement chain stops beyond it
        if settings.short_videos == "skip":
            for v, n in enumerate(self.num_frames):
                if 0 < n < settings.frames and v not in self.bad:
                    self.bad[v] = ("too_few_frames", f"{n} frames < T = {settings.frames}")
        for v, n in enumerate(self.num_frames):
            if n < 1 and v not in self.bad:
                self.bad[v] = ("too_few_frames", "no frames")
        n = len(labels)
        self.views = settings.test_clips * settings.test_crops if mode == "test" else 1
        self.videos_per_rank = n // world if mode == "train" else len(range(rank, n, world))
        if mode == "train" and self.videos_per_rank == 0:
            raise ValueError(f"{n} videos cannot feed {world} ranks")

    # -- sizes
    def __len__(self) -> int:
        """Clips per epoch on this rank."""
        return self.videos_per_rank * self.views

    @property
    def steps_per_epoch(self) -> int:
        b = self.s.batch_size
        return len(self) // b if self.mode == "train" else math.ceil(len(self) / b)

    # -- randomness
    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([self.s.seed & 0xFFFFFFFF, *key])

    def order(self, epoch: int) -> np.ndarray:
        """The global video order of an epoch (a permutation in training, identity otherwise)."""
        n = len(self.labels)
        if self.mode == "train":
            return self._rng(_TAG_ORDER, epoch).permutation(n)
        return np.arange(n)

    def shard(self, epoch: int) -> np.ndarray:
        """This rank's videos for the epoch, in order."""
        return self.order(epoch)[self.rank::self.world][: self.videos_per_rank]

    def batch_positions(self, step: int) -> range:
        b = self.s.batch_size
        return range(step * b, min((step + 1) * b, len(self)))

    def batch(self, epoch: int, step: int,
              skip: Mapping[int, tuple[str, str]] | None = None) -> list[ClipSpec]:
        shard = self.shard(epoch)
        return [self.clip(epoch, p, skip, shard) for p in self.batch_positions(step)]

    # -- one clip
    def clip(self, epoch: int, position: int, skip: Mapping[int, tuple[str, str]] | None = None,
             shard: np.ndarray | None = None) -> ClipSpec:
        """The clip at ``position``; videos that are bad (probe) or in ``skip`` (found while
        loading; video -> (reason, detail)) are replaced by the first usable of a deterministic
        chain of candidates drawn from the same shard."""
        if not 0 <= position < len(self):
            raise IndexError(f"position {position} is outside this rank's epoch of {len(self)} clips")
        shard = self.shard(epoch) if shard is None else shard
        skip = skip or {}
        local, view = divmod(position, self.views)
        gpos = (local * self.world + self.rank) * self.views + view
        video = int(shard[local])
        skipped = []
        bad_seen = 0
        for attempt, candidate in enumerate(self._chain(epoch, gpos, shard, video)):
            reason = self.bad.get(candidate) or skip.get(candidate)
            if reason is None:
                return self._make(epoch, position, gpos, candidate, view, attempt, tuple(skipped))
            bad_seen += 1
            # Known-bad candidates are passed over without a decode; the position's own video and
            # those found bad while loading (not yet counted by the main process) travel back.
            if attempt == 0 or candidate not in self.bad:
                skipped.append((candidate, reason[0], reason[1]))
            if self.max_bad is not None and len(self.bad.keys() | skip.keys()) > self.max_bad:
                raise NoUsableReplacement(
                    f"position {position}: more than {self.max_bad} videos of this shard are bad "
                    f"(the max_bad_fraction limit); last skipped: {skipped[-5:]}")
        raise NoUsableReplacement(f"no usable video for position {position}: all {bad_seen} videos of this "
                                  f"shard are bad; skipped {skipped[:5]}")

    def _chain(self, epoch: int, gpos: int, shard: np.ndarray, video: int):
        """``video``, then replacement candidates: distinct videos of the shard in a fixed order.

        The order depends only on (seed, epoch, position), not on which videos are known bad,
        so the first usable candidate is the same whether a bad one was known or just found.
        ``replace_attempts`` random draws come first, then the rest of the shard from a random start.
        """
        yield video
        seen = {video}
        n = len(shard)
        rng = self._rng(_TAG_REPLACE, epoch, gpos)
        for _ in range(self.s.replace_attempts):
            candidate = int(shard[int(rng.integers(n))])
            if candidate not in seen:
                seen.add(candidate)
                yield candidate
        start = int(rng.integers(n))
        for k in range(n):
            candidate = int(shard[(start + k) % n])
            if candidate not in seen:
                seen.add(candidate)
                yield candidate

    def _make(self, epoch, position, gpos, video, view, attempt, skipped) -> ClipSpec:
        s = self.s
        n = self.num_frames[video]
        raw_w, raw_h = self.sizes[video]
        k = self.quarter_turns[video] % 4
        w, h = (raw_h, raw_w) if k % 2 else (raw_w, raw_h)
        augment = AugmentParams()
        if self.mode == "train":
            rng = self._rng(_TAG_CLIP, epoch, gpos, attempt)
            frames = train_indices(n, s.frames, rng)
            crop = multiscale_crop(w, h, s.input_size, s.resize_ratio, s.crop_scales, s.max_aspect_gap, rng)
            augment = self._augment(rng, self._rng(_TAG_JITTER, epoch, gpos, attempt))
        elif self.mode == "val":
            frames = midpoint_indices(n, s.frames)
            crop = eval_crop(w, h, 0, 1)
        else:
            clip, crop_id = divmod(view, s.test_crops)
            if s.test_clips == 1:  # the official single-clip test is the midpoint sampler
                frames = midpoint_indices(n, s.frames)
            elif s.test_clip_frames == "official":
                frames = official_clip_indices(n, s.frames, clip, s.test_clips)
            else:
                frames = clip_indices(n, s.frames, clip, s.test_clips)
            crop = eval_crop(w, h, crop_id, s.test_crops)
        return ClipSpec(position=position, global_position=gpos, video=video, label=self.labels[video],
                        view=view, frames=tuple(frames), crop=crop, quarter_turns=k,
                        raw_crop=display_box_to_raw(crop, k, raw_w, raw_h), augment=augment, skipped=skipped)

    def _augment(self, rng: np.random.Generator, frame_rng: np.random.Generator) -> AugmentParams:
        s = self.s
        # Draws happen whether or not an augmentation is on, so turning one off leaves the others alone.
        jitter = rng.random() < s.color_jitter_p
        b = rng.uniform(max(0.0, 1 - s.brightness), 1 + s.brightness)
        c = rng.uniform(max(0.0, 1 - s.contrast), 1 + s.contrast)
        sat = rng.uniform(max(0.0, 1 - s.saturation), 1 + s.saturation)
        hue = rng.uniform(-s.hue, s.hue) * 360.0
        gray = bool(rng.random() < s.grayscale_p)
        erase = None
        do_erase = rng.random() < s.erasing_p
        erase_seed = int(rng.integers(2**31))
        boxes = []
        area = s.input_size * s.input_size
        for _ in range(10):  # timm's RandomErasing: area 2%..1/3, log-uniform aspect 0.3..3.3
            target = rng.uniform(0.02, 1 / 3) * area
            aspect = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
            eh, ew = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            y0 = int(rng.integers(0, max(1, s.input_size - eh + 1)))
            x0 = int(rng.integers(0, max(1, s.input_size - ew + 1)))
            boxes.append((x0, y0, ew, eh) if ew < s.input_size and eh < s.input_size else None)
        if do_erase:
            erase = next((box for box in boxes if box is not None), None)
        if s.color_jitter == "per_frame":
            frames = self._frame_jitter(frame_rng) if jitter else ()
            return AugmentParams(grayscale=gray, erase=erase, erase_seed=erase_seed, color_mode="per_frame",
                                 frame_jitter=frames, erase_fill=s.erase_fill)
        if not jitter:
            b = c = sat = 1.0
            hue = 0.0
        return AugmentParams(brightness=float(b), contrast=float(c), saturation=float(sat),
                             hue_degrees=float(hue), grayscale=gray, erase=erase, erase_seed=erase_seed,
                             erase_fill=s.erase_fill)

    def _frame_jitter(self, rng: np.random.Generator) -> tuple[FrameJitter, ...]:
        """torchvision's ColorJitter drawn once per frame: a random order of the four operations, then
        the brightness, contrast, saturation and hue factors, each uniform in its range (float32)."""
        s = self.s
        ranges = ((max(0.0, 1 - s.brightness), 1 + s.brightness), (max(0.0, 1 - s.contrast), 1 + s.contrast),
                  (max(0.0, 1 - s.saturation), 1 + s.saturation), (-s.hue, s.hue))
        out = []
        for _ in range(s.frames):
            order = tuple(int(i) for i in rng.permutation(4))
            b, c, sat, hue = (float(np.float32(rng.uniform(lo, hi))) for lo, hi in ranges)
            out.append(FrameJitter(order, b, c, sat, hue))
        return tuple(out)

    # -- batch mixing
    def mix(self, epoch: int, step: int) -> MixSpec:
        """Mixup / cutmix of one training batch (one lam and one box for the batch): clip i mixes with
        ``partner[i]``, a random permutation of the batch (``mix_partner = "randperm"``, as the
        official ``torch.randperm``: a clip can be its own partner) or the batch reversed ("reverse")."""
        s = self.s
        if self.mode != "train" or (s.mixup_alpha <= 0 and s.cutmix_alpha <= 0):
            return MixSpec("none")
        rng = self._rng(_TAG_MIX, epoch, step, self.rank, self.world)
        if rng.random() >= s.mix_p:
            return MixSpec("none")
        b = len(self.batch_positions(step))
        if s.mix_partner == "randperm":
            partner_rng = self._rng(_TAG_PARTNER, epoch, step, self.rank, self.world)
            partner = tuple(int(i) for i in partner_rng.permutation(b))
        else:
            partner = tuple(range(b - 1, -1, -1))
        use_cutmix = s.cutmix_alpha > 0 and (s.mixup_alpha <= 0 or rng.random() < s.mix_switch_p)
        if not use_cutmix:
            return MixSpec("mixup", float(rng.beta(s.mixup_alpha, s.mixup_alpha)), partner=partner)
        lam = float(rng.beta(s.cutmix_alpha, s.cutmix_alpha))
        size = s.input_size
        cut = math.sqrt(1.0 - lam)
        ch, cw = int(size * cut), int(size * cut)
        cy, cx = int(rng.integers(size)), int(rng.integers(size))
        y0, y1 = int(np.clip(cy - ch // 2, 0, size)), int(np.clip(cy + ch // 2, 0, size))
        x0, x1 = int(np.clip(cx - cw // 2, 0, size)), int(np.clip(cx + cw // 2, 0, size))
        lam = 1.0 - (y1 - y0) * (x1 - x0) / float(size * size)
        return MixSpec("cutmix", lam, (y0, y1, x0, x1), partner=partner)


def plan_for_dataset(dataset, settings: PlanSettings, mode: str, rank: int = 0, world: int = 1,
                     unsupported_codecs=None, supported_codecs=None, max_bad: int | None = None,
                     backend_checks: bool = False) -> SamplePlan:
    """A plan over a ``VideoDataset``; the probe's verdicts and the backend's codecs mark bad videos.

    ``backend_checks`` (DALI): videos the probe found DALI would decode wrongly are unsupported.
    """
    bad = {}
    for i, info in enumerate(dataset.infos):
        if info.bad:
            bad[i] = (info.bad, info.detail)
        elif backend_checks and info.dali_issue:
            bad[i] = ("unsupported_by_backend", f"DALI would decode it wrongly: {info.dali_issue}")
        elif supported_codecs is not None and info.codec not in supported_codecs:
            bad[i] = ("unsupported_by_backend", f"codec {info.codec!r} is not decoded by this backend "
                                                f"(it takes {', '.join(sorted(supported_codecs))})")
    return SamplePlan(settings, [info.num_frames for info in dataset.infos],
                      [(info.width, info.height) for info in dataset.infos], dataset.labels,
                      [info.quarter_turns for info in dataset.infos], mode=mode, rank=rank, world=world,
                      bad=bad, max_bad=max_bad)
