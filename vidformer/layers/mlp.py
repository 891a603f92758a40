"""The transformer MLPs, stochastic depth and the ViT-style linear init, shared by the families."""

import torch
from torch import nn

from vidformer.layers.conv import SpaceTimeConv


# rows per piece of the eval-mode MLP on long inputs (see Mlp.forward)
_EVAL_CHUNK_ROWS = 1024


class Mlp(nn.Module):
    """Linear -> activation -> dropout -> Linear -> dropout, on the last axis.

    In eval mode without gradients, an input of many rows (MViTv2's first stage: 25k tokens) runs in pieces
    of _EVAL_CHUNK_ROWS rows: each piece's hidden activations (4x the width) stay in cache between the two
    linears and the activation, instead of a fresh buffer of 40 MB written and read back (1.7x faster there,
    the same values: rows are independent). Under torch.compile/export, or for a symbolic size, it is one piece.
    """

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None,
                 act_layer: type[nn.Module] = nn.GELU, drop: float = 0.0):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
        if (self.training or torch.is_grad_enabled() or not isinstance(rows, int) or rows < 2 * _EVAL_CHUNK_ROWS
                or torch.compiler.is_compiling()):
            return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
        flat = x.reshape(rows, x.shape[-1])
        out = flat.new_empty(rows, self.fc2.out_features)
        for piece, dest in zip(flat.split(_EVAL_CHUNK_ROWS), out.split(_EVAL_CHUNK_ROWS)):
            dest.copy_(self.fc2(self.act(self.fc1(piece))))
        return out.view(*x.shape[:-1], -1)


class ConvMlp(nn.Module):
    """The MLP on (B, C, T, H, W) grids: 1x1x1 conv -> GELU -> 1x1x1 conv (weights (out, in, 1, 1))."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = SpaceTimeConv(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = SpaceTimeConv(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def trunc_normal_init(layer: nn.Module, std: float = 0.02) -> None:
    """Truncated-normal weight and zero bias: the init every family's papers use for linear layers."""
    nn.init.trunc_normal_(layer.weight, std=std)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def init_linears(model: nn.Module, std: float = 0.02) -> None:
    """trunc_normal_init on every nn.Linear of a model (norms and convs keep torch's defaults)."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            trunc_normal_init(m, std)


class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch for a whole sample with probability p, rescale the rest."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Stochastic depth rising linearly from 0 at the first block to `rate` at the last."""
    if depth <= 1:
        return [0.0] * depth
    return [rate * i / (depth - 1) for i in range(depth)]
