"""A straightforward rendering of the official recipe's augmentation (docs/recipe.md), for the
recipe tests: torchvision's ColorJitter / Grayscale semantics written with PIL itself, one frame at
a time (torchvision cannot be imported with the CPU torch, so its PIL functions are restated here:
``adjust_brightness / contrast / saturation`` are PIL's ImageEnhance, ``adjust_hue`` shifts PIL's
8-bit HSV hue by ``int(255 * factor)`` modulo 256)."""
import numpy as np
from PIL import Image, ImageEnhance


def pil_hue(img: Image.Image, factor: float) -> Image.Image:
    h, s, v = img.convert("HSV").split()
    shifted = (np.asarray(h, dtype=np.int64) + int(factor * 255)) % 256
    return Image.merge("HSV", (Image.fromarray(shifted.astype(np.uint8), "L"), s, v)).convert("RGB")


def pil_jitter_frame(frame: np.ndarray, order, brightness, contrast, saturation, hue) -> np.ndarray:
    """(H, W, 3) uint8 -> torchvision's ColorJitter with these factors, applied in ``order``."""
    img = Image.fromarray(frame)
    for op in order:
        if op == 0:
            img = ImageEnhance.Brightness(img).enhance(brightness)
        elif op == 1:
            img = ImageEnhance.Contrast(img).enhance(contrast)
        elif op == 2:
            img = ImageEnhance.Color(img).enhance(saturation)
        else:
            img = pil_hue(img, hue)
    return np.asarray(img)


def pil_gray_frame(frame: np.ndarray) -> np.ndarray:
    """torchvision Grayscale(3) on a PIL image: convert('L') copied to three channels."""
    grey = np.asarray(Image.fromarray(frame).convert("L"))
    return np.repeat(grey[..., None], 3, axis=-1)


def pil_color_clip(clip: np.ndarray, aug) -> np.ndarray:
    """(T, H, W, 3) uint8 and a "per_frame" AugmentParams -> the official ColorJitter + GrayScale."""
    out = []
    for t, frame in enumerate(clip):
        if aug.frame_jitter:
            fj = aug.frame_jitter[t]
            frame = pil_jitter_frame(frame, fj.order, fj.brightness, fj.contrast, fj.saturation, fj.hue)
        if aug.grayscale:
            frame = pil_gray_frame(frame)
        out.append(frame)
    return np.stack(out)
