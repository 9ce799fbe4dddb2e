"""The ILA video model: CLIP's ViT with an ILA branch in every block, plus a video head.

State-dict names of the CLIP parts follow OpenAI CLIP (``visual.*``, ``token_embedding``,
``transformer.resblocks.{i}``, ``ln_final``, ``text_projection``, ``logit_scale``), so CLIP
weights load without renaming. Spec: docs/specification.md#3-the-model.
"""
from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ila_fast.config import ModelConfig

from .clip import ResidualAttentionBlock, TextTransformer, init_clip_block
from .heads import IntegrationTransformer, PromptGenerator
from .ila import ILABlock, alignment_delta

# Substrings naming what trains (spec 3.4): the ILA branch, its zero-initialised residuals,
# the integration transformer and the SSv2 classifier. Everything else stays frozen.
TRAINABLE_MARKERS = ("message_", "temporal_", "mit.", "classifier.")
# The text tower's state-dict names (their change makes the class text features stale).
TEXT_TOWER_PREFIXES = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")
TEXT_BATCH = 100  # class names per text-tower batch: bounds memory for ViT-L's 768-wide tower


class ILAOutput(NamedTuple):
    logits: torch.Tensor    # (B, num_classes)
    aux_loss: torch.Tensor  # () sum over blocks of the alignment loss


class FrameBlock(ResidualAttentionBlock):
    """A plain CLIP block for the frame-only baseline (``model.ila = false``): x (B*T, L, D) -> (x, 0)."""

    def __init__(self, cfg: ModelConfig, drop_path: float = 0.0):
        super().__init__(cfg.width, cfg.heads, drop_path)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return super().forward(x), x.new_zeros(())


class VisionTower(nn.Module):
    """CLIP's image encoder with ILA blocks. frames (B*T, 3, H, W) -> (B*T, E), (B*T, L-1, D), aux."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.width
        scale = d ** -0.5
        self.conv1 = nn.Conv2d(3, d, cfg.patch_size, cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(d))
        self.positional_embedding = nn.Parameter(scale * torch.randn(cfg.tokens, d))
        self.ln_pre = nn.LayerNorm(d)
        self.transformer = nn.Module()
        # Drop-path rate rising linearly with depth (Python floats: the model may be built on "meta").
        rates = [cfg.drop_path * i / max(1, cfg.layers - 1) for i in range(cfg.layers)]
        block = ILABlock if cfg.ila else FrameBlock
        self.transformer.resblocks = nn.ModuleList(block(cfg, rate) for rate in rates)
        self.ln_post = nn.LayerNorm(d)
        self.proj = nn.Parameter(scale * torch.randn(d, cfg.embed_dim))
        for block in self.transformer.resblocks:
            init_clip_block(block, d, cfg.layers)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.conv1(frames).flatten(2).transpose(1, 2)  # (N, G*G, D)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype))
        aux = x.new_zeros(())
        for block in self.transformer.resblocks:
            x, block_aux = block(x)
            aux = aux + block_aux
        return self.ln_post(x[:, 0]) @ self.proj, x[:, 1:], aux


class ILAModel(nn.Module):
    """video (B, T, 3, H, W), normalised -> ILAOutput(logits (B, K), aux_loss ())."""

    def __init__(self, cfg: ModelConfig, class_names: list[str] | None = None):
        super().__init__()
        self.cfg = cfg
        e = cfg.embed_dim
        self.visual = VisionTower(cfg)
        if cfg.ila:
            self.mit = IntegrationTransformer(cfg.frames, e, cfg.mit_layers)
        self.text_head = cfg.dataset == "k400"
        if self.text_head:
            self._build_text_tower(cfg)
            self.prompt_visual_ln = nn.LayerNorm(cfg.width)
            self.prompt_visual_proj = nn.Parameter(cfg.width ** -0.5 * torch.randn(cfg.width, e))
            self.prompt_generator = PromptGenerator(e, cfg.prompt_layers, cfg.prompt_alpha)
            # Class text features: computed lazily, once, and again only when the class names, the
            # text weights or (upwards) the precision change; see prepare_text_features().
            self._register_text_buffers(cfg.num_classes)
            self.class_names: list[str] | None = None  # None: placeholder labels "class 0", ...
            self._tokens_ready = False
            self._text_version = 0        # bumped by every change the features depend on
            self._features_version = -1   # the version the cached features were computed at
            self._features_dtype = torch.float32
            self._warned_placeholder = False
        else:
            self.classifier = nn.Sequential(nn.LayerNorm(e), nn.Dropout(cfg.ssv2_dropout),
                                            nn.Linear(e, cfg.num_classes))
            nn.init.trunc_normal_(self.classifier[2].weight, std=0.02)
            nn.init.zeros_(self.classifier[2].bias)
            # Names only label the classifier's outputs here; model files carry them along.
            self.class_names: list[str] | None = None
        if class_names is not None:
            self.set_class_names(class_names)
        self.freeze()

    # ------------------------------------------------------------ text (Kinetics head)
    def _build_text_tower(self, cfg: ModelConfig) -> None:
        w = cfg.text_width
        self.token_embedding = nn.Embedding(cfg.vocab_size, w)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, w))
        self.transformer = TextTransformer(w, cfg.text_layers, cfg.text_heads, cfg.context_length)
        self.ln_final = nn.LayerNorm(w)
        self.text_projection = nn.Parameter(torch.empty(w, cfg.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=w ** -0.5)
        for block in self.transformer.resblocks:
            init_clip_block(block, w, cfg.text_layers)

    @property
    def prompts(self) -> list[str]:
        """The text templates of a class name (``model.prompt``); their features are averaged."""
        return [self.cfg.prompt] if isinstance(self.cfg.prompt, str) else list(self.cfg.prompt)

    def _register_text_buffers(self, num_classes: int, device=None) -> None:
        # one row of token ids per (template, class), template-major; features per class
        self.register_buffer("class_token_ids", torch.zeros(len(self.prompts) * num_classes, self.cfg.context_length,
                                                            dtype=torch.long, device=device), persistent=False)
        self.register_buffer("class_text_features", torch.zeros(num_classes, self.cfg.embed_dim, device=device),
                             persistent=False)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """CLIP's text encoder: (K, context) token ids -> (K, E) at each text's end token.

        The mask is causal, so positions after the longest text's end token cannot change the
        result: they are cut off (exact, and ~10x less work for class names of a few tokens).
        """
        end = tokens.argmax(dim=-1)  # the end-of-text token has the largest id
        n = tokens.shape[1] if tokens.is_meta else int(end.max()) + 1
        x = self.token_embedding(tokens[:, :n]) + self.positional_embedding[:n]
        x = self.ln_final(self.transformer(x))
        return x[torch.arange(x.shape[0], device=x.device), end] @ self.text_projection

    def set_class_names(self, names: list[str] | None, any_count: bool = False,
                        prompt: str | list[str] | None = None) -> None:
        """Use these class names (None: placeholders); the text features follow lazily.

        ``any_count``: a text head scores any label set (zero-shot: another dataset's classes), so its
        class count becomes ``len(names)``; a classifier head has a fixed count and refuses. ``prompt``:
        new text template(s) of the names (``model.prompt``), a text head only.
        """
        import dataclasses

        from ila_fast.config import ConfigError

        if prompt is not None and self.text_head and prompt != self.cfg.prompt:
            self.cfg = dataclasses.replace(self.cfg, prompt=prompt)  # checked as the config key is
            self._tokens_ready = False
        if names is not None:
            names = [str(n) for n in names]
            if any_count and self.text_head and len(names) != self.cfg.num_classes:
                self.cfg = dataclasses.replace(self.cfg, num_classes=len(names))
            if len(names) != self.cfg.num_classes:
                raise ConfigError(f"got {len(names)} class names for a model with model.num_classes = "
                                  f"{self.cfg.num_classes}")
        if self.text_head and len(self.class_token_ids) != len(self.prompts) * self.cfg.num_classes:
            held = self.class_text_features.dtype  # another label-set size or template count: the model's cast stays
            self._register_text_buffers(self.cfg.num_classes, self.class_token_ids.device)
            self.class_text_features = self.class_text_features.to(held)
            self._tokens_ready = False
        if not self.text_head:
            self.class_names = names
            return
        if names == self.class_names and self._tokens_ready:
            return
        self.class_names = names
        self._tokens_ready = False
        self._text_version += 1
        if names is not None and not self.class_token_ids.is_meta:
            self._tokenize()  # errors in the names surface here, not at the first forward

    def _tokenize(self) -> None:
        from ila_fast.compat import import_open_clip
        from ila_fast.config import ConfigError

        names = self.class_names or [f"class {i}" for i in range(self.cfg.num_classes)]
        names = [template.replace("{}", name) for template in self.prompts for name in names]
        tokenizer = import_open_clip().get_tokenizer("ViT-B-16")
        tokens = tokenizer(names, context_length=self.cfg.context_length)
        largest = int(tokens.max())
        if largest >= self.cfg.vocab_size:
            row = int(tokens.max(dim=1).values.argmax())
            raise ConfigError(f"class name {names[row]!r} tokenizes to id {largest}, outside the text tower's "
                              f"vocabulary (model.vocab_size = {self.cfg.vocab_size}); CLIP's tokenizer "
                              f"needs model.vocab_size = {getattr(tokenizer, 'vocab_size', 49408)}")
        full = (tokens[:, -1] != 0).nonzero().flatten().tolist()
        if full:
            raise ConfigError(f"class name {names[full[0]]!r} does not fit in model.context_length = "
                              f"{self.cfg.context_length} tokens; shorten it")
        self.class_token_ids.copy_(tokens.to(self.class_token_ids.device))
        self._tokens_ready = True

    def _text_dtype(self) -> torch.dtype:
        return self.token_embedding.weight.dtype

    def text_features_fresh(self) -> bool:
        """Whether the cached class text features match the names, text weights and precision."""
        return (self._features_version == self._text_version and self._tokens_ready
                and torch.finfo(self._features_dtype).eps <= torch.finfo(self._text_dtype()).eps)

    def prepare_text_features(self) -> torch.Tensor | None:
        """The class text features (K, E), computed now if they are not fresh.

        Call it before sharding the model (FSDP): forward then finds them fresh and never runs
        the text tower. A classifier-head (SSv2) model has none: None.
        """
        if not self.text_head:
            return None
        if not self.text_features_fresh():
            self.refresh_text_features()
        return self.class_text_features

    def refresh_text_features(self) -> None:
        """Recompute the class text features now: the frozen text tower, batched, in inference mode."""
        if not self.text_head:
            return
        if not self._tokens_ready and not self.class_token_ids.is_meta:
            self._tokenize()
        dtype = self._text_dtype()
        chunks = []
        with torch.inference_mode():
            for tokens in self.class_token_ids.split(TEXT_BATCH):
                chunks.append(self.encode_text(tokens))
        # the mean over templates of each class's features (one template: exactly its features)
        features = torch.cat(chunks).view(len(self.prompts), -1, chunks[0].shape[-1]).mean(dim=0)
        with torch.no_grad():  # a normal tensor (inference tensors cannot be saved for backward)
            if self.class_text_features.dtype != dtype:
                self.class_text_features = self.class_text_features.to(dtype)
            self.class_text_features.copy_(features)
        self._features_version, self._features_dtype = self._text_version, dtype
        self._tokens_ready = self._tokens_ready or self.class_token_ids.is_meta

    @property
    def text_features(self) -> torch.Tensor:
        """The class text features (K, E), fresh."""
        return self.prepare_text_features()

    @property
    def class_tokens(self) -> torch.Tensor:
        """The class names' token ids (K, context)."""
        if not self._tokens_ready and not self.class_token_ids.is_meta:
            self._tokenize()
        return self.class_token_ids

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        changed = self.text_head and (assign or self._text_weights_differ(state_dict))
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if changed:
            self._text_version += 1  # recomputed at the next use, not now
        return result

    def _text_weights_differ(self, state_dict) -> bool:
        """Whether loading ``state_dict`` changes a text-tower tensor (compared shard by shard)."""
        current = dict(self.named_parameters())
        for key, value in state_dict.items():
            if not key.startswith(TEXT_TOWER_PREFIXES) or key not in current:
                continue
            old, new = current[key].detach(), value.detach() if torch.is_tensor(value) else value
            old, new = (t.to_local() if hasattr(t, "to_local") else t for t in (old, new))
            if old.is_meta or new.is_meta or old.shape != new.shape or not torch.equal(old, new.to(old)):
                return True
        return False

    def _apply(self, fn, recurse: bool = True):
        if not self.text_head:
            return super()._apply(fn, recurse)
        was_meta = self.class_token_ids.is_meta
        result = super()._apply(fn, recurse)
        if was_meta and not self.class_token_ids.is_meta:  # materialised (to_empty): contents are garbage
            self._tokens_ready = False
            self._text_version += 1
        held = self.class_text_features.dtype  # the cached features were cast with the model
        if held.is_floating_point and torch.finfo(held).eps > torch.finfo(self._features_dtype).eps:
            self._features_dtype = held  # they now hold only this precision: a later upcast recomputes
        return result

    def _warn_placeholder_labels(self) -> None:
        if self.class_names is None and not self._warned_placeholder:
            self._warned_placeholder = True
            warnings.warn("this Kinetics model was built without class names: its text head scores placeholder "
                          "labels ('class 0', ...), so its predictions mean nothing; pass class_names= "
                          "(ila_fast.data.read_labels of the label CSV) or set model.class_names", stacklevel=3)

    # ------------------------------------------------------------ video
    def encode_frames(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, T, 3, H, W) -> frame features (B, T, E), patch tokens (B, T, L-1, D), aux loss ()."""
        b, t = video.shape[:2]
        if t != self.cfg.frames:
            raise ValueError(f"model is configured for {self.cfg.frames} frames, got a clip of {t}")
        features, patches, aux = self.visual(video.flatten(0, 1))
        return features.view(b, t, -1), patches.view(b, t, *patches.shape[1:]), aux

    def forward(self, video: torch.Tensor) -> ILAOutput:
        frames, patches, aux = self.encode_frames(video)
        # The frame-only baseline averages frame features: it cannot see their order.
        video_feature = self.mit(frames) if self.cfg.ila else frames.mean(dim=1)
        if not self.text_head:
            return ILAOutput(self.classifier(F.normalize(video_feature, dim=-1)), aux)
        visual = self.prompt_visual_ln(patches) @ self.prompt_visual_proj  # (B, T, L-1, E)
        if not self.training and not video.is_meta:
            self._warn_placeholder_labels()
        text = self.prepare_text_features().to(video_feature.dtype).expand(video.shape[0], -1, -1)
        text = text + self.prompt_generator(text, visual.mean(dim=1))
        logits = torch.einsum("be,bke->bk", F.normalize(video_feature, dim=-1), F.normalize(text, dim=-1))
        return ILAOutput(self.logit_scale.exp() * logits, aux)

    # ------------------------------------------------------------ training helpers
    def freeze(self) -> None:
        """Only the ILA branch, its residuals, the integration transformer and the classifier train
        (everything with ``model.freeze_clip = false``: random CLIP weights are not worth keeping)."""
        for name, p in self.named_parameters():
            p.requires_grad_(not self.cfg.freeze_clip or is_trainable(name))

    def set_epoch(self, epoch: int) -> None:
        """Apply the alignment-jitter schedule for a 0-based epoch (delta is saved with the model)."""
        if not self.cfg.ila:
            return
        value = alignment_delta(epoch, self.cfg.alignment_delta, self.cfg.alignment_delta_halve_from)
        for block in self.visual.transformer.resblocks:
            block.message_ila.delta.fill_(value)


def is_trainable(name: str) -> bool:
    return any(marker in name for marker in TRAINABLE_MARKERS)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return total, sum(p.numel() for p in model.parameters() if p.requires_grad)
