"""Data loaders for training/validation batches and the per-video multi-view test iterator.

TRAIN.BATCH_SIZE counts videos per node, as in PySlowFast: each of a node's `local_world_size`
processes loads TRAIN.BATCH_SIZE // local_world_size videos per iteration, and with AUG.NUM_SAMPLE = n
each video gives n augmented clips, so a batch holds n x that many clips. Samples are split over processes by a
DistributedSampler (also with one process, so `loader.set_epoch(epoch)` reshuffles reproducibly).

Broken videos: each loader owns a FailureTracker (vidformer.data.failures) that it feeds, in the
main process, from what every batch carries, and that stops the run with one line when too many
distinct videos fail. The decoder a video layout needs is checked when the loader is built.

DataLoader settings (measured with `python tools/bench_data.py --loader`, 2 workers on 256p Kinetics-like
files, a training step as long as a batch's loading): train workers are persistent, so a new epoch starts
without forking them again and importing the decoders in each (0.93x the epoch time and 0.94x the wait per
batch, alternating rounds on a shared machine); the epoch reaches them through shared memory (ClipDataset.epoch). Val workers are not: validation
runs every TRAIN.EVAL_PERIOD epochs, and its workers would sit idle in between. Workers ignore the
cluster's stop signals but not their parent's SIGTERM, which ends those still alive at interpreter exit
(_ignore_cluster_stop_signals). prefetch_factor stays 2: 4 did not wait less, and it holds twice
the batches in shared memory (a batch of 8 MViTv2-S samples is 150 MB). Pinned memory (DATA_LOADER.PIN_MEMORY)
only where CUDA is, where it lets the trainer's non_blocking copy overlap the step.
"""

import os
import signal
import threading

import torch
from fvcore.common.config import CfgNode
from torch.utils.data import DataLoader, DistributedSampler, Subset

from vidformer.data.datasets import ClipDataset, ViewDataset, check_view_config, decode_views
from vidformer.data.decoders import BACKENDS, available_backends
from vidformer.data.failures import FailureTracker
from vidformer.data.records import VideoRecord, read_records
from vidformer.errors import ConfigError, UsageError

__all__ = ["build_loader", "set_epoch", "build_test_dataset", "iter_test_videos", "load_video_views", "collate_clips", "check_backend"]


def collate_clips(items: list[dict]) -> dict:
    """Samples -> batch: "video" (B, C, T, H, W) with each sample's clips in a row, "label"/"index"
    (B,) repeated per clip, "failed" {path: error} of every video the samples replaced, and
    "gave_up" the last error of a sample that found no decodable video ("" when none; the batch
    then has no "video" and the loader stops)."""
    failed = {path: error for item in items for path, error in item["failed"].items()}
    gave_up = next((list(item["failed"].values())[-1] for item in items if item["video"] is None), "")
    if gave_up:
        return {"video": None, "label": None, "index": None, "failed": failed, "gave_up": gave_up}
    counts = [item["video"].shape[0] for item in items]
    return {
        "video": torch.cat([item["video"] for item in items]),
        "label": torch.tensor([item["label"] for item, n in zip(items, counts) for _ in range(n)], dtype=torch.long),
        "index": torch.tensor([item["index"] for item, n in zip(items, counts) for _ in range(n)], dtype=torch.long),
        "failed": failed,
        "gave_up": "",
    }


class VideoLoader(DataLoader):
    """A DataLoader that feeds `failures` (a FailureTracker) from every batch it yields and stops with
    TooManyFailedVideos, raised here in the main process, above DATA.MAX_FAILED_FRACTION. Under
    several processes every rank yields the same number of batches, so the tracker syncs at each."""

    def __init__(self, dataset: ClipDataset, *, max_failed_fraction: float, split: str, **kwargs):
        super().__init__(dataset, **kwargs)
        self.failures = FailureTracker(max_failed_fraction, split, len({record.path for record in dataset.records}))

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Reshuffle for `epoch` and re-seed every sample's randomness; call before iterating. The next
        iteration starts at batch `start_batch` of the epoch (a resumed run), without decoding those before."""
        self.sampler.set_epoch(epoch)
        self.sampler.start = start_batch * self.batch_size
        self.dataset.epoch = epoch

    def __iter__(self):
        records = self.dataset.records
        for batch in super().__iter__():
            decoded = () if batch["gave_up"] else {records[i].path for i in batch["index"].unique().tolist()}
            self.failures.add(decoded, batch["failed"], batch["gave_up"])
            self.failures.check()
            yield batch


class _ResumableSampler(DistributedSampler):
    """A DistributedSampler whose next epoch can start part-way: `start` indices of it are left out, once."""

    start = 0

    def __iter__(self):
        indices = list(super().__iter__())[self.start:]
        self.start = 0
        return iter(indices)


def _ignore_cluster_stop_signals(worker_id: int) -> None:
    """Data workers leave the cluster's SIGTERM/SIGUSR1 to the training process (Slurm signals every process
    of a step): it finishes its step, fetching the batches that takes, checkpoints and exits, and the
    workers end with it. A SIGTERM from the worker's own parent is obeyed: it is how the parent ends
    workers still alive when its interpreter exits (torch leaves that to multiprocessing, which terminates
    and then joins them), so a worker that ignored it hung the parent at exit."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the trainer's stop handler, inherited through fork
    if not hasattr(signal, "sigwaitinfo"):  # macOS: the sender cannot be told, so SIGTERM ends the worker
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])  # threads started later inherit the mask
    threading.Thread(target=_end_on_parents_sigterm, args=(os.getppid(),), name="sigterm-from-parent", daemon=True).start()


def _end_on_parents_sigterm(parent: int) -> None:
    while signal.sigwaitinfo([signal.SIGTERM]).si_pid != parent:
        pass  # the cluster's: the training process acts on it
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
    signal.raise_signal(signal.SIGTERM)  # the default action: the worker ends as multiprocessing expects


def set_epoch(loader: VideoLoader, epoch: int) -> None:
    """Same as loader.set_epoch(epoch)."""
    loader.set_epoch(epoch)


def per_process_batch(cfg: CfgNode, processes_per_node: int) -> int:
    """Videos per process and iteration: TRAIN.BATCH_SIZE is per node (PySlowFast), shared by the node's processes."""
    if cfg.TRAIN.BATCH_SIZE % processes_per_node:
        raise ConfigError(f"TRAIN.BATCH_SIZE {cfg.TRAIN.BATCH_SIZE} is the batch per node and must be divisible by "
                          f"the {processes_per_node} processes per node")
    return cfg.TRAIN.BATCH_SIZE // processes_per_node


def build_loader(cfg: CfgNode, split: str, *, rank: int = 0, world_size: int = 1, seed: int | None = None,
                 local_world_size: int | None = None) -> VideoLoader:
    """Loader of "train" batches (random clips, train transforms, shuffled, last partial batch dropped)
    or "val" batches (one centre view per video, in order; the DistributedSampler pads the last
    round with repeats when the split does not divide by world_size). `local_world_size` is the number
    of processes per node (default: all `world_size` on one node)."""
    if split not in ("train", "val"):
        raise UsageError(f"build_loader split must be 'train' or 'val', got '{split}' (use iter_test_videos for the test)")
    train = split == "train"
    seed = cfg.RNG_SEED if seed is None else seed
    records = read_records(cfg, split)
    check_backend(cfg, records)
    dataset = ClipDataset(cfg, records, train=train, seed=seed)
    processes_per_node = local_world_size or world_size
    batch_size = per_process_batch(cfg, processes_per_node)
    sampler = _ResumableSampler(dataset, num_replicas=world_size, rank=rank, shuffle=train, seed=seed, drop_last=train)
    if train and len(sampler) < batch_size:
        raise UsageError(
            f"the train split has {len(dataset)} videos, {len(sampler)} per process: fewer than the per-process batch "
            f"{batch_size} (TRAIN.BATCH_SIZE {cfg.TRAIN.BATCH_SIZE} / {processes_per_node} processes per node)"
        )
    return VideoLoader(
        dataset,
        max_failed_fraction=cfg.DATA.MAX_FAILED_FRACTION,
        split=split,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=cfg.DATA_LOADER.NUM_WORKERS,
        persistent_workers=train and cfg.DATA_LOADER.NUM_WORKERS > 0,
        prefetch_factor=2 if cfg.DATA_LOADER.NUM_WORKERS else None,
        pin_memory=cfg.DATA_LOADER.PIN_MEMORY and torch.cuda.is_available(),
        drop_last=train,
        collate_fn=collate_clips,
        worker_init_fn=_ignore_cluster_stop_signals,
    )


def check_backend(cfg: CfgNode, records: list[VideoRecord]) -> None:
    """Refuse, before any video is read, a DATA.DECODING_BACKEND that is not installed (frame folders need none)."""
    backend = cfg.DATA.DECODING_BACKEND
    if all(record.frames is not None for record in records):
        return
    if backend not in BACKENDS or backend not in available_backends():
        raise UsageError(f"DATA.DECODING_BACKEND '{backend}' is not installed (pip install {backend}); installed "
                         f"backends: {', '.join(available_backends())}")


def build_test_dataset(cfg: CfgNode, split: str = "val") -> ViewDataset:
    """The multi-view test dataset of `split`: item i is video i with all its views (see ViewDataset)."""
    records = read_records(cfg, split)
    check_backend(cfg, records)
    return ViewDataset(cfg, records)


def _single(item: dict) -> dict:
    return item


def iter_test_videos(cfg: CfgNode, split: str = "val", rank: int = 0, world_size: int = 1):
    """Yield the test items (ViewDataset dicts) of videos rank, rank + world_size, ... exactly once each
    (no padding), decoded by DATA_LOADER.NUM_WORKERS workers. Stops with TooManyFailedVideos when the
    failed share of distinct videos exceeds DATA.MAX_FAILED_FRACTION, judged exactly at the end (also
    when no video decoded at all). Consume it to the end on every rank: the ranks sync once per video
    of the longest share, so a rank with one video less syncs once more after its last."""
    dataset = build_test_dataset(cfg, split)  # here, so a bad list or backend is reported before any decoding
    return _test_items(dataset, cfg, split, rank, world_size)


def _test_items(dataset: ViewDataset, cfg: CfgNode, split: str, rank: int, world_size: int):
    mine = Subset(dataset, range(rank, len(dataset), world_size))
    loader = DataLoader(mine, batch_size=None, shuffle=False, num_workers=cfg.DATA_LOADER.NUM_WORKERS, collate_fn=_single)
    failures = FailureTracker(cfg.DATA.MAX_FAILED_FRACTION, split, len({record.path for record in dataset.records}))
    for item in loader:
        failures.add(() if item["failed"] else [item["path"]], {item["path"]: item["error"]} if item["failed"] else {})
        failures.check()
        yield item
    for _ in range(len(range(0, len(dataset), world_size)) - len(mine)):
        failures.check()
    failures.check(final=True)


def load_video_views(path: str, cfg: CfgNode, *, backend: str | None = None) -> torch.Tensor:
    """The test views (V, C, T, S, S) of one video file, as the test dataset makes them (for demos).
    Raises DecodeError when the file cannot be decoded."""
    check_view_config(cfg, cfg.TEST.NUM_SPATIAL_CROPS)
    return decode_views(path, cfg, cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS, backend or cfg.DATA.DECODING_BACKEND)
