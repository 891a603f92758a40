"""Map-style datasets over a split's videos: training / validation clips, and all test views per video.

Every random choice of a training sample (clip position, augmentation, replacement of a broken
video) is drawn from a seed made of (seed, epoch, index), so an epoch is reproducible whatever the
number of workers. A clip dataset replaces a video that fails to decode by a random other video and
reports {path: error} in the sample's "failed"; the test dataset returns it with failed=True. The
counting, logging and stopping is vidformer.data.failures' alone (in the main process).
A record's source is a video file or, for frame-folder datasets, its FrameFiles (vidformer.data.frames).
"""

import numpy as np
import torch
from fvcore.common.config import CfgNode
from torch.utils.data import Dataset

from vidformer.data.decoders import DecodeError
from vidformer.data.failures import MAX_REPLACEMENTS
from vidformer.data.frames import FrameFiles, open_source
from vidformer.data.records import VideoRecord
from vidformer.data.sampling import train_clip_indices, view_clip_indices
from vidformer.data.transforms import TrainTransform, views_from_frames
from vidformer.errors import ConfigError

__all__ = ["ClipDataset", "ViewDataset", "decode_views", "check_view_config"]


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


def decode_views(path: "str | FrameFiles", cfg: CfgNode, num_clips: int, num_crops: int, backend: str) -> torch.Tensor:
    """All num_clips x num_crops views of one video (a file or its FrameFiles) from ONE decode:
    (V, C, T, S, S), view k = clip k // num_crops, crop k % num_crops. Each needed frame is decoded
    once, resized as it is decoded and copied into the views that show it (views_from_frames), so
    memory holds the views, never the frames at full resolution. Raises DecodeError."""
    with open_source(path, backend) as reader:
        clips = view_clip_indices(reader.num_frames, reader.fps, cfg.DATA, num_clips)
        needed = np.unique(np.concatenate(clips))
        frames = ((index, torch.from_numpy(frame).permute(2, 0, 1)) for index, frame in reader.iter_frames(needed))
        return views_from_frames(frames, clips, cfg, num_crops)


class ClipDataset(Dataset):
    """One sample per video: "video" (n, C, T, S, S) with n = AUG.NUM_SAMPLE augmented clips of one
    decoded clip (train) or the single centre view (val), "label", "index" (of the record that
    decoded), "failed" ({path: error message} of the videos it replaced). After MAX_REPLACEMENTS broken
    videos in a row the sample gives up: "video" is None and the loader stops the run."""

    def __init__(self, cfg: CfgNode, records: list[VideoRecord], train: bool, seed: int = 0):
        self.cfg = cfg
        self.records = records
        self.train = train
        self.seed = seed
        # in shared memory, so persistent DataLoader workers (forked once) see the epoch set_epoch sets
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.backend = cfg.DATA.DECODING_BACKEND
        self.num_samples = cfg.AUG.NUM_SAMPLE if train else 1
        if train:
            self.transform = TrainTransform(cfg)
        else:
            check_view_config(cfg, 1)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    @epoch.setter
    def epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        seed = int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])
        rng = np.random.default_rng(seed)
        failed = {}
        current = index
        for _ in range(MAX_REPLACEMENTS):
            record = self.records[current]
            try:
                video = self._load(record.source, rng, seed) if self.train else decode_views(record.source, self.cfg, 1, 1, self.backend)
                return {"video": video, "label": record.label, "index": current, "failed": failed}
            except DecodeError as e:
                failed[record.path] = str(e)
                current = int(rng.integers(len(self.records)))
        return {"video": None, "label": -1, "index": -1, "failed": failed}

    def _load(self, path: "str | FrameFiles", rng: np.random.Generator, seed: int) -> torch.Tensor:
        with open_source(path, self.backend) as reader:
            indices = train_clip_indices(reader.num_frames, reader.fps, self.cfg.DATA, rng)
            frames = _to_tchw(reader.get_frames(indices))  # (T, C, H, W) uint8
        crop = self.transform.crop_size
        video = torch.empty((self.num_samples, frames.shape[1], len(frames), crop, crop))
        # torchvision's random transforms draw from torch's global CPU generator: seed it per sample
        # (torch.manual_seed would also queue a seed for every accelerator, formatting a stack trace
        # each time: 5 ms a sample)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            for clip in video:
                self.transform(frames, out=clip)
        return video


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
            item["views"] = decode_views(record.source, self.cfg, self.num_clips, self.num_crops, self.cfg.DATA.DECODING_BACKEND)
        except DecodeError as e:
            item.update(failed=True, error=str(e))
        return item
