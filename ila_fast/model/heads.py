"""Video heads on top of the per-frame features (docs/specification.md#33-heads).

- ``IntegrationTransformer`` (``mit``): temporal positional embedding, one CLIP block over
  frames, a residual around the whole transformer, mean over T.
- ``PromptGenerator``: refines the class text features per video by cross-attention from
  text to the video's patch tokens (Kinetics head).
"""
from __future__ import annotations

import torch
from torch import nn

from .clip import QuickGELU, ResidualAttentionBlock, init_trunc_normal


class IntegrationTransformer(nn.Module):
    """(B, T, E) frame features -> (B, E) video feature."""

    def __init__(self, frames: int, dim: int, layers: int = 1):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.empty(1, frames, dim))
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(dim, dim // 64) for _ in range(layers))
        nn.init.trunc_normal_(self.positional_embedding, std=0.02)
        init_trunc_normal(self.resblocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + self.positional_embedding
        for block in self.resblocks:
            y = block(y)
        return (y + x).mean(dim=1)


class CrossAttention(nn.Module):
    """Multi-head attention from queries (B, N, E) to keys / values (B, M, E); no q/k/v bias."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        b, n, e = query.shape
        h = self.heads

        def split(x):
            return x.view(b, -1, h, e // h).transpose(1, 2)

        q, k, v = split(self.q_proj(query)), split(self.k_proj(memory)), split(self.v_proj(memory))
        attn = torch.softmax((q @ k.transpose(-2, -1)) * (e // h) ** -0.5, dim=-1)
        return self.out_proj((attn @ v).transpose(1, 2).reshape(b, n, e))


class PromptGeneratorLayer(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.cross_attn = CrossAttention(dim, dim // 64)
        self.norm1 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), QuickGELU(), nn.Dropout(0.0), nn.Linear(4 * dim, dim))

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        text = text + self.cross_attn(self.norm1(text), visual)
        return text + self.mlp(self.norm3(text))


class PromptGenerator(nn.Module):
    """(B, K, E) class text features, (B, M, E) visual tokens -> (B, K, E) refinement (alpha-scaled)."""

    def __init__(self, dim: int, layers: int = 2, alpha: float = 0.1):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(PromptGeneratorLayer(dim) for _ in range(layers))
        self.alpha = nn.Parameter(torch.full((dim,), alpha))
        init_trunc_normal(self.layers)

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        visual = self.norm(visual)
        for layer in self.layers:
            text = layer(text, visual)
        return self.alpha * text
