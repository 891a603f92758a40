"""Map-style datasets over a split's videos: training / validation clips, and all test views per video.

Every random choice of a training sample (clip position, augmentation, replacement of a broken
video) is drawn from a seed made of (seed, epoch, index), so an epoch is reproducible whatever the
number of workers. A video that fails to decode is logged with its path; a clip dataset replaces
it by a random other video and reports the path in the sample's "skipped" list, the test dataset
returns it with failed=True. FailureTracker turns those reports into a clear stop when too many fail.
"""

import logging
import math

import numpy as np
import torch
from fvcore.common.config import CfgNode
from torch.utils.data import Dataset

from vidformer.data.decoders import DecodeError, open_video
from vidformer.data.records import VideoRecord
from vidformer.data.sampling import train_clip_indices, view_clip_indices
from vidformer.data.transforms import TrainTransform, cut_views, resize_for_views
from vidformer.errors import ConfigError, UsageError

__all__ = ["ClipDataset", "ViewDataset", "FailureTracker", "TooManyFailedVideos", "decode_views", "check_view_config"]

logger = logging.getLogger(__name__)

# A worker gives up after this many broken videos in a row (the data folder is probably wrong).
_MAX_CONSECUTIVE_FAILURES = 10


class TooManyFailedVideos(UsageError):
    """More videos failed to decode than DATA.MAX_FAILED_FRACTION allows."""


def _to_tchw(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2)  # (T, H, W, C) -> (T, C, H, W)


def check_view_config(cfg: CfgNode, num_crops: int) -> None:
    """The 1- and 3-crop rules need the resized short side to hold the crop."""
    if num_crops not in (1, 3):
        raise ConfigError(f"TEST.NUM_SPATIAL_CROPS is {num_crops}; expected 1 (centre crop) or 3 (left/centre/right)")
    if num_crops == 1 and cfg.DATA.TRAIN_JITTER_SCALES[0] < cfg.DATA.TEST_CROP_SIZE:
        raise ConfigError(
            f"a 1-crop view resizes the short side to DATA.TRAIN_JITTER_SCALES[0] = {cfg.DATA.TRAIN_JITTER_SCALES[0]}, "
            f"smaller than DATA.TEST_CROP_SIZE {cfg.DATA.TEST_CROP_SIZE}"
        )


def decode_views(path: str, cfg: CfgNode, num_clips: int, num_crops: int, backend: str) -> torch.Tensor:
    """All num_clips x num_crops views of one video from ONE decode: (V, C, T, S, S), view k = clip
    k // num_crops, crop k % num_crops. Each needed frame is resized as it is decoded, so memory
    holds the resized frames and the views, never all frames at full resolution. Raises DecodeError."""
    with open_video(path, backend) as reader:
        clips = view_clip_indices(reader.num_frames, reader.fps, cfg.DATA, num_clips)
        needed = np.unique(np.concatenate(clips))
        frames = (torch.from_numpy(frame).permute(2, 0, 1) for _, frame in reader.iter_frames(needed))  # ascending = needed
        resized = resize_for_views(frames, len(needed), cfg, num_crops)  # (N, C, h, w), each needed frame once
    rows = [torch.from_numpy(np.searchsorted(needed, clip)) for clip in clips]
    return cut_views(resized, rows, cfg, num_crops)


class ClipDataset(Dataset):
    """One sample per video: "video" (n, C, T, S, S) with n = AUG.NUM_SAMPLE augmented clips of one
    decoded clip (train) or the single centre view (val), "label", "index", "skipped"."""

    def __init__(self, cfg: CfgNode, records: list[VideoRecord], train: bool, seed: int = 0):
        self.cfg = cfg
        self.records = records
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.backend = cfg.DATA.DECODING_BACKEND
        self.num_samples = cfg.AUG.NUM_SAMPLE if train else 1
        if train:
            self.transform = TrainTransform(cfg)
        else:
            check_view_config(cfg, 1)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        seed = int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])
        rng = np.random.default_rng(seed)
        skipped = []
        current = index
        while True:
            record = self.records[current]
            try:
                video = self._load(record.path, rng, seed) if self.train else decode_views(record.path, self.cfg, 1, 1, self.backend)
                return {"video": video, "label": record.label, "index": current, "skipped": skipped}
            except DecodeError as e:
                logger.warning("skipping a video: %s", e)
                skipped.append(record.path)
                if len(skipped) >= _MAX_CONSECUTIVE_FAILURES:
                    raise TooManyFailedVideos(
                        f"{len(skipped)} videos in a row failed to decode (last: {e}); check DATA.PATH_TO_DATA_DIR / "
                        "DATA.PATH_PREFIX and run tools/check_videos.py"
                    ) from None
                current = int(rng.integers(len(self.records)))

    def _load(self, path: str, rng: np.random.Generator, seed: int) -> torch.Tensor:
        with open_video(path, self.backend) as reader:
            indices = train_clip_indices(reader.num_frames, reader.fps, self.cfg.DATA, rng)
            frames = _to_tchw(reader.get_frames(indices))  # (T, C, H, W) uint8
        # torchvision's random transforms draw from torch's global generator: seed it per sample
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return torch.stack([self.transform(frames) for _ in range(self.num_samples)])


class ViewDataset(Dataset):
    """One item per video: "views" (V, C, T, S, S) with V = TEST.NUM_ENSEMBLE_VIEWS x
    TEST.NUM_SPATIAL_CROPS (None when the video failed), "label", "index", "path", "failed", "error"."""

    def __init__(self, cfg: CfgNode, records: list[VideoRecord]):
        check_view_config(cfg, cfg.TEST.NUM_SPATIAL_CROPS)
        self.cfg = cfg
        self.records = records
        self.num_clips = cfg.TEST.NUM_ENSEMBLE_VIEWS
        self.num_crops = cfg.TEST.NUM_SPATIAL_CROPS

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        item = {"views": None, "label": record.label, "index": index, "path": record.path, "failed": False, "error": ""}
        try:
            item["views"] = decode_views(record.path, self.cfg, self.num_clips, self.num_crops, self.cfg.DATA.DECODING_BACKEND)
        except DecodeError as e:
            logger.warning("test video failed: %s", e)
            item.update(failed=True, error=str(e))
        return item


class FailureTracker:
    """Counts decoded and failed videos and stops the run (TooManyFailedVideos) once the failed share
    exceeds `max_fraction`, judged after at least 1 / max_fraction attempts so one early failure is not fatal."""

    def __init__(self, max_fraction: float):
        self.max_fraction = max_fraction
        self.min_attempts = math.ceil(1 / max_fraction) if max_fraction > 0 else 1
        self.decoded = 0
        self.failed: list[str] = []

    @property
    def attempted(self) -> int:
        return self.decoded + len(self.failed)

    def update(self, decoded: int, failed: list[str]) -> None:
        self.decoded += decoded
        self.failed.extend(failed)
        share = len(self.failed) / max(self.attempted, 1)
        if self.failed and self.attempted >= self.min_attempts and share > self.max_fraction:
            raise TooManyFailedVideos(
                f"{len(self.failed)} of {self.attempted} videos failed to decode ({share:.1%} > DATA.MAX_FAILED_FRACTION "
                f"{self.max_fraction:.1%}); first failures: {', '.join(self.failed[:3])}. "
                "Run tools/check_videos.py to write a clean list."
            )
