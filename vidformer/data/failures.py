"""Broken-video accounting for a run: which distinct videos decoded, which failed and why, and the stop
when too many fail (DATA.MAX_FAILED_FRACTION).

This module is the one owner of that count. DataLoader workers cannot share counters, so every
sample and batch carries the paths that failed (with their reasons) and the dataset indices that
decoded; the loader feeds them, in the main process, to one FailureTracker per split. The tracker
keeps *sets* of paths, so a broken file counts once however often it is drawn, retried or re-read
in later epochs, and the share is of distinct videos read. Each broken file is logged once.

Under several processes the share is global: at every batch (train/val) or test video the ranks
exchange the paths that are new to them, so every rank holds the same sets, reaches the same
verdict and stops at the same step (no rank is left waiting in a collective).
"""

import logging
import math
from typing import Iterable, Mapping

import torch
import torch.distributed as dist

from vidformer.errors import UsageError

__all__ = ["FailureTracker", "TooManyFailedVideos", "MAX_REPLACEMENTS"]

logger = logging.getLogger(__name__)

# A training sample gives up after this many broken videos in a row (the data folder is probably wrong).
MAX_REPLACEMENTS = 10
_SHOWN = 3  # failures named in the stop message


class TooManyFailedVideos(UsageError):
    """More distinct videos failed to decode than DATA.MAX_FAILED_FRACTION allows (or none decoded)."""


class FailureTracker:
    """Distinct decoded and failed videos of one split in this run, judged against `max_fraction`.

    The share is judged once at least 1 / max_fraction distinct videos were read, so one early
    failure is not fatal, or once all `num_videos` of the split were read (the share is then exact,
    as at `check(final=True)`, the end of a test split).
    """

    def __init__(self, max_fraction: float, split: str = "train", num_videos: int | None = None):
        self.max_fraction = max_fraction
        self.split = split
        self.min_read = math.ceil(1 / max_fraction) if max_fraction > 0 else 1
        if num_videos is not None:
            self.min_read = min(self.min_read, num_videos)
        self.decoded: set[str] = set()
        self.failed: dict[str, str] = {}  # path -> the first error message it gave (DecodeError names the path)
        self.gave_up = ""  # set when a sample met MAX_REPLACEMENTS broken videos in a row
        self._read: set[str] = set()  # decoded | failed, kept so that counting is not O(split) per batch
        self._new_decoded: list[str] = []
        self._new_failed: dict[str, str] = {}

    @property
    def read(self) -> int:
        """Distinct videos tried (a flaky file that both decoded and failed counts once)."""
        return len(self._read)

    def add(self, decoded: Iterable[str] = (), failed: Mapping[str, str] | None = None, gave_up: str = "") -> None:
        """Record one batch's (or test video's) outcome: paths that decoded, {path: error message} that failed."""
        self._new_decoded += [p for p in decoded if p not in self.decoded]
        self._new_failed.update({p: r for p, r in (failed or {}).items() if p not in self.failed})
        self.gave_up = self.gave_up or gave_up
        if not _distributed():
            self._merge([(self._new_decoded, self._new_failed, self.gave_up)])

    def sync(self) -> None:
        """Exchange the new paths with the other ranks (a collective: every rank calls it at the same step)."""
        if not _distributed():
            return
        # one small all_reduce says whether any rank has news; after the first epoch there rarely is any
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
        news = torch.tensor([len(self._new_decoded) + len(self._new_failed) + bool(self.gave_up)], device=device)
        dist.all_reduce(news)
        if news.item():
            parts = [None] * dist.get_world_size()
            dist.all_gather_object(parts, (self._new_decoded, self._new_failed, self.gave_up))
            self._merge(parts)

    def _merge(self, parts) -> None:
        for decoded, failed, gave_up in parts:
            self.decoded.update(decoded)
            self._read.update(decoded)
            self._read.update(failed)
            for path, reason in failed.items():
                if path not in self.failed:
                    self.failed[path] = reason
                    if not _distributed() or dist.get_rank() == 0:  # every rank knows it; one says it
                            logger.warning(f"{reason}; left out of the {self.split} split ({len(self.failed)} of "
                                       f"{self.read} distinct videos failed so far)")
            self.gave_up = self.gave_up or gave_up
        self._new_decoded, self._new_failed = [], {}

    def check(self, final: bool = False) -> None:
        """Sync (under several processes), then raise TooManyFailedVideos on every rank alike when the run
        should stop; `final` means the split was read to its end, so the exact share is judged."""
        self.sync()
        if self.gave_up:
            raise TooManyFailedVideos(
                f"{MAX_REPLACEMENTS} videos in a row failed to decode in the {self.split} split (last: {self.gave_up}); "
                "check DATA.PATH_TO_DATA_DIR / DATA.PATH_PREFIX and run tools/check_videos.py")
        failed, read = len(self.failed), self.read
        if not failed or not (final or read >= self.min_read):
            return
        if not self.decoded:
            raise TooManyFailedVideos(f"none of the {read} videos read from the {self.split} split decoded; first "
                                      f"failures: {self._first_failures()}. Check DATA.PATH_TO_DATA_DIR / DATA.PATH_PREFIX")
        share = failed / read
        if share > self.max_fraction:
            raise TooManyFailedVideos(
                f"{failed} of {read} videos failed to decode ({share:.1%} > DATA.MAX_FAILED_FRACTION "
                f"{self.max_fraction:.1%}) in the {self.split} split, each video counted once; first failures: "
                f"{self._first_failures()}. Run tools/check_videos.py to write a clean list.")

    def _first_failures(self) -> str:
        return "; ".join(list(self.failed.values())[:_SHOWN])


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
