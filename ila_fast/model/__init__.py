"""ILA on CLIP ViTs: model, heads, and weight import (CLIP and official ILA checkpoints)."""
from .model import ILAModel, ILAOutput, count_parameters, is_trainable

__all__ = ["ILAModel", "ILAOutput", "count_parameters", "is_trainable", "build_model"]


def build_model(cfg, class_names=None, clip_weights=None) -> ILAModel:
    """Build an ILA model; start from CLIP weights when a path is given (or in ``cfg.clip_weights``)."""
    model = ILAModel(cfg, class_names)
    path = clip_weights or cfg.clip_weights
    if path and path != "random":  # "random": random weights on purpose (training refuses an unset key)
        from pathlib import Path

        from .weights import WeightsError, load_clip_weights

        if not Path(path).is_file():
            key = "clip_weights=" if clip_weights else "model.clip_weights ="
            raise WeightsError(f"{key} {str(path)!r}: no such file; set it to a local OpenAI or open_clip CLIP file "
                               "(`ila-fast zoo` lists where each config's CLIP weights come from), or set "
                               "it to \"random\" for random weights")
        load_clip_weights(model, path)
    return model
