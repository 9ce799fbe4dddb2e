"""SamplePlan: ILA's sampler against hand-computed cases, determinism, resume, disjoint shards."""
import numpy as np
import pytest
from ila_fast.data.plan import (
    PlanSettings,
    SamplePlan,
    clip_indices,
    display_box_to_raw,
    eval_crop,
    midpoint_indices,
    multiscale_crop,
    segment_bounds,
    train_indices,
)


def make_plan(n=23, mode="train", rank=0, world=1, bad=None, frames=8, max_bad=None, **kw):
    settings = PlanSettings(frames=frames, input_size=224, batch_size=4, **kw)
    rng = np.random.default_rng(1)
    num_frames = [int(x) for x in rng.integers(20, 300, n)]
    sizes = [(340, 256)] * n
    return SamplePlan(settings, num_frames, sizes, [i % 5 for i in range(n)], mode=mode, rank=rank, world=world,
                      bad=bad, max_bad=max_bad)


def test_segments_hand_computed():
    # n = 10, T = 4: seg = 2.25; bounds round(0, 2.25, 4.5, 6.75, 9) = 0, 2, 4 (half to even), 7, 9
    assert segment_bounds(10, 4) == [(0, 2), (2, 4), (4, 7), (7, 9)]
    assert midpoint_indices(10, 4) == [1, 3, 5, 8]
    # n = 300, T = 8: seg = 37.375
    assert segment_bounds(300, 8)[:3] == [(0, 37), (37, 75), (75, 112)]
    # bounds 0, 37, 75, 112, 150 (149.5, half to even), 187, 224, 262, 299
    assert midpoint_indices(300, 8) == [18, 56, 93, 131, 168, 205, 243, 280]
    # fewer frames than T: the sampler repeats frames (n = 5, T = 8, seg = 0.5)
    assert segment_bounds(5, 8) == [(0, 0), (0, 1), (1, 2), (2, 2), (2, 2), (2, 3), (3, 4), (4, 4)]
    assert midpoint_indices(5, 8) == [0, 0, 1, 2, 2, 2, 3, 4]
    assert midpoint_indices(1, 8) == [0] * 8


def test_train_indices_cover_inclusive_bounds():
    rng = np.random.default_rng(0)
    draws = np.array([train_indices(10, 4, rng) for _ in range(2000)])
    for i, (s, e) in enumerate(segment_bounds(10, 4)):
        assert set(draws[:, i]) == set(range(s, e + 1))


def test_evenly_spaced_clips():
    # segment (0, 37): K = 4 clips at 1/5 .. 4/5 of the span; K = 1 is the midpoint
    assert [clip_indices(300, 8, k, 4)[0] for k in range(4)] == [7, 14, 22, 29]
    assert clip_indices(300, 8, 0, 1) == midpoint_indices(300, 8)
    for k in range(4):  # within the segments, increasing with k
        for (s, e), i in zip(segment_bounds(300, 8), clip_indices(300, 8, k, 4)):
            assert s <= i <= e


def test_multiscale_crop_boxes():
    # 340x256, input 224: short side 256 (f = 1); crop sizes 256, 224, 192, 168 at 5 positions
    rng = np.random.default_rng(0)
    sizes = [256, 224, 192, 168]
    allowed = set()
    for i, h in enumerate(sizes):
        for j, w in enumerate(sizes):
            if abs(i - j) <= 1:
                ws, hs = (340 - w) // 4, (256 - h) // 4
                for ox, oy in [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)]:
                    allowed.add((ox, oy, w, h))
    seen = {multiscale_crop(340, 256, 224, 256 / 224, (1, .875, .75, .66), 1, rng) for _ in range(3000)}
    assert seen == allowed
    # a 2x larger source gives the same boxes in source pixels, doubled
    box = multiscale_crop(680, 512, 224, 256 / 224, (1, .875, .75, .66), 1, np.random.default_rng(5))
    assert tuple(v // 2 for v in box) in allowed


def test_eval_crops():
    assert [eval_crop(340, 256, c, 3) for c in range(3)] == [(0, 0, 256, 256), (42, 0, 256, 256), (84, 0, 256, 256)]
    assert [eval_crop(256, 340, c, 3) for c in range(3)] == [(0, 0, 256, 256), (0, 42, 256, 256), (0, 84, 256, 256)]
    assert eval_crop(97, 61, 0, 1) == (18, 0, 61, 61)


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_display_box_to_raw(k):
    raw = np.arange(7 * 11).reshape(7, 11)  # H = 7, W = 11
    disp = np.rot90(raw, k)
    box = (2, 1, 3, 4) if disp.shape[1] >= 5 else (1, 2, 4, 3)
    x, y, w, h = box
    rx, ry, rw, rh = display_box_to_raw(box, k, 11, 7)
    assert np.array_equal(np.rot90(raw[ry:ry + rh, rx:rx + rw], k), disp[y:y + h, x:x + w])


def test_deterministic_and_seeded():
    a, b = make_plan(), make_plan()
    assert a.batch(3, 2) == b.batch(3, 2)
    assert a.batch(0, 0) != a.batch(1, 0)              # epochs differ
    c = make_plan(seed=1)
    assert [s.video for s in a.batch(0, 0)] != [s.video for s in c.batch(0, 0)] or a.batch(0, 0) != c.batch(0, 0)


def test_resume_from_any_position():
    plan = make_plan()
    full = [spec for step in range(plan.steps_per_epoch) for spec in plan.batch(2, step)]
    fresh = make_plan()  # a new process: no state carried over
    assert [fresh.clip(2, p) for p in range(9, len(full))] == full[9:]
    assert fresh.batch(2, 3) == full[12:16]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_disjoint_and_world_size_independent(world):
    n = 23
    plans = [make_plan(n, rank=r, world=world) for r in range(world)]
    for epoch in (0, 1):
        videos = [int(v) for p in plans for v in p.shard(epoch)]
        assert len(videos) == len(set(videos)) == world * (n // world)   # no sample twice in an epoch
        # the same global position gets the same clip whatever the world size
        ref = make_plan(n)
        for p in plans:
            for pos in range(len(p)):
                spec = p.clip(epoch, pos)
                assert spec == ref.clip(epoch, spec.global_position).__class__(
                    **{**ref.clip(epoch, spec.global_position).__dict__, "position": pos})


@pytest.mark.parametrize("world", [1, 3])
def test_eval_shards_cover_every_view_once(world):
    n = 10
    seen = []
    for r in range(world):
        plan = make_plan(n, mode="test", rank=r, world=world)
        assert plan.views == 12
        seen += [(s.video, s.view) for step in range(plan.steps_per_epoch) for s in plan.batch(0, step)]
    assert sorted(seen) == [(v, k) for v in range(n) for k in range(12)]


def test_replacement_is_deterministic_and_from_the_same_shard():
    bad = {v: ("truncated", "") for v in range(0, 23, 3)}
    plan = make_plan(bad=bad, rank=1, world=2)
    shard = set(int(v) for v in plan.shard(0))
    for pos in range(len(plan)):
        spec = plan.clip(0, pos)
        assert spec.video not in bad and spec.video in shard
        original = int(plan.shard(0)[pos])
        assert (original in bad) == bool(spec.skipped)
        assert spec == make_plan(bad=bad, rank=1, world=2).clip(0, pos)
    # a video found bad while loading is skipped with its reason
    pos = next(p for p in range(len(plan)) if not plan.clip(0, p).skipped)
    victim = plan.clip(0, pos).video
    spec = plan.clip(0, pos, {victim: ("decode_error", "boom")})
    assert spec.video != victim and spec.skipped[0] == (victim, "decode_error", "boom")


def test_replacement_never_draws_a_known_bad_video_or_one_twice():
    from ila_fast.data.bad_videos import bad_limit
    from ila_fast.data.plan import NoUsableReplacement

    n = 40
    bad = {v: ("missing", "no such file") for v in range(n) if v % 10 != 3}  # 36 of 40 bad: 4 usable
    plan = make_plan(n=n, bad=bad, replace_attempts=4)
    for pos in range(len(plan)):
        spec = plan.clip(0, pos)
        assert spec.video not in bad
        chain = list(plan._chain(0, spec.global_position, plan.shard(0), int(plan.shard(0)[pos])))
        assert len(chain) == len(set(chain)) == n  # every video of the shard once, never the same twice
        # only the position's own video is reported; known-bad candidates are passed over silently
        assert [v for v, _, _ in spec.skipped] == ([int(plan.shard(0)[pos])] if int(plan.shard(0)[pos]) in bad
                                                   else [])
        # the result does not depend on what was known: finding the bad ones while loading gives the same video
        found = {v: bad[v] for v in chain[:chain.index(spec.video)]}
        assert make_plan(n=n, replace_attempts=4).clip(0, pos, found).video == spec.video
    # the stop comes only above the limit, and names it
    assert bad_limit(0.01, 40) == 1 and bad_limit(0.0, 40) == 0 and bad_limit(0.12, 18) == 2
    assert make_plan(n=n, bad=bad, max_bad=36).clip(0, 0).video not in bad
    with pytest.raises(NoUsableReplacement, match="more than 35 videos"):
        for pos in range(len(plan)):
            make_plan(n=n, bad=bad, max_bad=35).clip(0, pos)
    all_bad = {v: ("truncated", "") for v in range(n)}
    with pytest.raises(NoUsableReplacement, match="all 40 videos of this shard are bad"):
        make_plan(n=n, bad=all_bad).clip(0, 0)


def test_augment_params_and_mix():
    plan = make_plan(200, color_jitter="per_clip")  # one colour map per clip (the named option)
    specs = [plan.clip(0, p) for p in range(len(plan))]
    jitter = np.mean([s.augment.brightness != 1.0 for s in specs])
    gray = np.mean([s.augment.grayscale for s in specs])
    erase = np.mean([s.augment.erase is not None for s in specs])
    assert 0.7 < jitter < 0.9 and 0.12 < gray < 0.28 and 0.17 < erase < 0.33
    for s in specs:
        assert 0.6 <= s.augment.brightness <= 1.4 and -36 <= s.augment.hue_degrees <= 36
        assert s.augment.color_mode == "per_clip" and not s.augment.frame_jitter
    # the default (the recipe): per-frame jitter, the same clip-level draws (grayscale, erasing)
    per_frame = [make_plan(200).clip(0, p).augment for p in range(len(plan))]
    assert [a.grayscale for a in per_frame] == [s.augment.grayscale for s in specs]
    assert [a.erase for a in per_frame] == [s.augment.erase for s in specs]
    assert [bool(a.frame_jitter) for a in per_frame] == [s.augment.brightness != 1.0 for s in specs]
    modes = [plan.mix(0, step) for step in range(400)]
    cut = [m for m in modes if m.mode == "cutmix"]
    assert 0.4 < len(cut) / len(modes) < 0.6
    for m in cut:
        y0, y1, x0, x1 = m.box
        assert m.lam == pytest.approx(1 - (y1 - y0) * (x1 - x0) / 224 ** 2)
    assert make_plan(mode="val").mix(0, 0).mode == "none"


def test_fused_colour_and_normalisation_matches_the_two_steps_in_float64():
    import torch
    from ila_fast.data.augment import apply_color, color_normalize, normalize
    from ila_fast.data.plan import AugmentParams

    x = torch.rand(3, 3, 17, 19, generator=torch.Generator().manual_seed(0)) * 300 - 20  # out of range too
    for aug in (AugmentParams(), AugmentParams(1.3, 0.7, 1.15, 30.0), AugmentParams(0.8, 1.2, 1.0, -12.0, True)):
        ref = normalize(apply_color(x.double(), aug))
        assert torch.allclose(color_normalize(x, aug).double(), ref, atol=1e-5), aug


def test_batched_colour_gives_each_clip_its_own_map_from_uint8():
    """The loader's one call for a batch of uint8 clips = each clip's two steps in float64."""
    import torch
    from ila_fast.data.augment import apply_color, color_normalize_batch, normalize
    from ila_fast.data.plan import AugmentParams

    video = torch.randint(0, 256, (3, 2, 3, 11, 13), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    augs = [AugmentParams(1.3, 0.7, 1.15, 30.0), AugmentParams(), AugmentParams(0.8, 1.2, 1.0, -12.0, True)]
    out = color_normalize_batch(video, augs)
    assert out.dtype == torch.float32 and out.shape == video.shape
    for clip, aug, got in zip(video, augs, out):
        ref = normalize(apply_color(clip.double(), aug))
        assert torch.allclose(got.double(), ref, atol=1e-5), aug
    assert not torch.allclose(out[0], out[1])  # not one map for all
