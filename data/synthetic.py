"""``ila-fast make-synthetic``: a small dataset of real video files that only motion separates.

Each video shows a randomly textured square over a random static background. Its class is
how the square moves: left / right, up / down, clockwise / anticlockwise, growing / shrinking.
The second class of each pair is made by drawing the first class's motion and playing the
frames backwards, so the two classes of a pair have exactly the same distribution of single
frames: a model that looks at frames one by one (or pools them in any order) cannot tell the
pair apart, and scores at most 50% (4 of 8 classes in pairs). Only temporal order helps.

Written in the official list format (docs/specification.md#2-data-format): ``train.txt`` / ``val.txt`` with
``videos/<split>/<name>.<ext> <label>`` lines and ``labels.csv`` (``id,name``), H.264 ``.mp4``
by default or VP9 ``.webm`` (``--codec vp9``, the codec DALI's CPU decoder accepts).
"""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np

# class id -> (name, motion, reversed?)
CLASSES = [
    ("moving left", "translate_x", True), ("moving right", "translate_x", False),
    ("moving up", "translate_y", True), ("moving down", "translate_y", False),
    ("rotating clockwise", "rotate", False), ("rotating anticlockwise", "rotate", True),
    ("growing", "scale", False), ("shrinking", "scale", True),
]
CODECS = {"h264": ("libx264", "mp4", {"preset": "veryfast", "crf": "20"}),  # with B-frames, as most videos
          "vp9": ("libvpx-vp9", "webm", {"deadline": "realtime", "cpu-used": "8", "crf": "24", "b:v": "0",
                                         "row-mt": "1"}),
          "mpeg4": ("mpeg4", "mp4", {"qscale": "3"}),
          "mjpeg": ("mjpeg", "avi", {"qscale": "3"})}


def write_video(path: str | Path, frames: np.ndarray, codec: str = "h264", fps: float = 25.0, gop: int = 8,
                pix_fmt: str | None = None, pts: list[int] | None = None,
                rotation: int | None = None) -> Path:
    """Write (T, H, W, 3) uint8 RGB frames to a real video file with PyAV.

    ``gop`` sets a closed GOP with a key frame every ``gop`` frames; ``pts`` (in 1/1000 s)
    gives a variable frame rate; ``rotation`` stores a display rotation (degrees).
    """
    import av  # noqa: PLC0415

    path = Path(path)
    encoder, _, options = CODECS[codec]
    options = dict(options, g=str(gop))
    if codec == "h264":
        # mbtree=0: with x264's macroblock-tree rate control the same frames encoded differently from
        # run to run (1 file in 4, pixel differences up to 66 levels), and generated data must be
        # reproducible; without it 12 of 12 encodes of the same clips were byte-identical.
        options["x264-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0:mbtree=0"
    t, h, w, _ = frames.shape
    if pix_fmt is None:
        pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(encoder, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.options = options
        if pts is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
            stream.time_base = Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(rotation)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = int(pts[i]), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random colour field plus fine noise, static for the whole video."""
    coarse = rng.uniform(0, 255, (3, 4, 4)).astype(np.float32)
    ys, xs = np.linspace(0, 3, h), np.linspace(0, 3, w)
    y0, x0 = np.floor(ys).astype(int).clip(0, 2), np.floor(xs).astype(int).clip(0, 2)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    field = (coarse[:, y0][:, :, x0] * (1 - fy) * (1 - fx) + coarse[:, y0 + 1][:, :, x0] * fy * (1 - fx)
             + coarse[:, y0][:, :, x0 + 1] * (1 - fy) * fx + coarse[:, y0 + 1][:, :, x0 + 1] * fy * fx)
    field = field.transpose(1, 2, 0) * 0.6 + rng.normal(0, 12, (h, w, 3))
    return field.clip(0, 255)


def render_motion(motion: str, frames: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(T, H, W, 3) uint8: a textured square moving by ``motion`` (in its 'forward' direction)."""
    bg = _background(rng, h, w)
    tex_n = 16
    texture = rng.uniform(0, 255, (tex_n, tex_n, 3))
    texture[: tex_n // 4] = rng.uniform(0, 255, 3)  # a coloured band: makes rotation visible
    side = min(h, w) * rng.uniform(0.3, 0.4)
    cx, cy = w / 2 + rng.uniform(-0.1, 0.1) * w, h / 2 + rng.uniform(-0.1, 0.1) * h
    angle0 = rng.uniform(0, 2 * math.pi)
    travel = rng.uniform(0.25, 0.4)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    out = np.empty((frames, h, w, 3), np.uint8)
    for t in range(frames):
        u = t / max(1, frames - 1) - 0.5  # -0.5 .. 0.5
        x, y, angle, size = cx, cy, angle0, side
        if motion == "translate_x":
            x = cx + u * travel * w * 1.6
        elif motion == "translate_y":
            y = cy + u * travel * h * 1.6
        elif motion == "rotate":
            angle = angle0 + u * math.pi * 1.2
        elif motion == "scale":
            size = side * (1 + u * 1.2)
        c, s = math.cos(angle), math.sin(angle)
        lx = ((xx - x) * c + (yy - y) * s) / size + 0.5  # square-local coordinates in 0..1
        ly = (-(xx - x) * s + (yy - y) * c) / size + 0.5
        inside = (lx >= 0) & (lx < 1) & (ly >= 0) & (ly < 1)
        ti = (ly.clip(0, 0.999) * tex_n).astype(int), (lx.clip(0, 0.999) * tex_n).astype(int)
        frame = np.where(inside[..., None], texture[ti], bg)
        out[t] = frame.clip(0, 255).astype(np.uint8)
    return out


def make_synthetic(out: str | Path, codec: str = "h264", train_per_class: int = 12, val_per_class: int = 4,
                   frames: int = 32, size: tuple[int, int] = (128, 96), seed: int = 0,
                   fps: float = 25.0) -> dict:
    """Write the dataset; returns the paths of the list files and the label CSV."""
    out = Path(out)
    ext = CODECS[codec][1]
    w, h = size
    rng = np.random.default_rng(seed)
    (out / "labels.csv").parent.mkdir(parents=True, exist_ok=True)
    with open(out / "labels.csv", "w") as f:
        f.write("id,name\n")
        for i, (name, _, _) in enumerate(CLASSES):
            f.write(f"{i},{name}\n")
    lists = {}
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        folder = out / "videos" / split
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for k in range(per_class):
            for label, (name, motion, backwards) in enumerate(CLASSES):
                clip = render_motion(motion, frames, h, w, rng)
                if backwards:
                    clip = clip[::-1]
                rel = f"videos/{split}/{name.replace(' ', '_')}_{k:04d}.{ext}"
                write_video(out / rel, clip, codec=codec, fps=fps)
                lines.append(f"{rel} {label}")
        order = rng.permutation(len(lines))
        (out / f"{split}.txt").write_text("".join(lines[i] + "\n" for i in order))
        lists[split] = out / f"{split}.txt"
    return {"root": out, "train": lists["train"], "val": lists["val"], "labels": out / "labels.csv"}
