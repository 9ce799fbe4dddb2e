"""``ila-fast eval``: the test protocol on a trained model. Light at its top (no torch while parsing).

    ila-fast eval runs/b16                                                # newest checkpoint, the run's config
    ila-fast eval runs/b16/checkpoints/best --set data.val_list=test.txt  # another list, the rest as trained
    ila-fast eval --config k400_b16_8f --checkpoint runs/b16              # newest complete checkpoint
    ila-fast eval --config k400_b16_8f --checkpoint model.pth             # export / convert output
    ila-fast eval --config k400_b16_8f --checkpoint k400_official.pth     # an official ILA file
    torchrun --nproc_per_node 8 -m ila_fast.cli eval --config ... --checkpoint ...

Every video of ``data.val_list`` is scored once over ``data.test_clips`` x ``data.test_crops``
views (``--mode val``: one centre view), on any number of ranks. Writes ``eval.json``, the
confusion matrix (PNG, or the most-confused pairs as text beyond 50 classes) and prints a table;
``--save-scores`` adds ``scores.npy``: every video's softmax summed over its views, for
``ila-fast ensemble``. A run folder or training checkpoint brings its saved config (data
settings included); ``--config`` replaces it and ``--set`` changes keys of either.
"""
from __future__ import annotations

from ila_fast.arguments import add_config_argument, add_set_argument

from .zero_shot import add_arguments as add_zero_shot_arguments

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def add_arguments(parser) -> None:
    parser.add_argument("source", nargs="?", metavar="RUN_OR_CKPT",
                        help="what to evaluate (same as --checkpoint): a run folder, a training checkpoint folder, "
                             "an ila-fast model file or an official ILA checkpoint")
    add_config_argument(parser, required=False,
                        help_text="run config: a bundled config's name or a TOML file (default: the config saved "
                                  "with a run folder or training checkpoint; needed for model files)")
    parser.add_argument("--checkpoint", metavar="CKPT",
                        help="a training checkpoint folder (or a run folder: its newest complete checkpoint), an "
                             "ila-fast model file (export / convert) or an official ILA checkpoint")
    parser.add_argument("--output", metavar="DIR",
                        help="where eval.json and the confusion matrix go (default: eval_<checkpoint name> beside "
                             "the checkpoint)")
    parser.add_argument("--mode", choices=("test", "val"), default="test",
                        help="test: data.test_clips x data.test_crops views per video; val: one centre view")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="autocast dtype of the forward (auto: bf16 on a GPU, fp32 on a CPU)")
    parser.add_argument("--save-scores", action="store_true",
                        help="also write scores.npy beside eval.json: each video's softmax summed over its views "
                             "(videos x classes, list order; combine runs with `ila-fast ensemble`)")
    add_set_argument(parser)
    add_zero_shot_arguments(parser)  # --dataset / --split / --annotations / --videos / --labels (zero_shot.py)


def eval_config(config, checkpoint, overrides: dict, command: str = "eval"):
    """The config of an evaluation: ``config`` when given, else the one saved with a run folder or
    training checkpoint; ``overrides`` (--set) apply to either. Returns (config, where it came from)."""
    from pathlib import Path

    from ila_fast.config import load_config
    from ila_fast.errors import UserError

    if config:
        return load_config(config, overrides), str(config)
    path = Path(checkpoint)
    if path.is_dir():
        from .export import resolve_checkpoint

        saved = resolve_checkpoint(path) / "config.toml"
        if saved.is_file():
            return load_config(saved, overrides), str(saved)
    raise UserError(f"{command} {checkpoint}: a model file carries no data settings; give --config NAME|TOML "
                    "(e.g. the run's config.toml), or a run folder / training checkpoint, which bring theirs")


def default_output(checkpoint) -> "Path":  # noqa: F821 - Path imported lazily
    from pathlib import Path

    path = Path(checkpoint).resolve()
    name = path.name if path.is_dir() else path.stem
    return path.parent / f"eval_{name}"


def load_model(checkpoint, model_cfg, class_names: list[str] | None = None, names_from: str | None = None):
    """An ILAModel from any checkpoint ila-fast knows, with ``model_cfg``'s run-time switches.

    Returns (model, description). A training checkpoint or ila-fast file brings its own model
    config; ``kernels`` and ``official_eval_bn`` come from ``model_cfg`` (they change how the
    model runs, not its weights). An official file must match ``model_cfg``'s shapes (None:
    the shapes are read off the file). ``class_names`` None: the names stored with the weights
    (trainer checkpoints and ila-fast files carry them; official files do not). ``names_from``
    names their source (a label CSV) in the refusal of a list of the wrong size.
    """
    import dataclasses
    import tomllib
    from pathlib import Path

    import torch

    from ila_fast.config import Config, ModelConfig, build_dataclass
    from ila_fast.errors import UserError
    from ila_fast.model import build_model
    from ila_fast.model.convert import FORMAT, convert_official

    path = Path(checkpoint)
    if not path.exists():
        raise UserError(f"--checkpoint {path}: no such file or folder")
    runtime = {} if model_cfg is None else {"kernels": model_cfg.kernels,
                                            "official_eval_bn": model_cfg.official_eval_bn}
    if path.is_dir():
        from .checkpoint import load_model_state
        from .export import resolve_checkpoint

        folder = resolve_checkpoint(path)
        state, meta = load_model_state(folder)
        saved = build_dataclass(Config, tomllib.loads((folder / "config.toml").read_text()),
                                str(folder / "config.toml")).model
        stored_names = meta.get("class_names")
        description = f"training checkpoint {folder} (step {meta.get('step')})"
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - official files hold pickled argparse objects: the converter reads them
            raw = None
        if isinstance(raw, dict) and raw.get("format") == FORMAT:
            saved, state = ModelConfig(**raw["config"]), raw["model"]
            stored_names = raw.get("class_names")
            description = f"ila-fast model file {path}"
        else:
            given = dataclasses.replace(model_cfg) if model_cfg is not None else None
            model, report = convert_official(path, given)
            check_names(class_names, model.cfg.num_classes, path, names_from)
            model.set_class_names(class_names)
            return model, f"official ILA checkpoint {path} (converted: {report['mapped']} tensors)"
    cfg = dataclasses.replace(saved, **runtime, clip_weights=None)  # the weights are the checkpoint's
    check_names(class_names, cfg.num_classes, path, names_from)
    if class_names is None:
        class_names = stored_names  # names given (--labels, data.labels) win over the stored ones
    model = build_model(cfg, class_names=class_names)
    missing, unexpected = model.load_state_dict(state, strict=False)  # class text features are not state
    if missing or unexpected:
        raise UserError(f"--checkpoint {path}: weights do not fit the model they were saved with: "
                        f"missing {missing[:6]}, unexpected {unexpected[:6]}")
    return model, description


def check_names(names, num_classes: int, checkpoint, names_from: str | None) -> None:
    from ila_fast.errors import UserError

    if names is not None and len(names) != num_classes:
        raise UserError(f"{names_from or 'the class names given'}: {len(names)} classes, the model in {checkpoint} "
                        f"has {num_classes}")


def require_names(model, source: str) -> None:
    """A text head cannot classify without its class names."""
    from ila_fast.errors import UserError

    if model.text_head and model.class_names is None:
        raise UserError(f"{source} classifies by text (model.dataset = 'k400') and stores no class names: give "
                        "the label CSV (id,name) it was trained with (data.labels, model.class_names or --labels)")


def autocast_dtype(precision: str, device):
    import torch

    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def run(args) -> int:
    import json
    import time
    from pathlib import Path

    from ila_fast.config import parse_overrides, to_dict
    from ila_fast.config_paths import check_paths
    from ila_fast.errors import UserError

    if args.source and args.checkpoint and args.source != args.checkpoint:
        raise UserError(f"eval: two models given ({args.source} and --checkpoint {args.checkpoint}); give one")
    args.checkpoint = args.source or args.checkpoint
    if not args.checkpoint:
        raise UserError("eval: nothing to evaluate: give a run folder or checkpoint (ila-fast eval RUN)")
    if not Path(args.checkpoint).exists():
        raise UserError(f"{args.checkpoint}: no such run folder, checkpoint or model file")
    if getattr(args, "dataset", None):  # zero-shot / cross-dataset: another label set (zero_shot.py)
        from .zero_shot import run_zero_shot

        return run_zero_shot(args)
    cfg, config_source = eval_config(args.config, args.checkpoint, parse_overrides(args.overrides))
    args.config = config_source
    check_paths(cfg, ("val",), weights=False)  # every missing path at once; the weights come from the checkpoint

    from ila_fast.data import build_loader, read_labels

    from .distributed import DistEnv, setup_distributed, teardown_distributed
    from .evaluate import evaluate, format_table, write_confusion

    env = setup_distributed(DistEnv.from_environ(), cfg.train.dist_timeout_s)
    try:
        device = env.device()
        labels = cfg.model.class_names or cfg.data.labels  # none: the names stored with the weights
        model, description = load_model(args.checkpoint, cfg.model, read_labels(labels) if labels else None, labels)
        require_names(model, description)
        names = model.class_names
        model.to(device)
        m = model.cfg
        if m.num_classes != cfg.model.num_classes or m.frames != cfg.model.frames:
            print(f"eval: the checkpoint's model ({m.frames} frames, {m.num_classes} classes) is used; "
                  f"the config says {cfg.model.frames} frames, {cfg.model.num_classes} classes")
        loader = build_loader(cfg.data, "val", m.frames, m.input_size, m.num_classes, rank=env.rank,
                              world=env.world, device=device, mode=args.mode)
        dtype = autocast_dtype(args.precision, device)
        start = time.perf_counter()
        result = evaluate(model, loader, m.num_classes, env=env, class_names=names, autocast_dtype=dtype,
                          progress=env.rank == 0)
        seconds = time.perf_counter() - start
        if env.rank == 0:
            out = default_output(args.checkpoint) if args.output is None else Path(args.output)
            out.mkdir(parents=True, exist_ok=True)
            report = {"checkpoint": str(args.checkpoint), "model": description, "config": str(args.config),
                      "mode": args.mode, "precision": args.precision, "world": env.world, "seconds": seconds,
                      "model_config": to_dict(m), **result.to_dict()}
            if args.save_scores:
                import numpy as np

                np.save(out / "scores.npy", result.scores)
                report["scores"] = scores_header(result, "scores.npy")
            (out / "eval.json").write_text(json.dumps(report, indent=1))
            picture = write_confusion(result, out / "confusion.png")
            listed = cfg.data.val_list or f"{cfg.data.dataset} (split {cfg.data.split}) of {cfg.data.annotations}"
            print(f"{description}\n{args.mode} protocol on {listed}, {env.world} rank(s), "
                  f"{seconds:.1f} s\n{format_table(result)}\nwrote {out / 'eval.json'} and {picture}")
    finally:
        teardown_distributed()
    return 0


def scores_header(result, file: str) -> dict:
    """eval.json's description of a saved score table: what its rows and columns are."""
    return {"file": file, "shape": list(result.scores.shape), "views_per_video": result.views,
            "what": "softmax of each view summed over the video's views (float64); rows: data.val_list order, "
                    "NaN for bad videos; columns: class ids",
            "videos": result.paths, "labels": result.labels}
