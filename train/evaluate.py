"""Evaluation: every video scored exactly once, on any number of ranks.

    result = evaluate(model, loader, num_classes, env=env, class_names=names)
    print(format_table(result)); Path("eval.json").write_text(result.to_json())

``loader`` is an ``ila_fast.data`` VideoLoader in mode "val" (1 view per video) or "test"
(``data.test_clips`` x ``data.test_crops`` views). A video's score is its softmax summed over
its views (docs/recipe.md). Each rank adds its views into a dense (videos, classes) table and
one all-reduce sums the tables, so views of a video may lie in any batch on any rank and no
sample is dropped or padded. A sample the data pipeline substituted for a bad video (its
``ClipSpec.skipped`` is set) is discarded, so the replacement is not counted twice; the bad
video is listed and counted instead, and ``top1_listed`` scores it as a miss.

Under FSDP the forward holds collectives, so every rank calls the model equally often: ranks
with fewer batches run forwards on a dummy clip and discard them.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

MAX_CONFUSION_CLASSES = 50  # larger confusion matrices are unreadable: list the worst pairs instead


@dataclass
class EvalResult:
    """Totals, per class and per video. Accuracies are fractions in [0, 1] over the scored videos."""
    top1: float
    top5: float
    mean_class_acc: float
    top1_listed: float             # bad videos counted as misses: correct / listed
    scored: int                    # videos scored (every view seen)
    listed: int                    # videos in the list; listed == scored + len(bad)
    views: int                     # views per video
    bad: list[dict]                # {"index", "path", "reason", "detail"}
    per_class: list[dict]          # {"class", "name", "videos", "top1", "top5"}
    per_video: list[dict]          # {"index", "path", "label", "top5": [[class, mean score], ...]}
    confusion: np.ndarray = field(repr=False)  # (K, K) int64: rows true class, columns top-1 class
    class_names: list[str] | None = None
    # every listed video's softmax summed over its views, (listed, K) float64 in list order; NaN rows:
    # bad videos. `ila-fast eval --save-scores` writes it; `ila-fast ensemble` adds such tables.
    scores: np.ndarray | None = field(default=None, repr=False)
    paths: list[str] | None = field(default=None, repr=False)   # per row
    labels: list[int] | None = field(default=None, repr=False)  # per row

    def to_dict(self) -> dict:
        k = self.confusion.shape[0]
        out = {
            "top1": self.top1, "top5": self.top5, "mean_class_acc": self.mean_class_acc,
            "top1_listed": self.top1_listed, "scored": self.scored, "listed": self.listed,
            "bad_videos": len(self.bad), "views_per_video": self.views, "num_classes": k,
            "bad": self.bad, "per_class": self.per_class, "most_confused": most_confused(self),
            "per_video": self.per_video,
        }
        if k <= MAX_CONFUSION_CLASSES:
            out["confusion"] = self.confusion.tolist()
        return out

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def name(self, k: int) -> str:
        return self.class_names[k] if self.class_names else str(k)


def _rank_world(env) -> tuple[int, int]:
    if env is not None:
        return int(env.rank), int(env.world)
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _forward(model, video: torch.Tensor, autocast_dtype) -> torch.Tensor:
    ctx = (torch.autocast(video.device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else contextlib.nullcontext())
    with ctx:
        out = model(video)
    return getattr(out, "logits", out)


def evaluate(model: torch.nn.Module, loader, num_classes: int, env=None, class_names: list[str] | None = None,
             autocast_dtype: torch.dtype | None = None, progress: bool = False) -> EvalResult:
    """Score every video of ``loader``'s list once (all ranks together); every rank gets the result.

    The model is put in eval mode (its previous mode is restored) and run under ``torch.no_grad``,
    in ``autocast_dtype`` when given; ``progress`` shows a bar (pass it on one rank). ``env`` (a
    DistEnv) or an initialised process group gives the rank and world size; the loader must have
    been built for the same ones.
    """
    rank, world = _rank_world(env)
    plan = loader.plan
    if (plan.rank, plan.world) != (rank, world):
        raise ValueError(f"evaluate: the loader was built for rank {plan.rank} of {plan.world}, "
                         f"this process is rank {rank} of {world}")
    if plan.mode == "train":
        raise ValueError("evaluate: the loader is in 'train' mode; build it with mode='val' or 'test'")
    n, views = len(plan.labels), plan.views
    device = _model_device(model)
    distributed = world > 1
    reduce_device = torch.device("cpu")
    if distributed and dist.get_backend() == "nccl":
        reduce_device = torch.device("cuda", torch.cuda.current_device())

    batches = len(loader) - loader.step
    most = torch.tensor([batches], dtype=torch.int64, device=reduce_device)
    if distributed:
        dist.all_reduce(most, op=dist.ReduceOp.MAX)
    most = int(most.item())

    scores = torch.zeros(n, num_classes, dtype=torch.float64)
    seen = torch.zeros(n, dtype=torch.int64)
    was_training = model.training
    model.eval()
    done = 0
    bar = None
    desc = f"eval ({views} view{'s' if views > 1 else ''} a video)"
    plain_every = 0  # no terminal to draw a bar on (or one of size 0 x 0): a plain line every ~10 %
    if progress:
        import sys  # noqa: PLC0415

        from .run_log import has_terminal  # noqa: PLC0415

        if has_terminal(sys.stderr):
            from tqdm import tqdm  # noqa: PLC0415

            bar = tqdm(total=most, desc=desc, unit="batch", dynamic_ncols=True)
        else:
            plain_every = max(1, most // 10)
    try:
        with torch.no_grad():
            for batch in loader:
                logits = _forward(model, batch.video, autocast_dtype)
                if logits.shape[-1] != num_classes:
                    raise ValueError(f"evaluate: the model gives {logits.shape[-1]} classes, "
                                     f"num_classes is {num_classes}")
                probs = F.softmax(logits.float(), dim=-1).double().cpu()
                keep = torch.tensor([not spec.skipped for spec in batch.specs], dtype=torch.bool)
                index = batch.video_index.cpu()[keep]
                scores.index_add_(0, index, probs[keep])
                seen.index_add_(0, index, torch.ones_like(index))
                done += 1
                if bar is not None:
                    bar.update()
                elif plain_every and (done % plain_every == 0 or done == most):
                    print(f"{desc}: {done}/{most} batches", flush=True)
            if done > most:  # the loader yielded more than it announced: ranks would fall out of step
                raise RuntimeError(f"evaluate: rank {rank} ran {done} batches, more than the {most} announced")
            dummy = torch.zeros(1, plan.s.frames, 3, plan.s.input_size, plan.s.input_size, device=device)
            for _ in range(most - done):  # keep FSDP's collectives in step with the busiest rank
                _forward(model, dummy, autocast_dtype)
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()

    bad = {v: (e.reason, e.detail) for v, e in loader.bad_log.bad.items()}
    if distributed:
        scores_r, seen_r = scores.to(reduce_device), seen.to(reduce_device)
        dist.all_reduce(scores_r)
        dist.all_reduce(seen_r)
        scores, seen = scores_r.cpu(), seen_r.cpu()
        gathered: list = [None] * world
        dist.all_gather_object(gathered, sorted(bad.items()))
        for part in gathered:
            for v, reason in part:
                bad.setdefault(v, tuple(reason))
    return summarize(scores, seen, plan.labels, bad, views, loader.bad_log.paths, class_names)


def summarize(scores: torch.Tensor, seen: torch.Tensor, labels: list[int], bad: dict[int, tuple[str, str]],
              views: int, paths: list[str] | None = None, class_names: list[str] | None = None) -> EvalResult:
    """Metrics from summed scores (videos, K), views seen per video, labels and the bad videos."""
    n, k = scores.shape
    paths = paths or [str(i) for i in range(n)]
    good = torch.tensor([v not in bad for v in range(n)], dtype=torch.bool)
    lost = [v for v in range(n) if good[v] and int(seen[v]) != views]
    if lost:
        shown = ", ".join(f"{paths[v]} ({int(seen[v])} views)" for v in lost[:5])
        raise RuntimeError(f"evaluate: {len(lost)} videos were not scored with all {views} views and are not "
                           f"known bad: {shown}. The loaders of the ranks do not cover the list.")
    label = torch.tensor(labels, dtype=torch.int64)
    top = scores.topk(min(5, k), dim=1).indices
    hit1 = top[:, 0] == label
    hit5 = (top == label[:, None]).any(dim=1)
    scored = int(good.sum())
    per_class, class_acc = [], []
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (label[good].numpy(), top[good, 0].numpy()), 1)
    for c in range(k):
        members = good & (label == c)
        count = int(members.sum())
        acc1 = float(hit1[members].float().mean()) if count else None
        acc5 = float(hit5[members].float().mean()) if count else None
        if count:
            class_acc.append(acc1)
        per_class.append({"class": c, "name": class_names[c] if class_names else str(c), "videos": count,
                          "top1": acc1, "top5": acc5})
    per_video = []
    for v in range(n):
        if not good[v]:
            continue
        mean = scores[v] / views
        per_video.append({"index": v, "path": paths[v], "label": int(label[v]),
                          "top5": [[int(c), round(float(mean[c]), 6)] for c in top[v]]})
    bad_list = [{"index": v, "path": paths[v], "reason": r, "detail": d} for v, (r, d) in sorted(bad.items())]
    correct = int(hit1[good].sum())
    table = scores.double().numpy().copy()
    table[~good.numpy()] = np.nan
    return EvalResult(
        top1=correct / scored if scored else 0.0,
        top5=float(hit5[good].sum()) / scored if scored else 0.0,
        mean_class_acc=float(np.mean(class_acc)) if class_acc else 0.0,
        top1_listed=correct / n if n else 0.0,
        scored=scored, listed=n, views=views, bad=bad_list, per_class=per_class, per_video=per_video,
        confusion=confusion, class_names=class_names, scores=table, paths=list(paths), labels=list(labels))


# ---------------------------------------------------------------- reports

def most_confused(result: EvalResult, count: int = 20) -> list[dict]:
    """The largest off-diagonal cells of the confusion matrix: true class taken for another."""
    c = result.confusion.copy()
    np.fill_diagonal(c, 0)
    order = np.argsort(-c, axis=None, kind="stable")[:count]
    pairs = []
    for flat in order:
        t, p = divmod(int(flat), c.shape[1])
        if c[t, p] == 0:
            break
        pairs.append({"true": t, "predicted": p, "true_name": result.name(t), "predicted_name": result.name(p),
                      "videos": int(c[t, p])})
    return pairs


def format_table(result: EvalResult) -> str:
    lines = [
        f"videos     {result.scored} scored of {result.listed} listed ({len(result.bad)} bad), "
        f"{result.views} view{'s' if result.views != 1 else ''} each",
        f"top-1      {100 * result.top1:6.2f} %   (bad counted as misses: {100 * result.top1_listed:.2f} %)",
        f"top-5      {100 * result.top5:6.2f} %",
        f"mean class {100 * result.mean_class_acc:6.2f} %",
    ]
    for b in result.bad[:10]:
        lines.append(f"bad        {b['path']}: {b['reason']} {b['detail']}".rstrip())
    if len(result.bad) > 10:
        lines.append(f"bad        ... and {len(result.bad) - 10} more (see eval.json)")
    return "\n".join(lines)


def write_confusion(result: EvalResult, path: str | Path) -> Path:
    """A confusion-matrix PNG for up to MAX_CONFUSION_CLASSES classes; for more, the worst pairs as text.

    Returns the file written (``path`` itself, or ``path`` with a ``.txt`` suffix).
    """
    path = Path(path)
    k = result.confusion.shape[0]
    if k > MAX_CONFUSION_CLASSES:
        text = path.with_suffix(".txt")
        rows = [f"{p['videos']:6d}  {p['true_name']} -> {p['predicted_name']}" for p in most_confused(result, 50)]
        text.write_text(f"most confused pairs ({k} classes, true -> predicted, videos):\n" + "\n".join(rows) + "\n")
        return text
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    totals = result.confusion.sum(axis=1, keepdims=True)
    frac = result.confusion / np.maximum(totals, 1)
    size = 3 + 0.25 * k
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    names = [result.name(i) for i in range(k)]
    ax.set_xticks(range(k), names, rotation=90, fontsize=7)
    ax.set_yticks(range(k), names, fontsize=7)
    if k <= 20:
        for t in range(k):
            for p in range(k):
                if result.confusion[t, p]:
                    ax.text(p, t, str(result.confusion[t, p]), ha="center", va="center", fontsize=7,
                            color="white" if frac[t, p] > 0.5 else "black")
    ax.set_xlabel("predicted (top-1)")
    ax.set_ylabel("true")
    ax.set_title(f"top-1 {100 * result.top1:.1f} % over {result.scored} videos")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
