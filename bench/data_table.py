"""``ila-fast bench data``: clips/s of the data backends, side by side.

Rows: a naive baseline (decode the whole video with PyAV, then sample), the CPU backend with
PyAV (and torchcodec where installed) by worker count, DALI on the CPU (VP9), and DALI on the
GPU (NVDEC, H.264) when a GPU is present, where the rate an ILA ViT-B/16 trainer consumes
8x224 clips is measured too (goal: DALI >= 1.5x that rate). All rows run the same SamplePlan
(training mode: segment sampling, multi-scale crop, colour jitter, grayscale, erasing).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _make_data(folder: Path, codec: str, videos: int, frames: int, size: tuple[int, int]) -> Path:
    from ila_fast.data.synthetic import CLASSES, render_motion, write_video

    ext = {"h264": "mp4", "vp9": "webm"}[codec]
    sub = folder / f"{codec}_{videos}x{frames}_{size[0]}x{size[1]}"
    lst = sub / "list.txt"
    if lst.is_file():
        return lst
    sub.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(videos):
        label = i % len(CLASSES)
        clip = render_motion(CLASSES[label][1], frames, size[1], size[0], rng)
        write_video(sub / f"v{i:03d}.{ext}", clip, codec=codec, gop=32)
        lines.append(f"v{i:03d}.{ext} {label}")
    lst.write_text("\n".join(lines) + "\n")
    return lst


class _NaiveClips(torch.utils.data.Dataset):
    """The baseline: decode every frame of the video, then take the plan's frames."""

    def __init__(self, plan, paths, input_size):
        self.plan, self.paths, self.input_size = plan, paths, input_size

    def __len__(self):
        return len(self.plan)

    def __getitem__(self, position):
        from ila_fast.data.augment import transform_clip
        from ila_fast.data.decode import decode_all_then_sample

        spec = self.plan.clip(0, position)
        frames = decode_all_then_sample(self.paths[spec.video], spec.frames)
        return transform_clip(frames, spec, self.input_size), spec.label


def _rate(batches, clips_wanted: int, sync=None) -> float:
    """Clips/s from creating the iterator (worker / pipeline start included) to ``clips_wanted`` clips."""
    start = time.perf_counter()
    n = 0
    for batch in batches:
        video = batch["video"] if isinstance(batch, dict) else batch[0]
        n += video.shape[0]
        if n >= clips_wanted:
            break
    if sync:
        sync()
    return n / (time.perf_counter() - start)


def _plan(list_path: Path, args, repeat: int):
    from ila_fast.data.dataset import VideoDataset
    from ila_fast.data.plan import PlanSettings, plan_for_dataset

    ds = VideoDataset.load(list_path, list_path.parent)
    n = len(ds)
    # repeat the videos so an epoch is long enough to time (plans index the dataset)
    ds.entries, ds.infos = ds.entries * repeat, ds.infos * repeat
    settings = PlanSettings(frames=args.frames_per_clip, input_size=args.input_size, batch_size=args.batch_size)
    plan = plan_for_dataset(ds, settings, "train")
    return ds, plan, n


def _trainer_rate(args) -> float | None:
    """Clips/s an ILA ViT-B/16 (8x224) consumes in a bf16 training step on this GPU."""
    from ila_fast.config import ModelConfig
    from ila_fast.model import ILAModel

    cfg = ModelConfig(arch="ViT-B/16", dataset="ssv2", frames=args.frames_per_clip, input_size=args.input_size)
    model = ILAModel(cfg).cuda()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    x = torch.randn(args.batch_size, cfg.frames, 3, cfg.input_size, cfg.input_size, device="cuda")
    y = torch.randint(0, cfg.num_classes, (args.batch_size,), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(x)
            loss = torch.nn.functional.cross_entropy(out.logits.float(), y) + out.aux_loss.float()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    start, iters = time.perf_counter(), 10
    for _ in range(iters):
        step()
    torch.cuda.synchronize()
    return iters * args.batch_size / (time.perf_counter() - start)


def measure(args) -> list[dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread per loading process, as DataLoader workers use
    try:
        return _measure(args)
    finally:
        torch.set_num_threads(threads)


def _measure(args) -> list[dict]:
    from ila_fast.data.cpu_backend import CpuBackend
    from ila_fast.data.dali_backend import dali_available
    from ila_fast.data.decode import torchcodec_available

    w, h = (int(v) for v in args.size.lower().split("x"))
    folder = Path(args.data)
    workers = [int(x) for x in args.workers.split(",") if x != ""]
    rows = []
    repeat = max(1, -(-(args.clips + 2 * args.batch_size) // args.videos))
    lists = {codec: _make_data(folder, codec, args.videos, args.frames, (w, h)) for codec in ("h264", "vp9")}
    naive = {}
    for codec, lst in lists.items():
        ds, plan, _ = _plan(lst, args, repeat)
        paths = [ds.full_path(i) for i in range(len(ds))]
        for nw in workers:
            loader = torch.utils.data.DataLoader(_NaiveClips(plan, paths, args.input_size),
                                                 batch_size=args.batch_size, num_workers=nw,
                                                 prefetch_factor=4 if nw else None)
            rate = _rate(loader, args.clips)
            naive[(codec, nw)] = rate
            rows.append(dict(backend="naive (decode all, then sample)", decoder="pyav", codec=codec, workers=nw,
                             device="cpu", clips_per_s=rate))
        decoders = ["pyav"] + (["torchcodec"] if torchcodec_available() else [])
        for dec in decoders:
            for nw in workers:
                backend = CpuBackend(plan, paths, ds.infos, args.input_size, num_workers=nw, decoder=dec)
                rate = _rate(backend.epoch(0), args.clips)
                rows.append(dict(backend="cpu", decoder=dec, codec=codec, workers=nw, device="cpu", clips_per_s=rate,
                                 vs_naive=rate / naive[(codec, nw)]))
    if dali_available():
        from ila_fast.data.dali_backend import DaliBackend

        ds, plan, _ = _plan(lists["vp9"], args, repeat)
        paths = [ds.full_path(i) for i in range(len(ds))]
        for nw in [x for x in workers if x > 0] or [1]:
            backend = DaliBackend(plan, paths, ds.infos, args.input_size, args.frames_per_clip, device="cpu",
                                  num_threads=nw)
            rate = _rate(backend.epoch(0), args.clips)
            rows.append(dict(backend="dali", decoder="ffmpeg (cpu)", codec="vp9", workers=nw, device="cpu",
                             clips_per_s=rate, vs_naive=rate / naive.get(("vp9", nw), float("nan"))))
        if torch.cuda.is_available():
            for codec in ("h264", "vp9"):
                ds, plan, _ = _plan(lists[codec], args, repeat * 4)
                paths = [ds.full_path(i) for i in range(len(ds))]
                for threads in (2, 4):
                    backend = DaliBackend(plan, paths, ds.infos, args.input_size, args.frames_per_clip,
                                          device="mixed", num_threads=threads)
                    rate = _rate(backend.epoch(0), args.clips * 4, sync=torch.cuda.synchronize)
                    rows.append(dict(backend="dali", decoder="nvdec (mixed)", codec=codec, workers=threads,
                                     device=torch.cuda.get_device_name(), clips_per_s=rate,
                                     vs_naive=rate / naive.get((codec, max(workers)), float("nan"))))
    else:
        rows.append(dict(backend="dali", decoder="not installed (pip install 'ila-fast[dali]')", codec="-",
                         workers=0, device="-", clips_per_s=float("nan")))
    if torch.cuda.is_available() and not args.no_trainer:
        try:
            rate = _trainer_rate(args)
            rows.append(dict(backend="trainer (ILA ViT-B/16, bf16 fwd+bwd)", decoder="-", codec="-", workers=0,
                             device=torch.cuda.get_device_name(), clips_per_s=rate))
        except Exception as e:  # noqa: BLE001 - report, keep the data rows
            print(f"trainer rate not measured: {type(e).__name__}: {e}")
    return rows


def format_table(rows: list[dict], args) -> str:
    head = (f"clips/s of {args.frames_per_clip}x{args.input_size} training clips (batch {args.batch_size}; "
            f"videos {args.size}, {args.frames} frames, GOP 32; {os.cpu_count()} CPU cores)")
    lines = [head, "", "| backend | decoder | codec | workers | device | clips/s | vs naive |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = r.get("vs_naive")
        lines.append(f"| {r['backend']} | {r['decoder']} | {r['codec']} | {r['workers']} | {r['device']} | "
                     f"{r['clips_per_s']:.1f} | {'' if ratio is None else f'{ratio:.2f}x'} |")
    trainer = [r for r in rows if r["backend"].startswith("trainer")]
    gpu = [r for r in rows if r["decoder"] == "nvdec (mixed)" and r["codec"] == "h264"]
    if trainer and gpu:
        best = max(r["clips_per_s"] for r in gpu)
        lines.append(f"\nDALI GPU / trainer consumption: {best / trainer[0]['clips_per_s']:.2f}x (goal >= 1.5x)")
    return "\n".join(lines)


def run(args) -> int:
    rows = measure(args)
    table = format_table(rows, args)
    print(table)
    if args.save:
        import av
        from ila_fast.data.dali_backend import dali_available

        meta = {"command": "ila-fast bench data " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in
                                                               vars(args).items() if not k.startswith("_")
                                                               and k not in ("command", "bench") and v not in (None, False)),
                "date": datetime.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
                "cpu_cores": os.cpu_count(), "torch": torch.__version__, "pyav": av.__version__,
                "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
        meta["load_average_after"] = os.getloadavg()  # other jobs on a shared machine skew the rates
        if dali_available():
            import nvidia.dali

            meta["dali"] = nvidia.dali.__version__
        try:
            import torchcodec

            meta["torchcodec"] = torchcodec.__version__
        except Exception:  # noqa: BLE001 - optional
            pass
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save).write_text(json.dumps({"meta": meta, "rows": rows, "table": table}, indent=1))
    return 0
