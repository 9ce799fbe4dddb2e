"""``ila-fast export CKPT model.pth``: a training checkpoint -> one consolidated model file.

The file is ila-fast's model format (``ila_fast.model.convert.save_checkpoint``: the state dict
and the model config), loadable on one process with no process group:
``ila_fast.model.convert.load_checkpoint("model.pth")``.
"""
from __future__ import annotations

from ila_fast.arguments import add_force_argument, check_output


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT",
                        help="a training checkpoint folder (<output>/checkpoints/step_*) or a run's --output "
                             "(its newest complete checkpoint)")
    parser.add_argument("output", help="the model file to write (.pth)")
    add_force_argument(parser)


def resolve_checkpoint(path) -> "Path":  # noqa: F821 (Path imported lazily)
    """A checkpoint folder, or a run folder -> its newest complete checkpoint."""
    from pathlib import Path

    from ila_fast.errors import UserError

    from .checkpoint import is_complete, latest_checkpoint

    path = Path(path)
    if path.is_dir() and not is_complete(path) and (path / "checkpoints").is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise UserError(f"{path}: a run folder with no complete checkpoint yet")
        return found
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint folder")
    return path


def export_model(checkpoint, output) -> "tuple":
    """Write ``output`` from ``checkpoint``; returns (model, meta)."""
    import tomllib

    from ila_fast.config import Config, build_dataclass
    from ila_fast.model import build_model
    from ila_fast.model.convert import save_checkpoint

    from .checkpoint import load_model_state

    path = resolve_checkpoint(checkpoint)
    state, meta = load_model_state(path)
    cfg = build_dataclass(Config, tomllib.loads((path / "config.toml").read_text()), str(path / "config.toml"))
    model = build_model(cfg.model, class_names=meta.get("class_names"))  # older checkpoints: None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        from ila_fast.errors import UserError

        raise UserError(f"{path}: checkpoint does not fit its own config: missing {missing[:6]}, "
                        f"unexpected {unexpected[:6]}")
    save_checkpoint(model, output)
    return model, meta


def run(args) -> int:
    output = check_output(args.output, args.force)
    model, meta = export_model(args.checkpoint, output)
    print(f"exported step {meta['step']} (epoch {meta['epoch']}) of {args.checkpoint} -> {output}")
    return 0
