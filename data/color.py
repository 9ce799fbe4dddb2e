"""Per-frame colour jitter and grayscale with the numbers of torchvision on 8-bit PIL images, batched.

The official training pipeline calls torchvision's ``ColorJitter(0.4, 0.4, 0.2, 0.1)`` on every
frame (a PIL image) and then ``Grayscale(3)``. Each frame draws its own four factors and its own
order of the four operations (the plan draws them: ``plan.FrameJitter``), and every operation
returns an 8-bit image. This module computes the same on a batch of frames held as float tensors of
whole levels 0..255, on any device, one operation at a time over all the frames that apply it at
that position of their order (so the work is one pass of each operation per frame, with no Python
loop over frames or pixels):

* brightness ``f``: PIL blends with a black image: ``trunc(f * x)``, clipped to 0..255;
* contrast ``f``: blend with the frame's mean grey ``m`` = round-half-up of the mean of its
  8-bit luma image: ``trunc(m + f * (x - m))``, clipped;
* saturation ``f``: blend with the frame's luma image ``g``: ``trunc(g + f * (x - g))``, clipped;
* hue ``h``: PIL's RGB -> HSV (8-bit H, S, V), ``H += trunc(255 h)`` modulo 256, HSV -> RGB; both
  conversions are gathers from tables of all 2^24 inputs (100 MB, built once per process and
  device in ~1 s), made with the C code's mix of single and double precision;
* grayscale: PIL's integer luma ``(19595 R + 38470 G + 7471 B + 2^15) >> 16`` (= R 299/1000 +
  G 587/1000 + B 114/1000, rounded), copied to the three channels.

PIL computes a blend in single precision (the factor is a C ``float``) and truncates; each step
below rounds where PIL's C code does, so the results are PIL's (``tests/test_recipe_color.py``: every
operation against PIL, the HSV conversions on all 2^24 inputs).
"""
from __future__ import annotations

import torch

OPS = ("brightness", "contrast", "saturation", "hue")  # torchvision's fn_idx 0..3


def luma(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) whole levels -> (..., 1, H, W) PIL's integer luma (exact in float32: every
    partial sum stays below 2^24)."""
    r, g, b = x[..., 0:1, :, :], x[..., 1:2, :, :], x[..., 2:3, :, :]
    y = r * 19595.0 + g * 38470.0 + b * 7471.0 + 32768.0
    return torch.floor(y * (1.0 / 65536.0))


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ``Image.blend(degenerate, x, factor)`` on whole levels: single precision, truncated, clipped."""
    out = (x - degenerate).mul_(factor).add_(degenerate)
    return out.floor_().clamp_(0.0, 255.0)


def brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W), factor (N,) -> PIL ``ImageEnhance.Brightness``."""
    return (x * factor.view(-1, 1, 1, 1)).floor_().clamp_(0.0, 255.0)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageEnhance.Contrast``: towards the frame's mean grey level (an integer)."""
    total = luma(x).sum(dim=(-3, -2, -1), dtype=torch.float64)
    mean = torch.floor(total / (x.shape[-1] * x.shape[-2]) + 0.5).to(x.dtype)
    return _blend(mean.view(-1, 1, 1, 1), x, factor.view(-1, 1, 1, 1))


def saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageEnhance.Color``: towards the frame's luma image."""
    return _blend(luma(x), x, factor.view(-1, 1, 1, 1))


def _hue_tables() -> dict[str, torch.Tensor]:
    """Small tables of PIL's HSV conversions, with the C code's precision, from which
    ``_hsv_and_rgb_tables`` builds the full ones.

    RGB -> HSV: with c = the largest channel and d1, d2 = c minus the other two (cr = max(d1, d2)),
    PIL's 8-bit hue depends only on (which channel is largest, d1, d2) and its saturation only on
    (cr, c). HSV -> RGB: p = round(v (1 - s')) depends on (v, s); q and t are v times a double that
    depends on (s, h); the sector on h alone.
    """
    f32, f64 = torch.float32, torch.float64
    d1, d2 = torch.meshgrid(torch.arange(256, dtype=f32), torch.arange(256, dtype=f32), indexing="ij")
    cr = torch.maximum(d1, d2)
    safe = torch.where(cr == 0, torch.ones_like(cr), cr)
    a, b = d1 / safe, d2 / safe                                    # float divisions, as in C
    cases = [(b - a).to(f64),                                       # red largest: bc - gc (d1 = g, d2 = b)
             (2.0 + a.to(f64) - b.to(f64)).to(f32).to(f64),         # green: 2 + rc - bc (d1 = r, d2 = b)
             (4.0 + a.to(f64) - b.to(f64)).to(f32).to(f64)]         # blue: 4 + gc - rc (d1 = g, d2 = r)
    hue = [torch.where(cr == 0, 0.0, torch.trunc(torch.fmod(h / 6.0 + 1.0, 1.0).to(f32).to(f64) * 255.0))
           for h in cases]
    crs, maxc = torch.meshgrid(torch.arange(256, dtype=f32), torch.arange(256, dtype=f32), indexing="ij")
    ratio = crs / torch.where(maxc == 0, torch.ones_like(maxc), maxc)   # float division, as in C
    sat = torch.trunc(ratio.to(f64) * 255.0).clamp_(0, 255)
    levels = torch.arange(256, dtype=f64)
    s_level, h_level = torch.meshgrid(levels, levels, indexing="ij")
    h6 = h_level * 6.0 / 255.0
    i = torch.floor(h6)
    f = (h6 - i).to(f32)
    fs = (s_level / 255.0).to(f32)
    v_level = torch.arange(256, dtype=f64).view(256, 1)
    p = torch.floor(v_level * (1.0 - (levels / 255.0).to(f32).to(f64)).view(1, 256) + 0.5)
    return {"hue": torch.stack(hue).flatten().to(torch.uint8),             # [case, d1, d2]
            "sat": sat.flatten().to(torch.uint8),                           # [cr, c]
            "p": p.clamp_(0, 255).flatten().to(torch.uint8),                 # [v, s]
            "q": (1.0 - (fs * f).to(f64)).flatten(),                         # [s, h]: float * float, in float
            "t": (1.0 - fs.to(f64) * (1.0 - f.to(f64))).flatten(),           # [s, h]
            "sector": torch.remainder(i[0], 6).to(torch.uint8)}              # [h]


def _hsv_and_rgb_tables(chunk: int = 1 << 20) -> tuple[torch.Tensor, torch.Tensor]:
    """PIL's two conversions for every input, as gather tables (built once per process, in chunks so
    the temporaries stay small): RGB -> HSV for all 2^24 colours (hue and saturation packed in an
    int16; value is the largest channel) and HSV -> RGB for all 2^24 (h, s, v) (packed in an
    int32). 100 MB in all."""
    small = _hue_tables()
    hs_table = torch.empty(1 << 24, dtype=torch.int16)
    rgb_table = torch.empty(1 << 24, dtype=torch.int32)
    for start in range(0, 1 << 24, chunk):
        every = torch.arange(start, start + chunk, dtype=torch.int32)
        r, g, b = every >> 16, (every >> 8) & 255, every & 255
        v = torch.maximum(torch.maximum(r, g), b)
        cr = v - torch.minimum(torch.minimum(r, g), b)
        # PIL's case order: red if it is the largest, else green, else blue
        case = (r != v).to(torch.int32) * (1 + (g != v).to(torch.int32))
        d1 = torch.where(case == 1, v - r, v - g)
        d2 = torch.where(case == 2, v - r, v - b)
        h = small["hue"].take(((case * 256 + d1) * 256 + d2).long()).to(torch.int32)
        s = small["sat"].take((cr * 256 + v).long()).to(torch.int32)
        hs_table[start:start + chunk] = (h * 256 + s - 32768).to(torch.int16)
    # HSV -> RGB over (h, s, v), one h at a time: the sector (the channel order) is a function of h
    v = torch.arange(256, dtype=torch.float64).view(1, 256)
    coef_q = small["q"].view(256, 256).T.unsqueeze(-1)              # (h, s, 1)
    coef_t = small["t"].view(256, 256).T.unsqueeze(-1)
    p = small["p"].view(256, 256).T.to(torch.int32)                  # (s, v)
    vi = torch.arange(256, dtype=torch.int32).view(1, 256).expand(256, 256)
    for hh, k in enumerate(small["sector"].tolist()):
        q = torch.floor(v * coef_q[hh] + 0.5).clamp_(0, 255).to(torch.int32)  # C round() of values >= 0
        t = torch.floor(v * coef_t[hh] + 0.5).clamp_(0, 255).to(torch.int32)
        rc, gc, bc = ((vi, q, p, t)[i] for i in _SECTOR_PICK[k].tolist())
        rgb_table[hh << 16:(hh + 1) << 16] = ((rc << 16) | (gc << 8) | bc).flatten()
    # a grey pixel (s = 0) needs no branch: its p, q and t all equal v
    return hs_table, rgb_table


# which of (v, q, p, t) each channel takes in each of the six sectors of PIL's HSV -> RGB
_SECTOR_PICK = torch.tensor([[0, 3, 2], [1, 0, 2], [2, 0, 3], [2, 1, 0], [3, 2, 0], [0, 2, 1]])
_TABLES: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if device not in _TABLES:
        cpu = torch.device("cpu")
        if cpu not in _TABLES:
            _TABLES[cpu] = _hsv_and_rgb_tables()
        _TABLES[device] = tuple(t.to(device) for t in _TABLES[cpu])
    return _TABLES[device]


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) whole levels -> (N, 3, H, W) int32 PIL ``convert('HSV')``."""
    hs_table, _ = _tables(x.device)
    xi = x.to(torch.int32)
    hs = hs_table.take(((xi[:, 0] << 16) | (xi[:, 1] << 8) | xi[:, 2]).long()).to(torch.int32) + 32768
    return torch.stack([hs >> 8, hs & 255, xi.amax(dim=1)], dim=1)


def hsv_to_rgb(hsv: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """(N, 3, H, W) int32 8-bit H, S, V -> (N, 3, H, W) PIL ``Image.merge('HSV', ...).convert('RGB')``."""
    _, rgb_table = _tables(hsv.device)
    rgb = rgb_table.take(((hsv[:, 0] << 16) | (hsv[:, 1] << 8) | hsv[:, 2]).long())
    return torch.stack([rgb >> 16, (rgb >> 8) & 255, rgb & 255], dim=1).to(dtype)


def hue(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision ``adjust_hue`` on a PIL image: PIL's 8-bit HSV hue shifted by ``trunc(255 factor)``
    (wrapping), back through PIL's HSV -> RGB. (N, 3, H, W) whole levels, factor (N,)."""
    hsv = rgb_to_hsv(x)
    shift = torch.trunc(factor.to(torch.float64) * 255.0).to(torch.int32).view(-1, 1, 1)
    hsv[:, 0] = (hsv[:, 0] + shift) & 255  # modulo 256, negative shifts included
    return hsv_to_rgb(hsv, x.dtype)


_OP_FNS = {"brightness": brightness, "contrast": contrast, "saturation": saturation, "hue": hue}


def jitter_frames(frames: torch.Tensor, order: torch.Tensor, factors: torch.Tensor,
                  active: list[int]) -> torch.Tensor:
    """Per-frame colour jitter in place on ``frames`` (N, 3, H, W), float whole levels.

    ``order`` (N, 4) int: the operation (index into ``OPS``) each frame applies at each position;
    ``factors`` (N, 4): each frame's brightness, contrast, saturation and hue factors (CPU tensors:
    the plan lives on the host, so choosing the frames costs no device sync); ``active``: the
    frames to jitter. Each position k applies each operation once to all its frames.
    """
    if not active:
        return frames
    active_t = torch.as_tensor(active, dtype=torch.int64)
    sub_order = order[active_t]
    for k in range(len(OPS)):
        for op_id, name in enumerate(OPS):
            rows = active_t[sub_order[:, k] == op_id]
            if rows.numel() == 0:
                continue
            idx = rows.to(frames.device, non_blocking=True)
            factor = factors[rows, op_id].to(device=frames.device, dtype=frames.dtype, non_blocking=True)
            frames[idx] = _OP_FNS[name](frames[idx], factor)
    return frames


def grayscale_frames(frames: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """PIL's ``convert('L')`` copied to 3 channels, in place, on the given frames of (N, 3, H, W)."""
    if rows:
        idx = torch.as_tensor(rows, dtype=torch.int64).to(frames.device, non_blocking=True)
        frames[idx] = luma(frames[idx]).expand(-1, 3, -1, -1)
    return frames
