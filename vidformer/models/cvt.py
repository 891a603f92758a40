"""CvT (Wu et al., "CvT: Introducing Convolutions to Vision Transformers", ICCV 2021) over space-time.

Convolutional token embeddings and depthwise-conv + BatchNorm Q/K/V projections run on (T, H, W)
grids; K/V are subsampled 2x in space and optionally in time. num_frames=1 is the image CvT, whose
official (microsoft/CvT) and HuggingFace (`CvtForImageClassification`) checkpoints load as they are.

Quirks kept from the official code, as options (`CvT.set_variant`):
- attention scale `attn_scale="embed_dim"`: softmax(q k^T * C^-0.5) with C the stage's full width,
  not the head width (official and HF both do this; "head_dim" is the usual d^-0.5);
- MLP activation `act="quick_gelu"` (x * sigmoid(1.702 x), official) or `"gelu"` (HF port). Loading
  a checkpoint sets the activation it was trained with.
HF's port also applies stochastic depth after the MLP residual and at one rate per stage; those
are training-only differences that this implementation does not follow (it follows the official code).
"""

import math
import re
from dataclasses import dataclass
from functools import partial

import torch
import torch.utils.checkpoint
from torch import nn

from vidformer.layers import (
    CubePatchEmbed, DropPath, LayerNormChannels, Mlp, SpaceTimeConv, as_video, attention, drop_path_rates, init_linears,
    to_grid, to_tokens,
)
from vidformer.errors import UsageError
from vidformer.models.base import (CheckpointLayout, PretrainedCfg, StateDict, VideoModel, check_output_fmt,
                                   stage_indices)
from vidformer.models.registry import register_model

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the GELU approximation the official CvT (and CLIP) code uses.

    Without a gradient the product goes in place into the sigmoid's output. `value_and_grad` is what the
    shared Mlp's training path calls (it keeps the activation's input and recomputes it in backward):
    d/dx = s + 1.702 x s (1 - s) for s = sigmoid(1.702 x): six passes with the value, where recomputing through
    autograd took eight and a nested autograd call.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return x * torch.sigmoid(1.702 * x)
        return torch.sigmoid(x * 1.702).mul_(x)

    @staticmethod
    def value_and_grad(x: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x * s, grad * d/dx) for s = sigmoid(1.702 x)."""
        z = x * 1.702
        s = torch.sigmoid(z)
        grad_x = torch.ops.aten.sigmoid_backward(grad, s).mul_(z).addcmul_(grad, s)
        return s.mul_(x), grad_x


ACTIVATIONS = {"quick_gelu": QuickGELU, "gelu": nn.GELU}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise UsageError(f"act must be one of {sorted(ACTIVATIONS)}, got '{name}'")
    return ACTIVATIONS[name]()
ATTN_SCALES = ("embed_dim", "head_dim")


@dataclass(frozen=True)
class CvtStageCfg:
    """One stage: a conv token embedding, then `depth` blocks with convolutional projections."""

    embed_dim: int
    depth: int
    num_heads: int
    patch_kernel: tuple[int, int, int]   # (t, h, w) of the token-embedding conv
    patch_stride: tuple[int, int, int]
    patch_padding: tuple[int, int, int]
    proj_kernel: tuple[int, int, int]    # depthwise conv of the Q/K/V projections (padding kernel // 2)
    kv_stride: tuple[int, int, int]      # Q keeps stride 1; K/V are subsampled by this
    cls_token: bool
    drop_path: tuple[float, ...]         # per block


def stage_cfgs(embed_dims, depths, num_heads, num_frames: int, embed_kernel_t=(3, 1, 1), embed_stride_t=(2, 1, 1),
               proj_kernel_t: int = 3, kv_stride_t: int = 1, drop_path_rate: float = 0.1) -> list[CvtStageCfg]:
    """The three stages of a CvT. Spatial geometry is the paper's (embeddings 7/4/2, 3/2/1, 3/2/1; 3x3
    projections, K/V stride 2; cls token in the last stage; drop path only in the last stage, as the
    official configs' DROP_PATH_RATE [0, 0, r]). With num_frames=1 every temporal kernel and stride is 1."""
    if not len(embed_dims) == len(depths) == len(num_heads) == 3:
        raise UsageError(f"CvT has 3 stages; got embed_dims={embed_dims}, depths={depths}, num_heads={num_heads}")
    video = num_frames > 1
    cfgs = []
    for i, (dim, depth, heads) in enumerate(zip(embed_dims, depths, num_heads)):
        kt, st, pkt = (embed_kernel_t[i], embed_stride_t[i], proj_kernel_t) if video else (1, 1, 1)
        last = i == 2
        cfgs.append(CvtStageCfg(
            embed_dim=dim, depth=depth, num_heads=heads,
            patch_kernel=(kt, 7, 7) if i == 0 else (kt, 3, 3),
            patch_stride=(st, 4, 4) if i == 0 else (st, 2, 2),
            patch_padding=(kt // 2, 2, 2) if i == 0 else (kt // 2, 1, 1),
            proj_kernel=(pkt, 3, 3),
            kv_stride=(kv_stride_t if video else 1, 2, 2),
            cls_token=last,
            drop_path=tuple(drop_path_rates(drop_path_rate if last else 0.0, depth)),
        ))
    return cfgs


class ConvProjection(nn.Module):
    """Depthwise SpaceTimeConv (no bias) -> BatchNorm: one of Q, K, V as a token map. For inference, fuse_
    folds the BatchNorm into the conv (a K and V conv sharing one read of the grid, two outputs per channel,
    measured 2.5x slower on CPU than the two convs: not done)."""

    def __init__(self, dim: int, kernel_size: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.conv = SpaceTimeConv(dim, dim, kernel_size, stride, tuple(k // 2 for k in kernel_size), groups=dim,
                                  bias=False)
        # BatchNorm3d, not a hand-written norm, so SyncBatchNorm.convert_sync_batchnorm finds it
        self.bn = nn.BatchNorm3d(dim)

    def forward(self, grid: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        return to_tokens(self.bn(self.conv(grid)))  # (B, T'*H'*W', C), (T', H', W')

    def fuse_(self) -> None:
        """Fold the eval-mode BatchNorm (running stats, affine, eps) into the conv, which gains a bias:
        bn(conv(x)) = conv(x) * s + (beta - mean * s), s = gamma / sqrt(var + eps), one s per channel."""
        bn, conv = self.bn, self.conv
        scale = bn.weight.double() * (bn.running_var.double() + bn.eps).rsqrt()
        shift = bn.bias.double() - bn.running_mean.double() * scale
        weight = conv.weight.double() * scale.view(-1, *(1,) * (conv.weight.ndim - 1))  # 2-D or 3-D layout kept
        conv.weight = nn.Parameter(weight.to(conv.weight.dtype))
        conv.bias = nn.Parameter(shift.to(conv.weight.dtype))
        self.bn = nn.Identity()


class ConvAttention(nn.Module):
    """Multi-head attention whose Q/K/V come from convolutional projections of the token grid.

    The cls token skips the convolutions and joins Q, K and V after their linear projections (row-wise, so
    where it joins does not change the values). With `cls_frame_bias`, the cls key's score gets + log(T_kv)
    (T_kv = frames of the K/V grid): it then weighs as if repeated once per frame, like every spatial key of
    a static clip, so a static clip attends exactly as its single frame does in the image model (a no-op at
    T_kv = 1).
    """

    def __init__(self, dim: int, num_heads: int, proj_kernel, kv_stride, attn_scale: str = "embed_dim",
                 cls_frame_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise UsageError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.cls_frame_bias = cls_frame_bias
        self.conv_proj_q = ConvProjection(dim, proj_kernel, (1, 1, 1))
        self.conv_proj_k = ConvProjection(dim, proj_kernel, kv_stride)
        self.conv_proj_v = ConvProjection(dim, proj_kernel, kv_stride)
        self.proj_q = nn.Linear(dim, dim)
        self.proj_k = nn.Linear(dim, dim)
        self.proj_v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.set_scale(attn_scale)

    def set_scale(self, attn_scale: str) -> None:
        if attn_scale not in ATTN_SCALES:
            raise UsageError(f"attn_scale must be one of {ATTN_SCALES}, got '{attn_scale}'")
        dim = self.proj.in_features
        self.attn_scale = attn_scale
        self.scale = (dim if attn_scale == "embed_dim" else dim // self.num_heads) ** -0.5

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)  # (B, heads, N, d)

    def forward(self, x: torch.Tensor, thw: tuple[int, int, int], has_cls: bool) -> torch.Tensor:
        # x: (B, [1 +] T*H*W, C), already layer-normed. split, not two slices: its backward is one cat
        cls, x = x.split((1, x.shape[1] - 1), dim=1) if has_cls else (None, x)
        grid = to_grid(x, thw)  # a channels-last view
        if has_cls:  # ... with a gap per clip: made dense once here, not once by each of the three convs
            grid = grid.contiguous(memory_format=torch.channels_last_3d)
        q, _ = self.conv_proj_q(grid)
        k, kv_thw = self.conv_proj_k(grid)
        v, _ = self.conv_proj_v(grid)
        q, k, v = self.proj_q(q), self.proj_k(k), self.proj_v(v)
        bias = None
        if has_cls:
            # the cls row joins after the linear projections (row-wise, so the same values): each token map's
            # gradient then comes dense from its linear, where a slice of the cat's gradient (a gap per clip) sent
            # BatchNorm's CPU backward down a path ~4x slower (cvt_13's stage 3)
            q, k, v = (torch.cat((proj(cls), t), dim=1) for proj, t in ((self.proj_q, q), (self.proj_k, k),
                                                                         (self.proj_v, v)))
            if self.cls_frame_bias and kv_thw[0] > 1:
                bias = k.new_zeros(1, 1, 1, k.shape[1])
                bias[..., 0] = math.log(kv_thw[0])
        out = attention(self._heads(q), self._heads(k), self._heads(v), bias=bias, scale=self.scale)
        return self.proj(out.transpose(1, 2).flatten(2))  # (B, [1 +] T*H*W, C)


class CvtBlock(nn.Module):
    """Pre-norm transformer block with convolutional attention; the cls token goes through both norms."""

    def __init__(self, cfg: CvtStageCfg, drop_path: float, mlp_ratio: float, act: str, attn_scale: str,
                 cls_frame_bias: bool):
        super().__init__()
        dim = cfg.embed_dim
        self.has_cls = cfg.cls_token
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = ConvAttention(dim, cfg.num_heads, cfg.proj_kernel, cfg.kv_stride, attn_scale, cls_frame_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=partial(_activation, act))

    def forward(self, x: torch.Tensor, thw: tuple[int, int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), thw, self.has_cls))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CvtStage(nn.Module):
    """Conv token embedding (conv -> LayerNorm over channels), optional cls token, blocks."""

    def __init__(self, cfg: CvtStageCfg, in_dim: int, mlp_ratio: float, act: str, attn_scale: str,
                 cls_frame_bias: bool):
        super().__init__()
        self.patch_embed = CubePatchEmbed(in_dim, cfg.embed_dim, cfg.patch_kernel, cfg.patch_stride, cfg.patch_padding,
                                          norm=LayerNormChannels(cfg.embed_dim, eps=1e-5))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim)) if cfg.cls_token else None
        self.blocks = nn.ModuleList(
            CvtBlock(cfg, dp, mlp_ratio, act, attn_scale, cls_frame_bias) for dp in cfg.drop_path)

    def forward(self, x: torch.Tensor, grad_checkpointing: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, C_in, T, H, W) -> (B, C, T', H', W') and the cls token (B, 1, C) or None."""
        x, thw = to_tokens(self.patch_embed(x))
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        for blk in self.blocks:
            if grad_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(blk, x, thw, use_reentrant=False)
            else:
                x = blk(x, thw)
        cls, x = x.split((1, x.shape[1] - 1), dim=1) if self.cls_token is not None else (None, x)
        return to_grid(x, thw), cls


class CvT(VideoModel):
    """Convolutional vision transformer on clips: 3 stages, classification from the last stage's cls token."""

    def __init__(self, num_classes: int = 400, num_frames: int = 16, img_size: int = 224,
                 embed_dims=(64, 192, 384), depths=(1, 2, 10), num_heads=(1, 3, 6), mlp_ratio: float = 4.0,
                 embed_kernel_t=(3, 1, 1), embed_stride_t=(2, 1, 1), proj_kernel_t: int = 3, kv_stride_t: int = 1,
                 drop_path_rate: float = 0.1, head_dropout: float = 0.0, act: str = "quick_gelu",
                 attn_scale: str = "embed_dim", cls_frame_bias: bool = True, in_chans: int = 3):
        super().__init__()
        _activation(act)
        self.num_classes = num_classes
        self.stage_cfgs = stage_cfgs(embed_dims, depths, num_heads, num_frames, embed_kernel_t, embed_stride_t,
                                     proj_kernel_t, kv_stride_t, drop_path_rate)
        in_dims = (in_chans,) + tuple(embed_dims[:-1])
        self.stages = nn.ModuleList(
            CvtStage(cfg, d, mlp_ratio, act, attn_scale, cls_frame_bias) for cfg, d in zip(self.stage_cfgs, in_dims))
        self.norm = nn.LayerNorm(embed_dims[-1], eps=1e-5)
        self.head_drop = nn.Dropout(head_dropout)
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        init_linears(self)  # official init: trunc-normal linears; norms and convs keep torch's defaults
        nn.init.trunc_normal_(self.stages[-1].cls_token, std=0.02)
        image = num_frames == 1
        self.pretrained_cfg = PretrainedCfg(
            mean=IMAGENET_MEAN, std=IMAGENET_STD, num_frames=num_frames, sampling_rate=1 if image else 4,
            crop_size=img_size, extra=dict(options=dict(act=act, attn_scale=attn_scale)))

    def set_variant(self, act: str | None = None, attn_scale: str | None = None) -> None:
        """Switch the MLP activation ("quick_gelu" | "gelu") and attention scale ("embed_dim" | "head_dim").

        The choice is recorded in pretrained_cfg.extra["options"], which native checkpoints carry:
        the weights are only right with the activation they were trained with.
        """
        for blk in (b for stage in self.stages for b in stage.blocks):
            if act is not None:
                blk.mlp.act = _activation(act)
            if attn_scale is not None:
                blk.attn.set_scale(attn_scale)
        self.pretrained_cfg.extra["options"].update({k: v for k, v in (("act", act), ("attn_scale", attn_scale)) if v})

    def apply_options(self, options: dict) -> None:
        self.set_variant(**options)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> the layer-normed cls token (B, C)."""
        cls = None
        for stage in self.stages:
            x, cls = stage(x, self.grad_checkpointing)
        return self.norm(cls[:, 0])

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        feats = self.head_drop(feats)
        return feats if pre_logits else self.head(feats)

    # multi-scale features for downstream heads (timm's forward_intermediates; see models/base.py)
    def forward_intermediates(self, x: torch.Tensor, indices=None, norm: bool = False, output_fmt: str = "NCTHW",
                              intermediates_only: bool = False):
        """(B, C_i, T', H_i, W_i) token maps after each selected stage (cls token left out) and, unless
        intermediates_only, the normed cls token forward_features returns."""
        check_output_fmt(output_fmt)
        last = len(self.stages) - 1
        take = stage_indices(len(self.stages), indices)
        x, cls, maps = as_video(x), None, []
        for i, stage in enumerate(self.stages[:take[-1] + 1] if intermediates_only else self.stages):
            x, cls = stage(x, self.grad_checkpointing)
            if i in take:
                maps.append(self.norm(x.movedim(1, -1)).movedim(-1, 1) if norm and i == last else x)
        if intermediates_only:
            return maps
        return self.norm(cls[:, 0]), maps

    def no_weight_decay(self) -> set[str]:
        # the official recipe exempts cls tokens (norms and biases are 1-D, exempt anyway)
        return {f"stages.{i}.cls_token" for i, s in enumerate(self.stages) if s.cls_token is not None}


# ---------------------------------------------------------------------------------------------
# Checkpoint layouts

def _is_official(sd: StateDict) -> bool:
    return "stage0.patch_embed.proj.weight" in sd and any(".attn.conv_proj_q.conv.weight" in k for k in sd)


def _from_official(sd: StateDict, model: CvT) -> StateDict:
    # microsoft/CvT names modules like ours except `stage{i}` for `stages.{i}`; it uses QuickGELU
    model.set_variant(act="quick_gelu", attn_scale="embed_dim")
    return {re.sub(r"^stage(\d+)\.", r"stages.\1.", k): v for k, v in sd.items()}


# HF names (after dropping a leading "cvt.") -> ours, tried in order
_HF_RENAMES = [
    (r"^encoder\.stages\.(\d+)\.embedding\.convolution_embeddings\.projection\.", r"stages.\1.patch_embed.proj."),
    (r"^encoder\.stages\.(\d+)\.embedding\.convolution_embeddings\.normalization\.", r"stages.\1.patch_embed.norm."),
    (r"^encoder\.stages\.(\d+)\.cls_token$", r"stages.\1.cls_token"),
    (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.", r"stages.\1.blocks.\2."),
    (r"\.attention\.attention\.convolution_projection_(q|k|v)(?:uery|ey|alue)\.convolution_projection\.convolution\.",
     r".attn.conv_proj_\1.conv."),
    (r"\.attention\.attention\.convolution_projection_(q|k|v)(?:uery|ey|alue)\.convolution_projection\."
     r"normalization\.", r".attn.conv_proj_\1.bn."),
    (r"\.attention\.attention\.projection_(q|k|v)(?:uery|ey|alue)\.", r".attn.proj_\1."),
    (r"\.attention\.output\.dense\.", r".attn.proj."),
    (r"\.intermediate\.dense\.", r".mlp.fc1."),
    (r"\.output\.dense\.", r".mlp.fc2."),
    (r"\.layernorm_before\.", r".norm1."),
    (r"\.layernorm_after\.", r".norm2."),
    (r"^layernorm\.", r"norm."),
    (r"^classifier\.", r"head."),
]


def _is_hf(sd: StateDict) -> bool:
    return any(re.match(r"^(cvt\.)?encoder\.stages\.0\.embedding\.convolution_embeddings\.", k) for k in sd)


def _from_hf(sd: StateDict, model: CvT) -> StateDict:
    # HF's port runs nn.GELU where the official code has QuickGELU; both keep the C^-0.5 scale
    model.set_variant(act="gelu", attn_scale="embed_dim")
    out = {}
    for key, value in sd.items():
        key = key.removeprefix("cvt.")
        for pattern, repl in _HF_RENAMES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


CvT.checkpoint_layouts = (
    CheckpointLayout("cvt_official", _is_official, _from_official,
                     "microsoft/CvT release (stage{i}.*; QuickGELU, C^-0.5 attention scale)"),
    CheckpointLayout("cvt_huggingface", _is_hf, _from_hf,
                     "HuggingFace CvtForImageClassification / CvtModel (cvt.encoder.stages.*; GELU)"),
)


# ---------------------------------------------------------------------------------------------
# Builders: the paper's sizes (Table 2). drop_path_rate applies to the last stage only.

def _build(num_classes, num_frames, img_size, drop_path_rate, head_dropout, arch: dict, kwargs: dict) -> CvT:
    return CvT(**dict(arch, **kwargs), num_classes=num_classes, num_frames=num_frames, img_size=img_size,
               drop_path_rate=drop_path_rate, head_dropout=head_dropout)


@register_model
def cvt_13(num_classes=400, num_frames=16, img_size=224, drop_path_rate=0.1, head_dropout=0.0, **kwargs) -> CvT:
    """CvT-13: 20M parameters, 4.5 GFLOPs at 224 (image); ImageNet-1k 81.6 / 83.0 at 384."""
    arch = dict(embed_dims=(64, 192, 384), depths=(1, 2, 10), num_heads=(1, 3, 6))
    return _build(num_classes, num_frames, img_size, drop_path_rate, head_dropout, arch, kwargs)


@register_model
def cvt_21(num_classes=400, num_frames=16, img_size=224, drop_path_rate=0.1, head_dropout=0.0, **kwargs) -> CvT:
    """CvT-21: 32M parameters, 7.1 GFLOPs at 224 (image); ImageNet-1k 82.5 / 83.3 at 384."""
    arch = dict(embed_dims=(64, 192, 384), depths=(1, 4, 16), num_heads=(1, 3, 6))
    return _build(num_classes, num_frames, img_size, drop_path_rate, head_dropout, arch, kwargs)


@register_model
def cvt_w24(num_classes=400, num_frames=16, img_size=224, drop_path_rate=0.3, head_dropout=0.0, **kwargs) -> CvT:
    """CvT-W24: 277M parameters, 193 GFLOPs at 384 (image); ImageNet-22k -> 1k 87.6 at 384."""
    arch = dict(embed_dims=(192, 768, 1024), depths=(2, 2, 20), num_heads=(3, 12, 16))
    return _build(num_classes, num_frames, img_size, drop_path_rate, head_dropout, arch, kwargs)
