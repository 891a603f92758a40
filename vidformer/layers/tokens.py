"""Moving between (B, C, T, H, W) grids and (B, N, C) token sequences, in one place."""

import torch
from torch import nn


def as_video(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) images become (B, C, 1, H, W) clips; (B, C, T, H, W) passes through."""
    if x.ndim == 4:
        return x.unsqueeze(2)
    if x.ndim != 5:
        raise ValueError(f"expected input of shape (B, C, T, H, W) or (B, C, H, W), got {tuple(x.shape)}")
    return x


def to_tokens(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """(B, C, T, H, W) -> (B, T*H*W, C) in t-major, then h, then w order, and the grid (T, H, W)."""
    return x.flatten(2).transpose(1, 2), tuple(x.shape[2:])


def to_grid(x: torch.Tensor, thw: tuple[int, int, int]) -> torch.Tensor:
    """(B, T*H*W, C) -> (B, C, T, H, W); the inverse of to_tokens."""
    b, n, c = x.shape
    if n != thw[0] * thw[1] * thw[2]:
        raise ValueError(f"{n} tokens do not fill a grid of {thw}")
    return x.transpose(1, 2).reshape(b, c, *thw)


_SIZE_CONSTANTS: dict = {}


def size_constant(build, *sizes, like: torch.Tensor) -> torch.Tensor:
    """build(*sizes, like=like): a tensor that depends only on sizes and `like`'s device and dtype, built once
    per key (index tables, one-hot columns, resize matrices: dozens of small ops per block otherwise).

    A traced or exported forward (compile, export, fake tensors) builds it in its graph instead.
    """
    if type(like) not in (torch.Tensor, nn.Parameter) or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return build(*sizes, like=like)
    key = (build, sizes, like.device, like.dtype)
    if key not in _SIZE_CONSTANTS:
        with torch.no_grad():
            _SIZE_CONSTANTS[key] = build(*sizes, like=like)
    return _SIZE_CONSTANTS[key]
