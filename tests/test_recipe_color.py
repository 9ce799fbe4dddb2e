"""Per-frame colour jitter and grayscale (docs/recipe.md): the batched device ops against PIL itself,
frame by frame, and the plan's per-frame draws against torchvision's ColorJitter distribution."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from recipe_reference import pil_color_clip, pil_gray_frame, pil_jitter_frame

from ila_fast.data import color
from ila_fast.data.augment import PIXEL_MEAN, PIXEL_STD, finish_batch, pil_color_batch
from ila_fast.data.plan import AugmentParams, FrameJitter, PlanSettings, SamplePlan


def random_frames(n, h=24, w=20, seed=0):
    """Random colours plus flat and grey patches (the cases where hue and contrast are singular)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    x[:, :4] = x[:, :4, :, :1]                 # grey rows
    x[:, 4:6] = rng.integers(0, 256, (n, 1, 1, 3), dtype=np.uint8)  # flat colour rows
    x[:, 6, :3] = [[0, 0, 0], [255, 255, 255], [255, 0, 0]]
    return x


def to_tensor(frames):  # (N, H, W, 3) uint8 -> (N, 3, H, W) float
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float()


@pytest.mark.parametrize("op", range(4))
def test_each_operation_matches_pil_over_its_whole_range(op):
    frames = random_frames(24, seed=op)
    lo, hi = [(0.6, 1.4), (0.6, 1.4), (0.8, 1.2), (-0.1, 0.1)][op]
    factors = np.float32(np.linspace(lo, hi, 24))
    fn = getattr(color, color.OPS[op])
    ours = fn(to_tensor(frames), torch.from_numpy(factors)).permute(0, 2, 3, 1).numpy()
    ref = []
    for frame, f in zip(frames, factors):
        args = [1.0, 1.0, 1.0, 0.0]
        args[op] = float(f)
        ref.append(pil_jitter_frame(frame, [op], *args))
    diff = np.abs(ours.astype(int) - np.stack(ref).astype(int))
    assert diff.max() <= 1, color.OPS[op]
    assert (diff > 0).mean() < 1e-3  # measured: exact everywhere


def test_jitter_in_random_orders_matches_pil_frame_by_frame():
    """Every frame its own factors and order, batched into one call: equal to PIL within one level."""
    rng = np.random.default_rng(3)
    b, t = 3, 8
    clips = random_frames(b * t, seed=7).reshape(b, t, 24, 20, 3)
    augs = []
    for i in range(b):
        frames = []
        for _ in range(t):
            order = tuple(int(k) for k in rng.permutation(4))
            draws = [rng.uniform(lo, hi) for lo, hi in ((0.6, 1.4), (0.6, 1.4), (0.8, 1.2), (-0.1, 0.1))]
            frames.append(FrameJitter(order, *(float(np.float32(v)) for v in draws)))
        frames = tuple(frames)
        augs.append(AugmentParams(color_mode="per_frame", frame_jitter=frames, grayscale=i == 1))
    augs.append(AugmentParams(color_mode="per_frame"))  # not jittered: passes unchanged
    clips = np.concatenate([clips, random_frames(t, seed=9)[None]])
    video = torch.from_numpy(clips).permute(0, 1, 4, 2, 3).contiguous()
    ours = pil_color_batch(video, augs).permute(0, 1, 3, 4, 2).numpy()
    for clip, aug, got in zip(clips, augs, ours):
        diff = np.abs(got.astype(int) - pil_color_clip(clip, aug).astype(int))
        assert diff.max() <= 1
    assert np.array_equal(ours[-1], clips[-1])


def test_grayscale_is_pils_integer_luma_on_every_colour():
    every = np.arange(256 ** 3, dtype=np.uint32)
    rgb = np.stack([(every >> 16) & 255, (every >> 8) & 255, every & 255], -1).astype(np.uint8)
    pil = np.asarray(Image.fromarray(rgb.reshape(4096, 4096, 3)).convert("L")).reshape(-1)
    r, g, b = (rgb[:, k].astype(np.int64) for k in range(3))
    # R 299/1000 + G 587/1000 + B 114/1000 in 16-bit fixed point
    formula = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16
    assert np.array_equal(pil, formula)
    decimal = np.floor((299 * r + 587 * g + 114 * b) / 1000 + 0.5)
    assert np.abs(decimal - formula).max() == 1  # the float rounding of the decimal weights is not PIL's
    ours = color.luma(torch.from_numpy(rgb.reshape(4096, 4096, 3)).permute(2, 0, 1).float()).reshape(-1)
    assert np.array_equal(ours.numpy().astype(np.int64), formula)
    frame = random_frames(1)[0]
    greyed = pil_color_batch(torch.from_numpy(frame).permute(2, 0, 1)[None, None],
                             [AugmentParams(color_mode="per_frame", grayscale=True)])
    assert np.array_equal(greyed[0, 0].permute(1, 2, 0).numpy(), pil_gray_frame(frame))


def plan(**kw):
    settings = PlanSettings(frames=8, input_size=32, batch_size=4, color_jitter_p=1.0, **kw)
    return SamplePlan(settings, [100] * 400, [(48, 40)] * 400, [0] * 400)


def test_per_frame_draws_follow_torchvision_colorjitter():
    p = plan()
    jitters = [fj for pos in range(400) for fj in p.clip(0, pos).augment.frame_jitter]
    assert len(jitters) == 400 * 8
    ranges = {"brightness": (0.6, 1.4), "contrast": (0.6, 1.4), "saturation": (0.8, 1.2), "hue": (-0.1, 0.1)}
    for name, (lo, hi) in ranges.items():
        values = [getattr(j, name) for j in jitters]
        v = np.asarray(values)
        assert lo <= v.min() and v.max() <= hi and all(float(np.float32(x)) == x for x in values[:50])
        assert abs(v.mean() - (lo + hi) / 2) < 0.02 * (hi - lo)
        assert abs(v.std() - (hi - lo) / 12 ** 0.5) < 0.02
    orders = {}
    for j in jitters:
        assert sorted(j.order) == [0, 1, 2, 3]
        orders[j.order] = orders.get(j.order, 0) + 1
    assert len(orders) == 24 and max(orders.values()) / min(orders.values()) < 2.2  # 24 orders, ~133 each
    # frames of one clip differ from each other
    first = p.clip(0, 0).augment.frame_jitter
    assert len({(j.order, j.brightness) for j in first}) == 8


def test_identical_frames_flicker_per_frame_and_not_per_clip():
    frame = random_frames(1, 32, 32, seed=5)[0]
    video = torch.from_numpy(np.stack([frame] * 8)).permute(0, 3, 1, 2)[None].contiguous()
    for mode, distinct in (("per_frame", 8), ("per_clip", 1)):
        spec = plan(color_jitter=mode).clip(0, 0)
        spec = replace(spec, augment=replace(spec.augment, erase=None))
        out = finish_batch(video, [spec])[0]
        assert len({tuple(f.flatten().tolist()) for f in out}) == distinct, mode


def test_per_frame_output_is_normalised_whole_levels():
    spec = plan().clip(0, 3)
    spec = replace(spec, augment=replace(spec.augment, erase=None))
    video = torch.from_numpy(random_frames(8, 32, 32)).permute(0, 3, 1, 2)[None].contiguous()
    out = finish_batch(video, [spec])[0]
    levels = out * torch.tensor(PIXEL_STD).view(3, 1, 1) + torch.tensor(PIXEL_MEAN).view(3, 1, 1)
    assert torch.allclose(levels, levels.round(), atol=1e-3)
    assert levels.min() >= -1e-3 and levels.max() <= 255.001


def test_hsv_conversions_are_pils_on_every_input():
    """The hue operation is PIL's RGB -> HSV, a shift, and PIL's HSV -> RGB: both conversions equal
    PIL's on all 2^24 inputs."""
    every = np.arange(256 ** 3, dtype=np.uint32)
    planes = np.stack([(every >> 16) & 255, (every >> 8) & 255, every & 255], -1).astype(np.uint8)
    image = planes.reshape(4096, 4096, 3)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    pil_hsv = np.asarray(Image.fromarray(image).convert("HSV"))
    assert np.array_equal(color.rgb_to_hsv(x)[0].permute(1, 2, 0).numpy(), pil_hsv)
    pil_rgb = np.asarray(Image.fromarray(image, "HSV").convert("RGB"))
    ours = color.hsv_to_rgb(torch.from_numpy(image).permute(2, 0, 1)[None].to(torch.int32))
    assert np.array_equal(ours[0].permute(1, 2, 0).numpy(), pil_rgb)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the GPU's numbers need a GPU")
def test_gpu_gives_the_cpus_levels():
    """Every colour step is whole-level arithmetic in float32 (one rounding per operation, as on the
    CPU), an exact float64 sum, or a table gather: the GPU gives the same levels; the normalisation
    after them may differ in its last bit."""
    p = plan(grayscale_p=0.5)
    specs = [replace(p.clip(0, i), augment=replace(p.clip(0, i).augment, erase=None)) for i in range(4)]
    video = torch.from_numpy(random_frames(32, 32, 32, seed=11)).permute(0, 3, 1, 2).reshape(4, 8, 3, 32, 32)
    cpu = finish_batch(video.contiguous(), specs)
    gpu = finish_batch(video.contiguous().cuda(), specs).cpu()
    std, mean = torch.tensor(PIXEL_STD).view(3, 1, 1), torch.tensor(PIXEL_MEAN).view(3, 1, 1)
    assert torch.equal((cpu * std + mean).round(), (gpu * std + mean).round())
    assert torch.allclose(cpu, gpu, atol=1e-5, rtol=0)
