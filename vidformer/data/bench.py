"""Data-loading benchmark: training-clip throughput per worker for each decoder, and multi-view test
loading time per video with one decode for all views versus one decode per view.

Runs on synthetic Kinetics-like videos it writes to a temporary folder (short side 256, 10 s at 30 fps,
libx264 with a keyframe every 250 frames like the standard Kinetics trimming), in one process with one
torch thread: the figures are "per DataLoader worker". Ratios compare numbers from the same run.
"""

import os
import statistics
import tempfile
import time
from functools import partial

import numpy as np
import torch

from vidformer.config import get_cfg
from vidformer.data.datasets import ClipDataset, _to_tchw, decode_views
from vidformer.data.decoders import available_backends, open_video
from vidformer.data.records import read_records
from vidformer.data.sampling import train_clip_indices, view_clip_indices
from vidformer.data.synthetic import make_synthetic_dataset
from vidformer.data.transforms import make_views

__all__ = ["run_data_benchmark", "format_table"]

# full: MViTv2-S K400 geometry (16x4 clips at 224, 5 x 3 test views); quick: small enough for CI
_SETTINGS = {
    False: dict(videos=8, frames=300, size=256, num_frames=16, sampling_rate=4, crop=224, jitter=[256, 320], clips=5, crops=3, repeats=3),
    True: dict(videos=4, frames=90, size=128, num_frames=8, sampling_rate=4, crop=112, jitter=[128, 160], clips=3, crops=3, repeats=2),
}


def _cfg(root: str, s: dict, backend: str):
    return get_cfg(
        overrides=[
            "DATA.PATH_TO_DATA_DIR", root, "MODEL.NUM_CLASSES", "4", "DATA.DECODING_BACKEND", backend,
            "DATA.NUM_FRAMES", str(s["num_frames"]), "DATA.SAMPLING_RATE", str(s["sampling_rate"]),
            "DATA.TRAIN_CROP_SIZE", str(s["crop"]), "DATA.TEST_CROP_SIZE", str(s["crop"]),
            "DATA.TRAIN_JITTER_SCALES", str(s["jitter"]),
            "TEST.NUM_ENSEMBLE_VIEWS", str(s["clips"]), "TEST.NUM_SPATIAL_CROPS", str(s["crops"]),
        ]
    )  # fmt: skip


def _alternating_medians(jobs: dict, repeats: int) -> dict:
    """{name: (fn, items)} -> {name: median seconds per item}. One warm-up pass each, then the jobs
    take turns pass by pass, so a change in machine load hits all of them alike."""
    passes = {name: [] for name in jobs}
    for round_ in range(repeats + 1):
        for name, (fn, items) in jobs.items():
            start = time.perf_counter()
            for item in items:
                fn(item)
            if round_:
                passes[name].append((time.perf_counter() - start) / len(items))
    return {name: statistics.median(times) for name, times in passes.items()}


def _decode_only(dataset: ClipDataset, backend: str):
    rng = np.random.default_rng(0)

    def run(index: int) -> None:
        with open_video(dataset.records[index].path, backend) as reader:
            reader.get_frames(train_clip_indices(reader.num_frames, reader.fps, dataset.cfg.DATA, rng))

    return run


def _one_decode_per_view(cfg, backend: str):
    """The naive multi-view loader: every view opens and decodes its own clip."""
    clips, crops = cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS

    def run(path: str) -> None:
        for k in range(clips * crops):
            with open_video(path, backend) as reader:
                indices = view_clip_indices(reader.num_frames, reader.fps, cfg.DATA, clips)[k // crops]
                frames = _to_tchw(reader.get_frames(indices))
            make_views(frames, [torch.arange(len(indices))], cfg, crops)[k % crops]

    return run


def run_data_benchmark(*, quick: bool = False, root: str | None = None, backends: tuple[str, ...] | None = None, log=print) -> dict:
    """Measure and return {"settings", "train": {backend: {...}}, "multiview": {...}, "ratios": {...}}."""
    s = _SETTINGS[quick]
    backends = tuple(b for b in (backends or ("pyav", "decord", "torchcodec")) if b in available_backends())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = root or tmp
            if not os.path.isfile(os.path.join(root, "train.csv")):
                log(f"writing {s['videos']} synthetic videos ({s['frames']} frames, {s['size']}x{s['size']}) to {root}")
                make_synthetic_dataset(root, num_classes=4, train_per_class=s["videos"] // 4, val_per_class=s["videos"] // 4,
                                       num_frames=s["frames"], size=s["size"], gop=250)  # fmt: skip
            result = {"settings": dict(s, backends=list(backends), torch_threads=1), "train": {}, "multiview": {}}
            jobs = {}
            for backend in backends:
                cfg = _cfg(root, s, backend)
                dataset = ClipDataset(cfg, read_records(cfg, "train"), train=True)
                items = list(range(len(dataset)))
                paths = [r.path for r in read_records(cfg, "val")]
                jobs[(backend, "train")] = (dataset.__getitem__, items)
                jobs[(backend, "decode")] = (_decode_only(dataset, backend), items)
                jobs[(backend, "one_decode")] = (partial(decode_views, cfg=cfg, num_clips=s["clips"], num_crops=s["crops"], backend=backend), paths)
                jobs[(backend, "per_view")] = (_one_decode_per_view(cfg, backend), paths)
            seconds = _alternating_medians(jobs, s["repeats"])
            for backend in backends:
                result["train"][backend] = {
                    "clips_per_s": 1 / seconds[(backend, "train")],
                    "decode_only_clips_per_s": 1 / seconds[(backend, "decode")],
                }
                result["multiview"][backend] = {"one_decode_s": seconds[(backend, "one_decode")], "decode_per_view_s": seconds[(backend, "per_view")]}
    finally:
        torch.set_num_threads(threads)
    ratios = {f"one_decode_speedup_{b}": mv["decode_per_view_s"] / mv["one_decode_s"] for b, mv in result["multiview"].items()}
    if "pyav" in result["train"] and "decord" in result["train"]:
        train = result["train"]
        ratios["decord_over_pyav_train"] = train["decord"]["clips_per_s"] / train["pyav"]["clips_per_s"]
        ratios["decord_over_pyav_decode"] = train["decord"]["decode_only_clips_per_s"] / train["pyav"]["decode_only_clips_per_s"]
    result["ratios"] = ratios
    return result


def format_table(result: dict) -> str:
    """The benchmark result as a plain-text table."""
    s = result["settings"]
    lines = [
        f"videos: {s['videos']} x {s['frames']} frames, {s['size']}x{s['size']}, H.264 GOP 250; one worker, one torch thread",
        f"train clip: {s['num_frames']}x{s['sampling_rate']} -> crop {s['crop']} (RandomResizedCrop, flip, normalise)",
        "",
        f"{'backend':<12}{'clips/s/worker':>16}{'decode only':>14}",
    ]
    for backend, row in result["train"].items():
        lines.append(f"{backend:<12}{row['clips_per_s']:>16.1f}{row['decode_only_clips_per_s']:>14.1f}")
    lines += ["", f"multi-view test, {s['clips']} x {s['crops']} views (seconds per video):", f"{'backend':<12}{'one decode':>12}{'decode per view':>18}"]
    for backend, row in result["multiview"].items():
        lines.append(f"{backend:<12}{row['one_decode_s']:>12.3f}{row['decode_per_view_s']:>18.3f}")
    lines += [
        "",
        "ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in result["ratios"].items()),
    ]
    return "\n".join(lines)
