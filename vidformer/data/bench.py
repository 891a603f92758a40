"""Data-loading benchmarks.

Speed: training-clip throughput per worker for each decoder, and multi-view test loading time per
video with one decode for all views versus one decode per view. Runs on synthetic Kinetics-like videos
it writes to a temporary folder (short side 256, 10 s at 30 fps, libx264 with a keyframe every 250
frames like the standard Kinetics trimming), in one process with one torch thread: the figures are
"per DataLoader worker". Ratios compare numbers from the same run.

Memory: the peak RSS that loading one video adds to a fresh process (Linux), for the 10 x 3 test
views (16x4 clips at 224) and for one training sample (MViTv2-S's recipe, 2 augmented clips) of a
10 s 1280x720 H.264 file, next to the loader that turned every needed frame to float at full size.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial

import numpy as np
import torch

import vidformer
from vidformer.config import get_cfg
from vidformer.data.datasets import ClipDataset, _to_tchw, decode_views
from vidformer.data.decoders import available_backends, open_video
from vidformer.data.records import VideoRecord, read_records
from vidformer.data.sampling import train_clip_indices, view_clip_indices
from vidformer.data.synthetic import make_synthetic_dataset, write_video
from vidformer.data.transforms import make_views, normalize, short_side_resize, uniform_crop, view_short_side

__all__ = ["run_data_benchmark", "format_table", "run_memory_benchmark", "format_memory_table", "write_hd_video"]

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


# --- memory ----------------------------------------------------------------------------------------

MEMORY_GOAL_MB = 1024.0  # issue 15: the 10 x 3 views of a 10 s 720p video add at most 1.0 GB

_MEMORY_CFG = [
    "DATA.NUM_FRAMES", "16", "DATA.SAMPLING_RATE", "4", "DATA.TRAIN_CROP_SIZE", "224", "DATA.TEST_CROP_SIZE", "224",
    "DATA.TRAIN_JITTER_SCALES", "[256, 320]", "TEST.NUM_ENSEMBLE_VIEWS", "10", "TEST.NUM_SPATIAL_CROPS", "3",
    "AUG.ENABLE", "True", "AUG.NUM_SAMPLE", "2", "AUG.AA_TYPE", "rand-m7-n4-mstd0.5-inc1", "AUG.RE_PROB", "0.25",
]  # fmt: skip
_MEMORY_JOBS = ("views", "views_whole_batch", "train")


def write_hd_video(path: str, *, seconds: int = 10, height: int = 720, width: int = 1280, fps: int = 30) -> str:
    """A camera-like H.264 file: a textured scene panning with film grain, crf 23, a keyframe every
    250 frames (about 2-4 Mbit/s at 720p, like a YouTube upload); written frame by frame."""
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 256, (2 * height // 16 + 1, 2 * width // 16 + 1, 3), dtype=np.uint8)
    scene = np.kron(cells, np.ones((16, 16, 1), np.uint8))

    def frames():
        for t in range(seconds * fps):
            y, x = (3 * t) % height, (5 * t) % width
            grain = rng.integers(-6, 7, (height, width, 1), dtype=np.int16)
            yield np.clip(scene[y : y + height, x : x + width].astype(np.int16) + grain, 0, 255).astype(np.uint8)

    write_video(path, frames(), fps=fps, gop=250, crf=23)
    return path


def _views_whole_batch(path: str, cfg, backend: str) -> torch.Tensor:
    """The reference: the views as the loader made them before, every needed frame decoded at full
    size, then all of them float at once (the same views, bit for bit)."""
    crops = cfg.TEST.NUM_SPATIAL_CROPS
    with open_video(path, backend) as reader:
        clips = view_clip_indices(reader.num_frames, reader.fps, cfg.DATA, cfg.TEST.NUM_ENSEMBLE_VIEWS)
        needed = np.unique(np.concatenate(clips))
        frames = _to_tchw(reader.get_frames(needed))
    resized = short_side_resize(frames.float() / 255.0, view_short_side(cfg, crops))
    views = []
    for clip in clips:
        normalised = normalize(resized[torch.from_numpy(np.searchsorted(needed, clip))], cfg.DATA.MEAN, cfg.DATA.STD)
        views += [uniform_crop(normalised, cfg.DATA.TEST_CROP_SIZE, k).permute(1, 0, 2, 3) for k in range(crops)]
    return torch.stack(views)


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def memory_child(path: str, job: str, backend: str) -> dict:
    """In a fresh process: the peak RSS (MB) that `job` adds, and the size of what it returns."""
    torch.set_num_threads(1)
    cfg = get_cfg(overrides=[*_MEMORY_CFG, "DATA.DECODING_BACKEND", backend])
    run = {
        "views": lambda: decode_views(path, cfg, cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS, backend),
        "views_whole_batch": lambda: _views_whole_batch(path, cfg, backend),
        "train": lambda: ClipDataset(cfg, [VideoRecord(path, 0)], train=True)[0]["video"],
    }[job]
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM, the peak resident size, to the current one
    before = _rss_kb("VmRSS")
    out = run()
    added = (_rss_kb("VmHWM") - before) / 1024
    return {"added_peak_mb": added, "output_mb": out.numel() * out.element_size() / 2**20, "shape": list(out.shape)}


def _in_fresh_process(path: str, job: str, backend: str) -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(vidformer.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    code = "import json, sys; from vidformer.data.bench import memory_child; print(json.dumps(memory_child(*sys.argv[1:])))"
    done = subprocess.run([sys.executable, "-c", code, path, job, backend], env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"memory job {job} ({backend}) failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_memory_benchmark(*, seconds: int = 10, height: int = 720, width: int = 1280, backends=None, path: str | None = None, log=print) -> dict:
    """Added peak RSS per job and backend, each measured in its own fresh process (Linux only)."""
    backends = tuple(b for b in (backends or ("pyav", "decord", "torchcodec")) if b in available_backends())
    with tempfile.TemporaryDirectory() as tmp:
        if path is None:
            path = os.path.join(tmp, f"hd_{height}p.mp4")
            log(f"writing a {seconds} s {width}x{height} H.264 video to {path}")
            write_hd_video(path, seconds=seconds, height=height, width=width)
        with open_video(path, "pyav") as reader:
            video = {"frames": reader.num_frames, "fps": reader.fps, "megabits_per_s": os.path.getsize(path) * 8 / 1e6 / (reader.num_frames / reader.fps)}
        result = {"video": dict(video, height=height, width=width), "goal_mb": MEMORY_GOAL_MB, "jobs": {}}
        for backend in backends:
            result["jobs"][backend] = {job: _in_fresh_process(path, job, backend) for job in _MEMORY_JOBS}
    return result


def format_memory_table(result: dict) -> str:
    v = result["video"]
    lines = [
        f"video: {v['width']}x{v['height']}, {v['frames']} frames at {v['fps']:g} fps, {v['megabits_per_s']:.1f} Mbit/s H.264",
        "added peak RSS of one video in a fresh process (MB); views: 10 x 3 of 16x4 clips at 224; train: 2 clips, RandAugment",
        "",
        f"{'backend':<12}{'views':>10}{'views, whole batch':>20}{'train sample':>14}{'views output':>14}",
    ]
    for backend, jobs in result["jobs"].items():
        lines.append(
            f"{backend:<12}{jobs['views']['added_peak_mb']:>10.0f}{jobs['views_whole_batch']['added_peak_mb']:>20.0f}"
            f"{jobs['train']['added_peak_mb']:>14.0f}{jobs['views']['output_mb']:>14.0f}"
        )
    worst = max(jobs["views"]["added_peak_mb"] for jobs in result["jobs"].values())
    lines += ["", f"goal: views add at most {result['goal_mb']:.0f} MB: {'met' if worst <= result['goal_mb'] else 'NOT met'} (worst {worst:.0f} MB)"]
    return "\n".join(lines)
