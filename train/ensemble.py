"""``ila-fast ensemble EVAL EVAL ...``: combine the score tables of several evaluations.

    ila-fast eval runs/a --save-scores --output evals/a
    ila-fast eval runs/b --save-scores --output evals/b
    ila-fast ensemble evals/a evals/b [--weights 1 0.5] [--output evals/a+b]

Each EVAL is an ``eval.json`` (or its folder) written with ``--save-scores``. The tables must
score the same videos with the same labels. A video's ensemble score is the weighted sum of
its mean softmax per view in each table (so models evaluated with different numbers of views
count alike); with equal views and weights that ranks classes exactly as summing the raw
tables. A video bad in any evaluation is left out. Prints top-1 / top-5 / mean class accuracy
of each input and of the ensemble; ``--output`` writes its eval.json and scores.npy. Light at
its top: no torch while parsing.
"""
from __future__ import annotations

from ila_fast.arguments import float_range


def add_arguments(parser) -> None:
    parser.add_argument("evals", nargs="+", metavar="EVAL",
                        help="eval.json files (or their folders) written by `ila-fast eval --save-scores`")
    parser.add_argument("--weights", nargs="+", type=float_range(0.0), metavar="W",
                        help="one weight per EVAL (default: all 1)")
    parser.add_argument("--output", metavar="DIR", help="write the ensemble's eval.json and scores.npy here")


def load_scores(path) -> tuple[dict, "np.ndarray"]:  # noqa: F821 - numpy imported lazily
    """(eval.json's report, its score table) of an evaluation saved with --save-scores."""
    import json
    from pathlib import Path

    import numpy as np

    from ila_fast.errors import UserError

    path = Path(path)
    report_path = path / "eval.json" if path.is_dir() else path
    if not report_path.is_file():
        raise UserError(f"{path}: no eval.json there; give the folder or eval.json of an `ila-fast eval --save-scores`")
    report = json.loads(report_path.read_text())
    if "scores" not in report:
        raise UserError(f"{report_path}: evaluated without --save-scores (no score table); run ila-fast eval again "
                        "with --save-scores")
    table = report_path.parent / report["scores"]["file"]
    if not table.is_file():
        raise UserError(f"{report_path}: its score table {table} is missing")
    scores = np.load(table)
    if list(scores.shape) != report["scores"]["shape"]:
        raise UserError(f"{table}: shape {list(scores.shape)}, eval.json says {report['scores']['shape']}")
    return report, scores


def combine(tables: list, views: list[int], weights: list[float]):
    """The weighted sum of the mean per-view scores of each table (NaN rows stay NaN)."""
    total = None
    for table, v, w in zip(tables, views, weights):
        part = table * (w / v)
        total = part if total is None else total + part
    return total


def metrics(scores, labels: list[int], paths: list[str], class_names=None):
    """An EvalResult (ila_fast.train.evaluate) of a score table; NaN rows count as bad videos."""
    import numpy as np
    import torch

    from .evaluate import summarize

    bad_rows = np.isnan(scores).any(axis=1)
    bad = {int(v): ("bad_in_an_input", "not scored by every evaluation") for v in np.flatnonzero(bad_rows)}
    table = torch.from_numpy(np.where(bad_rows[:, None], 0.0, scores))
    seen = torch.ones(len(labels), dtype=torch.int64)
    return summarize(table, seen, labels, bad, 1, paths, class_names)


def run(args) -> int:
    import json
    from pathlib import Path

    import numpy as np

    from ila_fast.errors import UserError

    weights = args.weights or [1.0] * len(args.evals)
    if len(weights) != len(args.evals):
        raise UserError(f"--weights: {len(weights)} weights for {len(args.evals)} evaluations; give one per EVAL")
    loaded = [load_scores(p) for p in args.evals]
    first, _ = loaded[0]
    for path, (report, scores) in zip(args.evals[1:], loaded[1:]):
        if report["scores"]["videos"] != first["scores"]["videos"] or \
                report["scores"]["labels"] != first["scores"]["labels"]:
            raise UserError(f"{path}: scores other videos or labels than {args.evals[0]}; ensemble evaluations of "
                            "the same list (data.val_list)")
        if scores.shape[1] != loaded[0][1].shape[1]:
            raise UserError(f"{path}: {scores.shape[1]} classes, {args.evals[0]} has {loaded[0][1].shape[1]}")
    labels, paths = first["scores"]["labels"], first["scores"]["videos"]
    names = [c["name"] for c in first.get("per_class", [])] or None
    views = [r["scores"]["views_per_video"] for r, _ in loaded]
    total = combine([s for _, s in loaded], views, weights)
    rows = []
    for path, (_, scores), v in zip(args.evals, loaded, views):
        rows.append((str(path), metrics(scores / v, labels, paths, names)))
    result = metrics(total, labels, paths, names)
    rows.append(("ensemble" + (f" (weights {' '.join(f'{w:g}' for w in weights)})" if args.weights else ""), result))
    width = max(len(name) for name, _ in rows)
    print(f"{'':<{width}}  {'top-1':>7}  {'top-5':>7}  {'mean class':>10}  videos")
    for name, r in rows:
        print(f"{name:<{width}}  {100 * r.top1:6.2f}%  {100 * r.top5:6.2f}%  {100 * r.mean_class_acc:9.2f}%  "
              f"{r.scored} of {r.listed}")
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "scores.npy", total)
        report = {"ensemble_of": [str(p) for p in args.evals], "weights": weights,
                  **result.to_dict(),
                  "scores": {"file": "scores.npy", "shape": list(total.shape), "views_per_video": 1,
                             "what": "weighted sum over the inputs of each video's mean softmax per view; rows: "
                                     "list order, NaN for videos bad in any input; columns: class ids",
                             "videos": paths, "labels": labels}}
        (out / "eval.json").write_text(json.dumps(report, indent=1))
        print(f"wrote {out / 'eval.json'} and {out / 'scores.npy'}")
    return 0
