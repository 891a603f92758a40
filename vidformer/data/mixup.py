"""Mixup / CutMix on video batches with label-smoothed soft targets (the MViTv2 / UniFormer recipe).

Each batch is mixed with itself reversed (sample i with sample B-1-i; an odd batch's middle sample
mixes with itself), with one lambda per batch as
in timm's batch mode. The CutMix box is cut in H x W and shared by every frame of the clip, and
lambda is corrected to the box's true area after clipping at the borders.
"""

import math

import torch
from fvcore.common.config import CfgNode

__all__ = ["MixupCutmix", "build_mixup", "smooth_one_hot"]


def smooth_one_hot(label: torch.Tensor, num_classes: int, eps: float = 0.0) -> torch.Tensor:
    """(B,) int -> (B, K) targets: 1 - eps + eps/K on the label, eps/K elsewhere (rows sum to 1)."""
    off = eps / num_classes
    target = torch.full((label.shape[0], num_classes), off, device=label.device)
    return target.scatter_(1, label.view(-1, 1), 1.0 - eps + off)


class MixupCutmix:
    """`(video (B, C, T, H, W), label (B,)) -> (mixed video, soft target (B, K))`.

    With probability `prob` the batch is mixed: by CutMix with probability `switch_prob` when both
    alphas are positive (otherwise by whichever is on), lambda ~ Beta(alpha, alpha). Unmixed batches
    still get label-smoothed targets.
    """

    def __init__(
        self,
        num_classes: int,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.1,
    ):
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.switch_prob = switch_prob
        self.label_smoothing = label_smoothing

    def _choose(self) -> tuple[str, float]:
        if torch.rand(()) >= self.prob or (self.mixup_alpha <= 0 and self.cutmix_alpha <= 0):
            return "none", 1.0
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or torch.rand(()) < self.switch_prob)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        return ("cutmix" if use_cutmix else "mixup"), lam

    @staticmethod
    def _box(height: int, width: int, lam: float) -> tuple[int, int, int, int]:
        """A box of area ~(1 - lam) of the frame at a uniform random centre, clipped to the frame."""
        cut = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * cut), int(width * cut)
        cy, cx = int(torch.randint(height, ())), int(torch.randint(width, ()))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
        return y0, y1, x0, x1

    def __call__(self, video: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mode, lam = self._choose()
        if mode == "mixup":
            video = video * lam + video.flip(0) * (1.0 - lam)
        elif mode == "cutmix":
            height, width = video.shape[-2:]
            y0, y1, x0, x1 = self._box(height, width, lam)
            video = video.clone()
            video[..., y0:y1, x0:x1] = video.flip(0)[..., y0:y1, x0:x1]  # same box in every frame
            lam = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
        target = smooth_one_hot(label, self.num_classes, self.label_smoothing)
        return video, target * lam + target.flip(0) * (1.0 - lam)


def build_mixup(cfg: CfgNode, num_classes: int) -> MixupCutmix | None:
    """MixupCutmix from the MIXUP section, or None when MIXUP.ENABLE is off (then label smoothing is
    the loss's job: F.cross_entropy(label_smoothing=MIXUP.LABEL_SMOOTH_VALUE) gives the same targets)."""
    if not cfg.MIXUP.ENABLE:
        return None
    m = cfg.MIXUP
    return MixupCutmix(num_classes, m.ALPHA, m.CUTMIX_ALPHA, m.PROB, m.SWITCH_PROB, m.LABEL_SMOOTH_VALUE)
