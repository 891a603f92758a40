"""Moving between (B, C, T, H, W) grids and (B, N, C) token sequences, in one place."""

import torch


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
