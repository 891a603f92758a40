"""Clip transforms on uint8 frames (T, C, H, W) -> normalised float clips (C, T, H, W).

Training uses torchvision.transforms.v2 on a `tv_tensors.Video`, so every random parameter
(RandAugment ops, crop box, flip, erasing box) is drawn once and applied to all frames of the clip.
Test views follow PySlowFast's rule: 1 crop = short side -> DATA.TRAIN_JITTER_SCALES[0], centre
TEST_CROP_SIZE crop; 3 crops = short side -> TEST_CROP_SIZE, then left/centre/right (top/centre/bottom
for portrait video). Resizing is bilinear without antialiasing, as in PySlowFast, in both modes.
"""

import math
import re
from typing import Iterable

import torch
import torch.nn.functional as F
from fvcore.common.config import CfgNode
from torchvision import tv_tensors
from torchvision.transforms import v2

from vidformer.errors import ConfigError

__all__ = [
    "TrainTransform", "parse_randaugment", "short_side_resize", "uniform_crop", "make_views", "normalize",
    "resize_for_views", "cut_views", "view_short_side", "RandomShortSideScale",
]  # fmt: skip


def parse_randaugment(policy: str) -> dict:
    """timm-style "rand-m7-n4-mstd0.5-inc1" -> torchvision RandAugment(num_ops=4, magnitude=7, num_magnitude_bins=11).

    timm's magnitudes run 0..10, which is torchvision's bin index with 11 bins. torchvision's
    posterize/solarize already strengthen with magnitude (timm's "inc1" variants), and it has no
    magnitude noise, so "mstdX" is accepted and ignored.
    """
    parts = policy.split("-")
    if not parts or parts[0] != "rand":
        raise ConfigError(f"AUG.AA_TYPE '{policy}' is not a RandAugment policy; expected e.g. 'rand-m7-n4-mstd0.5-inc1'")
    params = {"num_ops": 2, "magnitude": 9, "num_magnitude_bins": 11}
    for part in parts[1:]:
        match = re.fullmatch(r"(m|n|mstd|inc|mmax)([\d.]+)", part)
        if not match:
            raise ConfigError(f"AUG.AA_TYPE '{policy}': cannot read '{part}' (known: m<int>, n<int>, mstd<float>, inc<0|1>)")
        key, value = match.groups()
        if key == "m":
            params["magnitude"] = int(float(value))
        elif key == "n":
            params["num_ops"] = int(value)
    if not 0 <= params["magnitude"] <= 10:
        raise ConfigError(f"AUG.AA_TYPE '{policy}': magnitude must be 0..10")
    return params


def normalize(clip: torch.Tensor, mean, std) -> torch.Tensor:
    """(T, C, H, W) float in [0, 1] -> (x - mean) / std per channel."""
    mean = torch.as_tensor(mean, dtype=clip.dtype).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=clip.dtype).view(1, -1, 1, 1)
    return (clip - mean) / std


# frames per pass of the training transform (see TrainTransform.__call__)
_TRAIN_CHUNK = 4


class RandomShortSideScale(v2.Transform):
    """Short side to a size drawn uniformly from [low, high], long side floor(long / short * size), as
    PySlowFast's short-side jitter. (v2.RandomShortestSize scales both sides by a float ratio and can
    land one pixel short, 223 for 224 on a 98-pixel side, so a crop of `low` no longer fits.)"""

    def __init__(self, low: int, high: int):
        super().__init__()
        self.low, self.high = low, high

    def make_params(self, flat_inputs: list) -> dict:
        return {"size": int(torch.randint(self.low, self.high + 1, ()))}

    def transform(self, inpt, params: dict):
        return self._call_kernel(v2.functional.resize, inpt, params["size"], antialias=False)


class TrainTransform:
    """RandAugment or colour jitter, scale augmentation (RandomResizedCrop, or short-side jitter and a
    random crop when DATA.TRAIN_JITTER_SCALES_RELATIVE is empty), flip, normalise, random erasing."""

    def __init__(self, cfg: CfgNode):
        data, aug = cfg.DATA, cfg.AUG
        steps = []
        if aug.ENABLE:
            steps.append(v2.RandAugment(**parse_randaugment(aug.AA_TYPE), interpolation=v2.InterpolationMode.BILINEAR))
        elif aug.COLOR_JITTER > 0:
            steps.append(v2.ColorJitter(aug.COLOR_JITTER, aug.COLOR_JITTER, aug.COLOR_JITTER))
        crop = data.TRAIN_CROP_SIZE
        if len(data.TRAIN_JITTER_SCALES_RELATIVE):
            steps.append(
                v2.RandomResizedCrop(
                    crop,
                    scale=tuple(data.TRAIN_JITTER_SCALES_RELATIVE),
                    ratio=tuple(data.TRAIN_JITTER_ASPECT_RELATIVE),
                    antialias=False,
                )
            )
        else:
            low, high = data.TRAIN_JITTER_SCALES
            if low < crop:
                raise ConfigError(f"DATA.TRAIN_JITTER_SCALES {list(data.TRAIN_JITTER_SCALES)} must not be below DATA.TRAIN_CROP_SIZE {crop}")
            steps += [RandomShortSideScale(low, high), v2.RandomCrop(crop)]
        if data.RANDOM_FLIP:
            steps.append(v2.RandomHorizontalFlip())
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(data.MEAN), list(data.STD))]
        if aug.RE_PROB > 0:
            # "pixel": per-pixel N(0, 1) noise in normalised space; the box and noise are shared over time
            steps.append(v2.RandomErasing(p=aug.RE_PROB, value="random" if aug.RE_MODE == "pixel" else 0))
        self.transform = v2.Compose(steps)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (T, C, H, W) -> float (C, T, crop, crop).

        The clip goes through in chunks of _TRAIN_CHUNK frames, each from the same state of torch's
        generator, so every chunk draws the same parameters as the whole clip would (every op here
        works frame by frame, and no draw depends on T): the result is the whole clip's, while the
        full-resolution intermediates of RandAugment exist for a few frames at a time."""
        state = torch.get_rng_state()
        chunks = []
        for start in range(0, len(frames), _TRAIN_CHUNK):
            torch.set_rng_state(state)
            chunks.append(self.transform(tv_tensors.Video(frames[start : start + _TRAIN_CHUNK])).as_subclass(torch.Tensor))
        return torch.cat(chunks).permute(1, 0, 2, 3).contiguous()


def short_side_resize(frames: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) float -> short side `size`, long side floor(long / short * size) (PySlowFast)."""
    height, width = frames.shape[-2:]
    if width <= height:
        new_h, new_w = int(math.floor(height / width * size)), size
    else:
        new_h, new_w = size, int(math.floor(width / height * size))
    if (new_h, new_w) == (height, width):
        return frames
    return F.interpolate(frames, size=(new_h, new_w), mode="bilinear", align_corners=False)


def uniform_crop(frames: torch.Tensor, size: int, spatial_idx: int) -> torch.Tensor:
    """Square crop of `size` at 0/1/2 = left/centre/right (landscape) or top/centre/bottom (portrait)."""
    height, width = frames.shape[-2:]
    if min(height, width) < size:
        raise ConfigError(f"crop {size} is larger than the resized frame {height}x{width}")
    y = int(math.ceil((height - size) / 2))
    x = int(math.ceil((width - size) / 2))
    if height > width:
        y = {0: 0, 1: y, 2: height - size}[spatial_idx]
    else:
        x = {0: 0, 1: x, 2: width - size}[spatial_idx]
    return frames[..., y : y + size, x : x + size]


def view_short_side(cfg: CfgNode, num_crops: int) -> int:
    """The short side test frames are resized to: TEST_CROP_SIZE for 3 crops, TRAIN_JITTER_SCALES[0] for 1."""
    return cfg.DATA.TEST_CROP_SIZE if num_crops > 1 else cfg.DATA.TRAIN_JITTER_SCALES[0]


def resize_for_views(frames: Iterable[torch.Tensor], count: int, cfg: CfgNode, num_crops: int) -> torch.Tensor:
    """`count` uint8 frames (C, H, W), one at a time, -> float (count, C, h, w): [0, 1], short side
    resized for the views, normalised. Only one frame is ever float at full resolution, so the
    memory is that of the resized frames; the arithmetic per frame is the batched one's."""
    scale = view_short_side(cfg, num_crops)
    resized = None
    for row, frame in enumerate(frames):
        small = normalize(short_side_resize(frame.unsqueeze(0).float() / 255.0, scale), cfg.DATA.MEAN, cfg.DATA.STD)
        if resized is None:
            resized = torch.empty((count, *small.shape[1:]))
        elif small.shape[1:] != resized.shape[1:]:
            raise ValueError(f"frame {row} is {tuple(frame.shape[1:])} after frames of another size; a video changing size mid-stream")
        resized[row] = small[0]
    if resized is None or row + 1 != count:
        raise ValueError(f"expected {count} frames, got {0 if resized is None else row + 1}")
    return resized


def cut_views(resized: torch.Tensor, clip_rows: list[torch.Tensor], cfg: CfgNode, num_crops: int) -> torch.Tensor:
    """Views from resize_for_views' frames: clip_rows[t] are the rows forming temporal clip t.
    Returns (len(clip_rows) * num_crops, C, T, S, S); view k is clip k // num_crops, crop
    k % num_crops (the centre crop when num_crops == 1)."""
    size = cfg.DATA.TEST_CROP_SIZE
    views = torch.empty((len(clip_rows) * num_crops, resized.shape[1], len(clip_rows[0]), size, size))
    for t, rows in enumerate(clip_rows):
        for crop_idx in range(num_crops):
            crop = uniform_crop(resized, size, crop_idx if num_crops > 1 else 1)  # a view of all frames
            views[t * num_crops + crop_idx] = crop[rows].permute(1, 0, 2, 3)  # copies only this clip's crop
    return views


def make_views(frames: torch.Tensor, clip_rows: list[torch.Tensor], cfg: CfgNode, num_crops: int) -> torch.Tensor:
    """All views of one video from uint8 frames (N, C, H, W), every frame any clip needs (see cut_views)."""
    return cut_views(resize_for_views(frames, len(frames), cfg, num_crops), clip_rows, cfg, num_crops)
