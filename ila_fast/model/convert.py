"""Convert official ILA checkpoints (docs/specification.md#7-official-checkpoint-layout) to ila-fast's layout, by an explicit key map.

The architecture is inferred from the checkpoint's tensor shapes, so any official model
converts without a config; a config, when given, is checked against it. Every source key
must map and every target key must be filled, or a ``WeightsError`` lists them.
CLI: ``ila-fast convert official.pth out.pth [--config configs/k400_b16_8f.toml]``.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import torch

from ila_fast.config import ARCHS, TOWER_FIELDS, ModelConfig

from .model import ILAModel
from .weights import WeightsError, read_state_dict

FORMAT = "ila-fast/1"

# Inside a block's ILA module: ours -> official (``message_attn.`` + this).
ILA_MODULES_COMMON = {
    "point_head.conv1": "prediction_block.0", "point_head.bn1": "prediction_block.1",
    "point_head.conv2": "prediction_block.4", "point_head.bn2": "prediction_block.5",
    "point_head.fc1": "prediction_block.10", "point_head.fc2": "prediction_block.12",
    "temporal_conv": "conv", "temporal_fc": "fc",
}
ILA_MODULES = {
    "depthwise": {
        "dw_conv": "interactive_block.0.depthwise_conv.0", "dw_bn": "interactive_block.0.depthwise_conv.1",
        "pw_conv": "interactive_block.0.pointwise_conv.0", "pw_bn": "interactive_block.0.pointwise_conv.1",
        "conv": "interactive_block.1", "bn": "interactive_block.2", **ILA_MODULES_COMMON},
    "dense": {
        "dense_conv": "interactive_block.0", "dense_bn": "interactive_block.1",
        "conv": "interactive_block.3", "bn": "interactive_block.4", **ILA_MODULES_COMMON},
}
# Inside a vision block: ours -> official; CLIP's own names are the same in both.
BLOCK_MODULES = {"message_ila": "message_attn", "temporal_align_fc": "temporal_skip_align_fc",
                 "temporal_skip_fc": "temporal_skip_fc", "message_fc": "message_fc", "message_ln": "message_ln"}
# Top level: ours -> official.
TOP_MODULES = {"classifier.0": "mit.classify_head.0", "classifier.2": "mit.classify_head.2",
               "prompt_visual_ln": "prompts_visual_ln", "prompt_visual_proj": "prompts_visual_proj",
               "prompt_generator": "prompts_generator"}
# Our own state that official files lack, filled by the converter: the alignment jitter.
OURS_ONLY = re.compile(r"visual\.transformer\.resblocks\.\d+\.message_ila\.delta$")

_BLOCK = re.compile(r"^(visual\.transformer\.resblocks\.\d+\.)(.*)$")


def _rename(name: str, table: dict[str, str]) -> str:
    """Replace the longest module prefix of ``name`` found in ``table``."""
    for ours in sorted(table, key=len, reverse=True):
        if name == ours or name.startswith(ours + "."):
            return table[ours] + name[len(ours):]
    return name


def official_key(key: str, interactive: str) -> str:
    """The official name of one of our state-dict keys."""
    m = _BLOCK.match(key)
    if m:
        prefix, rest = m.groups()
        if rest.startswith("message_ila."):
            return prefix + "message_attn." + _rename(rest[len("message_ila."):], ILA_MODULES[interactive])
        return prefix + _rename(rest, BLOCK_MODULES)
    if key.startswith("prompt_generator."):
        rest = re.sub(r"^layers\.", "decoder.", key[len("prompt_generator."):])
        return "prompts_generator." + rest.replace(".cross_attn.out_proj.", ".cross_attn.proj.")
    return _rename(key, TOP_MODULES)


def key_map(model: ILAModel) -> dict[str, str]:
    """official key -> our key, for every tensor of ``model`` the official layout has."""
    interactive = model.cfg.interactive
    return {official_key(k, interactive): k for k in model.state_dict() if not OURS_ONLY.match(k)}


def _count(state: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


def infer_config(state: dict[str, torch.Tensor], num_classes: int | None = None) -> ModelConfig:
    """Read the architecture off an official state dict's tensor shapes."""
    try:
        width, _, patch, _ = state["visual.conv1.weight"].shape
        grid = int(round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5))
        ssv2 = "mit.classify_head.2.weight" in state
        depthwise = any(".interactive_block.0.depthwise_conv.0.weight" in k for k in state)
        conv_key = f"visual.transformer.resblocks.0.message_attn.interactive_block.{1 if depthwise else 3}.weight"
        fields = dict(
            patch_size=patch, width=width, heads=width // 64,
            layers=_count(state, r"visual\.transformer\.resblocks\.(\d+)\.attn\.in_proj_weight"),
            embed_dim=state["visual.proj"].shape[1],
            frames=state["mit.positional_embedding"].shape[1],
            input_size=grid * patch,
            dataset="ssv2" if ssv2 else "k400",
            interactive="depthwise" if depthwise else "dense",
            correlation_channels=state[conv_key].shape[0],
            mit_layers=_count(state, r"mit\.resblocks\.(\d+)\.attn\.in_proj_weight"),
        )
        if ssv2:
            fields["num_classes"] = state["mit.classify_head.2.weight"].shape[0]
            # SSv2 models carry no text tower: keep the arch's text shape, it builds nothing.
        else:
            text_width = state["ln_final.weight"].shape[0]
            fields.update(
                text_width=text_width, text_heads=text_width // 64,
                text_layers=_count(state, r"transformer\.resblocks\.(\d+)\.attn\.in_proj_weight"),
                context_length=state["positional_embedding"].shape[0],
                vocab_size=state["token_embedding.weight"].shape[0],
                prompt_layers=_count(state, r"prompts_generator\.decoder\.(\d+)\.norm1\.weight"),
                num_classes=num_classes or 400)
    except KeyError as e:
        raise WeightsError(f"not an official ILA checkpoint: tensor {e} is missing") from None
    fields["arch"] = _match_arch(fields)
    if fields["arch"] != "custom":
        for key in TOWER_FIELDS:
            if key in fields and fields[key] == ARCHS[fields["arch"]][key]:
                del fields[key]  # leave it to the arch, so the config reads like the zoo's
    return ModelConfig(**fields)


def _match_arch(fields: dict) -> str:
    for name, arch in ARCHS.items():
        if arch and all(fields.get(k, arch[k]) == arch[k] for k in TOWER_FIELDS):
            return name
    return "custom"


def check_config(inferred: ModelConfig, given: ModelConfig, source: str) -> None:
    """Refuse a config that disagrees with the checkpoint on any shape-determining field."""
    fields = [f for f in TOWER_FIELDS if not f.startswith("text_")] + ["frames", "input_size", "dataset", "interactive", "correlation_channels",
              "mit_layers", "num_classes"]
    if given.dataset == "k400":
        fields += ["text_width", "text_heads", "text_layers", "prompt_layers", "context_length", "vocab_size"]
    diffs = [f"{f}: config {getattr(given, f)!r}, checkpoint {getattr(inferred, f)!r}"
             for f in fields if getattr(given, f) != getattr(inferred, f)]
    if diffs:
        raise WeightsError(f"{source}: the config does not match the checkpoint: " + "; ".join(diffs))


def convert_official(path: str | Path, config: ModelConfig | None = None,
                     class_names: list[str] | None = None) -> tuple[ILAModel, dict]:
    """Read an official checkpoint and return (a ready ILAModel, a report)."""
    try:  # official files hold argparse objects, so this unpickles: trusted files only
        raw = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise WeightsError(f"{path}: checkpoint file not found") from None
    except Exception as e:  # noqa: BLE001 - turned into a message naming the file
        raise WeightsError(f"{path}: cannot read as a checkpoint: {type(e).__name__}: {e}") from None
    source = read_state_dict(path)
    try:
        inferred = infer_config(source, config.num_classes if config else None)
    except WeightsError as e:
        raise WeightsError(f"{path}: {e}") from None
    cfg = inferred
    if config is not None:
        check_config(inferred, config, str(path))
        cfg = dataclasses.replace(config)
    model = ILAModel(cfg, class_names)
    mapping = key_map(model)
    extra = sorted(set(source) - set(mapping))
    missing = sorted(set(mapping) - set(source))
    if extra or missing:
        raise WeightsError(f"{path}: checkpoint does not match the official layout of the inferred model "
                           f"({cfg.arch}, {cfg.dataset}, {cfg.frames} frames): "
                           f"{len(extra)} unmapped source keys {extra[:8]}; {len(missing)} unfilled target keys "
                           f"{missing[:8]}")
    target = model.state_dict()
    wrong = [f"{k}: {tuple(source[k].shape)} vs {tuple(target[v].shape)}"
             for k, v in mapping.items() if source[k].shape != target[v].shape]
    if wrong:
        raise WeightsError(f"{path}: tensors of unexpected shape: " + "; ".join(wrong[:8]))
    state = {ours: source[official].to(target[ours].dtype) for official, ours in mapping.items()}
    epoch = raw.get("epoch") if isinstance(raw, dict) else None
    for key in target:
        if OURS_ONLY.match(key):
            state[key] = target[key].clone()
    model.load_state_dict(state, strict=True)
    if isinstance(epoch, int):
        model.set_epoch(epoch + 1)  # the official loop resumes at the next epoch
    return model, {"config": cfg, "mapped": len(mapping), "epoch": epoch}


def load_official(path: str | Path, config: ModelConfig | None = None,
                  class_names: list[str] | None = None) -> ILAModel:
    """An ILAModel with an official checkpoint's weights."""
    return convert_official(path, config, class_names)[0]


def save_checkpoint(model: ILAModel, path: str | Path) -> None:
    """ila-fast's own model file: the state dict, the config it was built from and the model's
    class names (None when it has none), so that predict / eval need no label file."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": FORMAT, "config": dataclasses.asdict(model.cfg), "model": model.state_dict(),
                "class_names": model.class_names}, tmp)
    tmp.replace(path)  # never leave a half-written file under the final name


def load_checkpoint(path: str | Path) -> ILAModel:
    """Load a file written by ``save_checkpoint``."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path}: model file not found") from None
    except Exception as e:  # noqa: BLE001 - turned into a message naming the file
        raise WeightsError(f"{path}: cannot read as an ila-fast model file: {type(e).__name__}: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise WeightsError(f"{path}: not an ila-fast model file (format {FORMAT})")
    model = ILAModel(ModelConfig(**data["config"]), data.get("class_names"))
    model.load_state_dict(data["model"])
    return model
