"""Test clips, erasing and mixing partners against straightforward renderings of the official code
(docs/recipe.md): mmaction's multi-view frame sampler, timm's RandomErasing and torch.randperm."""
import math
import random

import numpy as np
import pytest
import torch

from ila_fast.data.mixup import mix_batch
from ila_fast.data.plan import (
    MixSpec,
    PlanSettings,
    SamplePlan,
    clip_indices,
    official_clip_indices,
    official_test_support,
)


def official_multiview_draw(n: int, t: int, rng: np.random.Generator) -> list[int]:
    """One test clip as the official sampler draws it: SampleFrames(clip_len=1, frame_interval=1,
    num_clips=T) in training mode, out-of-bound frames looped."""
    avg = n // t
    if avg > 0:
        offsets = np.arange(t) * avg + rng.integers(0, avg, t)
    elif n > t:  # unreachable for clip_len 1 (avg = 0 means n < T); kept as the sampler has it
        offsets = np.sort(rng.integers(0, n, t))
    else:
        offsets = np.around(np.arange(t) * (n / t))
    return [int(o) % n for o in offsets]


@pytest.mark.parametrize("t", [8, 16])
@pytest.mark.parametrize("n", [7, 8, 16, 31, 45, 250, 301])
def test_test_clip_frames_lie_in_the_official_support(n, t):
    rng = np.random.default_rng(n * 100 + t)
    reachable = [set() for _ in range(t)]
    for _ in range(3000):
        for i, f in enumerate(official_multiview_draw(n, t, rng)):
            reachable[i].add(f)
    support = official_test_support(n, t)
    assert [set(s) for s in support] == reachable  # the whole support, nothing outside it
    clips = [official_clip_indices(n, t, k, 4) for k in range(4)]
    for clip in clips:
        assert len(clip) == t and all(f in s for f, s in zip(clip, support))
    if n >= t:
        length = n // t
        assert max(max(c) for c in clips) < t * length  # the last n mod T frames are never used
        if length >= 4:
            assert all(len({c[i] for c in clips}) == 4 for i in range(t))  # 4 different frames per position
    plan_settings = PlanSettings(frames=t, input_size=32, test_clips=4, test_crops=3)
    plan = SamplePlan(plan_settings, [n], [(48, 32)], [0], mode="test")
    views = [plan.clip(0, v) for v in range(12)]
    assert [list(v.frames) for v in views] == [clips[k] for k in range(4) for _ in range(3)]


def test_hand_computed_cases():
    # n = 45, T = 8: segments of 5 frames from 0 (40..44 unused); 4 clips at (2k+1)*5 // 8 = 0, 1, 3, 4
    assert official_test_support(45, 8)[1] == [5, 6, 7, 8, 9]
    assert [official_clip_indices(45, 8, k, 4)[1] for k in range(4)] == [5, 6, 8, 9]
    # n = 7 < T = 8: fixed positions round(i * 7 / 8), half to even: 3.5 -> 4
    assert official_clip_indices(7, 8, 0, 4) == [0, 1, 2, 3, 4, 4, 5, 6]
    # n = 7, T = 16: the last position rounds to 7 and wraps to 0
    assert official_clip_indices(7, 16, 2, 4)[-1] == 0
    # the old option ("spread"): clips spread over the training segments, which cover the whole video, so
    # a short (SSv2-length) video's test frames leave the official support: n = 45, T = 16 uses 0..31 only
    settings = PlanSettings(frames=16, input_size=32, test_clip_frames="spread")
    spread = SamplePlan(settings, [45], [(48, 32)], [0], mode="test")
    expected = [clip_indices(45, 16, k, 4) for k in range(4)]
    assert [list(spread.clip(0, 3 * k).frames) for k in range(4)] == expected
    assert max(spread.clip(0, 9).frames) >= 42 and max(max(s) for s in official_test_support(45, 16)) == 31


def timm_erase_box(h: int, w: int, rng: random.Random):
    """timm RandomErasing's box (defaults: area 0.02-1/3, log aspect in log(0.3)..log(1/0.3), 10 tries)."""
    for _ in range(10):
        area = rng.uniform(0.02, 1 / 3) * h * w
        aspect = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
        eh, ew = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if ew < w and eh < h:
            return rng.randint(0, w - ew), rng.randint(0, h - eh), ew, eh
    return None


def test_erasing_boxes_follow_timm_and_are_filled_with_zeros():
    s = 32
    settings = PlanSettings(frames=4, input_size=s, erasing_p=1.0, batch_size=4)
    plan = SamplePlan(settings, [50] * 4000, [(48, 40)] * 4000, [0] * 4000)
    ours = np.array([plan.clip(0, p).augment.erase for p in range(4000)], dtype=float)
    ref_rng = random.Random(0)
    ref = np.array([timm_erase_box(s, s, ref_rng) for _ in range(4000)], dtype=float)
    for k, name in enumerate(("x", "y", "w", "h")):  # same distributions: quantiles within sampling noise
        q = np.linspace(0.1, 0.9, 9)
        assert np.abs(np.quantile(ours[:, k], q) - np.quantile(ref[:, k], q)).max() <= 2.0, name
    area = ours[:, 2] * ours[:, 3] / s ** 2
    assert area.min() >= 0.015 and area.max() <= 0.36  # 2 % .. 1/3 of the frame, rounded sides
    # applied: zeros (the mean colour after normalisation), the same box on every frame
    from ila_fast.data.augment import rotate_and_erase

    spec = plan.clip(0, 5)
    x, y, w, h = spec.augment.erase
    clip = torch.randn(4, 3, s, s)
    out = rotate_and_erase(clip, spec)
    assert torch.equal(out[:, :, y:y + h, x:x + w], torch.zeros(4, 3, h, w))
    mask = torch.ones(s, s, dtype=torch.bool)
    mask[y:y + h, x:x + w] = False
    assert torch.equal(out[:, :, mask], clip[:, :, mask])
    noisy = SamplePlan(PlanSettings(frames=4, input_size=s, erasing_p=1.0, batch_size=4, erase_fill="noise"),
                       [50] * 8, [(48, 40)] * 8, [0] * 8).clip(0, 5)
    filled = rotate_and_erase(clip, noisy)[:, :, y:y + h, x:x + w]
    assert filled.std() > 0.5 and torch.equal(filled[0], filled[3])


def test_mixing_partners_are_a_random_permutation():
    b = 8
    settings = PlanSettings(frames=4, input_size=32, batch_size=b)
    plan = SamplePlan(settings, [50] * 4000, [(48, 40)] * 4000, [0] * 4000)
    partners = np.array([plan.mix(0, step).partner for step in range(500)])
    assert all(sorted(p) == list(range(b)) for p in partners)
    self_rate = (partners == np.arange(b)).mean()
    assert abs(self_rate - 1 / b) < 0.02  # torch.randperm: a clip is its own partner with probability 1/B
    assert np.abs(np.bincount(partners[:, 0], minlength=b) / 500 - 1 / b).max() < 0.05  # uniform
    reverse = SamplePlan(PlanSettings(frames=4, input_size=32, batch_size=b, mix_partner="reverse"),
                         [50] * 64, [(48, 40)] * 64, [0] * 64)
    assert reverse.mix(0, 0).partner == tuple(range(b - 1, -1, -1))


def test_mix_batch_uses_the_partner():
    video = torch.arange(4.0).view(4, 1, 1, 1, 1).expand(4, 2, 3, 4, 4).contiguous()
    labels = torch.tensor([0, 1, 2, 3])
    partner = (2, 1, 3, 0)  # clip 1 is its own partner
    mixed, target = mix_batch(video, labels, MixSpec("mixup", 0.75, partner=partner), 4, 0.0)
    assert torch.allclose(mixed[:, 0, 0, 0, 0], torch.tensor([0.5, 1.0, 2.25, 2.25]))
    assert torch.allclose(target[1], torch.tensor([0.0, 1.0, 0.0, 0.0]))
    assert torch.allclose(target[0], torch.tensor([0.75, 0.0, 0.25, 0.0]))
    cut, _ = mix_batch(video, labels, MixSpec("cutmix", 0.75, (0, 2, 0, 2), partner=partner), 4, 0.0)
    assert torch.equal(cut[0, :, :, :2, :2], torch.full((2, 3, 2, 2), 2.0)) and cut[0, 0, 0, 3, 3] == 0.0
