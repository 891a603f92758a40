"""UniFormer (Li et al., ICLR 2022 / TPAMI 2023): local relation aggregation by convolution in stages 1-2,
global space-time self-attention in stages 3-4; num_frames=1 builds the image UniFormer of the same code.

Module and parameter names follow the official Sense-X/UniFormer models, so its ImageNet checkpoints
(`model`) load into the T=1 model without conversion and its PySlowFast video checkpoints
(`model_state`) into the video model.
"""

import contextlib
from dataclasses import dataclass, fields, replace

import torch
import torch.utils.checkpoint
from torch import nn

from vidformer.errors import UsageError
from vidformer.layers import (ConvMlp, CubePatchEmbed, DropPath, LayerNormChannels, Mlp, SpaceTimeConv, attention,
                              drop_path_rates, init_linears, to_grid, to_tokens)
from vidformer.layers import as_video
from vidformer.models.base import (CheckpointLayout, PretrainedCfg, StateDict, VideoModel, check_output_fmt,
                                   stage_indices)
from vidformer.models.registry import register_model

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class UniFormerCfg:
    """Stage geometry: stages 1-2 are CBlocks (local MHRA), stages 3-4 SABlocks (global MHRA)."""

    depths: tuple[int, int, int, int] = (3, 4, 8, 3)
    dims: tuple[int, int, int, int] = (64, 128, 320, 512)
    head_dim: int = 64
    mlp_ratio: float = 4.0
    qkv_bias: bool = True


@dataclass(frozen=True)
class Kernels:
    """Temporal extents of the convolutions; all 1 for the image model (so its weights are 2-D).

    The video model downsamples time once, in the stem (kernel 3, stride 2); the later 2x2 patch
    merges never touch time (the official `UNIFORMER.STD=False` that every released model uses).
    """

    stem_t: int
    stem_stride_t: int
    dpe_t: int
    local_t: int

    @classmethod
    def for_frames(cls, num_frames: int) -> "Kernels":
        return cls(1, 1, 1, 1) if num_frames == 1 else cls(3, 2, 3, 5)


class CBlock(nn.Module):
    """DPE + local MHRA + conv FFN (paper eq. 1-3 with A_local a learned depthwise kernel).

    The local relation aggregator is conv1 (V projection) -> depthwise kt x 5 x 5 (the learnable
    affinity a_{i-j} over the neighbourhood) -> conv2 (output projection), with no activation between.
    Blocks run channels-last, the layout the patch embed's LayerNorm leaves: the depthwise convs in mkldnn's
    native layout, the 1x1x1 convs as Linears on the (B, T, H, W, C) view, no layout copies in between.
    """

    def __init__(self, dim: int, mlp_ratio: float, kernels: Kernels, drop_path: float):
        super().__init__()
        dpe_t, local_t = kernels.dpe_t, kernels.local_t
        self.pos_embed = SpaceTimeConv(dim, dim, (dpe_t, 3, 3), padding=(dpe_t // 2, 1, 1), groups=dim)
        # BatchNorm3d has BatchNorm2d's parameter shapes, so image checkpoints load unchanged
        self.norm1 = nn.BatchNorm3d(dim)
        self.conv1 = SpaceTimeConv(dim, dim, 1)
        self.conv2 = SpaceTimeConv(dim, dim, 1)
        self.attn = SpaceTimeConv(dim, dim, (local_t, 5, 5), padding=(local_t // 2, 2, 2), groups=dim)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.BatchNorm3d(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        x = x + self.drop_path(self.conv2(self.attn(self.conv1(self.norm1(x)))))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def fuse_(self) -> None:
        """Inference: fold norm1 into conv1 and norm2 into mlp.fc1 (eval BatchNorm is a per-channel affine)."""
        _fold_batchnorm_into_pointwise_conv(self.norm1, self.conv1)
        _fold_batchnorm_into_pointwise_conv(self.norm2, self.mlp.fc1)
        self.norm1, self.norm2 = nn.Identity(), nn.Identity()


def _fold_batchnorm_into_pointwise_conv(norm: nn.BatchNorm3d, conv: SpaceTimeConv) -> None:
    """conv(norm(x)) as one conv: eval BN is x * s + t per input channel, and a 1x1x1 conv without padding
    maps that exactly to weights W * s and bias b + W t."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)  # s
    shift = norm.bias - norm.running_mean * scale  # t
    weight = conv.weight.flatten(1)  # (out, in)
    conv.bias.copy_(conv.bias + weight @ shift)
    conv.weight.mul_(scale.view(1, -1, *[1] * (conv.weight.ndim - 2)))


class GlobalAttention(nn.Module):
    """Multi-head self-attention over all T*H*W tokens of a clip (global MHRA), fused."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        x = attention(qkv[0], qkv[1], qkv[2])  # (B, heads, N, head_dim)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class SABlock(nn.Module):
    """DPE + global MHRA + MLP; pre-norm transformer block on the flattened clip."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, kernels: Kernels,
                 drop_path: float):
        super().__init__()
        dpe_t = kernels.dpe_t
        self.pos_embed = SpaceTimeConv(dim, dim, (dpe_t, 3, 3), padding=(dpe_t // 2, 1, 1), groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = GlobalAttention(dim, num_heads, qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        tokens, thw = to_tokens(x)  # (B, T*H*W, C)
        tokens = tokens + self.drop_path(self.attn(self.norm1(tokens)))
        tokens = tokens + self.drop_path(self.mlp(self.norm2(tokens)))
        return to_grid(tokens, thw)


class UniFormer(VideoModel):
    """UniFormer on (B, 3, T, H, W): stem /4 (and /2 in time), then /2 in space per stage; BN, mean, Linear."""

    def __init__(self, cfg: UniFormerCfg = UniFormerCfg(), num_classes: int = 400, num_frames: int = 16,
                 img_size: int = 224, drop_path_rate: float = 0.1, head_dropout: float = 0.0):
        super().__init__()
        if any(d % cfg.head_dim for d in cfg.dims[2:]):
            raise UsageError(f"UniFormer dims {cfg.dims}: stages 3-4 must be multiples of head_dim {cfg.head_dim}")
        self.cfg = cfg
        self.num_classes = num_classes
        kernels = Kernels.for_frames(num_frames)
        dims = cfg.dims
        self.patch_embed1 = CubePatchEmbed(
            3, dims[0], (kernels.stem_t, 4, 4), (kernels.stem_stride_t, 4, 4), (kernels.stem_t // 2, 0, 0),
            norm=LayerNormChannels(dims[0]))
        for i in (2, 3, 4):
            self.add_module(f"patch_embed{i}", CubePatchEmbed(
                dims[i - 2], dims[i - 1], (1, 2, 2), (1, 2, 2), norm=LayerNormChannels(dims[i - 1])))
        rates = iter(drop_path_rates(drop_path_rate, sum(cfg.depths)))
        for i in (1, 2):
            self.add_module(f"blocks{i}", nn.ModuleList(
                CBlock(dims[i - 1], cfg.mlp_ratio, kernels, next(rates)) for _ in range(cfg.depths[i - 1])))
        for i in (3, 4):
            self.add_module(f"blocks{i}", nn.ModuleList(
                SABlock(dims[i - 1], dims[i - 1] // cfg.head_dim, cfg.mlp_ratio, cfg.qkv_bias, kernels, next(rates))
                for _ in range(cfg.depths[i - 1])))
        self.norm = nn.BatchNorm3d(dims[-1])
        self.head_drop = nn.Dropout(head_dropout)
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        init_linears(self)  # the official init: trunc-normal linears; convs, BN and LN keep torch's defaults

        image = num_frames == 1
        self.pretrained_cfg = PretrainedCfg(
            mean=IMAGENET_MEAN if image else (0.45, 0.45, 0.45),
            std=IMAGENET_STD if image else (0.225, 0.225, 0.225),
            # the released Kinetics models: 8x8, 16x4, 32x4
            num_frames=num_frames, sampling_rate=1 if image else (8 if num_frames <= 8 else 4),
            crop_size=img_size)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for i in (1, 2, 3, 4):
            x = getattr(self, f"patch_embed{i}")(x)  # (B, C_i, T', H / 2^(i+1), W / 2^(i+1))
            for block in getattr(self, f"blocks{i}"):
                x = self._run_block(block, x)
        return self.norm(x).mean(dim=(2, 3, 4))  # (B, C_4)

    def _run_block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if not (self.grad_checkpointing and torch.is_grad_enabled()):
            return block(x)
        return torch.utils.checkpoint.checkpoint(
            block, x, use_reentrant=False,
            context_fn=lambda: (contextlib.nullcontext(), _batchnorm_stats_frozen(block)))

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return feats if pre_logits else self.head(self.head_drop(feats))

    # multi-scale features for downstream heads (timm's forward_intermediates; see models/base.py)
    def forward_intermediates(self, x: torch.Tensor, indices=None, norm: bool = False, output_fmt: str = "NCTHW",
                              intermediates_only: bool = False):
        """(B, C_i, T', H / 2^(i+1), W / 2^(i+1)) after each selected stage and, unless intermediates_only,
        the pooled features forward_features returns."""
        check_output_fmt(output_fmt)
        take = stage_indices(4, indices)
        x, maps = as_video(x), []
        for i in range(take[-1] + 1 if intermediates_only else 4):
            x = getattr(self, f"patch_embed{i + 1}")(x)
            for block in getattr(self, f"blocks{i + 1}"):
                x = self._run_block(block, x)
            if i in take:
                maps.append(self.norm(x) if norm and i == 3 else x)
        if intermediates_only:
            return maps
        return self.norm(x).mean(dim=(2, 3, 4)), maps

    def export_frame_multiple(self) -> int | None:
        return self.patch_embed1.proj.stride[0]  # time is downsampled once, in the stem

    def no_weight_decay(self) -> set[str]:
        # no position tables or tokens; norms and biases are 1-D and exempt anyway
        return set()


@contextlib.contextmanager
def _batchnorm_stats_frozen(module: nn.Module):
    """Keep BatchNorm running statistics unchanged while a checkpointed block is recomputed in backward.

    The recomputation sees the same batch, so without this every CBlock BN would fold that batch
    into its running statistics twice per step and checkpointed training would end with other
    statistics than plain training.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)


# --- official checkpoint layouts ----------------------------------------------------------------------------
# Both official repos use the names above. Image checkpoints (DeiT-style, `model`) hold 2-D kernels;
# video checkpoints (PySlowFast, `model_state`) hold 3-D kernels everywhere, 1x1x1 and 1x2x2 included.


def _is_official(sd: StateDict) -> bool:
    return "blocks1.0.conv1.weight" in sd and "blocks3.0.attn.qkv.weight" in sd


def _detect_image(sd: StateDict) -> bool:
    return _is_official(sd) and sd["blocks1.0.conv1.weight"].ndim == 4


def _detect_video(sd: StateDict) -> bool:
    return _is_official(sd) and sd["blocks1.0.conv1.weight"].ndim == 5


def _check_variant(sd: StateDict) -> None:
    """Refuse the official variants whose modules uniformer_s/b do not have, naming them."""
    if any(k.startswith("patch_embed1.proj.0.") for k in sd):
        raise UsageError("this is a conv-stem UniFormer checkpoint (S-plus, patch_embed*.proj.0/1/3/4); "
                         "vidformer builds uniformer_s / uniformer_b, whose patch embeds are one conv + LayerNorm")
    if any(k.endswith(("gamma_1", "gamma_2")) for k in sd):
        raise UsageError("this UniFormer checkpoint has layer scale (gamma_1/gamma_2, e.g. uniformer_base_ls); "
                         "vidformer's uniformer_s / uniformer_b have none (the video paper starts from the non-LS "
                         "weights); use uniformer_base_in1k")
    if any(".t_attn." in k for k in sd):
        raise UsageError("this UniFormer checkpoint uses divided time/space attention (UNIFORMER.SPLIT, t_attn.*), "
                         "which vidformer's uniformer_s / uniformer_b do not implement")


def _convert_image(sd: StateDict, model: nn.Module) -> StateDict:
    _check_variant(sd)
    return dict(sd)


def _convert_video(sd: StateDict, model: nn.Module) -> StateDict:
    """Drop the unit temporal axis of 1x1x1 / 1x2x2 kernels that vidformer stores 2-D."""
    _check_variant(sd)
    target = model.state_dict()
    out = {}
    for key, value in sd.items():
        want = target.get(key)
        if want is not None and value.ndim == 5 and want.ndim == 4 and value.shape[2] == 1:
            value = value[:, :, 0]
        out[key] = value
    return out


UniFormer.checkpoint_layouts = (
    CheckpointLayout("uniformer_official_image", _detect_image, _convert_image,
                     "Sense-X/UniFormer image_classification checkpoint (`model`), 2-D kernels"),
    CheckpointLayout("uniformer_official_video", _detect_video, _convert_video,
                     "Sense-X/UniFormer video_classification PySlowFast checkpoint (`model_state`), 3-D kernels"),
)


# --- builders -------------------------------------------------------------------------------------------------


def _build(cfg: UniFormerCfg, source: str, num_classes: int, num_frames: int, img_size: int, drop_path_rate: float,
           head_dropout: float, overrides: dict) -> UniFormer:
    known = {f.name for f in fields(UniFormerCfg)}
    unknown = set(overrides) - known
    if unknown:
        raise UsageError(f"unknown UniFormer option(s) {sorted(unknown)}; known: {sorted(known)}")
    cfg = replace(cfg, **{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
    model = UniFormer(cfg, num_classes, num_frames, img_size, drop_path_rate, head_dropout)
    model.pretrained_cfg.source = source
    return model


@register_model
def uniformer_s(num_classes=400, num_frames=16, img_size=224, drop_path_rate=0.1, head_dropout=0.0, **kwargs):
    """UniFormer-S: depths 3/4/8/3, 21.4M parameters; 41.8 GFLOPs per 16x224^2 view, 3.6 G per image."""
    return _build(UniFormerCfg(depths=(3, 4, 8, 3)), "random init (official: uniformer_small_in1k / _k400_16x4)",
                  num_classes, num_frames, img_size, drop_path_rate, head_dropout, kwargs)


@register_model
def uniformer_b(num_classes=400, num_frames=16, img_size=224, drop_path_rate=0.3, head_dropout=0.0, **kwargs):
    """UniFormer-B: depths 5/8/20/7, 49.8M parameters; 96.7 GFLOPs per 16x224^2 view, 8.3 G per image."""
    return _build(UniFormerCfg(depths=(5, 8, 20, 7)), "random init (official: uniformer_base_in1k / _k400_16x4)",
                  num_classes, num_frames, img_size, drop_path_rate, head_dropout, kwargs)
