"""Small labelled video datasets written as real H.264 .mp4 files, for tests and the quickstart.

A video shows a textured sprite moving over a textured background; the CLASS IS THE DIRECTION of
motion (class k moves at angle 2*pi*k/K, wrapping around the frame edges), and the sprite's start
position, colours and textures are random per video, so no single frame tells the classes apart.
Also writes "frame-number" videos, whose colour encodes the frame index, for sampler tests.
"""

import itertools
import json
import math
import os
from fractions import Fraction
from typing import Iterable, Sequence

import av
import numpy as np

__all__ = [
    "make_synthetic_dataset",
    "write_video",
    "write_frame_number_video",
    "frame_number_color",
    "read_frame_numbers",
]

# The frame-number code: R and G carry the low and high base-16 digit in steps of 16, which
# survives H.264 chroma subsampling, colour conversion and resizing of a uniform frame.
_NUMBER_STEP = 16
_NUMBER_BASE = 16


def make_synthetic_dataset(
    root: str,
    *,
    num_classes: int = 4,
    train_per_class: int = 8,
    val_per_class: int = 4,
    num_frames: int = 32,
    size: int = 64,
    fps: int = 30,
    seed: int = 0,
    layout: str = "kinetics",
    gop: int = 8,
) -> str:
    """Write a dataset under `root` and return `root`.

    layout "kinetics": videos/{train,val}/*.mp4, `train.csv`, `val.csv`, `test.csv` (= val) with lines
    `<path> <label>`, paths RELATIVE TO `root` (vidformer resolves relative list paths against
    DATA.PATH_TO_DATA_DIR when DATA.PATH_PREFIX is empty, so `DATA.PATH_TO_DATA_DIR root` is enough;
    `DATA.PATH_PREFIX root` works too), and `classes.txt` (one name per line, index = line number).
    layout "ssv2": the Something-Something-v2 files: `something-something-v2-labels.json`
    (template -> index string), `something-something-v2-train.json` / `-validation.json` (records with
    id, template, label, placeholders) and videos `<id>.webm` (VP9) beside them, plus `classes.txt`.
    layout "folder": `train/<class>/*.mp4` and `val/<class>/*.mp4` (folder per class; the class index is
    the position of the folder name in sorted order).
    Videos have a keyframe every `gop` frames. The same seed gives the same frames.
    """
    if layout not in ("kinetics", "ssv2", "folder"):
        raise ValueError(f"layout must be 'kinetics', 'ssv2' or 'folder', got {layout!r}")
    if size % 2:
        raise ValueError(f"size must be even (H.264 4:2:0 needs even sides), got {size}")
    os.makedirs(root, exist_ok=True)
    names = _class_names(num_classes)
    if layout != "folder":  # folder layouts are indexed by sorted folder name, which the folders say
        with open(os.path.join(root, "classes.txt"), "w") as f:
            f.write("".join(n + "\n" for n in names))
    splits = {"train": train_per_class, "val": val_per_class}
    records = {split: [] for split in splits}
    for split_id, (split, per_class) in enumerate(splits.items()):
        for label in range(num_classes):
            for i in range(per_class):
                rng = np.random.default_rng([seed, split_id, label, i])
                frames = _moving_sprite(rng, label, num_classes, num_frames, size)
                rel = _video_path(layout, split, names[label], label, i, split_id)
                codec = "libvpx-vp9" if layout == "ssv2" else "libx264"
                write_video(os.path.join(root, rel), frames, fps=fps, codec=codec, gop=gop)
                records[split].append((rel, label))
    if layout == "kinetics":
        for split, name in (("train", "train"), ("val", "val"), ("val", "test")):
            with open(os.path.join(root, f"{name}.csv"), "w") as f:
                f.write("".join(f"{rel} {label}\n" for rel, label in records[split]))
    elif layout == "ssv2":
        _write_ssv2_json(root, names, records)
    return root


def write_video(
    path: str,
    frames: Iterable[np.ndarray],
    *,
    fps: int = 30,
    codec: str = "libx264",
    gop: int = 8,
    crf: int = 18,
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    bframes: int | None = None,
    rotation: int = 0,
    audio: bool = False,
    threads: int = 1,
) -> None:
    """Encode uint8 RGB frames (T, H, W, 3), or any iterable of (H, W, 3) frames, to `path` with PyAV;
    keyframe every `gop` frames.

    The awkward files of the field, for tests: `pts` gives each frame's presentation timestamp in
    `time_base` units (variable rate, jitter, gaps, a late start; default i / fps); `bframes` sets
    libx264's B-frame count (crf 0 encodes none); `rotation` writes a display matrix (counter-clockwise
    degrees, as phones do); `audio` adds a silent AAC track beside the video. `threads` encoder threads
    (0: FFmpeg's choice); with one, the file's bytes depend on the frames only.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    frames = iter(frames)
    first = next(frames)
    height, width = first.shape[:2]
    time_base = time_base or Fraction(1, 90000)
    with av.open(path, "w") as container:
        options = {"crf": str(crf)} if codec == "libx264" else {"crf": str(crf), "b": "0", "deadline": "realtime"}
        if codec == "libx264":
            options["preset"] = "veryfast"
            if bframes is not None:
                options["x264-params"] = f"bframes={bframes}:b-adapt=0"
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height = width, height
        # 4:2:0 chroma needs even sides; an odd-sized test video is written 4:4:4
        stream.pix_fmt = "yuv420p" if height % 2 == width % 2 == 0 else "yuv444p"
        stream.codec_context.gop_size = gop
        stream.codec_context.thread_count = threads
        if pts is not None:
            stream.time_base = stream.codec_context.time_base = time_base
        if rotation:
            stream.set_display_rotation(rotation)
        sound = container.add_stream("aac", rate=16000, layout="mono") if audio else None
        count = 0
        for i, array in enumerate(itertools.chain([first], frames)):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array, dtype=np.uint8), format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = int(pts[i]), time_base
            container.mux(stream.encode(frame))
            count += 1
        container.mux(stream.encode())
        if sound is not None:
            samples = int(16000 * count / fps)
            for start in range(0, samples, 1024):
                chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 16000, start
                container.mux(sound.encode(chunk))
            container.mux(sound.encode())


def frame_number_color(index: int) -> tuple[int, int, int]:
    """The RGB colour that encodes frame `index` (0 <= index < 256) in a frame-number video."""
    if not 0 <= index < _NUMBER_BASE**2:
        raise ValueError(f"frame-number videos encode indices 0..{_NUMBER_BASE**2 - 1}, got {index}")
    low, high = index % _NUMBER_BASE, index // _NUMBER_BASE
    return (8 + _NUMBER_STEP * low, 8 + _NUMBER_STEP * high, 128)


def write_frame_number_video(
    path: str, num_frames: int, *, height: int = 48, width: int = 64, fps: int = 30, gop: int = 8, crf: int = 0, **options
) -> str:
    """Write a video whose frame i is filled with frame_number_color(i); returns `path`. `options`
    go to write_video (pts, time_base, bframes, rotation, audio, codec)."""
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for i in range(num_frames):
        frames[i] = frame_number_color(i)
    write_video(path, frames, fps=fps, gop=gop, crf=crf, **options)
    return path


def read_frame_numbers(clip, mean=None, std=None) -> list[int]:
    """Frame indices of a clip cut from a frame-number video.

    `clip` is uint8 (T, H, W, 3) frames, or a float (C, T, H, W) view; a float view is first
    un-normalised with `mean`/`std` (per channel, of [0, 1] pixels) when they are given.
    """
    array = np.asarray(clip.detach().cpu() if hasattr(clip, "detach") else clip)
    if array.dtype == np.uint8:
        rgb = array.reshape(array.shape[0], -1, 3).astype(np.float64).mean(axis=1)  # (T, 3)
    else:
        array = array.astype(np.float64)
        if mean is not None:
            array = array * np.asarray(std).reshape(-1, 1, 1, 1) + np.asarray(mean).reshape(-1, 1, 1, 1)
        rgb = array.reshape(array.shape[0], array.shape[1], -1).mean(axis=2).T * 255.0  # (T, C)
    low = np.rint((rgb[:, 0] - 8) / _NUMBER_STEP).astype(int)
    high = np.rint((rgb[:, 1] - 8) / _NUMBER_STEP).astype(int)
    return [int(h * _NUMBER_BASE + lo) for lo, h in zip(low, high)]


def _class_names(num_classes: int) -> list[str]:
    compass = {4: ["moving right", "moving down", "moving left", "moving up"]}
    if num_classes in compass:
        return compass[num_classes]
    return [f"moving at {round(360 * k / num_classes)} degrees" for k in range(num_classes)]


def _video_path(layout: str, split: str, name: str, label: int, i: int, split_id: int) -> str:
    if layout == "kinetics":
        return os.path.join("videos", split, f"class{label}_{i:03d}.mp4")
    if layout == "folder":
        return os.path.join(split, name.replace(" ", "_"), f"{i:03d}.mp4")
    return f"{_ssv2_id(split_id, label, i)}.webm"


def _ssv2_id(split_id: int, label: int, i: int) -> int:
    return 100000 * (split_id + 1) + 1000 * label + i


def _write_ssv2_json(root: str, names: list[str], records: dict) -> None:
    # SSv2 templates name objects as "[something]"; the label file omits the brackets.
    templates = [f"Pushing [something] {n}" for n in names]
    labels = {t.replace("[", "").replace("]", ""): str(k) for k, t in enumerate(templates)}
    with open(os.path.join(root, "something-something-v2-labels.json"), "w") as f:
        json.dump(labels, f, indent=1)
    for split, filename in (("train", "train"), ("val", "validation")):
        entries = [
            {
                "id": os.path.splitext(os.path.basename(rel))[0],
                "label": templates[label].replace("[something]", "a box"),
                "template": templates[label],
                "placeholders": ["a box"],
            }
            for rel, label in records[split]
        ]
        with open(os.path.join(root, f"something-something-v2-{filename}.json"), "w") as f:
            json.dump(entries, f, indent=1)


def _texture(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random RGB texture (size, size, 3) in [0, 1]: coarse noise upsampled by repetition."""
    coarse = rng.random((cells, cells, 3))
    reps = math.ceil(size / cells)
    return np.kron(coarse, np.ones((reps, reps, 1)))[:size, :size]


def _moving_sprite(rng: np.random.Generator, label: int, num_classes: int, num_frames: int, size: int) -> np.ndarray:
    """(T, size, size, 3) uint8 frames of a sprite moving in direction `label` over a static background."""
    background = 0.15 + 0.35 * _texture(rng, size, 8)
    radius = size // 6
    sprite_color = 0.55 + 0.45 * rng.random(3)
    sprite_texture = 0.7 + 0.3 * _texture(rng, size, 16)
    yy, xx = np.mgrid[:size, :size]
    # the sprite is drawn centred at the origin of a canvas and rolled to its position each frame
    dist = np.hypot(np.minimum(yy, size - yy), np.minimum(xx, size - xx))
    mask = (dist <= radius)[..., None]
    sprite = sprite_color * sprite_texture
    angle = 2 * math.pi * label / num_classes
    speed = size / num_frames * 1.5  # crosses the frame 1.5 times over the video
    start = rng.random(2) * size
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for t in range(num_frames):
        dy = int(round(start[0] + speed * t * math.sin(angle))) % size
        dx = int(round(start[1] + speed * t * math.cos(angle))) % size
        m = np.roll(mask, (dy, dx), axis=(0, 1))
        s = np.roll(sprite, (dy, dx), axis=(0, 1))
        frames[t] = np.rint(255 * np.where(m, s, background)).astype(np.uint8)
    return frames
