"""CLIP building blocks, with OpenAI CLIP's state-dict names so its weights load as they are.

Activations are batch-first, (N, L, D); nn.MultiheadAttention(batch_first=True) has the
same parameter names as CLIP's sequence-first one.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class QuickGELU(nn.Module):
    """CLIP's GELU approximation, x * sigmoid(1.702 x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class DropPath(nn.Module):
    """Stochastic depth: drops a whole residual branch per sample while training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype)
        return x * keep.bernoulli_(1.0 - self.p) / (1.0 - self.p)


def clip_mlp(width: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict([
        ("c_fc", nn.Linear(width, hidden)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(hidden, width))]))


class ResidualAttentionBlock(nn.Module):
    """CLIP's pre-LN transformer block (attention + QuickGELU MLP), x: (N, L, D)."""

    def __init__(self, width: int, heads: int, drop_path: float = 0.0):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = clip_mlp(width, 4 * width)
        self.ln_2 = nn.LayerNorm(width)
        self.drop_path = DropPath(drop_path)

    def attention(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False, attn_mask=attn_mask)[0]

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.attention(self.ln_1(x), attn_mask))
        return x + self.drop_path(self.mlp(self.ln_2(x)))


class TextTransformer(nn.Module):
    """CLIP's causal text transformer body (``transformer.resblocks.{i}``)."""

    def __init__(self, width: int, layers: int, heads: int, context_length: int):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))
        self.context_length = context_length

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Causal mask, made here rather than kept as a buffer, so a model built on "meta" and
        # materialised holds no garbage. Texts may be cut after their last end token.
        n = x.shape[1]
        mask = torch.full((n, n), float("-inf"), device=x.device, dtype=x.dtype).triu_(1)
        for block in self.resblocks:
            x = block(x, mask)
        return x


def init_clip_block(block: ResidualAttentionBlock, width: int, layers: int) -> None:
    """CLIP's initialisation of one transformer block."""
    proj_std = (width ** -0.5) * ((2 * layers) ** -0.5)
    attn_std = width ** -0.5
    fc_std = (2 * width) ** -0.5
    nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
    nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
    nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
    nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)


def init_trunc_normal(module: nn.Module) -> None:
    """X-CLIP-style initialisation for the new heads: truncated normal Linear weights, unit LN."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
