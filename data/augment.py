"""Clip transforms shared by the backends, defined once so both compute the same numbers.

The order, for a clip of T frames decoded in coded (raw) orientation:

1. crop the plan's box (raw pixels), resize to S x S (bilinear, half-pixel centres; the
   official pipeline uses cv2's bilinear, which does not antialias) and round to whole levels
   (cv2 resizes uint8 to uint8 there), so a resized clip travels as uint8;
2. colour, by the clip's ``color_mode``:
   "per_frame" (the official recipe): every frame of a jittered clip gets its own torchvision
   ColorJitter (factors and order of operations from the plan), then PIL's integer-luma grayscale,
   each operation on whole 8-bit levels as PIL computes it (``color.py``, batched over frames);
   "per_clip": one affine map per clip, ``x -> M x + t`` on RGB in 0..255, built from brightness
   (scale), contrast (around 128), saturation and hue (a rotation and scaling of the I/Q
   plane of YIQ, the definition DALI's ``fn.hsv`` uses) and grayscale (saturation 0); clamp to
   0..255 once at the end;
3. normalise with the ImageNet mean / std;
4. rotate upright by quarter turns (the video's display rotation), then random erasing
   (one box for all frames, filled with zeros, i.e. the mean colour, as timm's ``mode='const'``;
   or per-pixel standard-normal noise with ``erase_fill = "noise"``).

Both backends run 1 (the DALI backend inside its pipeline: ``fn.slice``, ``fn.resize`` to uint8;
the CPU backend in its workers, or on the GPU for raw crops) and hand over uint8 clips; 2-4 run
on the device with the torch functions below (``finish_batch``), so both give the same numbers.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ila_fast.config import PIXEL_MEAN, PIXEL_STD

from . import color
from .plan import AugmentParams, ClipSpec

# RGB -> YIQ as DALI's colour operators define it (inverse computed, not rounded).
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.321], [0.211, -0.523, 0.311]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


def hsv_matrix(hue_degrees: float, saturation: float) -> np.ndarray:
    """3x3 RGB map rotating hue by ``hue_degrees`` and scaling saturation (YIQ definition)."""
    h = math.radians(-hue_degrees)  # DALI's sign convention
    c, s = math.cos(h), math.sin(h)
    rot = np.array([[1, 0, 0], [0, saturation * c, -saturation * s], [0, saturation * s, saturation * c]])
    return _YIQ_TO_RGB @ rot @ _RGB_TO_YIQ


def color_affine(aug: AugmentParams) -> tuple[np.ndarray, np.ndarray]:
    """(M, t), float32, such that the colour-jittered pixel is ``M @ rgb + t`` ("per_clip" colour;
    for a "per_frame" clip only its grayscale, approximately: the exact map is ``pil_color_batch``)."""
    sat = 0.0 if aug.grayscale else aug.saturation
    hsv = hsv_matrix(aug.hue_degrees, sat)
    bc = aug.brightness * aug.contrast
    m = hsv * bc
    t = hsv @ np.full(3, 128.0 * (1.0 - aug.contrast))
    return m.astype(np.float32), t.astype(np.float32)


def is_identity_color(aug: AugmentParams) -> bool:
    return (aug.brightness == 1.0 and aug.contrast == 1.0 and aug.saturation == 1.0 and aug.hue_degrees == 0.0
            and not aug.grayscale and not aug.frame_jitter)


def pil_color_batch(video: torch.Tensor, augs: list[AugmentParams]) -> torch.Tensor:
    """(B, T, 3, H, W) uint8 or float whole levels -> float32 whole levels with every "per_frame"
    clip's jitter and grayscale applied (``color.py``), frame by frame as torchvision does on PIL
    images but batched: each operation runs once over all the frames that take it at a position of
    their order. Other clips pass unchanged."""
    b, t = video.shape[:2]
    frames = video.to(torch.float32, copy=True).reshape(b * t, *video.shape[2:])  # never the caller's tensor
    orders = [(0, 1, 2, 3)] * (b * t)
    factors = [(1.0, 1.0, 1.0, 0.0)] * (b * t)
    active, grey = [], []
    for i, aug in enumerate(augs):
        if aug.color_mode != "per_frame":
            continue
        if aug.frame_jitter:
            if len(aug.frame_jitter) != t:
                raise ValueError(f"clip {i}: {len(aug.frame_jitter)} frame jitters for {t} frames")
            for k, fj in enumerate(aug.frame_jitter):
                orders[i * t + k] = fj.order
                factors[i * t + k] = (fj.brightness, fj.contrast, fj.saturation, fj.hue)
                active.append(i * t + k)
        if aug.grayscale:
            grey.extend(range(i * t, (i + 1) * t))
    orders, factors = torch.tensor(orders, dtype=torch.int64), torch.tensor(factors, dtype=torch.float32)
    color.jitter_frames(frames, orders, factors, active)
    color.grayscale_frames(frames, grey)
    return frames.view(video.shape)


# ---------------------------------------------------------------- decoding helper

def upsample_chroma_x16(planes: torch.Tensor) -> torch.Tensor:
    """(T, C, h, w) uint8 chroma -> (T, C, 2h, 2w) int16 holding 16 x its bilinear 2x upsample
    (half-pixel centres, edges clamped), exactly: the weights are 3/4 and 1/4 in each direction, so
    every value is (9a + 3b + 3c + d) / 16 and fits int16 (half the memory traffic of float)."""
    x = planes.to(torch.int16)
    t, c, h, w = x.shape
    x3 = x * 3
    wide = torch.empty((t, c, h, w, 2), dtype=torch.int16, device=x.device)  # (..., column, even / odd output column)
    torch.add(x3[..., 1:], x[..., :-1], out=wide[..., 1:, 0])
    torch.add(x3[..., :-1], x[..., 1:], out=wide[..., :-1, 1])
    torch.mul(x[..., 0], 4, out=wide[..., 0, 0])
    torch.mul(x[..., -1], 4, out=wide[..., -1, 1])
    wide = wide.view(t, c, h, 2 * w)
    w3 = wide * 3
    tall = torch.empty((t, c, h, 2, 2 * w), dtype=torch.int16, device=x.device)
    torch.add(w3[:, :, 1:], wide[:, :, :-1], out=tall[:, :, 1:, 0])
    torch.add(w3[:, :, :-1], wide[:, :, 1:], out=tall[:, :, :-1, 1])
    torch.mul(wide[:, :, 0], 4, out=tall[:, :, 0, 0])
    torch.mul(wide[:, :, -1], 4, out=tall[:, :, -1, 1])
    return tall.view(t, c, 2 * h, 2 * w)


def yuv420_to_rgb_planes(y, u, v, full_range: bool = False, bt709: bool = False, box=None) -> torch.Tensor:
    """(T, H, W) luma and (T, ceil(H/2), ceil(W/2)) chroma planes (uint8 arrays, or tensors on any
    device: the result is there) -> (T, 3, h, w) float32 RGB in
    whole levels 0..255 of the luma box ``box`` = (x, y, w, h) (None: all), rounded and clamped as a
    uint8 decoder output is, kept in float because the resize that follows wants exactly that.
    The result is channels-last in memory (the layout PyTorch's CPU resize is fastest on), so
    the resize reads it without a copy.

    Chroma is upsampled bilinearly (half-pixel centres) and BT.601 limited range is assumed
    unless told otherwise: this is what DALI's decoder does, so the CPU backend decodes to
    the same pixels (within 1 level) instead of swscale's slightly different conversion. The
    planes' edges are the frame's edges for that upsampling: a box inside them gets the
    interpolation from its neighbours.
    """
    y, u, v = (torch.as_tensor(p) for p in (y, u, v))
    t, hh, ww = y.shape
    bx, by, bw, bh = box if box is not None else (0, 0, ww, hh)
    uv = upsample_chroma_x16(torch.stack([u, v], 1))[..., by:by + bh, bx:bx + bw]
    uv = uv.sub(2048).float()  # 16 x (chroma - 128), exact
    cu, cv = uv[:, 0], uv[:, 1]
    ys = y[:, by:by + bh, bx:bx + bw].float()
    kr, kb = (0.2126, 0.0722) if bt709 else (0.299, 0.114)
    kg = 1.0 - kr - kb
    if full_range:
        cs = 1.0
    else:
        ys, cs = ys.sub_(16.0).mul_(255.0 / 219.0), 255.0 / 224.0
    cs /= 16.0  # chroma is held x16: a power of two, so every product rounds as it would unscaled
    rgb = torch.empty((t, bh, bw, 3), dtype=torch.float32, device=y.device)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    torch.add(ys, cv, alpha=cs * 2 * (1 - kr), out=r)
    torch.add(ys, cu, alpha=-cs * (2 * kb * (1 - kb) / kg), out=g).add_(cv, alpha=-cs * (2 * kr * (1 - kr) / kg))
    torch.add(ys, cu, alpha=cs * 2 * (1 - kb), out=b)
    return rgb.round_().clamp_(0, 255).permute(0, 3, 1, 2)


# ---------------------------------------------------------------- step 1 (CPU backend)

def crop_resize(frames: torch.Tensor, raw_box, size: int, antialias: bool = False,
                planar: bool = False) -> torch.Tensor:
    """(T, H, W, 3) uint8 (``planar``: (T, 3, H, W) float in whole levels) -> (T, 3, size, size)
    float32 in whole levels 0..255, channels-last in memory."""
    x, y, w, h = raw_box
    if planar:
        clip = frames[:, :, y:y + h, x:x + w].float()
    else:
        clip = frames[:, y:y + h, x:x + w].permute(0, 3, 1, 2).float()
    if clip.shape[-2:] == (size, size):
        return clip.contiguous(memory_format=torch.channels_last)
    # PyTorch's CPU bilinear resize is ~2.4x faster on channels-last input than on planar (the
    # decoder's conversion already hands over channels-last: no copy then); the result keeps that
    # layout, and the batch's stack makes it planar when the clips are copied anyway
    clip = clip.contiguous(memory_format=torch.channels_last)
    out = F.interpolate(clip, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)
    return out.round_()  # bilinear weights are positive: the result stays in 0..255


# ---------------------------------------------------------------- steps 2-3 (on any device)

def apply_color(clip: torch.Tensor, aug: AugmentParams) -> torch.Tensor:
    """(T, 3, H, W) float 0..255 -> jittered, clamped to 0..255."""
    if not is_identity_color(aug):
        m, t = color_affine(aug)
        m, t = torch.from_numpy(m).to(clip), torch.from_numpy(t).to(clip)
        clip = torch.einsum("ij,tjhw->tihw", m, clip) + t.view(1, 3, 1, 1)
    return clip.clamp_(0.0, 255.0)


def normalize(clip: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(PIXEL_MEAN, dtype=clip.dtype, device=clip.device).view(3, 1, 1)
    std = torch.tensor(PIXEL_STD, dtype=clip.dtype, device=clip.device).view(3, 1, 1)
    return (clip - mean) / std


def color_normalize_batch(video: torch.Tensor, augs: list[AugmentParams]) -> torch.Tensor:
    """(B, T, 3, H, W) uint8 or float in 0..255 -> each clip's ``normalize(apply_color(clip, aug))``,
    float32, in one pass: the colour map and the normalisation are one affine map per pixel, and
    the clamp to 0..255 becomes a per-channel clamp to the normalised images of 0 and 255. Written
    as elementwise multiply-adds (not a matrix product), so the result does not depend on the
    number of threads."""
    mean, std = np.asarray(PIXEL_MEAN, np.float64), np.asarray(PIXEL_STD, np.float64)
    weights, biases = [], []
    for aug in augs:
        m, t = color_affine(aug)
        weights.append(m / std[:, None])
        biases.append((t - mean) / std)
    b = len(augs)
    weight = torch.from_numpy(np.asarray(weights, np.float32)).to(video.device).view(b, 3, 3, 1, 1, 1)
    bias = torch.from_numpy(np.asarray(biases, np.float32)).to(video.device).view(b, 3, 1, 1, 1)
    low, high = -mean / std, (255.0 - mean) / std
    x = video.float()
    src = [x[:, :, j] for j in range(3)]
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    for c in range(3):
        channel = out[:, :, c]
        torch.mul(src[0], weight[:, c, 0], out=channel)
        channel.addcmul_(src[1], weight[:, c, 1]).addcmul_(src[2], weight[:, c, 2])
        channel.add_(bias[:, c]).clamp_(float(low[c]), float(high[c]))
    return out


def color_normalize(clip: torch.Tensor, aug: AugmentParams) -> torch.Tensor:
    """(T, 3, H, W) in 0..255 -> ``normalize(apply_color(clip, aug))`` (``color_normalize_batch``)."""
    return color_normalize_batch(clip[None], [aug])[0]


# ---------------------------------------------------------------- step 4 (both backends), and 2-4 together

def erase_noise(seed: int, channels: int, h: int, w: int) -> torch.Tensor:
    """``erase_fill = "noise"``: per-pixel N(0, 1) noise for an erased box, from a CPU generator
    (same on every device)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(channels, h, w, generator=gen)


def rotate_and_erase(clip: torch.Tensor, spec: ClipSpec) -> torch.Tensor:
    """(T, 3, S, S) normalised -> upright, with the plan's erasing applied (on clip's device)."""
    if spec.quarter_turns:
        clip = torch.rot90(clip, spec.quarter_turns, dims=(-2, -1))
    box = spec.augment.erase
    if box is not None:
        x, y, w, h = box
        clip = clip.clone() if spec.quarter_turns == 0 else clip
        if spec.augment.erase_fill == "noise":
            clip[:, :, y:y + h, x:x + w] = erase_noise(spec.augment.erase_seed, clip.shape[1], h, w).to(clip)
        else:  # timm's RandomErasing mode 'const': zeros in normalised space
            clip[:, :, y:y + h, x:x + w] = 0.0
    return clip


def rotate_and_erase_batch(batch: torch.Tensor, specs: list[ClipSpec]) -> torch.Tensor:
    """(B, T, 3, S, S) on any device: step 4 for every clip that needs it."""
    for i, spec in enumerate(specs):
        if spec.quarter_turns or spec.augment.erase is not None:
            batch[i] = rotate_and_erase(batch[i], spec)
    return batch


def finish_batch(video: torch.Tensor, specs: list[ClipSpec]) -> torch.Tensor:
    """Steps 2-4 for resized clips, on their device: (B, T, 3, S, S) uint8 -> normalised float32."""
    augs = [s.augment for s in specs]
    if any(a.color_mode == "per_frame" and (a.frame_jitter or a.grayscale) for a in augs):
        video = pil_color_batch(video, augs)
        augs = [AugmentParams() if a.color_mode == "per_frame" else a for a in augs]
    return rotate_and_erase_batch(color_normalize_batch(video, augs), specs)
