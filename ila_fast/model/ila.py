"""The ILA branch: learnable inter-frame alignment inside every CLIP ViT block.

Spec: docs/specification.md#31-one-block. The alignment and inter-frame
correlation ops come from ``ila_fast.kernels.get_ops`` (reference PyTorch or fused Triton),
chosen by ``ModelConfig.kernels``.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from ila_fast.config import ModelConfig
from ila_fast.kernels import get_ops

from .clip import DropPath, clip_mlp

POINT_RANGE = 0.75  # tanh output scale of the point head: points stay inside [-0.75, 0.75]

# True while activation checkpointing recomputes a block's forward: BatchNorm layers must not
# update their running statistics a second time for the same batch (the official code's
# gradient checkpointing is broken; docs/specification.md#5-known-defects-of-the-official-code).
_RECOMPUTING = [False]


@contextlib.contextmanager
def recomputing():
    """Context for a checkpointed block's recomputation (``torch.utils.checkpoint`` ``context_fn``)."""
    previous, _RECOMPUTING[0] = _RECOMPUTING[0], True
    try:
        yield
    finally:
        _RECOMPUTING[0] = previous


def bn_momentum(bn: nn.BatchNorm2d) -> float:
    """The momentum a batch-statistics BN applies now: 0 (statistics unchanged) while recomputing."""
    return 0.0 if _RECOMPUTING[0] else bn.momentum


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that normalises in at least fp32 and returns the input's dtype.

    Under FSDP's bf16 ``param_dtype`` its weight arrives in bf16 while the running statistics
    stay fp32 buffers; computing in fp32 keeps the statistics exact (and fp32 / fp64 inputs
    compute exactly what ``nn.BatchNorm2d`` does). State-dict names are unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(x.dtype, torch.float32)
        if self.training and not _RECOMPUTING[0] and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        mean, var = self.running_mean, self.running_var
        cast_stats = mean.dtype != dtype  # e.g. after model.to(torch.bfloat16): compute them in fp32 anyway
        if cast_stats:
            mean, var = mean.to(dtype), var.to(dtype)
        out = F.batch_norm(x.to(dtype), mean, var, self.weight.to(dtype), self.bias.to(dtype), self.training,
                           bn_momentum(self), self.eps)
        if cast_stats and self.training:
            self.running_mean.copy_(mean)
            self.running_var.copy_(var)
        return out.to(x.dtype)


class PointHead(nn.Module):
    """Predicts the pair's alignment points from the correlation features.

    (B*(T-1), C, G, G) -> (B, T-1, 4) = (x_pre, y_pre, x_cur, y_cur) in [-0.75, 0.75].
    """

    def __init__(self, channels: int):
        super().__init__()
        hidden = channels // 2
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1)
        self.bn1 = BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.bn2 = BatchNorm2d(hidden)
        self.fc1 = nn.Conv1d(hidden, hidden // 2, 1, groups=2)
        self.fc2 = nn.Conv1d(hidden // 2, 4, 1, groups=2)
        # Zero start: every point begins at the grid centre.
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, f: torch.Tensor, clips: int) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.bn1(self.conv1(f)), 2))
        x = F.relu(F.max_pool2d(self.bn2(self.conv2(x)), 2))
        x = x.amax(dim=(2, 3)).view(clips, -1, x.shape[1]).transpose(1, 2)  # (B, hidden, T-1)
        x = torch.tanh(self.fc2(F.relu(self.fc1(x)))) * POINT_RANGE
        return x.transpose(1, 2)


class InterFrameAlignment(nn.Module):
    """Correlation of adjacent frames -> alignment points -> aligned frames + temporal features.

    Input z: (B, T, L, D) projected tokens. Returns aligned (B*T, L, D), temporal (B*T, L, D)
    and the block's auxiliary loss (mean over pairs of 1 - cos(s_pre, s_cur)).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, c = cfg.width, cfg.correlation_channels
        self.interactive = cfg.interactive
        self.official_eval_bn = cfg.official_eval_bn
        self.ops = get_ops(cfg.kernels)
        if cfg.interactive == "depthwise":
            self.dw_conv = nn.Conv2d(2 * d, 2 * d, 3, padding=1, groups=2 * d)
            self.dw_bn = nn.BatchNorm2d(2 * d)
            self.pw_conv = nn.Conv2d(2 * d, c, 1)
            self.pw_bn = nn.BatchNorm2d(c)
        else:
            self.dense_conv = nn.Conv2d(2 * d, c, 3, padding=1)
            self.dense_bn = nn.BatchNorm2d(c)
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = BatchNorm2d(c)
        self.point_head = PointHead(c)
        self.temporal_conv = nn.Conv3d(c // 2, c // 2, (3, 1, 1), padding=(1, 0, 0))
        self.temporal_fc = nn.Linear(c // 2, d)
        # Jitter of the 9 training masks; part of the state so a resumed run keeps its schedule.
        self.register_buffer("delta", torch.tensor(cfg.alignment_delta))

    # Normalise with running statistics while training (frozen BN), e.g. for tiny per-GPU batches.
    freeze_bn_stats = False

    def train(self, mode: bool = True):
        super().train(mode)
        # The official Kinetics evaluation runs with its model in training mode, so these
        # BatchNorms normalise with batch statistics (the alignment masks stay in eval mode).
        bn_mode = (mode and not self.freeze_bn_stats) or (not mode and self.official_eval_bn)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.train(bn_mode)
        return self

    def _bn_args(self, bn: nn.BatchNorm2d) -> tuple:
        if bn.training and not _RECOMPUTING[0] and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)  # what nn.BatchNorm2d does in training
        return bn.weight, bn.bias, bn.running_mean, bn.running_var

    def correlation(self, z: torch.Tensor) -> torch.Tensor:
        """(B, T, L, D) -> (B*(T-1), C, G, G): the interactive block."""
        if self.interactive == "depthwise":
            bn_training = self.pw_bn.training
            f = self.ops.pair_correlation(
                z, self.dw_conv.weight, self.dw_conv.bias, *self._bn_args(self.dw_bn),
                self.pw_conv.weight, self.pw_conv.bias, *self._bn_args(self.pw_bn),
                bn_training, bn_momentum(self.pw_bn), self.pw_bn.eps)
        else:
            bn_training = self.dense_bn.training
            f = self.ops.pair_correlation_dense(
                z, self.dense_conv.weight, self.dense_conv.bias, *self._bn_args(self.dense_bn),
                bn_training, bn_momentum(self.dense_bn), self.dense_bn.eps)
        return F.relu(self.bn(self.conv(f)))

    def temporal(self, f: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Per-frame features from the pair features: (B*(T-1), C, G, G) -> (B*T, L, D)."""
        b, t, l, d = z.shape
        g, half = f.shape[-1], f.shape[1] // 2
        pre, cur = f.view(b, t - 1, 2 * half, g, g).split(half, dim=2)
        frames = torch.cat([pre[:, :1], (pre[:, 1:] + cur[:, :-1]) / 2, cur[:, -1:]], dim=1)
        x = self.temporal_conv(frames.transpose(1, 2))           # (B, C/2, T, G, G)
        x = self.temporal_fc(x.flatten(3).permute(0, 2, 3, 1))   # (B, T, G*G, D)
        return torch.cat([z[:, :, :1], x], dim=2).reshape(b * t, l, d)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, l, d = z.shape
        f = self.correlation(z)
        points = self.point_head(f, b)
        aligned, pooled = self.ops.align_frames(z, points, self.delta, self.training)
        aux = (1.0 - F.cosine_similarity(pooled[:, :, 0], pooled[:, :, 1], dim=-1)).mean()
        return aligned.reshape(b * t, l, d), self.temporal(f, z), aux


class ILABlock(nn.Module):
    """A CLIP ViT block with ILA's branch in front. x: (B*T, L, D) -> (x, aux loss)."""

    def __init__(self, cfg: ModelConfig, drop_path: float = 0.0):
        super().__init__()
        d = cfg.width
        self.frames = cfg.frames
        self.attn = nn.MultiheadAttention(d, cfg.heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(d)
        self.mlp = clip_mlp(d, 4 * d)
        self.ln_2 = nn.LayerNorm(d)
        self.message_fc = nn.Linear(d, d)
        self.message_ln = nn.LayerNorm(d)
        self.message_ila = InterFrameAlignment(cfg)
        # Zero-initialised residuals: a fresh ILA model computes exactly CLIP.
        self.temporal_align_fc = nn.Linear(d, d)
        self.temporal_skip_fc = nn.Linear(d, d)
        for fc in (self.temporal_align_fc, self.temporal_skip_fc):
            nn.init.zeros_(fc.weight)
            nn.init.zeros_(fc.bias)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, l, d = x.shape
        z = self.message_ln(self.message_fc(x)).view(n // self.frames, self.frames, l, d)
        aligned, temporal, aux = self.message_ila(z)
        x = x + self.drop_path(self.temporal_align_fc(aligned)) + self.drop_path(self.temporal_skip_fc(temporal))
        x = x + self.drop_path(self.attn(*(self.ln_1(x),) * 3, need_weights=False)[0])
        x = x + self.drop_path(self.mlp(self.ln_2(x)))
        return x, aux


def alignment_delta(epoch: int, initial: float = 0.2, halve_from: int = 30) -> float:
    """delta for a 0-based epoch: ``initial`` until ``halve_from``, halved at the start of each epoch after."""
    return initial * 0.5 ** max(0, epoch - halve_from + 1)
