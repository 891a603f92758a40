"""A tiny registered video model (patch conv, one attention block, a position table, a head) that the
foundation and checkpoint tests use instead of a full family."""

import torch
from torch import nn

from vidformer.layers import CubePatchEmbed, attention, to_tokens
from vidformer.models import CheckpointLayout, VideoModel, register_model, list_models


class ToyVideo(VideoModel):
    def __init__(self, num_classes=5, num_frames=4, img_size=32, dim=16, heads=2, drop_path_rate=0.0,
                 head_dropout=0.0):
        super().__init__()
        kt = 3 if num_frames > 1 else 1
        self.heads = heads
        self.patch_embed = CubePatchEmbed(3, dim, (kt, 4, 4), (1, 4, 4), (kt // 2, 0, 0))
        grid = img_size // 4
        # a per-row embedding read from a relative-position style table (2*H - 1 rows)
        self.rel_pos_h = nn.Parameter(torch.randn(2 * grid - 1, dim) * 0.02)
        if num_frames > 1:
            self.rel_pos_t = nn.Parameter(torch.randn(2 * num_frames - 1, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, num_classes)
        self.num_classes = num_classes
        self.pretrained_cfg.num_frames, self.pretrained_cfg.crop_size = num_frames, img_size

    def forward_features(self, x):
        x = self.patch_embed(x)  # (B, C, T, H, W)
        h = x.shape[3]
        x = x + self.rel_pos_h[-h:].t()[None, :, None, :, None]
        if hasattr(self, "rel_pos_t"):
            t = x.shape[2]
            x = x + self.rel_pos_t[-t:].t()[None, :, :, None, None]
        tokens, _ = to_tokens(x)
        b, n, c = tokens.shape
        q, k, v = self.qkv(self.norm(tokens)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        tokens = tokens + self.proj(attention(q, k, v).transpose(1, 2).reshape(b, n, c))
        return tokens.mean(1)

    def forward_head(self, feats, pre_logits=False):
        return feats if pre_logits else self.head(feats)


def _from_reference(state, model):
    """The 'reference' layout: every key under 'backbone.', the classifier called 'fc'."""
    out = {}
    for k, v in state.items():
        k = k.replace("backbone.", "")
        out["head." + k[3:] if k.startswith("fc.") else k] = v
    return out


ToyVideo.checkpoint_layouts = (
    CheckpointLayout("reference", lambda sd: any(k.startswith("backbone.") for k in sd), _from_reference,
                     "keys under 'backbone.', classifier 'fc'"),
)


def to_reference(state):
    return {("fc." + k[5:] if k.startswith("head.") else "backbone." + k): v for k, v in state.items()}


if "toy_video" not in list_models():
    @register_model
    def toy_video(num_classes=5, num_frames=4, img_size=32, drop_path_rate=0.0, head_dropout=0.0, **kwargs):
        return ToyVideo(num_classes=num_classes, num_frames=num_frames, img_size=img_size, **kwargs)
