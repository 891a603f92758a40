"""Baselines from pytorchvideo's model hub, registered as `pytorchvideo/<hub name>` with our model API.

X3D XS/S/M/L, Slow / C2D / I3D R50, R(2+1)D R50, CSN R101, SlowFast R50/R101 and MViT(v1)-B 16x4/32x3
run the same data, views, trainer, tester and FLOP counter as the five families: a (B, 3, T, H, W) clip
in, logits out. The hub builds the network (pretrained=False: nothing is downloaded here; its Kinetics
checkpoints are zoo entries that the loader reads through the 'pytorchvideo' layout). What the wrapper
changes is what our contract needs:
- no head activation: the hub's X3D head ends in a softmax, which at eval would make scores of scores;
- the ResNet-style heads pool adaptively, so any clip length and crop runs (at the published geometry
  this equals the hub's fixed-kernel pooling);
- SlowFast's two pathways are cut from the one clip inside the model: the fast pathway is the clip, the
  slow one T/alpha frames at even spacing (PySlowFast's PackPathway), alpha read from the model's
  fast-to-slow fusion stride.
pytorchvideo is imported when a baseline is built, not with vidformer: its import warns on current torch.
"""

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vidformer.models.base import CheckpointLayout, StateDict, VideoModel
from vidformer.models.registry import register_model

# hub name -> (default frames, sampling rate, crop) of its published Kinetics-400 checkpoint
HUB_MODELS = {
    "x3d_xs": (4, 12, 160), "x3d_s": (13, 6, 160), "x3d_m": (16, 5, 224), "x3d_l": (16, 5, 312),
    "slow_r50": (8, 8, 224), "c2d_r50": (8, 8, 224), "i3d_r50": (8, 8, 224), "r2plus1d_r50": (16, 4, 224),
    "csn_r101": (32, 2, 224), "slowfast_r50": (32, 2, 224), "slowfast_r101": (32, 2, 224),
    "mvit_base_16x4": (16, 4, 224), "mvit_base_32x3": (32, 3, 224),
}
_X3D_DEPTH = {"x3d_l": 5.0}  # the hub's depth_factor where it is not create_x3d's default 2.2


def _build_hub_net(hub_name: str, num_classes: int, num_frames: int, img_size: int, drop_path_rate: float,
                   overrides: dict) -> nn.Module:
    import pytorchvideo.models.hub as hub
    from pytorchvideo.models.x3d import create_x3d

    if hub_name.startswith("x3d"):
        # the hub's x3d_* fix the clip length and crop (its head pool depends on them), so build directly
        return create_x3d(input_clip_length=num_frames, input_crop_size=img_size, model_num_class=num_classes,
                          depth_factor=_X3D_DEPTH.get(hub_name, 2.2), head_activation=None, **overrides)
    if hub_name.startswith("mvit"):
        return getattr(hub, hub_name)(pretrained=False, spatial_size=img_size, temporal_size=num_frames,
                                      head_num_classes=num_classes, droppath_rate_block=drop_path_rate,
                                      head_activation=None, **overrides)
    return getattr(hub, hub_name)(pretrained=False, model_num_class=num_classes, head_pool=nn.AdaptiveAvgPool3d,
                                  head_activation=None, **overrides)


class PytorchvideoNet(VideoModel):
    """A pytorchvideo hub network (`self.net`, its own key names under `net.`) behind our model API."""

    def __init__(self, hub_name: str, num_classes: int = 400, num_frames: int | None = None,
                 img_size: int | None = None, drop_path_rate: float = 0.0, head_dropout: float = 0.5, **overrides):
        super().__init__()
        frames, rate, crop = HUB_MODELS[hub_name]
        num_frames, img_size = num_frames or frames, img_size or crop
        self.hub_name = hub_name
        self.num_classes = num_classes
        self.net = _build_hub_net(hub_name, num_classes, num_frames, img_size, drop_path_rate, overrides)
        self.is_mvit = hub_name.startswith("mvit")
        head = self._head()
        head.dropout = nn.Dropout(head_dropout) if head_dropout > 0 else None
        # SlowFast: the fast pathway sees alpha times the slow pathway's frames (the fusion conv's time stride)
        fusion = getattr(self.net.blocks[0], "multipathway_fusion", None) if not self.is_mvit else None
        self.alpha = fusion.conv_fast_to_slow.stride[0] if fusion is not None else None
        self.pretrained_cfg.num_frames, self.pretrained_cfg.sampling_rate = num_frames, rate
        self.pretrained_cfg.crop_size = img_size

    def _head(self) -> nn.Module:
        return self.net.head if self.is_mvit else self.net.blocks[-1]

    def get_classifier(self) -> nn.Module:
        return self._head().proj

    def _replace_classifier(self, new: nn.Module) -> None:
        self._head().proj = new

    def no_weight_decay(self) -> set[str]:
        # MViT's cls token and position tables; the CNNs' 1-D parameters are exempt in the optimizer anyway
        return {n for n, _ in self.named_parameters() if "cls_positional_encoding" in n}

    def pathways(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[slow, fast] for SlowFast (slow: T/alpha evenly spaced frames of the clip), else [x]."""
        if self.alpha is None:
            return [x]
        t = x.shape[2]
        index = torch.linspace(0, t - 1, max(t // self.alpha, 1), device=x.device).long()
        return [x.index_select(2, index), x]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, D) pooled features, before the head's dropout and projection."""
        if self.is_mvit:
            return self._mvit_features(x)
        x = self.pathways(x) if self.alpha is not None else x
        for block in self.net.blocks[:-1]:
            x = self._run(block, x)
        head = self.net.blocks[-1]
        if head.pool is not None:  # X3D's projected pool (conv, BN, ReLU, avg pool, conv, ReLU)
            x = head.pool(x)
        return x.mean(dim=(2, 3, 4))  # (B, D): the adaptive pool's output, or X3D's map averaged

    def _mvit_features(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net.cls_positional_encoding(net.patch_embed(x))
        if net.pos_drop is not None:
            x = net.pos_drop(x)
        if net.norm_patch_embed is not None:
            x = net.norm_patch_embed(x)
        thw = net.cls_positional_encoding.patch_embed_shape
        for block in net.blocks:
            x, thw = self._run(block, x, thw)
        if net.norm_embed is not None:
            x = net.norm_embed(x)
        return net.head.sequence_pool(x)  # (B, D): the cls token

    def _run(self, block: nn.Module, *args):
        if not (self.grad_checkpointing and self.training and torch.is_grad_enabled()):
            return block(*args)
        if isinstance(args[0], list):  # a SlowFast stage writes into the list it is given: recompute from a copy
            return checkpoint(lambda *paths: block(list(paths)), *args[0], use_reentrant=False)
        return checkpoint(block, *args, use_reentrant=False)

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        head = self._head()
        if head.dropout is not None:
            feats = head.dropout(feats)
        return feats if pre_logits else head.proj(feats)


def _is_hub_state(sd: StateDict) -> bool:
    roots = ("blocks.", "patch_embed.", "cls_positional_encoding.", "norm_embed.", "head.")
    return any(k.startswith("blocks.") for k in sd) and all(k.startswith(roots) for k in sd)


def _convert_hub_state(sd: StateDict, model: nn.Module) -> StateDict:
    return {f"net.{k}": v for k, v in sd.items()}


PytorchvideoNet.checkpoint_layouts = (
    CheckpointLayout("pytorchvideo", _is_hub_state, _convert_hub_state,
                     "pytorchvideo model hub / PySlowFast checkpoint of a hub network (`model_state`)"),
)


def _register(hub_name: str) -> None:
    frames, _, crop = HUB_MODELS[hub_name]

    def build(num_classes=400, num_frames=frames, img_size=crop, drop_path_rate=0.0, head_dropout=0.5, **kwargs):
        return PytorchvideoNet(hub_name, num_classes, num_frames, img_size, drop_path_rate, head_dropout, **kwargs)

    build.__doc__ = f"pytorchvideo hub `{hub_name}` (Kinetics-400 checkpoint geometry {frames} frames, crop {crop})."
    register_model(build, name=f"pytorchvideo/{hub_name}")


for _name in HUB_MODELS:
    _register(_name)
