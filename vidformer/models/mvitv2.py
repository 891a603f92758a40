"""MViTv2 (Li et al., CVPR 2022): pooling attention with decomposed relative positions, video and image.

num_frames > 1 builds the video model of PySlowFast (cube patchify 3x7x7/2x4x4, 3-D Q/KV pooling, rel-pos
tables along h, w and t, cls token); num_frames = 1 builds the image model of facebookresearch/mvit and
timm (7x7/4 patchify, 2-D pooling, h/w tables only, mean pooling) from the same classes. Checkpoints of
PySlowFast, torchvision `mvit_v2_s`, facebookresearch/mvit and timm `mvitv2_*` convert to this layout.
"""

import itertools
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vidformer.layers import (CubePatchEmbed, DropPath, Mlp, SpaceTimeConv, as_video, depthwise_conv3d, drop_path_rates,
                              factored_bias_attention, size_constant, to_grid, triple)
from vidformer.models.base import CheckpointLayout, PretrainedCfg, VideoModel, check_output_fmt, stage_indices
from vidformer.models.registry import register_model

Grid = tuple[int, int, int]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BlockCfg:
    """One MultiScaleBlock: widths, heads, pooling geometry and the grid its rel-pos tables are sized for."""

    dim_in: int
    dim_out: int
    attn_dim: int  # dim_out with DIM_MUL_IN_ATT (expansion in the qkv projection), else dim_in
    num_heads: int
    kernel: Grid  # Q and KV pooling kernel
    stride_q: Grid
    stride_kv: Grid
    table_grid: Grid  # block-input grid by floor division (PySlowFast's sizes; checkpoints depend on them)
    drop_path: float


def block_configs(depths, embed_dim: int, num_heads: int, grid: Grid, kernel: Grid, q_stride: Grid,
                  kv_stride: Grid, dim_mul_in_att: bool, drop_path_rate: float) -> list[BlockCfg]:
    """The per-block list: width and heads double and Q is strided at each stage's first block.

    The KV stride starts at `kv_stride` and is divided by the Q stride at every Q-strided block (floor,
    at least 1), so keys and values stay at about the same size through the network ("adaptive" KV
    stride). Without DIM_MUL_IN_ATT (image MViTv2-L) the last block of a stage widens in its MLP.
    """
    widths = [embed_dim * 2 ** s for s in range(len(depths))]
    heads = [num_heads * 2 ** s for s in range(len(depths))]
    rates = drop_path_rates(drop_path_rate, sum(depths))
    cfgs, dim, i = [], embed_dim, 0
    for s, depth in enumerate(depths):
        for j in range(depth):
            stride_q = q_stride if (j == 0 and s > 0) else (1, 1, 1)
            if max(stride_q) > 1:
                kv_stride = tuple(max(kv // q, 1) for kv, q in zip(kv_stride, stride_q))
            if dim_mul_in_att:
                dim_out = widths[s]
            else:
                dim_out = widths[s + 1] if (j == depth - 1 and s + 1 < len(depths)) else widths[s]
            cfgs.append(BlockCfg(dim, dim_out, dim_out if dim_mul_in_att else dim, heads[s], kernel, stride_q,
                                 kv_stride, grid, rates[i]))
            grid = tuple(n // q for n, q in zip(grid, stride_q))
            dim, i = dim_out, i + 1
    return cfgs


def _rel_pos_table(table: torch.Tensor, q_len: int, k_len: int) -> torch.Tensor:
    """(q_len, k_len, d) embeddings R[d(i, j)] of the offsets between query i and key j along one axis.

    The coarser side is stretched onto the finer grid (ratios >= 1) so offsets stay integers where the
    sizes divide; fractional offsets truncate as in PySlowFast. A table sized for another grid is
    linearly interpolated along its rows first.
    """
    rows = 2 * max(q_len, k_len) - 1
    if table.shape[0] != rows:
        table = F.interpolate(table.t().unsqueeze(0), size=rows, mode="linear").squeeze(0).t()
    # an embedding lookup (a gather, no FLOPs, as the papers count it); its CPU backward is as fast as a
    # one-hot matmul's
    return F.embedding(size_constant(_offsets, q_len, k_len, like=table), table)


def _offsets(q_len: int, k_len: int, like: torch.Tensor) -> torch.Tensor:
    """(q_len, k_len) table rows of the offsets between query i and key j (see _rel_pos_table)."""
    q_ratio, k_ratio = max(k_len / q_len, 1.0), max(q_len / k_len, 1.0)
    qi = torch.arange(q_len, device=like.device, dtype=torch.float32)
    kj = torch.arange(k_len, device=like.device, dtype=torch.float32)
    return (qi[:, None] * q_ratio - (kj[None, :] + (1.0 - k_len)) * k_ratio).long()


def split_prefix(z: torch.Tensor, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, P + N, ...) -> the P prefix (cls) rows and the N grid rows, by one split: its backward is one cat
    of the two gradients, where two slices' backwards each zero-fill and copy a gradient of the full size."""
    return z.split([p, z.shape[1] - p], dim=1)


def _read_rows(n: int, kernel: int, stride: int, padding: int) -> list[int] | None:
    """The rows of an axis of n that a conv (kernel, stride, padding) reads, where its windows do not overlap
    (stride >= kernel) and so skip rows; None where it reads every row.

    Output o reads rows o * stride - padding + j (j < kernel). Gathered in order, those rows (the ones in
    range) are the same windows at stride = kernel with the same padding: the first window lacks exactly
    `padding` rows and the last at most that many, so the symmetric padding lines them up.
    """
    if stride < kernel:
        return None
    n_out = (n + 2 * padding - kernel) // stride + 1
    rows = [r for o in range(n_out) for r in range(o * stride - padding, o * stride - padding + kernel) if 0 <= r < n]
    return rows if len(rows) < n else None


def _gathered_tokens(t: int, h: int, w: int, rows_t, rows_h, rows_w, num_prefix: int, like: torch.Tensor):
    """Token indices of the prefix rows, then the grid positions (t, h, w) in rows_t x rows_h x rows_w, t-major."""
    grid = torch.arange(t * h * w, device=like.device).view(t, h, w)
    picked = grid[torch.tensor(rows_t, device=like.device)][:, torch.tensor(rows_h, device=like.device)]
    picked = picked[:, :, torch.tensor(rows_w, device=like.device)]
    return torch.cat([torch.arange(num_prefix, device=like.device), num_prefix + picked.flatten()])


def rel_pos_terms(q: torch.Tensor, q_grid: Grid, k_grid: Grid, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                  rel_pos_t: torch.Tensor | None, num_prefix: int) -> torch.Tensor:
    """Per-axis relative-position logits [q.R_t | q.R_h | q.R_w], one column per key position along each axis.

    q: (B, P + Nq, heads, d) pooled, normed and *unscaled* queries (PySlowFast adds E after scaling QK^T
    only). Returns (B, P + Nq, heads, kt + kh + kw) (no kt columns without a temporal table); prefix (cls)
    rows are zero. The bias E[i, j] is the sum of row i's columns at key j's t, h and w indices.
    """
    (qt, qh, qw), (kt, kh, kw) = q_grid, k_grid
    b, _, n, d = q.shape
    p = num_prefix
    r = split_prefix(q, p)[1].reshape(b, qt, qh, qw, n, d)
    # each matmul is batched over its own axis and reads q in place: (B, qt, qh, qw, heads, k_axis)
    rh = _rel_pos_table(rel_pos_h, qh, kh)  # (qh, kh, d)
    terms = [(r.view(b, qt, qh, qw * n, d) @ rh.transpose(1, 2)).view(b, qt, qh, qw, n, kh),
             torch.einsum("bthwnc,wkc->bthwnk", r, _rel_pos_table(rel_pos_w, qw, kw))]
    if rel_pos_t is not None:
        rt = _rel_pos_table(rel_pos_t, qt, kt)  # (qt, kt, d)
        terms.insert(0, (r.view(b, qt, qh * qw * n, d) @ rt.transpose(1, 2)).view(b, qt, qh, qw, n, kt))
    out = torch.cat(terms, dim=-1).view(b, qt * qh * qw, n, -1)
    return torch.cat([out.new_zeros(b, p, n, out.shape[-1]), out], dim=1) if p else out


def key_position_indicators(k_grid: Grid, num_prefix: int, temporal: bool, like: torch.Tensor) -> torch.Tensor:
    """(P + Nk, kt + kh + kw) one-hot columns of each key's t, h and w index (rows of prefix keys are zero).

    Appended to the keys, they turn the decomposed rel-pos bias into part of the QK^T matmul:
    [q * scale | terms] . [k | indicators]^T = scale q.k + E. The bias then needs no separate tensor,
    and SDPA keeps its fused kernels in forward and backward.
    """
    return size_constant(_key_onehots, *k_grid, num_prefix, temporal, like=like)


def _key_onehots(kt: int, kh: int, kw: int, num_prefix: int, temporal: bool, like: torch.Tensor) -> torch.Tensor:
    idx = torch.arange(kt * kh * kw, device=like.device)
    axes = [(idx // (kh * kw), kt)] if temporal else []
    axes += [((idx // kw) % kh, kh), (idx % kw, kw)]
    onehot = torch.cat([F.one_hot(i, size) for i, size in axes], dim=1).to(like.dtype)
    return F.pad(onehot, (0, 0, num_prefix, 0))


def rel_pos_bias(q: torch.Tensor, q_grid: Grid, k_grid: Grid, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                 rel_pos_t: torch.Tensor | None, num_prefix: int) -> torch.Tensor:
    """The decomposed rel-pos logits E = q.R_h + q.R_w (+ q.R_t) as an explicit (B, heads, P + Nq, P + Nk) bias.

    The model never builds it (it folds E into the attention matmul); it states what that computes.
    """
    (kt, kh, kw), p = k_grid, num_prefix
    terms = rel_pos_terms(q, q_grid, k_grid, rel_pos_h, rel_pos_w, rel_pos_t, p).permute(0, 2, 1, 3)
    if rel_pos_t is None:
        terms = torch.cat([terms.new_zeros(*terms.shape[:3], kt), terms], dim=-1)
    t, h, w = terms.split([kt, kh, kw], dim=-1)  # (B, heads, P + Nq, k_axis)
    grid = t[..., :, None, None] + h[..., None, :, None] + w[..., None, None, :]  # (B, heads, P + Nq, kt, kh, kw)
    return F.pad(grid.flatten(3), (p, 0))  # prefix keys get no bias


# pooling inputs (elements) below which CPU training pools with heads in the batch axis, and from which it pools
# with one conv2d per temporal tap. Measured forward + backward on AVX-512: per tap beats one channels-last conv3d
# from about 75 k elements on (2-4x at 100 k-2.4 M; an AMD AVX2 machine earlier put that crossing at 500 k) and
# per head wins below about 50 k (mvitv2_s training at 4x64: 0.91x torchvision at a 20 k threshold, 0.99x at 64 k)
_PER_HEAD_MAX_NUMEL = 64_000
# tokens (batch x length) from which q, k, v come from three projections instead of one qkv matmul
_SPLIT_QKV_MIN_TOKENS = 1_000


class MultiScaleAttention(nn.Module):
    """Pooling attention (MViTv2 Sec. 3): qkv projection, depthwise-conv pooling of Q/K/V, rel-pos, residual Q.

    The pooling convs act on one head's channels and are shared by all heads (their weight is
    (head_dim, 1, k...)); each is followed by LayerNorm(head_dim), applied to the cls token too.
    """

    def __init__(self, cfg: BlockCfg, qkv_bias: bool = True, rel_pos_temporal: bool = True,
                 residual_pooling: bool = True, num_prefix: int = 1, proj_drop: float = 0.0, eps: float = 1e-6):
        super().__init__()
        self.num_heads, self.num_prefix, self.residual_pooling = cfg.num_heads, num_prefix, residual_pooling
        self.dim = cfg.attn_dim
        self.head_dim = head_dim = cfg.attn_dim // cfg.num_heads
        self.qkv = nn.Linear(cfg.dim_in, 3 * cfg.attn_dim, bias=qkv_bias)
        self.proj = nn.Linear(cfg.attn_dim, cfg.attn_dim)
        self.proj_drop = nn.Dropout(proj_drop)
        padding = tuple(k // 2 for k in cfg.kernel)
        self.pool_q = SpaceTimeConv(head_dim, head_dim, cfg.kernel, cfg.stride_q, padding, groups=head_dim, bias=False)
        self.pool_k = SpaceTimeConv(head_dim, head_dim, cfg.kernel, cfg.stride_kv, padding, groups=head_dim, bias=False)
        self.pool_v = SpaceTimeConv(head_dim, head_dim, cfg.kernel, cfg.stride_kv, padding, groups=head_dim, bias=False)
        self.norm_q, self.norm_k, self.norm_v = (nn.LayerNorm(head_dim, eps=eps) for _ in range(3))
        t, h, w = cfg.table_grid
        q_size, kv_size = h // cfg.stride_q[1], h // cfg.stride_kv[1]
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * max(q_size, kv_size) - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * max(q_size, kv_size) - 1, head_dim))
        self.rel_pos_t = nn.Parameter(torch.zeros(2 * t - 1, head_dim)) if rel_pos_temporal else None
        for table in (self.rel_pos_h, self.rel_pos_w, self.rel_pos_t):
            if table is not None:
                nn.init.trunc_normal_(table, std=0.02)

    def _pool(self, z: torch.Tensor, conv: SpaceTimeConv, norm: nn.LayerNorm, grid: Grid,
              stride: Grid | None = None) -> tuple[torch.Tensor, Grid]:
        """(B, P + N, heads, d) -> (B, P + N', heads, d), pooled over the (T, H, W) grid, then normed.

        `stride` replaces the conv's for a grid of gathered rows (see _kv_input).

        Heads go into the channel axis with the shared kernel repeated per head, so the grid is read in
        place as channels-last frames, through one channels-last conv3d. CPU training, whose depthwise conv3d
        backward is several times slower than conv2d's, runs it instead as one 2-D depthwise conv per temporal
        tap, summed over the shifted frames (the same arithmetic), or on small grids as one conv3d with heads in
        the batch axis (a contiguous copy), whose backward is the fast one there (see _PER_HEAD_MAX_NUMEL).
        CPU training in bf16/fp16 (autocast) pools in float32: torch's CPU backward of a low-precision depthwise
        conv is 5-25x slower than float32's at these sizes.
        """
        b, _, n, d = z.shape
        p = self.num_prefix
        prefix, rest = split_prefix(z, p)
        frames = rest.reshape(b, *grid, n * d)
        weight = conv.weight if conv.weight.ndim == 5 else conv.weight.unsqueeze(2)  # (d, 1, kt, kh, kw)
        cpu_training = torch.is_grad_enabled() and z.requires_grad and z.device.type == "cpu"
        if cpu_training and z.dtype in (torch.bfloat16, torch.float16):
            with torch.autocast("cpu", enabled=False):
                out, new_grid = self._conv(frames.float(), conv, weight.float(), n, cpu_training, stride)
            out = out.to(z.dtype)
        else:
            out, new_grid = self._conv(frames, conv, weight, n, cpu_training, stride)
        if p:
            out = torch.cat([prefix, out], dim=1)
        return norm(out), new_grid

    @classmethod
    def _conv(cls, frames: torch.Tensor, conv: SpaceTimeConv, weight: torch.Tensor, n: int, cpu_training: bool,
              stride: Grid | None = None) -> tuple[torch.Tensor, Grid]:
        """(B, T, H, W, heads * d) channels-last frames -> (B, N', heads, d) and the pooled grid (see _pool)."""
        b, t, h, w, c = frames.shape
        d = c // n
        stride = stride or conv.stride
        if cpu_training and frames.numel() < _PER_HEAD_MAX_NUMEL:
            # small grids: one contiguous (B * heads, d, T, H, W) conv, whose backward is the fast one there (at
            # stride 1 as two more forward convs, see depthwise_conv3d)
            heads_first = frames.reshape(b, t, h, w, n, d).permute(0, 4, 5, 1, 2, 3).reshape(b * n, d, t, h, w)
            out = depthwise_conv3d(heads_first, weight, None, stride, conv.padding)
            new_grid = tuple(out.shape[2:])
            out = out.reshape(b, n, d, -1).permute(0, 3, 1, 2)  # (B, N', heads, d)
        else:
            if cpu_training:
                out = cls._conv_per_tap(frames, conv, weight, n, stride)
            else:
                out = F.conv3d(frames.permute(0, 4, 1, 2, 3), weight.repeat(n, 1, 1, 1, 1), None, stride,
                               conv.padding, 1, c).transpose(1, 2)  # (B, T', C, H', W'), channels-last
            new_grid = (out.shape[1], *out.shape[3:])
            out = out.permute(0, 1, 3, 4, 2).reshape(b, -1, n, d)  # (B, N', heads, d)
        return out, new_grid

    @staticmethod
    def _conv_per_tap(frames: torch.Tensor, conv: SpaceTimeConv, weight: torch.Tensor, n: int,
                      stride: Grid) -> torch.Tensor:
        """(B, T, H, W, C) -> (B, T', C, H', W'): the depthwise conv3d as a sum of one conv2d per temporal tap."""
        b, t, h, w, c = frames.shape
        kt, st, pt = conv.kernel_size[0], stride[0], conv.padding[0]
        t_out = (t + 2 * pt - kt) // st + 1
        out = None
        for i in range(kt):
            lo, hi = max(0, -((i - pt) // st)), min(t_out, (t - 1 - i + pt) // st + 1)  # output frames tap i reaches
            if lo >= hi:
                continue
            src = frames[:, lo * st + i - pt:(hi - 1) * st + i - pt + 1:st]  # (B, hi - lo, H, W, C)
            y = F.conv2d(src.reshape(-1, h, w, c).permute(0, 3, 1, 2), weight[:, :, i].repeat(n, 1, 1, 1), None,
                         stride[1:], conv.padding[1:], 1, c)  # (B * (hi - lo), C, H', W'), channels-last
            y = y.permute(0, 2, 3, 1).unflatten(0, (b, hi - lo))  # (B, hi - lo, H', W', C), a view
            if (lo, hi) != (0, t_out):
                # zero frames where the tap meets the padding, out of place: an in-place add into a slice made
                # the backward copy the whole gradient per tap (about 2x this function's training time)
                zero = y.new_zeros(())
                y = torch.cat([zero.expand(b, lo, *y.shape[2:]), y, zero.expand(b, t_out - hi, *y.shape[2:])], 1)
            out = y if out is None else out + y
        return out.permute(0, 1, 4, 2, 3)

    def forward(self, x: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, Grid]:
        b, length, _ = x.shape
        # one matmul for few tokens, where a matmul's cost is its weights; a symbolic size (torch.export with a
        # dynamic batch) takes the three projections, so no guard on the batch is recorded
        tokens = b * length
        if isinstance(tokens, int) and tokens < _SPLIT_QKV_MIN_TOKENS:
            q, k, v = self.qkv(x).view(b, length, 3, self.num_heads, self.head_dim).unbind(2)
            kv_grid, kv_stride = grid, None
        else:  # three projections: each of q, k, v is then dense for the pooling
            weights = self.qkv.weight.chunk(3)
            biases = self.qkv.bias.chunk(3) if self.qkv.bias is not None else [None] * 3
            q = F.linear(x, weights[0], biases[0]).view(b, length, self.num_heads, self.head_dim)
            kv_x, kv_grid, kv_stride = self._kv_input(x, grid)
            k, v = (F.linear(kv_x, wt, bs).view(b, kv_x.shape[1], self.num_heads, self.head_dim)
                    for wt, bs in zip(weights[1:], biases[1:]))
        q, q_grid = self._pool(q, self.pool_q, self.norm_q, grid)
        k, k_grid = self._pool(k, self.pool_k, self.norm_k, kv_grid, kv_stride)
        v, _ = self._pool(v, self.pool_v, self.norm_v, kv_grid, kv_stride)
        # the rel-pos bias folded into the attention matmul (vidformer::factored_bias_attention)
        terms = rel_pos_terms(q, q_grid, k_grid, self.rel_pos_h, self.rel_pos_w, self.rel_pos_t, self.num_prefix)
        keys = key_position_indicators(k_grid, self.num_prefix, self.rel_pos_t is not None, k)
        out = factored_bias_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), terms.transpose(1, 2),
                                      keys)
        return self._residual_and_proj(out.transpose(1, 2), q, b), q_grid  # out: (B, Lq, heads, d)

    def _kv_input(self, x: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, Grid, Grid | None]:
        """The tokens K and V are projected from, their grid and the stride that pools them.

        Where the K/V pooling's stride is at least its kernel along an axis (MViTv2's first two stages: stride
        8 and 4, kernel 3), its windows skip rows, and the projections need only the rows they read: 13 % of
        mvitv2_s's first-stage tokens, 54 % at its second stage's first block. Those tokens are gathered (the
        prefix rows first) and pooled at stride = kernel, which gives the same K and V (see _read_rows).
        """
        conv = self.pool_k
        if any(isinstance(n, torch.SymInt) for n in grid):  # a size left dynamic by torch.export: every row
            return x, grid, None
        grid = tuple(int(n) for n in grid)  # a jit trace's sizes are tensors: its graph is for this size anyway
        rows = [_read_rows(*axis) for axis in zip(grid, conv.kernel_size, conv.stride, conv.padding)]
        if all(r is None for r in rows):
            return x, grid, None
        stride = tuple(s if r is None else k for r, k, s in zip(rows, conv.kernel_size, conv.stride))
        rows = [tuple(range(n)) if r is None else tuple(r) for n, r in zip(grid, rows)]
        tokens = size_constant(_gathered_tokens, *grid, *rows, self.num_prefix, like=x)
        return x.index_select(1, tokens), tuple(len(r) for r in rows), stride

    def _residual_and_proj(self, out: torch.Tensor, q: torch.Tensor, b: int) -> torch.Tensor:
        if self.residual_pooling:
            # Z = Attn(Q, K, V) + Q (MViTv2 Eq. 5), the cls row excepted as in PySlowFast
            p = self.num_prefix
            if p:
                out_prefix, out_rest = split_prefix(out, p)
                out = torch.cat([out_prefix, out_rest + split_prefix(q, p)[1]], dim=1)
            else:
                out = out + q
        return self.proj_drop(self.proj(out.reshape(b, -1, self.dim)))


class MultiScaleBlock(nn.Module):
    """x -> pool_skip(x or proj(norm1 x)) + attn(norm1 x) -> + mlp(norm2 x), with the width change in one of them."""

    def __init__(self, cfg: BlockCfg, mlp_ratio: float = 4.0, qkv_bias: bool = True, rel_pos_temporal: bool = True,
                 residual_pooling: bool = True, num_prefix: int = 1, proj_drop: float = 0.0, eps: float = 1e-6):
        super().__init__()
        self.num_prefix = num_prefix
        self.dim_mul_in_att = cfg.attn_dim == cfg.dim_out
        self.norm1 = nn.LayerNorm(cfg.dim_in, eps=eps)
        self.attn = MultiScaleAttention(cfg, qkv_bias, rel_pos_temporal, residual_pooling, num_prefix, proj_drop, eps)
        self.drop_path = DropPath(cfg.drop_path)
        self.norm2 = nn.LayerNorm(cfg.attn_dim, eps=eps)
        self.mlp = Mlp(cfg.attn_dim, int(cfg.attn_dim * mlp_ratio), cfg.dim_out, drop=proj_drop)
        # the residual path changes width through a Linear on the *normed* input of the sub-block that widens
        self.proj = nn.Linear(cfg.dim_in, cfg.dim_out) if cfg.dim_in != cfg.dim_out else None
        # max-pool the residual path where Q is strided: kernel s + 1 for stride s > 1 (PySlowFast)
        self.skip_kernel = tuple(s + 1 if s > 1 else s for s in cfg.stride_q)
        self.skip_stride = cfg.stride_q if max(cfg.stride_q) > 1 else None

    def _pool_skip(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        if self.skip_stride is None:
            return x
        p = self.num_prefix
        b, _, c = x.shape
        prefix, rest = split_prefix(x, p)
        grid_cl = rest.reshape(b, *grid, c).permute(0, 4, 1, 2, 3)  # (B, C, T, H, W), channels-last
        out = F.max_pool3d(grid_cl, self.skip_kernel, self.skip_stride, tuple(k // 2 for k in self.skip_kernel))
        out = out.permute(0, 2, 3, 4, 1).reshape(b, -1, c)
        return torch.cat([prefix, out], dim=1) if p else out

    def forward(self, x: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, Grid]:
        x_norm = self.norm1(x)
        attn_out, new_grid = self.attn(x_norm, grid)
        if self.proj is not None and self.dim_mul_in_att:
            x = self.proj(x_norm)
        x = self._pool_skip(x, grid) + self.drop_path(attn_out)
        x_norm = self.norm2(x)
        if self.proj is not None and not self.dim_mul_in_att:
            x = self.proj(x_norm)
        return x + self.drop_path(self.mlp(x_norm)), new_grid


class MViTv2(VideoModel):
    """MViTv2 classifier; the architecture is `self.block_cfgs`, one BlockCfg per block.

    Defaults follow the geometry implied by num_frames: video (> 1) as PySlowFast's K400 configs, image
    (= 1) as facebookresearch/mvit. Every default can be overridden by keyword.
    """

    def __init__(self, num_classes: int = 400, num_frames: int = 16, img_size: int = 224, depths=(1, 2, 11, 2),
                 embed_dim: int = 96, num_heads: int = 1, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 pool_kernel=None, q_stride=(1, 2, 2), kv_stride=None, patch_kernel=None, patch_stride=None,
                 patch_padding=None, cls_token: bool | None = None, mean_pooling: bool | None = None,
                 dim_mul_in_att: bool = True, residual_pooling: bool = True, rel_pos_temporal: bool | None = None,
                 drop_path_rate: float = 0.0, head_dropout: float = 0.0, proj_drop: float = 0.0, in_chans: int = 3):
        super().__init__()
        video = num_frames > 1
        pool_kernel = triple(pool_kernel if pool_kernel is not None else (3, 3, 3) if video else (1, 3, 3))
        kv_stride = triple(kv_stride if kv_stride is not None else (1, 8, 8) if video else (1, 4, 4))
        patch_kernel = triple(patch_kernel if patch_kernel is not None else (3, 7, 7) if video else (1, 7, 7))
        patch_stride = triple(patch_stride if patch_stride is not None else (2, 4, 4) if video else (1, 4, 4))
        patch_padding = triple(patch_padding if patch_padding is not None else (1, 3, 3) if video else (0, 3, 3))
        cls_token = video if cls_token is None else cls_token
        self.mean_pooling = (not cls_token) if mean_pooling is None else mean_pooling
        if not cls_token and not self.mean_pooling:
            raise ValueError("MViTv2 without a cls token needs mean_pooling=True")
        rel_pos_temporal = video if rel_pos_temporal is None else rel_pos_temporal
        self.num_classes, self.num_prefix, self.depths = num_classes, int(cls_token), tuple(depths)

        self.patch_embed = CubePatchEmbed(in_chans, embed_dim, patch_kernel, patch_stride, patch_padding)
        grid = (num_frames // patch_stride[0], img_size // patch_stride[1], img_size // patch_stride[2])
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if cls_token else None
        self.block_cfgs = block_configs(depths, embed_dim, num_heads, grid, pool_kernel, triple(q_stride), kv_stride,
                                        dim_mul_in_att, drop_path_rate)
        self.blocks = nn.ModuleList(
            MultiScaleBlock(cfg, mlp_ratio, qkv_bias, rel_pos_temporal, residual_pooling, self.num_prefix, proj_drop)
            for cfg in self.block_cfgs
        )
        self.num_features = self.block_cfgs[-1].dim_out
        self.norm = nn.LayerNorm(self.num_features, eps=1e-6)
        self.head_drop = nn.Dropout(head_dropout)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()
        self.pretrained_cfg = PretrainedCfg(num_frames=num_frames, sampling_rate=4 if video else 1, crop_size=img_size)

    def _init_weights(self) -> None:
        # PySlowFast / torchvision init: trunc-normal(0.02) linears and cls token, zero biases
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:
        # PySlowFast and facebookresearch/mvit train with ZERO_DECAY_POS_CLS False: rel-pos tables and the
        # cls token are decayed; only 1-D parameters are exempt, which the optimizer handles itself
        return set()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, C, T', H', W')
        grid = tuple(x.shape[2:])
        x = x.flatten(2).transpose(1, 2)  # (B, T'H'W', C)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x, grid = checkpoint(block, x, grid, use_reentrant=False)
            else:
                x, grid = block(x, grid)
        x = self.norm(x)  # (B, P + N, C)
        return x[:, self.num_prefix:].mean(1) if self.mean_pooling else x[:, 0]

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return feats if pre_logits else self.head(self.head_drop(feats))

    # multi-scale features for downstream heads (timm's forward_intermediates; see models/base.py)
    def forward_intermediates(self, x: torch.Tensor, indices=None, norm: bool = False, output_fmt: str = "NCTHW",
                              intermediates_only: bool = False):
        """(B, C_s, T', H_s, W_s) token maps after each selected stage (cls token left out) and, unless
        intermediates_only, the pooled features forward_features returns."""
        check_output_fmt(output_fmt)
        ends = list(itertools.accumulate(self.depths))  # blocks run after each stage
        take = stage_indices(len(ends), indices)
        x = self.patch_embed(as_video(x))
        grid = tuple(x.shape[2:])
        x = x.flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        maps = []
        for i, block in enumerate(self.blocks[:ends[take[-1]]] if intermediates_only else self.blocks):
            x, grid = block(x, grid)
            stage = ends.index(i + 1) if i + 1 in ends else None
            if stage in take:
                tokens = self.norm(x) if norm and stage == len(ends) - 1 else x
                maps.append(to_grid(tokens[:, self.num_prefix:], grid))
        if intermediates_only:
            return maps
        x = self.norm(x)
        return (x[:, self.num_prefix:].mean(1) if self.mean_pooling else x[:, 0]), maps


# --------------------------------------------------------------------------------------------------
# Checkpoint layouts. Native keys are PySlowFast's, with the classifier as `head` (not head.projection).

def _is_pyslowfast(sd, ndim: int) -> bool:
    w = sd.get("patch_embed.proj.weight")
    return w is not None and w.ndim == ndim and "blocks.0.attn.qkv.weight" in sd and "head.projection.weight" in sd


def _from_pyslowfast(sd, model):
    """PySlowFast video and facebookresearch/mvit image checkpoints differ from ours only in the head name."""
    return {k.replace("head.projection.", "head."): v for k, v in sd.items()}


_TORCHVISION_RENAMES = [
    (r"^conv_proj\.", "patch_embed.proj."),
    (r"\.attn\.project\.0\.", ".attn.proj."),
    (r"\.attn\.pool_([qkv])\.pool\.", r".attn.pool_\1."),
    (r"\.attn\.pool_([qkv])\.norm_act\.0\.", r".attn.norm_\1."),
    (r"\.mlp\.0\.", ".mlp.fc1."),
    (r"\.mlp\.3\.", ".mlp.fc2."),
    (r"^blocks\.(\d+)\.project\.", r"blocks.\1.proj."),
    (r"^head\.1\.", "head."),
]


def _from_torchvision(sd, model):
    out = {}
    for k, v in sd.items():
        if k == "pos_encoding.class_token":
            out["cls_token"] = v.reshape(1, 1, -1)
            continue
        for pattern, repl in _TORCHVISION_RENAMES:
            k = re.sub(pattern, repl, k)
        out[k] = v
    return out


def _from_timm(sd, model):
    """timm nests blocks in stages (stages.s.blocks.j) and names the width projection shortcut_proj_{attn,mlp}."""
    first = [sum(model.depths[:s]) for s in range(len(model.depths))]
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)\.", lambda m: f"blocks.{first[int(m[1])] + int(m[2])}.", k)
        k = re.sub(r"\.shortcut_proj_(attn|mlp)\.", ".proj.", k)
        out[k.replace("head.fc.", "head.")] = v
    return out


MViTv2.checkpoint_layouts = (
    CheckpointLayout("pyslowfast", lambda sd: _is_pyslowfast(sd, 5), _from_pyslowfast,
                     "PySlowFast MViTv2 video checkpoint (.pyth, model_state)"),
    CheckpointLayout("mvit-image", lambda sd: _is_pyslowfast(sd, 4), _from_pyslowfast,
                     "facebookresearch/mvit image MViTv2 checkpoint (Conv2d patchify and pools, no cls token)"),
    CheckpointLayout("torchvision", lambda sd: "conv_proj.weight" in sd and "pos_encoding.class_token" in sd,
                     _from_torchvision, "torchvision.models.video.mvit_v2_s state dict"),
    CheckpointLayout("timm", lambda sd: any(k.startswith("stages.0.blocks.0.") for k in sd), _from_timm,
                     "timm mvitv2_* state dict"),
)


# --------------------------------------------------------------------------------------------------
# Builders: video defaults from PySlowFast's K400 configs, image defaults from facebookresearch/mvit.

def _create(num_classes, num_frames, img_size, drop_path_rate, head_dropout, arch, video_cfg, image_cfg, kwargs):
    video = num_frames > 1
    published = video_cfg if video else image_cfg
    model = MViTv2(num_classes=num_classes, num_frames=num_frames, img_size=img_size,
                   drop_path_rate=published["drop_path"] if drop_path_rate is None else drop_path_rate,
                   head_dropout=published["head_dropout"] if head_dropout is None else head_dropout,
                   **{**arch, **kwargs})
    cfg = model.pretrained_cfg
    cfg.mean, cfg.std = published.get("mean", IMAGENET_MEAN), published.get("std", IMAGENET_STD)
    cfg.sampling_rate = published.get("sampling_rate", 1)
    return model


_VIDEO_MEAN = {"mean": (0.45, 0.45, 0.45), "std": (0.225, 0.225, 0.225)}


@register_model
def mvitv2_t(num_classes=400, num_frames=16, img_size=224, drop_path_rate=None, head_dropout=None, **kwargs):
    """MViTv2-T: depths 1-2-5-2, width 96 (image: 24M params, 4.7 GFLOPs at 224; no published video config)."""
    return _create(num_classes, num_frames, img_size, drop_path_rate, head_dropout, dict(depths=(1, 2, 5, 2)),
                   {"drop_path": 0.1, "head_dropout": 0.5, "sampling_rate": 4, **_VIDEO_MEAN},
                   {"drop_path": 0.1, "head_dropout": 0.0}, kwargs)


@register_model
def mvitv2_s(num_classes=400, num_frames=16, img_size=224, drop_path_rate=None, head_dropout=None, **kwargs):
    """MViTv2-S: depths 1-2-11-2, width 96 (video 16x4: 34.5M, 64 GFLOPs; image: 35M, 7.0 GFLOPs)."""
    return _create(num_classes, num_frames, img_size, drop_path_rate, head_dropout, dict(depths=(1, 2, 11, 2)),
                   {"drop_path": 0.2, "head_dropout": 0.5, "sampling_rate": 4, **_VIDEO_MEAN},
                   {"drop_path": 0.1, "head_dropout": 0.0}, kwargs)


@register_model
def mvitv2_b(num_classes=400, num_frames=32, img_size=224, drop_path_rate=None, head_dropout=None, **kwargs):
    """MViTv2-B: depths 2-3-16-3, width 96 (video 32x3: 51.2M, 225 GFLOPs; image: 52M, 10.2 GFLOPs)."""
    return _create(num_classes, num_frames, img_size, drop_path_rate, head_dropout, dict(depths=(2, 3, 16, 3)),
                   {"drop_path": 0.3, "head_dropout": 0.5, "sampling_rate": 3, **_VIDEO_MEAN},
                   {"drop_path": 0.3, "head_dropout": 0.0}, kwargs)


@register_model
def mvitv2_l(num_classes=400, num_frames=40, img_size=312, drop_path_rate=None, head_dropout=None, **kwargs):
    """MViTv2-L: depths 2-6-36-4, width 144, 2 heads (video 40x3 @312: 217.6M, 2828 GFLOPs; image: 218M, 42.1G).

    The image model widens in the MLP (DIM_MUL_IN_ATT False), the video model in the attention.
    """
    arch = dict(depths=(2, 6, 36, 4), embed_dim=144, num_heads=2, dim_mul_in_att=num_frames > 1)
    return _create(num_classes, num_frames, img_size, drop_path_rate, head_dropout, arch,
                   {"drop_path": 0.75, "head_dropout": 0.5, "sampling_rate": 3},
                   {"drop_path": 0.5, "head_dropout": 0.0}, kwargs)
