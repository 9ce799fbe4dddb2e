"""``ila-fast export CKPT model.pth``: a training checkpoint -> one consolidated model file.

The file is ila-fast's model format (``ila_fast.model.convert.save_checkpoint``: the state dict
and the model config), loadable on one process with no process group:
``ila_fast.model.convert.load_checkpoint("model.pth")``.
"""
from __future__ import annotations

from ila_fast.arguments import add_config_argument, add_force_argument, add_set_argument, check_output

# keys whose override changes the class names the file stores (else: the run's own)
LABEL_KEYS = ("data.labels", "model.class_names")


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT",
                        help="a training checkpoint folder (<output>/checkpoints/step_* or best) or a run's --output "
                             "(its newest complete checkpoint)")
    parser.add_argument("output", help="the model file to write (.pth)")
    add_config_argument(parser, required=False,
                        help_text="a config to use instead of the checkpoint's saved one (same model shapes)")
    add_set_argument(parser)
    add_force_argument(parser)


def resolve_checkpoint(path) -> "Path":  # noqa: F821 (Path imported lazily)
    """A checkpoint folder, or a run folder -> its newest checkpoint; a damaged one is refused in one
    line naming it and what is wrong (``checkpoint_health.checkpoint_for_reading``)."""
    from .checkpoint_health import checkpoint_for_reading

    return checkpoint_for_reading(path)


def export_model(checkpoint, output, config=None, overrides: dict | None = None) -> "tuple":
    """Write ``output`` from ``checkpoint`` with its saved config (or ``config``), ``overrides``
    applied (``model.kernels``, ``data.labels`` for other class names, ...); returns (model, meta)."""
    import dataclasses

    from ila_fast.config import load_config
    from ila_fast.model import build_model
    from ila_fast.model.convert import save_checkpoint

    from .checkpoint import load_model_state

    path = resolve_checkpoint(checkpoint)
    state, meta = load_model_state(path)
    overrides = overrides or {}
    cfg = load_config(config or path / "config.toml", overrides)
    names = meta.get("class_names")  # the run's (older checkpoints: None)
    if config or any(key in overrides for key in LABEL_KEYS):
        from ila_fast.data import read_labels

        labels = cfg.model.class_names or cfg.data.labels
        names = read_labels(labels) if labels else names
    model = build_model(dataclasses.replace(cfg.model, clip_weights=None), class_names=names)  # weights: the state
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        from ila_fast.errors import UserError

        raise UserError(f"{path}: checkpoint does not fit its own config: missing {missing[:6]}, "
                        f"unexpected {unexpected[:6]}")
    save_checkpoint(model, output)
    return model, meta


def run(args) -> int:
    from ila_fast.config import parse_overrides

    output = check_output(args.output, args.force)
    model, meta = export_model(args.checkpoint, output, args.config, parse_overrides(args.overrides))
    print(f"exported step {meta['step']} (epoch {meta['epoch']}) of {args.checkpoint} -> {output}")
    return 0
