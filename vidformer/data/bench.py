"""Data-loading benchmarks.

Speed: training-clip throughput per worker for each decoder (a whole training sample: decode and
the training transform, next to the decode alone), and the seconds per video for the 10 x 3 test
views with one decode for all views versus one decode per view. It writes its own videos into a
temporary folder, like Kinetics files: a camera-like scene (a pan over fine texture with sensor
grain), H.264 crf 23 with a keyframe every 250 frames (libx264's default, which the standard
Kinetics trimming keeps), 10 s at 30 fps with an AAC audio track, short side 256 (456x256) and also
1280x720 (the originals' size). Everything runs in one process with one torch thread: the figures
are "per DataLoader worker". Ratios compare numbers from the same run, measured in alternation.

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

import numpy as np
import torch

import vidformer
from vidformer.config import get_cfg
from vidformer.data.datasets import ClipDataset, _to_tchw, decode_views
from vidformer.data.decoders import available_backends, open_video
from vidformer.data.records import VideoRecord
from vidformer.data.sampling import train_clip_indices, view_clip_indices
from vidformer.data.synthetic import write_video
from vidformer.data.transforms import normalize, short_side_resize, uniform_crop, view_short_side

__all__ = ["run_data_benchmark", "format_table", "run_memory_benchmark", "format_memory_table", "write_camera_video"]

# The videos: per set, its size, length and count; `view_rounds` passes of the multi-view jobs on its
# first video, with the decode-per-view baseline where `per_view` (that is 30 decodes of 10 x 3 views,
# minutes at 720p). quick: small files for tests.
_VIDEO_SETS = {
    False: (
        dict(name="256p", width=456, height=256, seconds=10, count=3, view_rounds=2, per_view=True),
        dict(name="720p", width=1280, height=720, seconds=10, count=1, view_rounds=2, per_view=False),
    ),
    True: (dict(name="96p", width=128, height=96, seconds=2, count=2, view_rounds=2, per_view=True),),
}
# full: MViTv2-S K400 geometry (16x4 clips, RandomResizedCrop to 224, 10 x 3 test views)
_CLIPS = {
    False: dict(num_frames=16, sampling_rate=4, crop=224, jitter=[256, 320], clips=10, crops=3, repeats=3),
    True: dict(num_frames=8, sampling_rate=4, crop=64, jitter=[64, 80], clips=3, crops=3, repeats=2),
}
# the multi-view baseline (a decode per view) runs with this backend only: it is the slow side
_BASELINE_BACKEND = "pyav"


def write_camera_video(path: str, *, seconds: int = 10, height: int = 720, width: int = 1280, fps: int = 30, audio: bool = True) -> str:
    """A camera-like H.264 file: a pan over fine random texture with sensor grain (a new noise pattern
    every frame, cycled over 17), crf 23, a keyframe every 250 frames, an AAC track when `audio`:
    about 0.5 Mbit/s at 456x256 (Kinetics files run 0.3-1) and 3.7 Mbit/s at 720p, like a YouTube upload."""
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 256, (2 * height // 16 + 1, 2 * width // 16 + 1, 3), dtype=np.uint8)
    scene = np.kron(cells, np.ones((16, 16, 1), np.uint8))
    grain = rng.integers(0, 32, (17, height, width, 3), dtype=np.uint8)  # flips the low 5 bits

    def frames():
        for t in range(seconds * fps):
            y, x = (3 * t) % height, (5 * t) % width
            yield scene[y : y + height, x : x + width] ^ grain[t % 17]

    write_video(path, frames(), fps=fps, gop=250, crf=23, audio=audio, threads=0)
    return path


def _write_videos(root: str, sets: tuple, log) -> dict:
    """{set name: [paths]}, written into `root` unless there already."""
    paths = {}
    for video in sets:
        paths[video["name"]] = []
        for i in range(video["count"]):
            path = os.path.join(root, f"{video['name']}_{i}.mp4")
            if not os.path.isfile(path):
                log(f"writing {path} ({video['width']}x{video['height']}, {video['seconds']} s)")
                write_camera_video(path, seconds=video["seconds"], height=video["height"], width=video["width"])
            paths[video["name"]].append(path)
    return paths


def _cfg(s: dict, backend: str):
    return get_cfg(
        overrides=[
            "MODEL.NUM_CLASSES", "4", "DATA.DECODING_BACKEND", backend,
            "DATA.NUM_FRAMES", str(s["num_frames"]), "DATA.SAMPLING_RATE", str(s["sampling_rate"]),
            "DATA.TRAIN_CROP_SIZE", str(s["crop"]), "DATA.TEST_CROP_SIZE", str(s["crop"]),
            "DATA.TRAIN_JITTER_SCALES", str(s["jitter"]),
            "TEST.NUM_ENSEMBLE_VIEWS", str(s["clips"]), "TEST.NUM_SPATIAL_CROPS", str(s["crops"]),
        ]
    )  # fmt: skip


def _alternating_medians(jobs: dict, repeats: int) -> dict:
    """{name: (fn, items)} -> {name: median seconds per item}. A warm-up call of each job on its first
    item, then the jobs take turns pass by pass, so a change in machine load hits all of them alike."""
    for fn, items in jobs.values():
        fn(items[0])
    passes = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, (fn, items) in jobs.items():
            start = time.perf_counter()
            for item in items:
                fn(item)
            passes[name].append((time.perf_counter() - start) / len(items))
    return {name: statistics.median(times) for name, times in passes.items()}


class _TrainJobs:
    """A training sample (ClipDataset.__getitem__: decode + transform) and the decode alone of the
    same clips: sample i of a pass draws its clip from the same seed in both."""

    def __init__(self, cfg, paths: list[str]):
        self.dataset = ClipDataset(cfg, [VideoRecord(path, 0) for path in paths], train=True)

    def sample(self, index: int) -> None:
        self.dataset[index]

    def decode(self, index: int) -> None:
        dataset = self.dataset
        seed = int(np.random.SeedSequence([dataset.seed, dataset.epoch, index]).generate_state(1)[0])
        with open_video(dataset.records[index].path, dataset.backend) as reader:
            reader.get_frames(train_clip_indices(reader.num_frames, reader.fps, dataset.cfg.DATA, np.random.default_rng(seed)))


def _one_decode_per_view(cfg, backend: str):
    """The naive multi-view loader: every view opens the file, decodes its clip and cuts its crop."""
    clips, crops = cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS

    def run(path: str) -> None:
        for k in range(clips * crops):
            with open_video(path, backend) as reader:
                indices = view_clip_indices(reader.num_frames, reader.fps, cfg.DATA, clips)[k // crops]
                frames = _to_tchw(reader.get_frames(indices))
            crop = (k % crops) if crops > 1 else 1
            normalize(uniform_crop(short_side_resize(frames.float() / 255.0, view_short_side(cfg, crops)), cfg.DATA.TEST_CROP_SIZE, crop),
                      cfg.DATA.MEAN, cfg.DATA.STD).permute(1, 0, 2, 3)  # fmt: skip

    return run


def _megabits_per_s(path: str) -> float:
    with open_video(path, "pyav") as reader:
        return os.path.getsize(path) * 8 / 1e6 / (reader.num_frames / reader.fps)


def run_data_benchmark(*, quick: bool = False, root: str | None = None, backends: tuple[str, ...] | None = None, log=print) -> dict:
    """Measure and return {"settings", "train": {row: {...}}, "multiview": {row: {...}}, "ratios": {...}},
    a row per backend and video set ("pyav 256p"). `root` keeps the written videos for later runs."""
    s, sets = _CLIPS[quick], _VIDEO_SETS[quick]
    backends = tuple(b for b in (backends or ("pyav", "decord", "torchcodec")) if b in available_backends())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = root or tmp
            os.makedirs(root, exist_ok=True)
            paths = _write_videos(root, sets, log)
            videos = [dict(video, megabits_per_s=_megabits_per_s(paths[video["name"]][0])) for video in sets]
            result = {"settings": dict(s, videos=videos, backends=list(backends), torch_threads=1), "train": {}, "multiview": {}}
            for video in sets:
                train_jobs, view_jobs = {}, {}
                items = paths[video["name"]]
                for backend in backends:
                    row = f"{backend} {video['name']}"
                    cfg = _cfg(s, backend)
                    jobs = _TrainJobs(cfg, items)
                    train_jobs[(row, "sample")] = (jobs.sample, list(range(len(items))))
                    train_jobs[(row, "decode")] = (jobs.decode, list(range(len(items))))
                    view_jobs[(row, "one_decode")] = (lambda path, cfg=cfg, b=backend: decode_views(path, cfg, s["clips"], s["crops"], b), items[:1])
                    if backend == _BASELINE_BACKEND and video["per_view"]:
                        view_jobs[(row, "per_view")] = (_one_decode_per_view(cfg, backend), items[:1])
                log(f"{video['name']}: training clips")
                seconds = _alternating_medians(train_jobs, s["repeats"])
                log(f"{video['name']}: {s['clips']} x {s['crops']} test views")
                seconds.update(_alternating_medians(view_jobs, video["view_rounds"]))
                for backend in backends:
                    row = f"{backend} {video['name']}"
                    sample, decode = seconds[(row, "sample")], seconds[(row, "decode")]
                    result["train"][row] = {"clips_per_s": 1 / sample, "decode_only_clips_per_s": 1 / decode, "fraction_of_decode": decode / sample}
                    views = {"one_decode_s": seconds[(row, "one_decode")]}
                    if (row, "per_view") in seconds:
                        views.update(decode_per_view_s=seconds[(row, "per_view")], speedup=seconds[(row, "per_view")] / views["one_decode_s"])
                    result["multiview"][row] = views
    finally:
        torch.set_num_threads(threads)
    ratios = {f"train_over_decode_{row}": r["fraction_of_decode"] for row, r in result["train"].items()}
    ratios.update({f"one_decode_speedup_{row}": r["speedup"] for row, r in result["multiview"].items() if "speedup" in r})
    for video in sets:
        pyav, decord = (result["train"].get(f"{b} {video['name']}") for b in ("pyav", "decord"))
        if pyav and decord:
            ratios[f"decord_over_pyav_train_{video['name']}"] = decord["clips_per_s"] / pyav["clips_per_s"]
    result["ratios"] = ratios
    return result


def format_table(result: dict) -> str:
    """The benchmark result as a plain-text table."""
    s = result["settings"]
    lines = [
        "videos: " + "; ".join(f"{v['count']} x {v['width']}x{v['height']} ({v['name']}), {v['seconds']} s at 30 fps, "
                               f"{v['megabits_per_s']:.1f} Mbit/s H.264 GOP 250 + AAC" for v in s["videos"]),  # fmt: skip
        "one worker, one torch thread; medians of alternating passes",
        f"train clip: {s['num_frames']}x{s['sampling_rate']} -> crop {s['crop']} (RandomResizedCrop, flip, normalise)",
        "",
        f"{'backend':<16}{'clips/s/worker':>16}{'decode only':>14}{'train/decode':>14}",
    ]
    for row, r in result["train"].items():
        lines.append(f"{row:<16}{r['clips_per_s']:>16.2f}{r['decode_only_clips_per_s']:>14.2f}{r['fraction_of_decode']:>13.0%}")
    lines += ["", f"multi-view test, {s['clips']} x {s['crops']} views (seconds per video):",
              f"{'backend':<16}{'one decode':>12}{'decode per view':>18}{'speedup':>10}"]  # fmt: skip
    for row, r in result["multiview"].items():
        per_view = f"{r['decode_per_view_s']:>18.2f}{r['speedup']:>9.1f}x" if "speedup" in r else f"{'-':>18}{'-':>10}"
        lines.append(f"{row:<16}{r['one_decode_s']:>12.2f}{per_view}")
    lines += ["", "ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in result["ratios"].items())]
    return "\n".join(lines)


# --- memory ----------------------------------------------------------------------------------------

MEMORY_GOAL_MB = 1024.0  # issue 15: the 10 x 3 views of a 10 s 720p video add at most 1.0 GB

_MEMORY_CFG = [
    "DATA.NUM_FRAMES", "16", "DATA.SAMPLING_RATE", "4", "DATA.TRAIN_CROP_SIZE", "224", "DATA.TEST_CROP_SIZE", "224",
    "DATA.TRAIN_JITTER_SCALES", "[256, 320]", "TEST.NUM_ENSEMBLE_VIEWS", "10", "TEST.NUM_SPATIAL_CROPS", "3",
    "AUG.ENABLE", "True", "AUG.NUM_SAMPLE", "2", "AUG.AA_TYPE", "rand-m7-n4-mstd0.5-inc1", "AUG.RE_PROB", "0.25",
]  # fmt: skip
_MEMORY_JOBS = ("views", "views_whole_batch", "train")


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
            write_camera_video(path, seconds=seconds, height=height, width=width)
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


# --- DataLoader settings ---------------------------------------------------------------------------


def _loader_epochs(cfg, epochs: int, step_s: float, **settings) -> dict:
    """Seconds to the first batch and per batch after it, per epoch, of a train loader built by
    build_loader with its DataLoader settings replaced by `settings`; each batch is followed by a
    `step_s` pause (the training step the workers run ahead of)."""
    from vidformer.data.loader import build_loader

    base = build_loader(cfg, "train")
    loader = type(base)(base.dataset, max_failed_fraction=1.0, split="train", batch_size=base.batch_size, sampler=base.sampler,
                        num_workers=base.num_workers, drop_last=True, collate_fn=base.collate_fn,
                        worker_init_fn=base.worker_init_fn, **settings)  # fmt: skip
    first, per_batch = [], []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        start = time.perf_counter()
        for i, _ in enumerate(loader):
            if i == 0:
                first.append(time.perf_counter() - start)
                start = time.perf_counter()
            time.sleep(step_s)
        per_batch.append((time.perf_counter() - start) / i - step_s)
    return {"first_batch_s": first, "wait_per_batch_s": per_batch}


def run_loader_benchmark(*, root: str | None = None, workers: int = 2, epochs: int = 3, log=print) -> dict:
    """DataLoader settings on Kinetics-like 256p videos: persistent workers (epoch start), prefetch
    factor (the wait per batch behind a training step as long as a batch's loading), pinned memory
    (only with CUDA: the copy of a batch to the GPU)."""
    s, video = _CLIPS[False], _VIDEO_SETS[False][0]
    with tempfile.TemporaryDirectory() as tmp:
        root = root or tmp
        os.makedirs(root, exist_ok=True)
        paths = _write_videos(root, (video,), log)[video["name"]]
        with open(os.path.join(root, "train.csv"), "w") as f:
            f.write("".join(f"{path} {k % 2}\n" for k in range(4) for path in paths))
        cfg = _cfg(s, "pyav")
        cfg.defrost()
        cfg.DATA.PATH_TO_DATA_DIR, cfg.TRAIN.BATCH_SIZE, cfg.DATA_LOADER.NUM_WORKERS = root, workers, workers
        sample = _TrainJobs(cfg, paths)
        sample.sample(0)
        start = time.perf_counter()
        sample.sample(1)
        step_s = time.perf_counter() - start  # the workers load a batch (one video each) in about one sample's time
        result = {"workers": workers, "batch": workers, "step_s": step_s, "runs": {}}
        runs = {
            "not persistent, prefetch 2": dict(persistent_workers=False, prefetch_factor=2),
            "default (persistent, prefetch 2)": dict(persistent_workers=True, prefetch_factor=2),
            "persistent, prefetch 4": dict(persistent_workers=True, prefetch_factor=4),
        }
        for name, settings in runs.items():
            log(f"loader: {name}")
            result["runs"][name] = _loader_epochs(cfg, epochs, step_s, **settings)
    return result


def format_loader_table(result: dict) -> str:
    lines = [f"train loader, {result['workers']} workers, batch {result['batch']}, a {result['step_s']:.2f} s step after each batch",
             f"{'settings':<40}{'first batch, epoch 1 / later (s)':>34}{'wait per batch (s)':>20}"]  # fmt: skip
    for name, run in result["runs"].items():
        first = run["first_batch_s"]
        lines.append(f"{name:<40}{first[0]:>20.2f} / {statistics.median(first[1:]):<11.2f}{statistics.median(run['wait_per_batch_s']):>20.3f}")
    return "\n".join(lines)
