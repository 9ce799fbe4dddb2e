"""Zero-shot and cross-dataset evaluation: a text-head (Kinetics) model scores another dataset's classes.

    ila-fast eval --checkpoint k400.pth --dataset ucf101 --split all --annotations ucfTrainTestlist --videos UCF-101
    ila-fast eval runs/b16 --dataset hmdb51 --split 1 --annotations splits --videos hmdb51_org --set model.prompt='"a video of {}."'

X-CLIP's protocol: the model's class text features are recomputed from the new dataset's class names
(bundled, or ``--labels``) through ``model.prompt``'s template(s) (a list: their features averaged),
and every test video of the official split is scored over ``data.test_clips`` x ``data.test_crops``
views. ``--split all`` evaluates splits 1-3 and reports each and their mean (top-1 / top-5).
Light at its top: the command line parses without torch.
"""
from __future__ import annotations

from ila_fast.config import DATASET_ADAPTERS

ZERO_SHOT_DATASETS = tuple(d for d in DATASET_ADAPTERS if d != "list")


def add_arguments(parser) -> None:
    group = parser.add_argument_group("zero-shot / cross-dataset evaluation (a text-head model on another "
                                      "dataset's classes)")
    group.add_argument("--dataset", choices=ZERO_SHOT_DATASETS,
                       help="score this dataset's official test split with its class names")
    group.add_argument("--split", default="1", choices=("1", "2", "3", "all"),
                       help="official split (UCF101 / HMDB51: 1-3; all: each and their mean)")
    group.add_argument("--annotations", metavar="DIR", help="the dataset's annotation folder (data.annotations)")
    group.add_argument("--videos", metavar="DIR", help="the dataset's video folder (data.root)")
    group.add_argument("--labels", metavar="CSV", help="class names (id,name) instead of the bundled ones")


def _nested(overrides: dict) -> dict:
    values: dict = {}
    for dotted, value in overrides.items():
        node = values
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return values


def run_zero_shot(args) -> int:
    import dataclasses
    import json
    import time
    from pathlib import Path

    from ila_fast.config import Config, build_dataclass, parse_overrides, to_dict
    from ila_fast.data import build_loader, read_labels
    from ila_fast.data.datasets import SPLITS, bundled_names
    from ila_fast.errors import UserError

    from .distributed import DistEnv, setup_distributed, teardown_distributed
    from .eval_command import autocast_dtype, default_output, eval_config, load_model
    from .evaluate import evaluate, format_table, write_confusion

    overrides = parse_overrides(args.overrides)
    configured = bool(args.config) or Path(args.checkpoint).is_dir()
    if configured:  # the run's (or given) config: model run-time keys, model.prompt, data sampling settings
        cfg, source = eval_config(args.config, args.checkpoint, overrides)
    else:  # a model file: its architecture is read off the file, the data settings are the defaults
        cfg, source = build_dataclass(Config, _nested(overrides), "--set"), "defaults"
    annotations = args.annotations or cfg.data.annotations
    videos = args.videos or cfg.data.root
    if not annotations or not videos:
        raise UserError(f"eval --dataset {args.dataset}: give --annotations DIR (the official annotation / split "
                        "files) and --videos DIR (the video folder)")
    names = read_labels(args.labels) if args.labels else bundled_names(args.dataset)
    data = dataclasses.replace(cfg.data, dataset=args.dataset, annotations=annotations, root=videos,
                               labels=args.labels, train_list=None, val_list=None)
    splits = SPLITS.get(args.dataset, (1,)) if args.split == "all" else (int(args.split),)

    env = setup_distributed(DistEnv.from_environ(), cfg.train.dist_timeout_s)
    try:
        device = env.device()
        model, description = load_model(args.checkpoint, cfg.model if configured else None, None)
        if model.text_head:  # the new label set's text features, through the configured template(s)
            # a model file keeps the template(s) it was saved with unless --set model.prompt says otherwise
            prompt = cfg.model.prompt if configured or "model.prompt" in overrides else None
            model.set_class_names(names, any_count=True, prompt=prompt)
        elif len(names) != model.cfg.num_classes:
            raise UserError(f"{description} has a classifier head (model.dataset = 'ssv2') over its own "
                            f"{model.cfg.num_classes} classes: it cannot score {args.dataset}'s {len(names)}; "
                            "zero-shot evaluation needs a text-head (Kinetics) model")
        else:
            model.set_class_names(names)
        model.to(device)
        m = model.cfg
        out = default_output(args.checkpoint) if args.output is None else Path(args.output)
        dtype = autocast_dtype(args.precision, device)
        rows = {}
        for split in splits:
            loader = build_loader(dataclasses.replace(data, split=split), "val", m.frames, m.input_size, len(names),
                                  rank=env.rank, world=env.world, device=device, mode=args.mode)
            start = time.perf_counter()
            result = evaluate(model, loader, len(names), env=env, class_names=names, autocast_dtype=dtype,
                              progress=env.rank == 0)
            rows[split] = {"top1": result.top1, "top5": result.top5, "scored": result.scored,
                           "listed": result.listed, "bad_videos": len(result.bad),
                           "seconds": time.perf_counter() - start}
            if env.rank == 0:
                folder = out / f"{args.dataset}_split{split}"
                folder.mkdir(parents=True, exist_ok=True)
                report = {"checkpoint": str(args.checkpoint), "model": description, "config": source,
                          "dataset": args.dataset, "split": split, "prompt": m.prompt, "mode": args.mode,
                          "world": env.world, "model_config": to_dict(m), **result.to_dict()}
                (folder / "eval.json").write_text(json.dumps(report, indent=1))
                write_confusion(result, folder / "confusion.png")
                print(f"{args.dataset} split {split}: {format_table(result)}")
        if env.rank == 0:
            mean = {k: sum(r[k] for r in rows.values()) / len(rows) for k in ("top1", "top5")}
            summary = {"checkpoint": str(args.checkpoint), "model": description, "dataset": args.dataset,
                       "classes": len(names), "prompt": m.prompt, "mode": args.mode,
                       "splits": {str(s): r for s, r in rows.items()}, "mean": mean}
            out.mkdir(parents=True, exist_ok=True)
            (out / f"zero_shot_{args.dataset}.json").write_text(json.dumps(summary, indent=1))
            print(f"{description}\nzero-shot {args.dataset} ({len(names)} classes, prompt {m.prompt!r}, "
                  f"{args.mode} protocol):")
            for s, r in rows.items():
                print(f"  split {s}: top-1 {100 * r['top1']:.2f} %  top-5 {100 * r['top5']:.2f} %  "
                      f"({r['scored']} of {r['listed']} videos scored)")
            print(f"  mean over {len(rows)} split(s): top-1 {100 * mean['top1']:.2f} %  top-5 {100 * mean['top5']:.2f} %"
                  f"\nwrote {out / f'zero_shot_{args.dataset}.json'}")
    finally:
        teardown_distributed()
    return 0
