"""ILA on CLIP ViTs: model, heads, and weight import (CLIP and official ILA checkpoints)."""
from .model import ILAModel, ILAOutput, count_parameters, is_trainable

__all__ = ["ILAModel", "ILAOutput", "count_parameters", "is_trainable", "build_model"]


def build_model(cfg, class_names=None, clip_weights=None) -> ILAModel:
    """Build an ILA model; start from CLIP weights when a path is given (or in ``cfg.clip_weights``)."""
    model = ILAModel(cfg, class_names)
    path = clip_weights or cfg.clip_weights
    if path:
        from .weights import load_clip_weights

        load_clip_weights(model, path)
    return model
