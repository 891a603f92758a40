"""What every vidformer model is: the shared classifier API and the checkpoint-layout hook.

A family's model subclasses VideoModel and implements `forward_features` (clip -> pooled
features before the head's dropout) and `forward_head`. The family file also lists the
checkpoint layouts it understands (`checkpoint_layouts`); vidformer.checkpoint detects which one a
file is in and calls its converter.
"""

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from vidformer.errors import UsageError
from vidformer.layers import as_video

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class CheckpointLayout:
    """A foreign checkpoint layout a family can load.

    detect(state_dict) says whether an (unwrapped) state dict is in this layout.
    convert(state_dict, model) returns it under this model's key names. Shapes may still differ
    (2-D kernels, other table lengths, another class count): the loader adapts and reports those.
    convert may also set model options that the layout implies (e.g. a head variant).
    """

    name: str
    detect: Callable[[StateDict], bool]
    convert: Callable[[StateDict, nn.Module], StateDict]
    description: str = ""


@dataclass
class PretrainedCfg:
    """How a model's weights expect to be fed, kept next to the weights (and in native checkpoints)."""

    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    num_frames: int = 16
    sampling_rate: int = 4
    crop_size: int = 224
    source: str = "random init"
    extra: dict = field(default_factory=dict)


class VideoModel(nn.Module):
    """Base of all families: (B, 3, T, H, W) or (B, 3, H, W) in, (B, num_classes) logits out."""

    checkpoint_layouts: tuple[CheckpointLayout, ...] = ()

    def __init__(self):
        super().__init__()
        self.pretrained_cfg = PretrainedCfg()
        self.grad_checkpointing = False

    def train(self, mode: bool = True) -> "VideoModel":
        if mode and getattr(self, "fused_for_inference", False):
            raise UsageError("this model was fused for inference (vidformer.layers.fuse_for_inference): it cannot "
                             "train, and its state dict is not a checkpoint; build it again to train")
        return super().train(mode)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(as_video(x)))

    def get_classifier(self) -> nn.Module:
        """The final classifier layer (its keys are dropped when a checkpoint's class count differs)."""
        return self.head

    def classifier_keys(self) -> set[str]:
        """State-dict keys of every classifier (a checkpoint with another class count drops these)."""
        head = self.get_classifier()
        for prefix, module in self.named_modules():
            if module is head:
                return {f"{prefix}.{k}" if prefix else k for k in module.state_dict()}
        return set()

    def reset_classifier(self, num_classes: int) -> None:
        old = self.get_classifier()
        new = nn.Linear(old.in_features, num_classes) if num_classes > 0 else nn.Identity()
        self._replace_classifier(new)
        self.num_classes = num_classes

    def _replace_classifier(self, new: nn.Module) -> None:
        self.head = new

    def apply_options(self, options: dict) -> None:
        """Set model options that a checkpoint layout implies (e.g. CvT's activation, PoolFormer's head order).

        Families with such options override this; the options are recorded in
        pretrained_cfg.extra["options"], which native checkpoints carry, so a converted file reloads
        with the computation its weights were trained for.
        """
        if options:
            raise ValueError(f"{type(self).__name__} has no layout options; got {sorted(options)}")

    def no_weight_decay(self) -> set[str]:
        """Parameter names that get no weight decay (besides 1-D parameters, which the optimizer exempts)."""
        return set()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    # --- inference and export ---------------------------------------------------------------------
    # forward_intermediates(x, indices=None, norm=False, output_fmt="NCTHW", intermediates_only=False), timm's
    # convention: the (B, C, T, H, W) map after each selected stage (indices: None = all, int n = the last n,
    # a list = those, negatives from the end), and unless intermediates_only also the pooled features that
    # forward_head takes: `feats, maps = model.forward_intermediates(x)`. norm=True applies the final norm
    # to the last stage's map. Each family implements it over its own stages.

    def export_frame_multiple(self) -> int | None:
        """The clip lengths an exported graph of this model accepts are the multiples of this; None: only the
        length it was built for (the graph depends on T). vidformer export reads it."""
        return None


def stage_indices(num_stages: int, indices=None) -> list[int]:
    """timm's feature indices: None = every stage, an int n = the last n, a sequence = those (negative from
    the end); returned ascending and absolute."""
    if indices is None:
        indices = num_stages
    if isinstance(indices, int):
        if not 0 < indices <= num_stages:
            raise ValueError(f"indices={indices}: the last n stages need 1 <= n <= {num_stages}")
        return list(range(num_stages - indices, num_stages))
    out = []
    for i in indices:
        j = num_stages + i if i < 0 else i
        if not 0 <= j < num_stages:
            raise ValueError(f"stage index {i} is out of range for {num_stages} stages")
        out.append(j)
    return sorted(set(out))


def check_output_fmt(output_fmt: str) -> None:
    if output_fmt != "NCTHW":
        raise ValueError(f"output_fmt must be 'NCTHW' (video maps (B, C, T, H, W)), got {output_fmt!r}")
