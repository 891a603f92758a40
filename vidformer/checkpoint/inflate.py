"""Tensor surgery for loading weights into another geometry: 2-D <-> 3-D kernels, table resizing.

"center" inflation puts the 2-D kernel in the middle temporal slice and zeros elsewhere: on a static
clip every output frame then sees exactly the image model's response (padding included), so the
video model reproduces the image logits. "average" repeats the kernel over time divided by kt
(I3D, UniFormer's choice): same response on a static clip away from the temporal borders.
"""

import torch
import torch.nn.functional as F

INFLATE_METHODS = ("center", "average")


def inflate_kernel(weight: torch.Tensor, kt: int, method: str) -> torch.Tensor:
    """(out, in, kh, kw) -> (out, in, kt, kh, kw)."""
    if method == "center":
        out = weight.new_zeros(weight.shape[:2] + (kt,) + weight.shape[2:])
        out[:, :, kt // 2] = weight
        return out
    if method == "average":
        return weight.unsqueeze(2).repeat(1, 1, kt, 1, 1) / kt
    raise ValueError(f"inflation method must be one of {INFLATE_METHODS}, got {method!r}")


def deflate_kernel(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, kt, kh, kw) -> (out, in, kh, kw) by summing over time (a static clip's response)."""
    return weight.sum(dim=2)


def resize_rel_pos(table: torch.Tensor, rows: int) -> torch.Tensor:
    """Linear interpolation of a (L, C) relative-position table to (rows, C) along its rows."""
    resized = F.interpolate(table.t().unsqueeze(0).float(), size=rows, mode="linear")
    return resized.squeeze(0).t().to(table.dtype)


def resize_pos_embed(pos: torch.Tensor, num_prefix: int, grid: tuple[int, int, int]) -> torch.Tensor:
    """(1, P + N_src, C) absolute position embedding -> (1, P + t*h*w, C) over a (t, h, w) grid.

    The source grid is square in space; its time length is the target's when the count divides,
    else 1 (an image table, repeated over time by the interpolation).
    """
    prefix, tokens = pos[:, :num_prefix], pos[:, num_prefix:]
    n, c = tokens.shape[1], tokens.shape[2]
    t = grid[0] if n % grid[0] == 0 and _is_square(n // grid[0]) else 1
    side = round((n // t) ** 0.5)
    if t * side * side != n:
        raise ValueError(f"cannot read {n} position tokens as a (t, s, s) grid")
    src = tokens.reshape(1, t, side, side, c).permute(0, 4, 1, 2, 3).float()
    out = F.interpolate(src, size=grid, mode="trilinear", align_corners=False)
    out = out.permute(0, 2, 3, 4, 1).reshape(1, -1, c).to(pos.dtype)
    return torch.cat([prefix, out], dim=1)


def _is_square(n: int) -> bool:
    r = round(n ** 0.5)
    return r * r == n
