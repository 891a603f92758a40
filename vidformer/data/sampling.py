"""Which frames a clip uses: dense clips at a random or an offset position (Kinetics) and TSN segment
sampling (SSv2), with the indices PySlowFast computes (slowfast/datasets/decoder.py, ssv2.py).

A dense clip covers NUM_FRAMES x SAMPLING_RATE frames of a video at TARGET_FPS, i.e.
NUM_FRAMES x SAMPLING_RATE x fps / TARGET_FPS frames of the file; its NUM_FRAMES indices are
linspace(start, start + length - 1) rounded down and clamped into the video.
"""

import math

import numpy as np

__all__ = ["clip_length", "dense_clip_indices", "clip_start", "segment_indices", "train_clip_indices", "view_clip_indices"]


def clip_length(num_frames: int, sampling_rate: int, fps: float, target_fps: float) -> float:
    """Length of a dense clip in frames of the file."""
    return num_frames * sampling_rate * fps / target_fps


def dense_clip_indices(start: float, length: float, num_frames: int, video_frames: int) -> np.ndarray:
    """NUM_FRAMES indices spread over [start, start + length - 1], clamped to the video."""
    indices = np.linspace(start, start + length - 1, num_frames)
    return np.clip(np.floor(indices), 0, video_frames - 1).astype(np.int64)


def clip_start(video_frames: int, length: float, clip_idx: int, num_clips: int) -> float:
    """Start of test clip `clip_idx` of `num_clips` by offset sampling (PySlowFast USE_OFFSET_SAMPLING,
    the MViTv2 protocol): the first clip starts at frame 0 and the last one ends at the video's end;
    a single clip is centred."""
    delta = max(video_frames - length, 0)
    if num_clips == 1:
        return math.floor(delta / 2)
    return clip_idx * math.floor(delta / (num_clips - 1))


def segment_indices(video_frames: int, num_frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """TSN sampling: split the video into NUM_FRAMES equal segments and take one frame of each,
    a random one when `rng` is given (training), the segment midpoint otherwise (SSv2 test)."""
    segment = (video_frames - 1) / num_frames
    bounds = [(int(np.round(segment * i)), int(np.round(segment * (i + 1)))) for i in range(num_frames)]
    if rng is None:
        return np.array([(lo + hi) // 2 for lo, hi in bounds], dtype=np.int64)
    return np.array([rng.integers(lo, hi + 1) for lo, hi in bounds], dtype=np.int64)


def train_clip_indices(video_frames: int, fps: float, cfg_data, rng: np.random.Generator) -> np.ndarray:
    """A training clip: TSN random-in-segment frames (SSv2) or a dense clip at a uniform random start."""
    if cfg_data.SEGMENT_SAMPLING:
        return segment_indices(video_frames, cfg_data.NUM_FRAMES, rng)
    length = clip_length(cfg_data.NUM_FRAMES, cfg_data.SAMPLING_RATE, fps, cfg_data.TARGET_FPS)
    start = rng.uniform(0, max(video_frames - length, 0))
    return dense_clip_indices(start, length, cfg_data.NUM_FRAMES, video_frames)


def view_clip_indices(video_frames: int, fps: float, cfg_data, num_clips: int) -> list[np.ndarray]:
    """Frame indices of every temporal test clip, in clip order (TSN midpoints repeat for SSv2)."""
    if cfg_data.SEGMENT_SAMPLING:
        return [segment_indices(video_frames, cfg_data.NUM_FRAMES)] * num_clips
    length = clip_length(cfg_data.NUM_FRAMES, cfg_data.SAMPLING_RATE, fps, cfg_data.TARGET_FPS)
    return [
        dense_clip_indices(clip_start(video_frames, length, k, num_clips), length, cfg_data.NUM_FRAMES, video_frames)
        for k in range(num_clips)
    ]
