"""Load CLIP weights from local files, offline.

Accepted: OpenAI's TorchScript archives (``ViT-B-16.pt``), plain state dicts (open_clip
checkpoints), and dicts holding one under ``state_dict`` / ``model``, keys possibly
prefixed with ``module.``. CLIP keys already carry the model's names; every image-tower
key must load, and anything left over is reported.
"""
from __future__ import annotations

import logging
import warnings
import zipfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

# Metadata entries in OpenAI archives that are not tensors of the model.
OPENAI_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")


class WeightsError(RuntimeError):
    """A checkpoint that does not fit the model; the message names the file and keys."""


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in z.namelist())


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint's tensors as a flat state dict (``module.`` stripped)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: checkpoint file not found")
    if _is_torchscript(path):
        # OpenAI's archives are TorchScript modules: only their tensors are read (trusted files only).
        with warnings.catch_warnings():  # TorchScript is deprecated, but it is how OpenAI ships CLIP
            warnings.simplefilter("ignore", DeprecationWarning)
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - turned into a message naming the file
            raise WeightsError(f"{path}: cannot read as a checkpoint: {e}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, found {type(state).__name__}")
    return {(k[len("module."):] if k.startswith("module.") else k): v
            for k, v in state.items() if k not in OPENAI_METADATA_KEYS}


def load_clip_weights(model, path: str | Path) -> dict[str, list[str]]:
    """Copy CLIP weights from ``path`` into ``model`` (an ILAModel). Returns a report.

    Every CLIP image-tower tensor of the model must be in the file with the same shape;
    text-tower tensors must be there too when the model has a text head. The ILA branch
    and heads keep their initialisation. Extra keys in the file are reported, not loaded.
    """
    source = read_state_dict(path)
    target = model.state_dict()
    clip_keys = [k for k in target if _is_clip_key(k, model.text_head)]
    missing = [k for k in clip_keys if k not in source]
    if missing:
        raise WeightsError(f"{path}: not a CLIP checkpoint for this model: {len(missing)} CLIP tensors missing, "
                           f"e.g. {missing[:5]}")
    wrong = [f"{k}: file {tuple(source[k].shape)} vs model {tuple(target[k].shape)}"
             for k in clip_keys if source[k].shape != target[k].shape]
    if wrong:
        raise WeightsError(f"{path}: CLIP tensors of another shape (is it the right arch / input size?): "
                           + "; ".join(wrong[:5]))
    model.load_state_dict({k: source[k].to(target[k].dtype) for k in clip_keys}, strict=False)
    unused = sorted(set(source) - set(clip_keys))
    if unused:
        log.info("%s: %d tensors not used by this model (e.g. %s)", path, len(unused), unused[:3])
    return {"loaded": clip_keys, "unused": unused}


def _is_clip_key(key: str, text_head: bool) -> bool:
    from .model import is_trainable

    if key.startswith("visual."):
        return not is_trainable(key) and ".message_" not in key
    if key.startswith(("mit.", "prompt_", "classifier.")):
        return False
    return text_head  # token_embedding, positional_embedding, transformer.*, ln_final, text_projection, logit_scale
