"""PoolFormer / MetaFormer (Yu et al., CVPR 2022) in space-time, with a pluggable token mixer.

One class serves images (num_frames=1: 2-D kernels, loads ImageNet checkpoints as they are) and
clips (3x3x3 pooling, a temporal kernel and stride in the patch embeddings). Checkpoint layouts:
the official sail-sg/poolformer release and timm's `poolformer_*` (v1) in timm/models/metaformer.py.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vidformer.errors import UsageError
from vidformer.layers import (ConvMlp, CubePatchEmbed, DropPath, GroupNorm1, SpaceTimeConv, attention, drop_path_rates,
                              init_linears, to_grid, to_tokens, trunc_normal_init)
from vidformer.layers import as_video
from vidformer.models.base import (CheckpointLayout, PretrainedCfg, StateDict, VideoModel, check_output_fmt,
                                   stage_indices)
from vidformer.models.registry import register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MIXERS = ("pool", "identity", "dwconv", "attention")
# The PoolFormer paper's ablation of hybrid stages: pooling in stages 1-2 and attention in stages 3-4 was the
# best (S12 widths: 81.0 top-1, 16.5M, 2.5G). Its code (metaformer_ppaa_s12_224) also used channel-only
# LayerNorm and a learned 14x14 position table before stage 3; here the norm stays GroupNorm-1 and there is no
# table (it would pin the model to one grid size), so that checkpoint is not a layout this model loads.
HYBRID = ("pool", "pool", "attention", "attention")

# The two head orders. Official PoolFormer: GroupNorm-1 over the final (C, T, H, W) map, then the mean.
# timm's MetaFormer: the mean first, then LayerNorm over channels (eps 1e-6). Not the same function
# (GroupNorm-1's statistics include the spatial variance); timm evaluates the converted official weights
# with its order (S12: 77.24 vs the official 77.2). Each layout's converter selects its code's order.
HEAD_NORMS = ("pre_pool", "post_pool")


@dataclass(frozen=True)
class StageCfg:
    """One stage: a patch embedding (the stem for stage 0) then `depth` MetaFormer blocks."""

    depth: int
    dim: int
    mixer: str
    kernel_t: int  # temporal kernel of the stage's patch embedding
    stride_t: int  # temporal stride of the stage's patch embedding
    layer_scale_init: float


class Pooling(nn.Module):
    """PoolFormer's mixer AvgPool(x) - x; the block's residual adds x back (sail-sg/poolformer#1).

    Padding is not counted, so a constant input gives exactly zero, borders included, and a T=1 clip
    meets exactly the 2-D pool whatever the temporal window. That also makes the box average separable
    (the product of per-axis averages): a 2-D pool over each frame, then a running mean over time. On a
    channels-last clip both are views plus vectorised kernels (avg_pool3d is ~3x slower there), and grids
    smaller than the window need no special case.
    """

    def __init__(self, pool_size: int = 3, pool_size_t: int = 3):
        super().__init__()
        if pool_size % 2 == 0 or pool_size_t % 2 == 0:
            raise UsageError(f"pooling windows must be odd (centred on each element), got {pool_size_t}x{pool_size}")
        self.kernel_size = (pool_size_t, pool_size, pool_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.average(x) - x

    def average(self, x: torch.Tensor) -> torch.Tensor:
        """The window mean over real (unpadded) elements, (B, C, T, H, W) -> same shape and memory format."""
        b, c, t, h, w = x.shape
        kt, kh, kw = self.kernel_size
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)  # a view of channels-last memory
        mean = F.avg_pool2d(frames, (kh, kw), 1, (kh // 2, kw // 2), count_include_pad=False)
        mean = mean.reshape(b, t, c, h, w)
        reach = min(kt // 2, t - 1)
        if reach > 0:
            total = mean.clone()
            for d in range(1, reach + 1):
                total[:, d:] += mean[:, :-d]
                total[:, :-d] += mean[:, d:]
            frame = torch.arange(t, device=x.device)
            count = 1 + frame.clamp(max=reach) + (t - 1 - frame).clamp(max=reach)  # real frames in each window
            mean = total / count.to(x.dtype).view(1, t, 1, 1, 1)
        return mean.transpose(1, 2)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, count_include_pad=False"


class DepthwiseConvMixer(nn.Module):
    """A learned depthwise conv in place of the pooling (the MetaFormer ablation's "depthwise convolution")."""

    def __init__(self, dim: int, kernel_size: int = 3, kernel_t: int = 3):
        super().__init__()
        self.conv = SpaceTimeConv(dim, dim, (kernel_t, kernel_size, kernel_size),
                                  padding=(kernel_t // 2, kernel_size // 2, kernel_size // 2), groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class GlobalAttention(nn.Module):
    """Multi-head self-attention over all T*H*W tokens (MetaFormer's attention mixer: head_dim 32, no qkv bias)."""

    def __init__(self, dim: int, head_dim: int = 32):
        super().__init__()
        if dim % head_dim:
            raise UsageError(f"attention mixer: width {dim} is not a multiple of attn_head_dim {head_dim}")
        self.num_heads, self.head_dim = dim // head_dim, head_dim
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, thw = to_tokens(x)  # (B, N, C)
        b, n, c = tokens.shape
        q, k, v = self.qkv(tokens).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = attention(q, k, v).transpose(1, 2).reshape(b, n, c)  # (B, N, C)
        return to_grid(self.proj(out), thw)


def _make_mixer(name: str, dim: int, mixer_kernel_t: int, attn_head_dim: int) -> nn.Module:
    if name == "pool":
        return Pooling(3, mixer_kernel_t)
    if name == "identity":
        return nn.Identity()
    if name == "dwconv":
        return DepthwiseConvMixer(dim, 3, mixer_kernel_t)
    return GlobalAttention(dim, attn_head_dim)


class MetaFormerBlock(nn.Module):
    """x + ls1 * mixer(GN(x)), then x + ls2 * MLP(GN(x)), each branch under stochastic depth."""

    def __init__(self, dim: int, mixer: nn.Module, mlp_ratio: float, layer_scale_init: float, drop_path: float):
        super().__init__()
        self.norm1 = GroupNorm1(dim)
        self.token_mixer = mixer
        self.norm2 = GroupNorm1(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))
        self.layer_scale1 = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.layer_scale2 = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.drop_path = DropPath(drop_path)
        self.eps = self.norm2.eps
        self.fused = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._mix(x)
        if self.fused:  # norm2's affine is in fc1, layer_scale2 in fc2; the MLP's fresh output takes the residual
            return self.mlp(_normalize(x, self.eps)).add_(x)
        return torch.addcmul(x, self._branch_scale(self.layer_scale2, x), self._mlp(x))

    def fuse_(self) -> None:
        """Inference: fold norm2's affine into fc1 and layer_scale2 into fc2; with the pooling mixer, norm1's
        weight and layer_scale1 become one channel scale (norm1's bias cancels). About 5-10 % on CPU."""
        fc1, fc2 = self.mlp.fc1, self.mlp.fc2
        fc1.bias.copy_(torch.addmv(fc1.bias, fc1.weight.flatten(1), self.norm2.bias))
        fc1.weight.mul_(self.norm2.weight.view(1, -1, *(1,) * (fc1.weight.ndim - 2)))
        fc2.weight.mul_(self.layer_scale2.view(-1, *(1,) * (fc2.weight.ndim - 1)))
        fc2.bias.mul_(self.layer_scale2)
        self.norm2 = nn.Identity()
        del self.layer_scale2
        if isinstance(self.token_mixer, Pooling):
            self.register_buffer("pool_scale", (self.layer_scale1 * self.norm1.weight).view(-1, 1, 1, 1))
            self.norm1 = nn.Identity()
            del self.layer_scale1
        self.fused = True

    def _mix(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(self.token_mixer, Pooling):
            return torch.addcmul(x, self._branch_scale(self.layer_scale1, x), self.token_mixer(self.norm1(x)))
        # With n = GN(x) = a * (x - mean) * rstd + b, pool(n) - n = a * rstd * (pool(x) - x): the pool keeps
        # constants, so b and the mean cancel. The branch becomes one (sample, channel) scale and a lerp,
        # x + s * (pool(x) - x), without normalising x. b stays in the graph (gradient exactly 0, as before)
        # so that every parameter is used (DDP, optimisers).
        rstd = torch.rsqrt(_SampleVariance.apply(x) + self.eps)  # (B, 1, 1, 1, 1)
        if self.fused:
            channel = self.pool_scale
        else:
            channel = (self.layer_scale1 * self.norm1.weight + 0 * self.norm1.bias).view(-1, 1, 1, 1)
        scale = self.drop_path(channel * rstd)  # (B, C, 1, 1, 1); float32 parameters: cast for bf16 autocast
        return torch.lerp(x, self.token_mixer.average(x), scale.to(x.dtype))

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        # norm2's affine is folded into fc1 (W (a * n + b) + c = (W a) n + (W b + c)), so only the per-sample
        # normalisation touches x, as a LayerNorm over the sample's contiguous channels-last memory; fc1 and fc2
        # are Linears on the (B, T, H, W, C) view (SpaceTimeConv's pointwise path; images train ~7 % faster
        # than through oneDNN's 1x1 convolutions)
        fc1, fc2 = self.mlp.fc1, self.mlp.fc2
        weight = fc1.weight * self.norm2.weight.view(1, -1, 1, 1)
        bias = torch.addmv(fc1.bias, fc1.weight.flatten(1), self.norm2.bias)
        hidden = F.linear(_normalize(x, self.eps).movedim(1, -1), weight.flatten(1), bias).movedim(-1, 1)
        return fc2(self.mlp.act(hidden))

    def _branch_scale(self, layer_scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The layer scale, times stochastic depth's per-sample keep/(1 - p) when training with it."""
        if self.drop_path.p == 0.0 or not self.training:
            return layer_scale.view(-1, 1, 1, 1)
        return self.drop_path(layer_scale.view(1, -1, 1, 1, 1).expand(x.shape[0], -1, 1, 1, 1))


class _SampleVariance(torch.autograd.Function):
    """The variance of each sample's elements, (B, C, T, H, W) channels-last -> (B, 1, 1, 1, 1), by two passes:
    the mean, then one batched dot product of the centred sample with itself. torch.var's Welford reduction
    runs ~5x slower on CPU over a few long rows (4.5 vs 0.8 ms at PoolFormer's first stage, batch 8). The
    backward is 2 (x - mean) / n times the gradient, one pass; x is saved, not the centred copy."""

    @staticmethod
    def forward(ctx, x):
        b = x.shape[0]
        flat = x.permute(0, 2, 3, 4, 1).reshape(b, 1, -1)  # a view of channels-last memory
        with torch.autocast(x.device.type, enabled=False):  # in x's precision, as torch.var under autocast
            mean = flat.mean(-1, keepdim=True)  # (B, 1, 1)
            centred = flat - mean
            variance = torch.bmm(centred, centred.transpose(1, 2)) / flat.shape[-1]
        ctx.save_for_backward(x, mean)
        return variance.view(b, 1, 1, 1, 1)

    @staticmethod
    def backward(ctx, grad):
        x, mean = ctx.saved_tensors
        b = x.shape[0]
        n = x.numel() // b
        return (x - mean.view(b, 1, 1, 1, 1)).mul_(grad.view(b, 1, 1, 1, 1) * (2.0 / n))


def _normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """GroupNorm-1 without its affine: (x - mean) * rstd over each sample, returned channels-last."""
    b, c, t, h, w = x.shape
    flat = x.permute(0, 2, 3, 4, 1).reshape(b, t * h * w * c)  # a view of channels-last memory
    return F.layer_norm(flat, flat.shape[1:], eps=eps).view(b, t, h, w, c).permute(0, 4, 1, 2, 3)


class PoolFormerStage(nn.Module):
    """Downsample (not in stage 0, whose embedding is the model's stem), then the blocks."""

    def __init__(self, in_dim: int, cfg: StageCfg, downsample: bool, drop_paths: list[float], mlp_ratio: float,
                 mixer_kernel_t: int, attn_head_dim: int):
        super().__init__()
        # between stages: 3x3 stride 2 pad 1 (no norm), gaining the stage's temporal kernel/stride
        self.downsample = CubePatchEmbed(in_dim, cfg.dim, (cfg.kernel_t, 3, 3), (cfg.stride_t, 2, 2),
                                         (cfg.kernel_t // 2, 1, 1)) if downsample else nn.Identity()
        self.blocks = nn.ModuleList(
            MetaFormerBlock(cfg.dim, _make_mixer(cfg.mixer, cfg.dim, mixer_kernel_t, attn_head_dim), mlp_ratio,
                            cfg.layer_scale_init, p)
            for p in drop_paths)


class PoolFormer(VideoModel):
    """MetaFormer with a per-stage token mixer; PoolFormer when every stage pools.

    token_mixers: one of "pool", "identity", "dwconv", "attention", "hybrid" (pool, pool, attention,
    attention), or one name per stage. temporal_kernels / temporal_strides: per patch embedding (the
    stem, then the three downsamples); mixer_kernel_t: temporal window of the pooling and depthwise-conv
    mixers; all of these become 1 when num_frames == 1. head_norm: "pre_pool"
    (official PoolFormer) or "post_pool" (timm); the checkpoint layouts set it.
    """

    def __init__(self, depths=(2, 2, 6, 2), dims=(64, 128, 320, 512), token_mixers="pool", mlp_ratio: float = 4.0,
                 layer_scale_init: float = 1e-5, temporal_kernels=(3, 1, 1, 1), temporal_strides=(2, 1, 1, 1),
                 mixer_kernel_t: int = 3, attn_head_dim: int = 32, head_norm: str = "pre_pool",
                 num_classes: int = 400, num_frames: int = 16, img_size: int = 224, drop_path_rate: float = 0.0,
                 head_dropout: float = 0.0):
        super().__init__()
        self.stage_cfgs = _stage_cfgs(depths, dims, token_mixers, layer_scale_init, temporal_kernels,
                                      temporal_strides, num_frames)
        if num_frames == 1:
            mixer_kernel_t = 1
        stem = self.stage_cfgs[0]
        # stem: 7x7 stride 4 pad 2, no norm after it
        self.stem = CubePatchEmbed(3, stem.dim, (stem.kernel_t, 7, 7), (stem.stride_t, 4, 4),
                                   (stem.kernel_t // 2, 2, 2))
        rates = drop_path_rates(drop_path_rate, sum(depths))
        stages, in_dim, start = [], stem.dim, 0
        for i, cfg in enumerate(self.stage_cfgs):
            stages.append(PoolFormerStage(in_dim, cfg, i > 0, rates[start:start + cfg.depth], mlp_ratio,
                                          mixer_kernel_t, attn_head_dim))
            in_dim, start = cfg.dim, start + cfg.depth
        self.stages = nn.ModuleList(stages)
        self.num_features = in_dim
        self.head_norm = _check_head_norm(head_norm)
        self.norm = _head_norm_layer(head_norm, in_dim)
        self.head_drop = nn.Dropout(head_dropout)
        self.head = nn.Linear(in_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.num_classes = num_classes
        self.pretrained_cfg = PretrainedCfg(mean=IMAGENET_MEAN, std=IMAGENET_STD, num_frames=num_frames,
                                            crop_size=img_size)
        # official PoolFormer: trunc-normal linears and MLP 1x1 convs; patch convs keep torch's default
        init_linears(self)
        for mlp in (m for m in self.modules() if isinstance(m, ConvMlp)):
            trunc_normal_init(mlp.fc1)
            trunc_normal_init(mlp.fc2)

    def set_head_norm(self, mode: str) -> None:
        """Switch between the official and timm head orders, keeping the norm's affine parameters."""
        self.pretrained_cfg.extra.setdefault("options", {})["head_norm"] = _check_head_norm(mode)
        if mode == self.head_norm:
            return
        # on the old norm's device and dtype, so a model moved with .double() / .cuda() still loads
        weight = self.norm.weight
        new = _head_norm_layer(mode, self.num_features).to(device=weight.device, dtype=weight.dtype)
        new.load_state_dict(self.norm.state_dict())
        self.norm, self.head_norm = new, mode

    def apply_options(self, options: dict) -> None:
        unknown = set(options) - {"head_norm"}
        if unknown:
            raise ValueError(f"PoolFormer has no options {sorted(unknown)}; it has head_norm")
        self.set_head_norm(options["head_norm"])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._embed(x)  # (B, D0, T', H/4, W/4)
        for stage in self.stages:
            x = stage.downsample(x)
            for block in stage.blocks:
                if self.grad_checkpointing and torch.is_grad_enabled():
                    x = checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
        if self.head_norm == "pre_pool":
            return self.norm(x).mean((2, 3, 4))  # (B, D)
        return self.norm(x.mean((2, 3, 4)))

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last from the stem on: 1x1 convs run as plain matrix products (about 3x faster on CPU than
        # on NCTHW, which mkldnn reorders on every call) and per-sample statistics see contiguous memory
        return self.stem(x.contiguous(memory_format=torch.channels_last_3d))

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        feats = self.head_drop(feats)
        return feats if pre_logits else self.head(feats)

    # multi-scale features for downstream heads (timm's forward_intermediates; see models/base.py)
    def forward_intermediates(self, x: torch.Tensor, indices=None, norm: bool = False, output_fmt: str = "NCTHW",
                              intermediates_only: bool = False):
        """(B, D_i, T_i, H / 2^(i+2), W / 2^(i+2)) after each selected stage and, unless intermediates_only,
        the pooled features forward_features returns."""
        check_output_fmt(output_fmt)
        last = len(self.stages) - 1
        take = stage_indices(len(self.stages), indices)
        x, maps = self._embed(as_video(x)), []
        for i, stage in enumerate(self.stages[:take[-1] + 1] if intermediates_only else self.stages):
            x = stage.downsample(x)
            for block in stage.blocks:
                x = checkpoint(block, x, use_reentrant=False) if self.grad_checkpointing and torch.is_grad_enabled() \
                    else block(x)
            if i in take:
                maps.append(self._normed_map(x) if norm and i == last else x)
        if intermediates_only:
            return maps
        feats = self.norm(x).mean((2, 3, 4)) if self.head_norm == "pre_pool" else self.norm(x.mean((2, 3, 4)))
        return feats, maps

    def _normed_map(self, x: torch.Tensor) -> torch.Tensor:
        if self.head_norm == "pre_pool":
            return self.norm(x)
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)  # timm's LayerNorm over channels, at every position

    def export_frame_multiple(self) -> int | None:
        return math.prod(cfg.stride_t for cfg in self.stage_cfgs)  # time is downsampled by the patch embeddings

    def no_weight_decay(self) -> set[str]:
        # layer scales and norms are 1-D and already exempt; PoolFormer has no position tables
        return set()


def _check_head_norm(mode: str) -> str:
    if mode not in HEAD_NORMS:
        raise UsageError(f"head_norm must be one of {', '.join(HEAD_NORMS)}, got {mode!r}")
    return mode


def _head_norm_layer(mode: str, dim: int) -> nn.Module:
    return GroupNorm1(dim) if mode == "pre_pool" else nn.LayerNorm(dim, eps=1e-6)


def _stage_cfgs(depths, dims, token_mixers, layer_scale_init, temporal_kernels, temporal_strides,
                num_frames) -> tuple[StageCfg, ...]:
    n = len(depths)
    if token_mixers == "hybrid":
        token_mixers = HYBRID
    elif isinstance(token_mixers, str):
        token_mixers = (token_mixers,) * n
    for name, seq in (("dims", dims), ("token_mixers", token_mixers), ("temporal_kernels", temporal_kernels),
                      ("temporal_strides", temporal_strides)):
        if len(seq) != n:
            raise UsageError(f"PoolFormer: {name} has {len(seq)} entries, expected one per stage ({n})")
    bad = [m for m in token_mixers if m not in MIXERS]
    if bad:
        raise UsageError(f"token mixer(s) {bad} unknown; token_mixers takes 'hybrid' ({', '.join(HYBRID)}) or, "
                         f"for all stages or per stage, one of {', '.join(MIXERS)}")
    if num_frames == 1:
        temporal_kernels, temporal_strides = (1,) * n, (1,) * n
    return tuple(StageCfg(d, c, m, kt, st, layer_scale_init)
                 for d, c, m, kt, st in zip(depths, dims, token_mixers, temporal_kernels, temporal_strides))


# ---------------------------------------------------------------------------------------------
# Checkpoint layouts


def _is_official(sd: StateDict) -> bool:
    return "patch_embed.proj.weight" in sd and "network.0.0.mlp.fc1.weight" in sd


def _convert_official(sd: StateDict, model: PoolFormer) -> StateDict:
    """sail-sg/poolformer: `network` alternates stages (even indices) and downsamples (odd indices)."""
    model.set_head_norm("pre_pool")
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        if parts[0] == "patch_embed":
            key = "stem." + ".".join(parts[1:])
        elif parts[0] == "network":
            index = int(parts[1])
            if index % 2:  # network.{1,3,5}.proj -> stages.{1,2,3}.downsample.proj
                key = f"stages.{index // 2 + 1}.downsample." + ".".join(parts[2:])
            else:  # network.{0,2,4,6}.{j}.layer_scale_1 -> stages.{0..3}.blocks.{j}.layer_scale1
                rest = ".".join(parts[3:]).replace("layer_scale_", "layer_scale")
                key = f"stages.{index // 2}.blocks.{parts[2]}.{rest}"
        out[key] = value
    return out


def _is_timm(sd: StateDict) -> bool:
    # v1 only: v2 (poolformerv2_*) has no MLP bias and no layer scale
    return "stem.conv.weight" in sd and "stages.0.blocks.0.layer_scale1.scale" in sd and "head.fc.weight" in sd


def _convert_timm(sd: StateDict, model: PoolFormer) -> StateDict:
    """timm metaformer.py: stem.conv, stages.i.downsample.conv, layer_scaleN.scale, head.norm/head.fc."""
    model.set_head_norm("post_pool")
    out = {}
    for key, value in sd.items():
        key = key.replace("stem.conv.", "stem.proj.").replace("downsample.conv.", "downsample.proj.")
        key = key.replace(".scale", "") if ".layer_scale" in key else key
        if key.startswith("head.norm."):
            key = key[len("head."):]
        elif key.startswith("head.fc."):
            key = "head." + key[len("head.fc."):]
        out[key] = value
    return out


PoolFormer.checkpoint_layouts = (
    CheckpointLayout("poolformer_official", _is_official, _convert_official,
                     "sail-sg/poolformer v1 release (poolformer_s12.pth.tar ...); head: GroupNorm-1 then mean"),
    CheckpointLayout("timm_poolformer", _is_timm, _convert_timm,
                     "timm poolformer_* v1 (timm/models/metaformer.py); head: mean then LayerNorm (eps 1e-6)"),
)


# ---------------------------------------------------------------------------------------------
# Builders. Depths/dims, layer scale and drop-path rates from the PoolFormer paper / sail-sg/poolformer.


def _poolformer(depths, dims, layer_scale_init, num_classes, num_frames, img_size, drop_path_rate, head_dropout,
                kwargs) -> PoolFormer:
    kwargs = dict(dict(depths=depths, dims=dims, layer_scale_init=layer_scale_init), **kwargs)
    return PoolFormer(num_classes=num_classes, num_frames=num_frames, img_size=img_size,
                      drop_path_rate=drop_path_rate, head_dropout=head_dropout, **kwargs)


@register_model
def poolformer_s12(num_classes=400, num_frames=16, img_size=224, drop_path_rate=0.1, head_dropout=0.0, **kwargs):
    return _poolformer((2, 2, 6, 2), (64, 128, 320, 512), 1e-5, num_classes, num_frames, img_size, drop_path_rate,
                       head_dropout, kwargs)


@register_model
def poolformer_s24(num_classes=400, num_frames=16, img_size=224, drop_path_rate=0.1, head_dropout=0.0, **kwargs):
    return _poolformer((4, 4, 12, 4), (64, 128, 320, 512), 1e-5, num_classes, num_frames, img_size, drop_path_rate,
                       head_dropout, kwargs)


@register_model
def poolformer_s36(num_classes=400, num_frames=16, img_size=224, drop_path_rate=0.2, head_dropout=0.0, **kwargs):
    return _poolformer((6, 6, 18, 6), (64, 128, 320, 512), 1e-6, num_classes, num_frames, img_size, drop_path_rate,
                       head_dropout, kwargs)


@register_model
def poolformer_m36(num_classes=400, num_frames=16, img_size=224, drop_path_rate=0.3, head_dropout=0.0, **kwargs):
    return _poolformer((6, 6, 18, 6), (96, 192, 384, 768), 1e-6, num_classes, num_frames, img_size, drop_path_rate,
                       head_dropout, kwargs)


@register_model
def poolformer_m48(num_classes=400, num_frames=16, img_size=224, drop_path_rate=0.4, head_dropout=0.0, **kwargs):
    return _poolformer((8, 8, 24, 8), (96, 192, 384, 768), 1e-6, num_classes, num_frames, img_size, drop_path_rate,
                       head_dropout, kwargs)
