"""Video data: decoders, datasets, clip sampling, transforms, mixup/cutmix and a synthetic dataset generator.

Entry points: build_loader (train/val batches), build_test_dataset / iter_test_videos (all test
views of each video from one decode), load_video_views (one file, for demos), load_label_names.
"""

from vidformer.data.decoders import DecodeError, available_backends, open_video
from vidformer.data.failures import FailureTracker, TooManyFailedVideos
from vidformer.data.loader import build_loader, build_test_dataset, iter_test_videos, load_video_views, set_epoch
from vidformer.data.mixup import MixupCutmix, build_mixup, smooth_one_hot
from vidformer.data.records import load_label_names, read_records
from vidformer.data.synthetic import make_synthetic_dataset

__all__ = [
    "DecodeError",
    "FailureTracker",
    "MixupCutmix",
    "TooManyFailedVideos",
    "available_backends",
    "build_loader",
    "build_mixup",
    "build_test_dataset",
    "iter_test_videos",
    "load_label_names",
    "load_video_views",
    "make_synthetic_dataset",
    "open_video",
    "read_records",
    "set_epoch",
    "smooth_one_hot",
]
