"""``ila-fast bench data``: clips/s of the data backends against an official-style pipeline, side by side.

Every row runs the same SamplePlan (training: segment sampling, multi-scale crop, colour jitter,
grayscale, erasing) over the same generated H.264 videos (B-frames), in DataLoader workers with one
thread each, and reports clips/s and the peak RSS of its workers (VmHWM):

* **official-style**: decord ``VideoReader.get_batch`` then cv2 resizes (short side, crop, input
  size) and numpy colour / normalisation, as the official ILA pipeline does (its colour jitter is
  replaced by our single affine map, which is cheaper, so the ratio is if anything conservative);
* **official as released**: what the released training pipeline does per clip: the file read into
  memory, one decord access per sampled frame (``reader[i]``), the same cv2 resizes, and torchvision's
  ``ColorJitter(0.4, 0.4, 0.2, 0.1)`` / ``Grayscale`` on PIL images frame by frame (new jitter
  parameters for every frame, as there), where the plan jitters / greys the clip;
* **cpu**: the CPU backend (PyAV: seek to the key frame before each frame, skip unneeded
  non-reference frames, drain the decoder after the last frame needed before a seek, open without
  the stream probe's decoding, keep only the crop), ratio against the official-style row at the
  same worker count. "default" is what training on a GPU runs: workers send each crop as decoded
  (uint8 YUV) and the GPU converts, resizes and finishes it. "resized in workers" is what training
  without a GPU runs: workers also convert and resize, and send uint8 clips; the row "finished on
  this CPU" adds the rest of that (colour, normalisation, erasing) in the main process;
* **levers**: the CPU backend with one lever changed at a time (ratio against the CPU default);
* **GOP**: both pipelines on the same videos re-encoded with a key frame every 16 vs 250 frames
  (what ``ila-fast prepare --gop 16`` buys);
* DALI on the CPU (VP9), and on the GPU (NVDEC) with the trainer's consumption rate when a GPU is present.

decord and OpenCV are benchmark-only dependencies: without them the baseline rows say so.
"""
from __future__ import annotations

import dataclasses
import datetime
import io
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch


def _make_data(folder: Path, codec: str, videos: int, frames: int, size: tuple[int, int], gop: int = 32) -> Path:
    from ila_fast.data.synthetic import CLASSES, render_motion, write_video

    ext = {"h264": "mp4", "vp9": "webm"}[codec]
    sub = folder / f"{codec}_{videos}x{frames}_{size[0]}x{size[1]}_gop{gop}"
    lst = sub / "list.txt"
    if lst.is_file():
        return lst
    sub.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(videos):
        label = i % len(CLASSES)
        clip = render_motion(CLASSES[label][1], frames, size[1], size[0], rng)
        write_video(sub / f"v{i:03d}.{ext}", clip, codec=codec, gop=gop)
        lines.append(f"v{i:03d}.{ext} {label}")
    lst.write_text("\n".join(lines) + "\n")
    return lst


def official_style_missing() -> str:
    """'' when decord and OpenCV import, else why the baseline cannot run."""
    missing = []
    for module, package in (("decord", "decord"), ("cv2", "opencv-python-headless")):
        try:
            __import__(module)
        except Exception:  # noqa: BLE001 - a broken wheel raises more than ImportError
            missing.append(package)
    return f"needs {' and '.join(missing)} (pip install {' '.join(missing)})" if missing else ""


class _OfficialStyleClips(torch.utils.data.Dataset):
    """decord get_batch + cv2 resize / crop / resize + numpy colour and normalisation, per clip
    (``released``: decord per frame from the file in memory and torchvision colour on PIL frames)."""

    def __init__(self, plan, paths, input_size, released: bool = False):
        self.plan, self.paths, self.input_size, self.released = plan, paths, input_size, released
        self._jitter = None

    def __len__(self):
        return len(self.plan)

    def __getitem__(self, position):
        import cv2
        import decord
        from ila_fast.data.augment import color_affine, rotate_and_erase

        from ila_fast.config import PIXEL_MEAN, PIXEL_STD

        cv2.setNumThreads(1)
        spec = self.plan.clip(0, position)
        if self.released:
            with open(self.paths[spec.video], "rb") as f:
                reader = decord.VideoReader(io.BytesIO(f.read()), num_threads=1)
            decoded = {i: reader[i].asnumpy() for i in sorted(set(spec.frames))}
            frames = np.stack([decoded[i] for i in spec.frames])
        else:
            reader = decord.VideoReader(self.paths[spec.video], num_threads=1)
            frames = reader.get_batch(list(spec.frames)).asnumpy()  # (T, H, W, 3) uint8 RGB
        h, w = frames.shape[1:3]
        size = self.input_size
        f = round(self.plan.s.resize_ratio * size) / min(w, h)
        x, y, cw, ch = (int(round(v * f)) for v in spec.raw_crop)
        out = []
        for frame in frames:  # short side to 256, the multi-scale crop, then to 224 (cv2 bilinear)
            frame = cv2.resize(frame, (int(w * f + 0.5), int(h * f + 0.5)), interpolation=cv2.INTER_LINEAR)
            out.append(cv2.resize(frame[y:y + ch, x:x + cw], (size, size), interpolation=cv2.INTER_LINEAR))
        if self.released:
            clip = self._released_colour(out, spec.augment).astype(np.float32)
        else:
            clip = np.stack(out).astype(np.float32)
            m, t = color_affine(spec.augment)
            clip = np.clip(clip @ m.T + t, 0, 255)
        clip = (clip - np.asarray(PIXEL_MEAN, np.float32)) / np.asarray(PIXEL_STD, np.float32)
        clip = torch.from_numpy(np.ascontiguousarray(clip.transpose(0, 3, 1, 2)))
        return rotate_and_erase(clip, spec).contiguous(), spec.label

    def _released_colour(self, frames, aug) -> np.ndarray:
        from PIL import Image

        from ila_fast.compat import guard_torchvision
        from ila_fast.data.augment import is_identity_color

        guard_torchvision()
        import torchvision

        if self._jitter is None:
            self._jitter = (torchvision.transforms.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1),
                            torchvision.transforms.Grayscale(num_output_channels=3))
        jitter, grey = self._jitter
        colour = not is_identity_color(dataclasses.replace(aug, grayscale=False))
        if colour:
            frames = [np.asarray(jitter(Image.fromarray(f))) for f in frames]
        if aug.grayscale:
            frames = [np.asarray(grey(Image.fromarray(f))) for f in frames]
        return np.stack(frames)


def _worker_stats(iterator) -> tuple[float | None, float]:
    """(largest peak RSS in MB (VmHWM), total CPU seconds) of a DataLoader iterator's live workers."""
    peaks, cpu = [], 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for worker in getattr(iterator, "_workers", []):
        try:
            for line in Path(f"/proc/{worker.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
            fields = Path(f"/proc/{worker.pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        except OSError:
            pass
    return (max(peaks) if peaks else None), cpu


def _rate(batches, clips_wanted: int, sync=None) -> dict:
    """clips/s (wall, from creating the iterator: worker start included), clips per CPU second (this process
    and its workers: what a worker costs, unaffected by other jobs on a shared machine) and worker peak RSS."""
    start, start_cpu = time.perf_counter(), time.process_time()
    n = 0
    peak, worker_cpu = None, 0.0
    for batch in batches:
        video = batch["video"] if isinstance(batch, dict) else batch[0]
        n += len(video)  # a tensor's first dimension, or a list of RawClips
        if n >= clips_wanted:
            peak, worker_cpu = _worker_stats(batches)
            break
    if sync:
        sync()
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu + worker_cpu
    return {"clips_per_s": n / wall, "clips_per_cpu_s": n / cpu, "worker_peak_mb": peak}


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


# lever -> PyAVDecoder options that differ from the default (threads 1, seek, skip non-reference frames,
# drain, fast open)
LEVERS = {
    "no seek (decode from the start)": {"seek": False},
    "no non-reference skipping": {"skip_nonref": False},
    "no drain (decode on to release the frame)": {"drain": False},
    "no fast open (stream probe decodes)": {"fast_open": False},
    "2 decoder threads": {"threads": 2},
}


class _Finished:
    """The loader's finishing of a backend's batches (``CpuBackend.finish``), here on the CPU; the
    wrapped iterator's workers stay visible to ``_worker_stats``."""

    def __init__(self, backend, raw_batches):
        self.backend, self.raw = backend, raw_batches

    @property
    def _workers(self):
        return getattr(self.raw, "_workers", [])

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        raw = next(self.raw)
        return {"video": self.backend.finish(raw["video"], raw["specs"], "cpu")}


RATIOS = ("vs_official", "vs_released", "vs_cpu_default")


def _median_rows(rounds: list[list[dict]]) -> list[dict]:
    """One row per pipeline from several rounds of the same rows: median rates and ratios (each round's
    ratio compares pipelines measured minutes apart, not the whole run apart), the ratios' range, the
    largest peak RSS."""
    out = []
    for same in zip(*rounds):
        row = dict(same[0], rounds=len(same))
        for key in ("clips_per_s", "clips_per_cpu_s", *RATIOS):
            values = [r[key] for r in same if r.get(key) is not None]
            if values:
                row[key] = float(np.median(values))
                if key in RATIOS:
                    row[key + "_range"] = (min(values), max(values))
        peaks = [r["worker_peak_mb"] for r in same if r.get("worker_peak_mb")]
        row["worker_peak_mb"] = max(peaks) if peaks else None
        out.append(row)
    return out


def _measure(args) -> list[dict]:
    from ila_fast.data.cpu_backend import CpuBackend
    from ila_fast.data.dali_backend import dali_available

    w, h = args.size if isinstance(args.size, tuple) else (int(v) for v in args.size.lower().split("x"))
    folder = Path(args.data)
    workers = [int(x) for x in (args.workers if isinstance(args.workers, list) else args.workers.split(","))]
    gops = [int(x) for x in (args.gops if isinstance(args.gops, list) else str(args.gops).split(","))]
    # every video first: once decord / cv2 (their own FFmpeg builds) are loaded, PyAV's VP9 encoder fails to open
    lists = {gop: _make_data(folder, "h264", args.videos, args.frames, (w, h), gop) for gop in gops}
    vp9_list = _make_data(folder, "vp9", args.videos, args.frames, (w, h), gops[0])
    baseline_missing = official_style_missing()
    if not baseline_missing:  # imported before any timing (in-process rows would pay them; forked workers not)
        from ila_fast.compat import guard_torchvision

        guard_torchvision()
        import cv2  # noqa: F401
        import decord  # noqa: F401
        import torchvision.transforms  # noqa: F401
        from PIL import Image  # noqa: F401
    rows = []
    repeat = max(1, -(-(args.clips + 2 * args.batch_size) // args.videos))

    def cpu_row(plan, paths, ds, nw, label, gop, options=None, transport="raw"):
        backend = CpuBackend(plan, paths, ds.infos, args.input_size, num_workers=nw, decoder="pyav",
                             decoder_options=options, transport=transport)
        return dict(backend="cpu", decoder="pyav", variant=label, codec="h264", gop=gop, workers=nw, device="cpu",
                    **_rate(backend.epoch(0), args.clips))

    def cell(gi, gop, nw, ds, plan, paths) -> list[dict]:
        """The rows of one (GOP, workers) cell: the baselines, the CPU default, and at the first GOP the levers."""
        out, official = [], None
        if baseline_missing:
            out.append(dict(backend="official-style (decord + cv2)", decoder="decord", variant="baseline",
                            codec="h264", gop=gop, workers=nw, device="cpu", clips_per_s=float("nan"),
                            clips_per_cpu_s=float("nan"), skipped=baseline_missing))
        else:
            rates = []
            for name, as_released in (("official-style (decord + cv2)", False),
                                      ("official as released (decord per frame + PIL colour)", True)):
                loader = torch.utils.data.DataLoader(_OfficialStyleClips(plan, paths, args.input_size, as_released),
                                                     batch_size=args.batch_size, num_workers=nw,
                                                     prefetch_factor=4 if nw else None)
                rates.append(_rate(iter(loader), args.clips))
                out.append(dict(backend=name, decoder="decord", variant="baseline", codec="h264", gop=gop,
                                workers=nw, device="cpu", **rates[-1]))
            official, released = rates
        default = None
        for label, transport in (("default (GPU finishes)", "raw"), ("resized in workers", "resized")):
            row = cpu_row(plan, paths, ds, nw, label, gop, transport=transport)
            row["vs_official"] = row["clips_per_cpu_s"] / official["clips_per_cpu_s"] if official else None
            row["vs_released"] = row["clips_per_cpu_s"] / released["clips_per_cpu_s"] if official else None
            out.append(row)
            default = default or row["clips_per_cpu_s"]
        if gi == 0 and nw == max(1, min(x for x in workers if x > 0) if any(workers) else 0):
            backend = CpuBackend(plan, paths, ds.infos, args.input_size, num_workers=nw, decoder="pyav",
                                 transport="resized")
            finished = dict(backend="cpu", decoder="pyav", variant="finished on this CPU", codec="h264",
                            gop=gop, workers=nw, device="cpu", **_rate(_Finished(backend, backend.epoch(0)), args.clips))
            finished["vs_official"] = finished["clips_per_cpu_s"] / official["clips_per_cpu_s"] if official else None
            out.append(finished)
            for label, options in LEVERS.items():
                lever = cpu_row(plan, paths, ds, nw, label, gop, options)
                lever["vs_cpu_default"] = lever["clips_per_cpu_s"] / default
                out.append(lever)
        return out

    for gi, gop in enumerate(gops):
        ds, plan, _ = _plan(lists[gop], args, repeat)
        paths = [ds.full_path(i) for i in range(len(ds))]
        for nw in workers:
            # rounds alternate the pipelines, so a machine that slows down for a while skews no one row
            rounds = getattr(args, "rounds", 1)
            rows.extend(_median_rows([cell(gi, gop, nw, ds, plan, paths) for _ in range(rounds)]))
    if dali_available():
        from ila_fast.data.dali_backend import DaliBackend

        ds, plan, _ = _plan(vp9_list, args, repeat)
        paths = [ds.full_path(i) for i in range(len(ds))]
        for nw in [x for x in workers if x > 0] or [1]:
            backend = DaliBackend(plan, paths, ds.infos, args.input_size, args.frames_per_clip, device="cpu",
                                  num_threads=nw)
            rows.append(dict(backend="dali", decoder="ffmpeg (cpu)", variant="default", codec="vp9", gop=gops[0],
                             workers=nw, device="cpu", **_rate(backend.epoch(0), args.clips)))
        if torch.cuda.is_available():
            for codec in ("h264", "vp9"):
                ds, plan, _ = _plan(lists[gops[0]] if codec == "h264" else vp9_list, args, repeat * 4)
                paths = [ds.full_path(i) for i in range(len(ds))]
                for threads in (2, 4):
                    backend = DaliBackend(plan, paths, ds.infos, args.input_size, args.frames_per_clip,
                                          device="mixed", num_threads=threads)
                    rows.append(dict(backend="dali", decoder="nvdec (mixed)", variant="default", codec=codec,
                                     gop=gops[0], workers=threads, device=torch.cuda.get_device_name(),
                                     **_rate(backend.epoch(0), args.clips * 4, sync=torch.cuda.synchronize)))
    else:
        rows.append(dict(backend="dali", decoder="-", variant="-", codec="-", gop="-", workers=0, device="-",
                         clips_per_s=float("nan"), clips_per_cpu_s=float("nan"),
                         skipped="not installed (pip install 'ila-fast[dali]')"))
    if torch.cuda.is_available() and not args.no_trainer:
        try:
            rate = _trainer_rate(args)
            rows.append(dict(backend="trainer (ILA ViT-B/16, bf16 fwd+bwd)", decoder="-", variant="-", codec="-",
                             gop="-", workers=0, device=torch.cuda.get_device_name(), clips_per_s=rate,
                             clips_per_cpu_s=float("nan")))
        except Exception as e:  # noqa: BLE001 - report, keep the data rows
            print(f"trainer rate not measured: {type(e).__name__}: {e}")
    return rows


def format_table(rows: list[dict], args) -> str:
    size = args.size if isinstance(args.size, str) else "x".join(map(str, args.size))
    head = (f"clips/s of {args.frames_per_clip}x{args.input_size} training clips (batch {args.batch_size}; "
            f"videos {size}, {args.frames} frames, H.264 with B-frames; {os.cpu_count()} CPU cores, "
            "one thread per worker)")
    lines = [head, "Ratios compare clips per CPU second (this process and its workers), which other jobs on a "
                   "shared machine skew less than wall time; clips/s is wall time, worker start included. "
                   f"Each row: the median of {getattr(args, 'rounds', 1)} round(s) that alternate the pipelines "
                   "(the ratios' range in brackets).", "",
             "| backend | variant | codec | GOP | workers | clips/s | clips/CPU-s | ratio | worker peak RSS |",
             "|---|---|---|---|---|---|---|---|---|"]
    def spread(r, key):
        low, high = r.get(key + "_range") or (None, None)
        return f" ({low:.2f}-{high:.2f})" if low is not None and r.get("rounds", 1) > 1 else ""

    for r in rows:
        key = "vs_official" if r.get("vs_official") is not None else "vs_cpu_default"
        ratio = r.get(key)
        kind = " vs official-style" if key == "vs_official" else " vs cpu default" if ratio else ""
        kind = spread(r, key) + kind
        if r.get("vs_released") is not None:
            kind += f", {r['vs_released']:.2f}x{spread(r, 'vs_released')} vs as released"
        ok = r["clips_per_s"] == r["clips_per_s"]
        rate = f"{r['clips_per_s']:.1f}" if ok else f"skipped: {r.get('skipped')}"
        per_cpu = f"{r['clips_per_cpu_s']:.1f}" if r.get("clips_per_cpu_s") == r.get("clips_per_cpu_s") else "-"
        peak = f"{r['worker_peak_mb']:.0f} MB" if r.get("worker_peak_mb") else "-"
        lines.append(f"| {r['backend']} | {r['variant']} | {r['codec']} | {r['gop']} | {r['workers']} | {rate} | "
                     f"{per_cpu} | {'' if ratio is None else f'{ratio:.2f}x{kind}'} | {peak} |")
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

        meta = {"command": "ila-fast bench data " + " ".join(
                    f"--{k.replace('_', '-')} {v if not isinstance(v, (list, tuple)) else ','.join(map(str, v))}"
                    for k, v in vars(args).items()
                    if not k.startswith("_") and k not in ("command", "bench", "bench_command", "func", "debug")
                    and v not in (None, False)),
                "date": datetime.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
                "cpu_cores": os.cpu_count(), "torch": torch.__version__, "pyav": av.__version__,
                "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
        meta["load_average_after"] = os.getloadavg()  # other jobs on a shared machine skew the rates
        try:
            import subprocess

            meta["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                            cwd=Path(__file__).parent, timeout=10).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            meta["commit"] = None
        for module in ("decord", "cv2", "torchcodec"):
            try:
                meta[module] = __import__(module).__version__
            except Exception:  # noqa: BLE001 - optional
                pass
        if dali_available():
            import nvidia.dali

            meta["dali"] = nvidia.dali.__version__
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save).write_text(json.dumps({"meta": meta, "rows": rows, "table": table}, indent=1))
    return 0
