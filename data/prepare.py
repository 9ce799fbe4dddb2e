"""``ila-fast prepare SRC_LIST DST_DIR``: re-encode a dataset so that it loads fast.

Each listed video becomes ``DST_DIR/<its relative path>``, ending in ``.mp4`` (``.webm`` for VP9): short side
scaled to ``short_side`` (never up), a key frame every ``gop`` frames (closed GOPs, so a clip
decodes from the nearest key frame), constant frame rate, yuv420p, H.264 by default (VP9 for
DALI's CPU decoder). Frame i of the copy is frame i of the source by the frame-index rule (the
i-th frame FFmpeg outputs decoding from the start), so sample plans mean the same frames; the
display rotation is kept as metadata, audio is dropped.

Runs ``jobs`` processes; resumable (a finished copy is skipped: copies are written under a
temporary name and renamed when complete); writes ``DST_DIR/<list name>`` naming the copies and
``DST_DIR/<list name>.prepare.json`` with every file it could not read and why.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

log = logging.getLogger("ila_fast.data")

ENCODERS = {"h264": ("libx264", ".mp4"), "vp9": ("libvpx-vp9", ".webm")}


@dataclass(frozen=True)
class PrepareSettings:
    short_side: int = 320
    gop: int = 16
    codec: str = "h264"
    crf: int = 23


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """Scaled (width, height), short side ``short_side`` (never upscaled), both even."""
    f = min(1.0, short_side / min(width, height))
    return max(2, round(width * f / 2) * 2), max(2, round(height * f / 2) * 2)


def _encoder_options(settings: PrepareSettings) -> dict:
    g = str(settings.gop)
    if settings.codec == "h264":
        return {"preset": "veryfast", "crf": str(settings.crf), "g": g,
                "x264-params": f"keyint={g}:min-keyint={g}:scenecut=0:open-gop=0"}
    return {"deadline": "good", "cpu-used": "5", "crf": str(settings.crf + 8), "b:v": "0", "g": g,
            "keyint_min": g, "row-mt": "1"}


def transcode(src: str, dst: str, settings: PrepareSettings) -> dict:
    """Re-encode one video; returns {"frames", "size"} or raises with the reason."""
    import av  # noqa: PLC0415

    from .probe import probe_video  # noqa: PLC0415

    info = probe_video(src)
    if info.bad:
        raise ValueError(f"{info.bad}: {info.detail}")
    width, height = output_size(info.width, info.height, settings.short_side)
    fps = Fraction(info.fps).limit_denominator(1001) if info.fps > 0 else Fraction(25)
    encoder, _ = ENCODERS[settings.codec]
    tmp = Path(dst).with_name(Path(dst).name + ".part")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with av.open(src, metadata_errors="ignore") as inp, av.open(str(tmp), "w", format=Path(dst).suffix[1:]) as out:
        stream_in = inp.streams[info.stream]
        stream_in.thread_count = 1
        stream = out.add_stream(encoder, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = _encoder_options(settings)
        stream.codec_context.time_base = 1 / fps
        if info.rotation:
            stream.set_display_rotation(info.rotation)
        for frame in inp.decode(stream_in):  # every output frame, in order: the frame-index rule
            scaled = frame.reformat(width=width, height=height, format="yuv420p", interpolation="AREA")
            scaled.pts, scaled.time_base = written, 1 / fps
            scaled.pict_type = av.video.frame.PictureType.NONE  # the source's key frames would force extra ones
            for packet in stream.encode(scaled):
                out.mux(packet)
            written += 1
        for packet in stream.encode():
            out.mux(packet)
    if written != info.num_frames:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"decode_error: decoded {written} frames, the probe counted {info.num_frames}")
    os.replace(tmp, dst)
    return {"frames": written, "size": [width, height]}


def _job(args) -> tuple[int, str | None, dict | None]:
    i, src, dst, settings = args
    try:
        return i, None, transcode(src, dst, settings)
    except Exception as e:  # noqa: BLE001 - any failure is reported, the others go on
        return i, f"{type(e).__name__}: {str(e)[:300]}" if not isinstance(e, ValueError) else str(e)[:300], None


def prepare(src_list: str | os.PathLike, dst_dir: str | os.PathLike, root: str | os.PathLike | None = None,
            settings: PrepareSettings = PrepareSettings(), jobs: int = 1) -> dict:
    """Re-encode every video of ``src_list`` into ``dst_dir``; returns the report (also written)."""
    from .dataset import read_list  # noqa: PLC0415

    if settings.codec not in ENCODERS:
        raise ValueError(f"codec {settings.codec!r} is not one of {sorted(ENCODERS)}")
    src_list, dst_dir = Path(src_list), Path(dst_dir)
    root = Path(root) if root is not None else src_list.parent
    entries = read_list(src_list, root)
    _, ext = ENCODERS[settings.codec]
    # a.mp4 -> a.mp4, a.avi -> a.avi.mp4: distinct sources never share a copy
    targets = [dst_dir / (e.path if e.path.endswith(ext) else e.path + ext) for e in entries]
    if len(set(targets)) != len(targets):
        raise ValueError(f"{src_list}: a video is listed twice; each copy must have its own name")
    todo = [(i, str(root / e.path), str(targets[i]), settings) for i, e in enumerate(entries)
            if not targets[i].is_file()]
    done = len(entries) - len(todo)
    failed: dict[int, str] = {}
    start = time.perf_counter()
    if todo:
        log.info("prepare: %d videos to re-encode (%d already done), %d jobs", len(todo), done, jobs)
        if jobs > 1:
            # spawned, not forked: a forked worker inherits the parent's FFmpeg state (swscale's slice
            # threads, whose condition variables then wait for threads the child does not have: a
            # hang seen in CI when the parent had converted frames before)
            with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                results = list(pool.map(_job, todo, chunksize=1))
        else:
            results = [_job(t) for t in todo]
        for i, error, _ in results:
            if error is not None:
                failed[i] = error
    dst_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"{targets[i].relative_to(dst_dir)} {e.label}" for i, e in enumerate(entries) if i not in failed]
    (dst_dir / src_list.name).write_text("\n".join(lines) + ("\n" if lines else ""))
    report = {"source_list": str(src_list), "list": str(dst_dir / src_list.name), "videos": len(entries),
              "skipped_done": done, "encoded": len(todo) - len(failed), "failed": len(failed),
              "settings": settings.__dict__, "seconds": round(time.perf_counter() - start, 2),
              "could_not_read": [{"line": entries[i].line, "path": entries[i].path, "reason": why}
                                 for i, why in sorted(failed.items())]}
    (dst_dir / (src_list.name + ".prepare.json")).write_text(json.dumps(report, indent=1))
    return report


def run(args) -> int:
    settings = PrepareSettings(short_side=args.short_side, gop=args.gop, codec=args.codec, crf=args.crf)
    report = prepare(args.src_list, args.dst_dir, args.root, settings, jobs=args.jobs)
    print(f"prepare: {report['encoded']} encoded, {report['skipped_done']} already done, {report['failed']} "
          f"could not be read ({report['seconds']} s); list: {report['list']}")
    for bad in report["could_not_read"][:10]:
        print(f"  line {bad['line']}: {bad['path']}: {bad['reason']}")
    if report["failed"] > 10:
        print(f"  ... see {report['list']}.prepare.json")
    return 0
