"""Dynamic Vision Transformer (Wang et al., NeurIPS 2021, "Not All Images are Worth 16x16 Words"):
a cascade of DeiT-style transformers over ever finer token grids of the same clip, with feature and
relationship reuse between them; a clip stops at the first exit that is confident enough.

Each exit is a complete transformer with its own weights and its own cube patchify; only the
tokenizer differs (DeiT-S image DVT: kernel/stride 32, 23 with padding 3, 16 -> 7x7, 10x10, 14x14
tokens on the same 224 crop). For video the patch also has a temporal size per exit (coarser in
time at the first exit, research note §5.2). With num_frames=1 the temporal kernels are 1 and this
is the image DVT; the official DVT DeiT-S checkpoint loads through `checkpoint_layouts`.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vidformer.layers import (ConvMlp, CubePatchEmbed, DropPath, Mlp, as_video, attention, drop_path_rates,
                              size_constant, to_tokens, triple)
from vidformer.models.base import CheckpointLayout, PretrainedCfg, VideoModel, check_output_fmt, stage_indices
from vidformer.models.registry import register_model

Grid = tuple[int, int, int]

# (temporal, height, width) patch size and padding of each exit. The image DVT's middle exit is the
# official code's kernel-23 / padding-3 conv, which turns 224 into 10x10 tokens.
DEIT_S_VIDEO_PATCHES = ((4, 32, 32), (2, 23, 23), (2, 16, 16))
DEIT_S_PADDINGS = ((0, 0, 0), (0, 3, 3), (0, 0, 0))


def area_resize(x: torch.Tensor, size: Grid) -> torch.Tensor:
    """DVT's cheap area-like resize of a (B, C, t, h, w) grid: nearest-upsample every axis that
    changes to twice its length, then adaptive average pooling to `size` (7 -> 14 -> 10, 10 -> 20 -> 14
    in the official code). Axes that keep their length are left alone, so a static axis stays exact."""
    up = tuple(n if n == m else 2 * n for n, m in zip(x.shape[2:], size))
    if up != tuple(x.shape[2:]):
        x = F.interpolate(x, size=up, mode="nearest")
    return F.adaptive_avg_pool3d(x, size)


def _area_resize_matrix(t: int, h: int, w: int, t_out: int, h_out: int, w_out: int, like: torch.Tensor) -> torch.Tensor:
    """(1 + N, 1 + N_up): area_resize of a (t, h, w) grid to (t_out, h_out, w_out) as a matrix on the flattened
    grid (the resize is linear and the same for every channel), after a leading row and column that carry
    the class token through."""
    n_up = t * h * w
    basis = torch.eye(n_up, dtype=torch.float64, device=like.device).reshape(n_up, 1, t, h, w)
    grid = area_resize(basis, (t_out, h_out, w_out)).reshape(n_up, -1).t()
    matrix = F.pad(grid, (1, 0, 1, 0))
    matrix[0, 0] = 1.0
    return matrix.to(like.dtype)


def resize_matrix(up_grid: Grid, grid: Grid, like: torch.Tensor) -> torch.Tensor:
    """(1 + N, 1 + N_up): class token, then area_resize from up_grid to grid; built once per size (in eager)."""
    return size_constant(_area_resize_matrix, *up_grid, *grid, like=like)


torch.library.define("vidformer::grid_resize", "(Tensor x, Tensor matrix) -> Tensor")


@torch.library.impl("vidformer::grid_resize", "CompositeImplicitAutograd")
def _grid_resize(x, matrix):
    return matrix @ x


def grid_resize(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """matrix @ x: (..., 1 + N_up, C) tokens -> (..., 1 + N, C). One registered op, so that fvcore counts it as
    it counts the pooling it computes (not at all) while it runs as one matmul; the upsample and adaptive
    pooling it replaces were about 20 % of a DVT step on CPU."""
    return torch.ops.vidformer.grid_resize(x, matrix)


class FeatureReuse(nn.Module):
    """f_l of paper Eq. 4: the upstream exit's last-block tokens -> LN -> MLP(D -> 128 -> 48) -> resized to
    this exit's grid, with zeros in the class-token slot (reusing the upstream class token was worse, Table 7)."""

    def __init__(self, dim: int, hidden: int, out_dim: int, drop: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, hidden, out_dim, drop=drop)

    def forward(self, upstream: torch.Tensor, up_grid: Grid, grid: Grid) -> torch.Tensor:
        ctx = self.mlp(self.norm(upstream))  # (B, 1 + N_up, D')
        # zeros in the class-token slot: the matrix's class column is dropped, its class row then reads nothing
        return grid_resize(ctx[:, 1:], resize_matrix(up_grid, grid, ctx)[:, 1:])  # (B, 1 + N, D')


class RelationReuse(ConvMlp):
    """r(A_up) of paper Eq. 8-9: the upstream attention logits of all layers (L*h channels) pass one shared
    MLP of 1x1 convolutions on the coarse grid, then are resized along the key axis and the query axis
    separately (paper Fig. 5; the class row and column are carried along), and split into one bias per layer.

    The MLP is the shared ConvMlp (weights (out, in, 1, 1) as the official Conv2d's) on the logits laid side by
    side on the last axis, where its 1x1 convs run as linears over contiguous rows (NCHW Conv2d's took 1.8x as
    long forward and backward at dvt_deit_s's 101 x 101 relation grid) and its GELU is recomputed in training."""

    def __init__(self, channels: int):
        super().__init__(channels, 3 * channels)

    def forward(self, logits: list[torch.Tensor], up_grid: Grid, grid: Grid) -> list[torch.Tensor]:
        side_by_side = torch.cat([layer.permute(0, 2, 3, 1) for layer in logits], dim=-1)  # (B, M, M, L*h)
        rel = super().forward(side_by_side.unsqueeze(1).movedim(-1, 1)).squeeze(2)  # (B, L*h, M, M), M = 1 + N_up
        p = resize_matrix(up_grid, grid, rel)
        rel = grid_resize(grid_resize(rel, p).transpose(-1, -2), p).transpose(-1, -2)  # P rel P^T: (B, L*h, 1 + N, 1 + N)
        return list(rel.chunk(len(logits), dim=1))


class DvtAttention(nn.Module):
    """Multi-head self-attention that can add a reused relation to its logits and hand its logits on."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None,
                return_logits: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)  # (B, heads, N, d)
        if not return_logits:
            out = attention(q, k, v, bias=bias, scale=self.scale)
            return self.proj(out.transpose(1, 2).reshape(b, n, c)), None
        # The next exit reuses these logits (summed over exits and passed through an MLP), so they are
        # formed explicitly and kept in float32.
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = (q.float() @ k.float().transpose(-2, -1)) * self.scale  # (B, heads, N, N)
            if bias is not None:
                logits = logits + bias.float()
            out = (logits.softmax(dim=-1) @ v.float()).to(x.dtype)
        return self.proj(out.transpose(1, 2).reshape(b, n, c)), logits


class DvtBlock(nn.Module):
    """Pre-norm transformer block; with feature reuse the MLP reads [z' || E_l] (paper Eq. 5)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float, reuse_dim: int,
                 reuse_hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = DvtAttention(dim, num_heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim + reuse_dim, eps=1e-6)
        self.mlp = Mlp(dim + reuse_dim, int(dim * mlp_ratio), dim)
        self.reuse = FeatureReuse(dim, reuse_hidden, reuse_dim) if reuse_dim else None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None, bias: torch.Tensor | None,
                return_logits: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        out, logits = self.attn(self.norm1(x), bias, return_logits)
        x = x + self.drop_path(out)
        mlp_in = x if context is None else torch.cat([x, context], dim=-1)  # (B, 1 + N, D + D')
        return x + self.drop_path(self.mlp(self.norm2(mlp_in))), logits


@dataclass
class ReuseState:
    """What an exit hands to the next one: its last-block tokens (before the final norm), their grid,
    and its attention logits per layer (only when the next exit reuses relations)."""

    tokens: torch.Tensor
    grid: Grid
    logits: list[torch.Tensor] | None

    def select(self, keep: torch.Tensor) -> "ReuseState":
        """The state of the samples in boolean mask `keep` (the ones that go on to the next exit)."""
        logits = None if self.logits is None else [a[keep] for a in self.logits]
        return ReuseState(self.tokens[keep], self.grid, logits)


class DvtExit(nn.Module):
    """One transformer of the cascade: its own cube patchify, class token, position tables, blocks, norm
    and head. Reuse modules exist only when an upstream exit feeds this one."""

    def __init__(self, *, num_classes: int, num_frames: int, img_size: int, patch: Grid, padding: Grid,
                 embed_dim: int, depth: int, num_heads: int, mlp_ratio: float, drop_path_rate: float,
                 head_dropout: float, in_chans: int, reuse_dim: int, reuse_hidden: int, relation_reuse: bool):
        super().__init__()
        self.patch_embed = CubePatchEmbed(in_chans, embed_dim, patch, patch, padding)
        self.grid = self.patch_embed.proj.output_size((num_frames, img_size, img_size))
        t, h, w = self.grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + h * w, embed_dim))
        # Time gets its own table so that an image checkpoint's spatial table loads as it is and the
        # temporal one starts at zero (the inflated model then sees a static clip like the image).
        self.pos_embed_temporal = nn.Parameter(torch.zeros(1, t, embed_dim)) if num_frames > 1 else None
        self.blocks = nn.ModuleList(
            DvtBlock(embed_dim, num_heads, mlp_ratio, dpr, reuse_dim, reuse_hidden)
            for dpr in drop_path_rates(drop_path_rate, depth))
        self.relation_reuse = RelationReuse(depth * num_heads) if relation_reuse else None
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head_drop = nn.Dropout(head_dropout)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.grad_checkpointing = False

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, 1 + t*h*w, D) tokens with class token and position embeddings."""
        tokens, grid = to_tokens(self.patch_embed(x))  # (B, t*h*w, D)
        if grid != self.grid:
            raise ValueError(f"DVT exit built for a {self.grid} token grid got {grid}; the input clip "
                             f"{tuple(x.shape[2:])} differs from the num_frames/img_size the model was built with")
        t, hw, d = grid[0], grid[1] * grid[2], tokens.shape[-1]
        pos = self.pos_embed[:, 1:].unsqueeze(1)  # (1, 1, h*w, D)
        if self.pos_embed_temporal is not None:
            pos = pos + self.pos_embed_temporal.unsqueeze(2)  # (1, t, h*w, D)
        tokens = tokens + pos.expand(1, t, hw, d).reshape(1, t * hw, d)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1)

    def forward(self, x: torch.Tensor, upstream: ReuseState | None,
                emit_logits: bool) -> tuple[torch.Tensor, ReuseState]:
        """Pooled features (B, D) of clip x and the state the next exit reuses."""
        z = self.embed(x)
        contexts = [None] * len(self.blocks)
        if upstream is not None and self.blocks[0].reuse is not None:
            # every block reuses the same upstream tensor through its own f_l
            contexts = [blk.reuse(upstream.tokens, upstream.grid, self.grid) for blk in self.blocks]
        biases = [None] * len(self.blocks)
        if upstream is not None and self.relation_reuse is not None:
            biases = self.relation_reuse(upstream.logits, upstream.grid, self.grid)
        logits = []
        for blk, ctx, bias in zip(self.blocks, contexts, biases):
            if self.grad_checkpointing and self.training:
                z, a = checkpoint(blk, z, ctx, bias, emit_logits, use_reentrant=False)
            else:
                z, a = blk(z, ctx, bias, emit_logits)
            logits.append(a)
        state = ReuseState(z, self.grid, logits if emit_logits else None)
        return self.norm(z)[:, 0], state


class DynamicVisionTransformer(VideoModel):
    """K exits over coarse-to-fine token grids of one clip. forward() runs the full cascade and returns the
    last exit's logits; forward_exits() returns every exit's logits (training sums their cross-entropy);
    forward_early_exit() drops confident samples from the batch after each exit."""

    checkpoint_layouts: tuple[CheckpointLayout, ...] = ()

    def __init__(self, num_classes: int = 400, num_frames: int = 8, img_size: int = 224, in_chans: int = 3,
                 embed_dim: int = 384, depth: int = 12, num_heads: int = 6, mlp_ratio: float = 4.0,
                 exit_patches=DEIT_S_VIDEO_PATCHES, exit_paddings=DEIT_S_PADDINGS, feature_reuse: bool = True,
                 relation_reuse: bool = True, reuse_dim: int = 48, reuse_hidden: int = 128,
                 detach_reuse: bool = False, drop_path_rate: float = 0.1, head_dropout: float = 0.0):
        super().__init__()
        if len(exit_patches) != len(exit_paddings) or len(exit_patches) < 1:
            raise ValueError(f"exit_patches ({len(exit_patches)}) and exit_paddings ({len(exit_paddings)}) "
                             f"must name the same number (>= 1) of exits")
        # the constructor arguments, so that tools can build a twin with another reuse setting (reuse FLOPs)
        self.arch = dict(num_classes=num_classes, num_frames=num_frames, img_size=img_size, in_chans=in_chans,
                         embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                         exit_patches=exit_patches, exit_paddings=exit_paddings, feature_reuse=feature_reuse,
                         relation_reuse=relation_reuse, reuse_dim=reuse_dim, reuse_hidden=reuse_hidden)
        self.num_classes, self.num_frames, self.embed_dim = num_classes, num_frames, embed_dim
        self.feature_reuse, self.relation_reuse = feature_reuse, relation_reuse
        # The paper's PyTorch code lets downstream losses train upstream exits through the reuse paths;
        # MindSpore DVT detaches them (research note §5.2.6).
        self.detach_reuse = detach_reuse
        exits = []
        for k, (patch, padding) in enumerate(zip(exit_patches, exit_paddings)):
            patch, padding = list(triple(patch)), list(triple(padding))
            # the image model has temporal kernel 1; a temporal patch longer than the clip is cut to the clip
            patch[0] = 1 if num_frames == 1 else min(patch[0], num_frames)
            padding[0] = 0 if num_frames == 1 else padding[0]
            exits.append(DvtExit(
                num_classes=num_classes, num_frames=num_frames, img_size=img_size, patch=tuple(patch),
                padding=tuple(padding), embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                drop_path_rate=drop_path_rate, head_dropout=head_dropout, in_chans=in_chans,
                reuse_dim=reuse_dim if feature_reuse and k > 0 else 0, reuse_hidden=reuse_hidden,
                relation_reuse=relation_reuse and k > 0))
        self.exits = nn.ModuleList(exits)
        self.num_exits = len(exits)
        self.num_features = embed_dim
        # samples each exit has processed since the last reset_exit_counts(): early exit's real work
        self.exit_counts = [0] * self.num_exits
        self.pretrained_cfg = PretrainedCfg(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                                            num_frames=num_frames, sampling_rate=8 if num_frames > 1 else 1,
                                            crop_size=img_size)
        self.apply(_init_weights)
        for e in self.exits:
            nn.init.trunc_normal_(e.pos_embed, std=0.02)
            nn.init.trunc_normal_(e.cls_token, std=0.02)

    @property
    def token_grids(self) -> list[Grid]:
        """(t, h, w) token grid of every exit."""
        return [e.grid for e in self.exits]

    def reset_exit_counts(self) -> None:
        self.exit_counts = [0] * self.num_exits

    def _run_exit(self, k: int, x: torch.Tensor, upstream: ReuseState | None) -> tuple[torch.Tensor, ReuseState]:
        self.exit_counts[k] += x.shape[0]
        if upstream is not None and self.detach_reuse:
            upstream = ReuseState(upstream.tokens.detach(), upstream.grid,
                                  None if upstream.logits is None else [a.detach() for a in upstream.logits])
        emit = self.relation_reuse and k + 1 < self.num_exits
        return self.exits[k](x, upstream, emit)

    def _exit_logits(self, k: int, feats: torch.Tensor) -> torch.Tensor:
        e = self.exits[k]
        return e.head(e.head_drop(feats))

    def forward_exits(self, x: torch.Tensor, num_exits: int | None = None) -> list[torch.Tensor]:
        """Logits (B, num_classes) of every exit (or of the first `num_exits`), all samples through all of them."""
        x = as_video(x)
        out, state = [], None
        for k in range(num_exits or self.num_exits):
            feats, state = self._run_exit(k, x, state)
            out.append(self._exit_logits(k, feats))
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled class-token features (B, D) of the last exit, after running the whole cascade."""
        state = None
        for k in range(self.num_exits):
            feats, state = self._run_exit(k, x, state)
        return feats

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        e = self.exits[-1]
        feats = e.head_drop(feats)
        return feats if pre_logits else e.head(feats)

    # multi-scale features for downstream heads (timm's forward_intermediates; see models/base.py). The
    # "stages" of the cascade are its exits: token grids from coarse to fine over the same clip.
    def forward_intermediates(self, x: torch.Tensor, indices=None, norm: bool = False, output_fmt: str = "NCTHW",
                              intermediates_only: bool = False):
        """(B, D, t_k, h_k, w_k) last-block token maps of each selected exit (class token left out) and, unless
        intermediates_only, the final exit's pooled features forward_features returns."""
        check_output_fmt(output_fmt)
        take = stage_indices(self.num_exits, indices)
        x, state, maps = as_video(x), None, []
        for k in range(take[-1] + 1 if intermediates_only else self.num_exits):
            feats, state = self._run_exit(k, x, state)
            if k in take:
                tokens = self.exits[k].norm(state.tokens) if norm and k == self.num_exits - 1 else state.tokens
                maps.append(tokens[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, *state.grid))
        if intermediates_only:
            return maps
        return feats, maps

    @torch.no_grad()
    def forward_early_exit(self, x: torch.Tensor, thresholds) -> tuple[torch.Tensor, torch.Tensor]:
        """Real batched early exit: after exit k the samples whose max softmax probability is >= thresholds[k]
        leave the batch; only the rest (and their reuse state) go on. The last exit takes everyone left.

        Returns logits (B, num_classes) from the exit each sample took, and that exit's index (B,).
        """
        x = as_video(x)
        if len(thresholds) < self.num_exits - 1:
            raise ValueError(f"need a threshold for each of the first {self.num_exits - 1} exits, "
                             f"got {list(thresholds)}")
        b = x.shape[0]
        logits_out = x.new_empty(b, self.num_classes)
        exit_index = torch.full((b,), self.num_exits - 1, dtype=torch.long, device=x.device)
        active = torch.arange(b, device=x.device)
        state = None
        for k in range(self.num_exits):
            feats, state = self._run_exit(k, x, state)
            logits = self._exit_logits(k, feats)
            if k == self.num_exits - 1:
                logits_out[active] = logits.to(logits_out.dtype)
                break
            done = logits.softmax(dim=-1).amax(dim=-1) >= thresholds[k]
            logits_out[active[done]] = logits[done].to(logits_out.dtype)
            exit_index[active[done]] = k
            keep = ~done
            active, x, state = active[keep], x[keep], state.select(keep)
            if active.numel() == 0:
                break
        return logits_out, exit_index

    def get_classifier(self) -> nn.Module:
        return self.exits[-1].head

    def classifier_keys(self) -> set[str]:
        return {f"exits.{k}.head.{n}" for k, e in enumerate(self.exits) for n in e.head.state_dict()}

    def reset_classifier(self, num_classes: int) -> None:
        for e in self.exits:
            e.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.num_classes = num_classes

    def no_weight_decay(self) -> set[str]:
        names = ("cls_token", "pos_embed", "pos_embed_temporal")
        return {f"exits.{k}.{n}" for k, e in enumerate(self.exits) for n in names if getattr(e, n) is not None}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for e in self.exits:
            e.grad_checkpointing = enable

    def pos_embed_layout(self, key: str) -> tuple[int, Grid] | None:
        """(class tokens, (1, h, w)) of each exit's spatial position table, for the checkpoint loader to
        interpolate when the crop size changes; None for every other key (the temporal tables start at zero)."""
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "exits" and parts[2] == "pos_embed":
            _, h, w = self.exits[int(parts[1])].grid
            return 1, (1, h, w)
        return None


def _init_weights(m: nn.Module) -> None:
    # DeiT's initialisation (timm VisionTransformer._init_weights)
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# ------------------------------------------------------------------------------------------------
# The official DVT checkpoint (blackfeather-wang/Dynamic-Vision-Transformer, DVT_Deit_small): the three
# exits are the attributes less_less_token / less_token / normal_token, each a timm-style ViT whose
# blocks carry the feature-reuse module as `feature_resuse_mlp` (sic: Sequential(LayerNorm, Mlp)) and
# whose downstream exits carry `relation_reuse_conv` (Sequential(Conv2d, GELU, Conv2d)). The file
# holds the weights under 'model_state_dict', next to its flops / thresholds / curve.

_OFFICIAL_EXITS = ("less_less_token.", "less_token.", "normal_token.")
_OFFICIAL_RENAMES = (
    (".feature_resuse_mlp.0.", ".reuse.norm."),
    (".feature_resuse_mlp.1.", ".reuse.mlp."),
    (".relation_reuse_conv.0.", ".relation_reuse.fc1."),
    (".relation_reuse_conv.2.", ".relation_reuse.fc2."),
)


def _is_official(state: dict) -> bool:
    return any(k.startswith(_OFFICIAL_EXITS[0]) for k in state)


def _convert_official(state: dict, model: nn.Module) -> dict:
    out = {}
    for key, value in state.items():
        k = next((i for i, p in enumerate(_OFFICIAL_EXITS) if key.startswith(p)), None)
        if k is None:
            out[key] = value
            continue
        name = f"exits.{k}." + key[len(_OFFICIAL_EXITS[k]):]
        for old, new in _OFFICIAL_RENAMES:
            name = name.replace(old, new)
        out[name] = value
    return out


DynamicVisionTransformer.checkpoint_layouts = (
    CheckpointLayout("dvt_official", _is_official, _convert_official,
                     "official DVT (blackfeather-wang/Dynamic-Vision-Transformer) DVT_Deit_small"),
)


@register_model
def dvt_deit_s(num_classes=400, num_frames=8, img_size=224, drop_path_rate=0.1, head_dropout=0.0, **kwargs):
    """DVT on DeiT-S (384 wide, 12 blocks, 6 heads), 3 exits: 7x7 -> 10x10 -> 14x14 tokens at 224. Video
    default (Kinetics, research note §5.2): tubelets 4x32x32 -> 2x23x23 -> 2x16x16, i.e. 2x7x7, 4x10x10,
    4x14x14 tokens for 8 frames."""
    return DynamicVisionTransformer(num_classes=num_classes, num_frames=num_frames, img_size=img_size,
                                    drop_path_rate=drop_path_rate, head_dropout=head_dropout, **kwargs)
