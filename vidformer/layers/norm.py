"""Normalisations on (B, C, T, H, W) grids that families share."""

import torch
import torch.nn.functional as F
from torch import nn


class LayerNormChannels(nn.LayerNorm):
    """LayerNorm over the channel axis of a (B, C, ...) grid (what a LayerNorm after a patch conv does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.movedim(1, -1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.movedim(-1, 1)


class GroupNorm1(nn.GroupNorm):
    """GroupNorm with one group: normalises over channels and all of space-time (PoolFormer's norm)."""

    def __init__(self, num_channels: int, eps: float = 1e-5):
        super().__init__(1, num_channels, eps=eps)
