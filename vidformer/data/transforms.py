"""Clip transforms on uint8 frames (T, C, H, W) -> normalised float clips (C, T, H, W).

Training uses torchvision.transforms.v2 on a `tv_tensors.Video`, so every random parameter
(RandAugment ops, crop box, flip, erasing box) is drawn once and applied to all frames of the clip.
Test views follow PySlowFast's rule: 1 crop = short side -> DATA.TRAIN_JITTER_SCALES[0], centre
TEST_CROP_SIZE crop; 3 crops = short side -> TEST_CROP_SIZE, then left/centre/right (top/centre/bottom
for portrait video). Resizing is bilinear without antialiasing, as in PySlowFast, in both modes.
"""

import math
import re
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from fvcore.common.config import CfgNode
from torchvision import tv_tensors
from torchvision.transforms import v2

from vidformer.errors import ConfigError

__all__ = [
    "TrainTransform", "parse_randaugment", "short_side_resize", "uniform_crop", "make_views", "normalize",
    "views_from_frames", "view_short_side", "RandomShortSideScale",
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
    random crop when DATA.TRAIN_JITTER_SCALES_RELATIVE is empty), flip, normalise, random erasing.

    `transform` is the whole pipeline as torchvision composes it (the definition); __call__ computes
    the same clip, bit for bit and from the same random draws, in a cheaper order of work: every step
    up to the flip runs on uint8 (the crop is cut and resized before anything turns float), the
    result is converted and normalised in place in the (C, T, crop, crop) output, and random erasing
    writes into that output."""

    def __init__(self, cfg: CfgNode):
        data, aug = cfg.DATA, cfg.AUG
        colour = []  # the steps that see the full-resolution frames
        if aug.ENABLE:
            colour.append(v2.RandAugment(**parse_randaugment(aug.AA_TYPE), interpolation=v2.InterpolationMode.BILINEAR))
        elif aug.COLOR_JITTER > 0:
            colour.append(v2.ColorJitter(aug.COLOR_JITTER, aug.COLOR_JITTER, aug.COLOR_JITTER))
        self.crop_size = crop = data.TRAIN_CROP_SIZE
        if len(data.TRAIN_JITTER_SCALES_RELATIVE):
            geometry = [
                v2.RandomResizedCrop(
                    crop,
                    scale=tuple(data.TRAIN_JITTER_SCALES_RELATIVE),
                    ratio=tuple(data.TRAIN_JITTER_ASPECT_RELATIVE),
                    antialias=False,
                )
            ]
        else:
            low, high = data.TRAIN_JITTER_SCALES
            if low < crop:
                raise ConfigError(f"DATA.TRAIN_JITTER_SCALES {list(data.TRAIN_JITTER_SCALES)} must not be below DATA.TRAIN_CROP_SIZE {crop}")
            geometry = [RandomShortSideScale(low, high), v2.RandomCrop(crop)]
        if data.RANDOM_FLIP:
            geometry.append(v2.RandomHorizontalFlip())
        self._uint8_steps = v2.Compose(colour + geometry)
        # RandAugment's full-resolution intermediates are kept to a few frames at a time (see __call__)
        self._chunk = _TRAIN_CHUNK if colour else None
        self._mean = torch.tensor(data.MEAN, dtype=torch.float32).view(-1, 1, 1, 1)  # broadcast over (C, T, H, W)
        self._std = torch.tensor(data.STD, dtype=torch.float32).view(-1, 1, 1, 1)
        # "pixel": per-pixel N(0, 1) noise in normalised space; the box and noise are shared over time
        erasing = [v2.RandomErasing(p=aug.RE_PROB, value="random" if aug.RE_MODE == "pixel" else 0, inplace=True)] if aug.RE_PROB > 0 else []
        self._erasing = erasing[0] if erasing else None
        self.transform = v2.Compose(colour + geometry + [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(data.MEAN), list(data.STD))] + erasing)

    def __call__(self, frames: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 (T, C, H, W) -> float (C, T, crop, crop), written into `out` when given.

        With RandAugment or colour jitter, the clip goes through in chunks of _TRAIN_CHUNK frames, each
        from the same state of torch's generator, so every chunk draws the same parameters as the whole
        clip would (every op here works frame by frame, and no draw depends on T): the result is the
        whole clip's, while the full-resolution intermediates exist for a few frames at a time."""
        num_frames = len(frames)
        if out is None:
            out = torch.empty((frames.shape[1], num_frames, self.crop_size, self.crop_size))
        chunk = self._chunk or num_frames
        state = torch.get_rng_state()
        for start in range(0, num_frames, chunk):
            torch.set_rng_state(state)
            cropped = self._uint8_steps(tv_tensors.Video(frames[start : start + chunk])).as_subclass(torch.Tensor)
            out[:, start : start + chunk].copy_(cropped.transpose(0, 1))  # uint8 (t, C, S, S) -> float (C, t, S, S)
        # v2.ToDtype(scale=True) and v2.Normalize, op for op, in place
        out.mul_(1.0 / 255).sub_(self._mean).div_(self._std)
        if self._erasing is not None:
            self._erasing(tv_tensors.Video(out.transpose(0, 1)))  # erases the (T, C, S, S) view of `out`
        return out


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


def views_from_frames(frames: Iterable[tuple[int, torch.Tensor]], clips: Sequence[Sequence[int]], cfg: CfgNode, num_crops: int) -> torch.Tensor:
    """All views of one video: (len(clips) * num_crops, C, T, S, S), view k = temporal clip k // num_crops,
    crop k % num_crops (the centre crop when num_crops == 1); clips[t] are the frame numbers of clip t.

    `frames` yields (frame number, uint8 (C, H, W)) for every frame number the clips use, once each, in
    any order. Each frame is made float in [0, 1], its short side resized for the views, normalised,
    and copied into every view that shows it as soon as it comes: memory holds one frame at full
    resolution and the views, and no frame is resized twice however many views share it."""
    size, scale = cfg.DATA.TEST_CROP_SIZE, view_short_side(cfg, num_crops)
    mean = torch.as_tensor(cfg.DATA.MEAN, dtype=torch.float32).view(-1, 1, 1)
    std = torch.as_tensor(cfg.DATA.STD, dtype=torch.float32).view(-1, 1, 1)
    slots: dict[int, list[tuple[int, int]]] = {}  # frame number -> (view, position in the clip) of each use
    for t, clip in enumerate(clips):
        for crop_idx in range(num_crops):
            for position, index in enumerate(clip):
                slots.setdefault(int(index), []).append((t * num_crops + crop_idx, position))
    views = scratch = None
    for index, frame in frames:
        if scratch is None:
            # the one full-resolution float frame, channels last like the decoded (H, W, C) frames: the
            # copy is then straight and the resize 1.6x faster, with the same values
            scratch = torch.empty((1, *frame.shape), memory_format=torch.channels_last)
            views = torch.empty((len(clips) * num_crops, frame.shape[0], len(clips[0]), size, size))
        elif frame.shape != scratch.shape[1:]:
            raise ValueError(f"frame {index} is {tuple(frame.shape[1:])} after frames of {tuple(scratch.shape[2:])}; a video changing size mid-stream")
        scratch[0].copy_(frame)
        resized = short_side_resize(scratch.div_(255.0), scale)[0].sub_(mean).div_(std)  # normalize(), in place
        crops = [uniform_crop(resized, size, crop_idx if num_crops > 1 else 1) for crop_idx in range(num_crops)]
        for view, position in slots.pop(int(index), ()):
            views[view, :, position] = crops[view % num_crops]
    if slots:
        raise ValueError(f"frames {sorted(slots)[:8]} that the views use did not come")
    return views


def make_views(frames: torch.Tensor, clip_rows: list[torch.Tensor], cfg: CfgNode, num_crops: int) -> torch.Tensor:
    """All views of one video from uint8 frames (N, C, H, W); clip_rows[t] are the rows forming temporal
    clip t (see views_from_frames)."""
    return views_from_frames(enumerate(frames), [rows.tolist() for rows in clip_rows], cfg, num_crops)
