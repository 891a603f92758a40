"""Offline dataset upkeep behind tools/check_videos.py and tools/prepare_videos.py: find videos that do
not decode and write a clean list; re-encode videos to a short side of 256/320 with frequent keyframes.

Both work on a Kinetics-style list (`<path> <label>` lines) or on every video under a folder (the
checker also on the records of any DATA.DATASET layout, frame folders included), in parallel processes, and the re-encoder is resumable: each output is written to a temporary name and
renamed when complete, and finished outputs are skipped.
"""

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import av

from vidformer.data.decoders import DecodeError
from vidformer.data.frames import FrameFiles, open_source
from vidformer.data.records import VIDEO_EXTENSIONS, VideoRecord, split_list_line
from vidformer.errors import UsageError

__all__ = ["check_video", "check_list", "check_records", "prepare_video", "prepare_videos", "ListEntry", "read_list"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ListEntry:
    line: str  # the line as written, kept for the clean list
    rel: str  # the path as written
    path: str  # the path to open


def read_list(list_file: str, prefix: str = "", separator: str = "") -> list[ListEntry]:
    """A Kinetics-style list; relative paths are joined to `prefix` (default: the list's folder)."""
    if not os.path.isfile(list_file):
        raise UsageError(f"list file '{list_file}' does not exist")
    base = prefix or os.path.dirname(os.path.abspath(list_file))
    entries = []
    with open(list_file) as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                rel, _ = split_list_line(line, separator, f"{list_file}:{number}")
                entries.append(ListEntry(line.rstrip("\n"), rel, rel if os.path.isabs(rel) else os.path.join(base, rel)))
    return entries


def videos_under(folder: str) -> list[str]:
    """Every video file under `folder`, sorted, as paths relative to it."""
    found = []
    for parent, _, files in os.walk(folder):
        found += [os.path.relpath(os.path.join(parent, f), folder) for f in files if f.lower().endswith(VIDEO_EXTENSIONS)]
    return sorted(found)


def check_video(path: "str | FrameFiles", backend: str = "pyav", full: bool = False) -> str:
    """"" when the video (a file or a record's FrameFiles) decodes, else the reason. Reads the first,
    middle and last frame (every frame when `full`), which catches missing, empty, corrupt and truncated files."""
    try:
        with open_source(path, backend) as reader:
            n = reader.num_frames
            indices = list(range(n)) if full else sorted({0, n // 2, n - 1})
            reader.get_frames(indices)
    except DecodeError as e:
        return e.reason
    return ""


def _check_job(args: tuple) -> str:
    return check_video(*args)


def check_list(entries: list[ListEntry], *, backend: str = "pyav", full: bool = False, workers: int = 1) -> list[str]:
    """Reason per entry ("" when it decodes), checked in `workers` processes."""
    return _check_all([e.path for e in entries], backend, full, workers)


def check_records(records: list[VideoRecord], *, backend: str = "pyav", full: bool = False, workers: int = 1) -> list[str]:
    """Reason per dataset record (vidformer.data.read_records; "" when it decodes), in `workers` processes."""
    return _check_all([r.source for r in records], backend, full, workers)


def _check_all(sources: list, backend: str, full: bool, workers: int) -> list[str]:
    jobs = [(source, backend, full) for source in sources]
    if workers <= 1:
        return [_check_job(job) for job in jobs]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_check_job, jobs, chunksize=8))


def _target_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """Short side -> `short_side`, aspect kept, both sides even (4:2:0 needs it); never upscales."""
    scale = min(short_side / min(height, width), 1.0)
    return max(2, int(round(height * scale / 2)) * 2), max(2, int(round(width * scale / 2)) * 2)


def prepare_video(src: str, dst: str, *, short_side: int = 256, gop: int = 16, crf: int = 23) -> str:
    """Re-encode `src` to `dst` (H.264 .mp4, or VP9 for .webm) at `short_side` with a keyframe every
    `gop` frames, video only. Returns "done", "skipped" (dst exists) or "failed: <reason>"."""
    if os.path.exists(dst):
        return "skipped"
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    partial = f"{dst}.partial{os.path.splitext(dst)[1]}"
    codec = "libvpx-vp9" if dst.lower().endswith(".webm") else "libx264"
    try:
        with av.open(src) as source, av.open(partial, "w") as out:
            stream_in = source.streams.video[0]
            stream_in.thread_type = "AUTO"
            rate = stream_in.average_rate or stream_in.guessed_rate or 30
            options = {"crf": str(crf)} if codec == "libx264" else {"crf": str(crf), "b": "0", "deadline": "good", "cpu-used": "4"}
            stream = out.add_stream(codec, rate=rate, options=options)
            stream.height, stream.width = _target_size(stream_in.codec_context.height, stream_in.codec_context.width, short_side)
            stream.pix_fmt = "yuv420p"
            stream.codec_context.gop_size = gop
            for frame in source.decode(stream_in):
                frame = frame.reformat(width=stream.width, height=stream.height, format="yuv420p")
                frame.pts = None  # constant frame rate output: the encoder numbers the frames
                out.mux(stream.encode(frame))
            out.mux(stream.encode())
    except (av.error.FFmpegError, IndexError, OSError) as e:
        if os.path.exists(partial):
            os.remove(partial)
        return f"failed: {e}"
    os.replace(partial, dst)
    return "done"


def _prepare_job(args: tuple) -> str:
    src, dst, kwargs = args
    return prepare_video(src, dst, **kwargs)


def output_name(rel: str) -> str:
    """Output path for a source path: .webm stays .webm (SSv2 ids), everything else becomes .mp4."""
    stem, ext = os.path.splitext(rel)
    return rel if ext.lower() == ".webm" else stem + ".mp4"


def prepare_videos(pairs: list[tuple[str, str]], *, workers: int = 1, **kwargs) -> list[str]:
    """prepare_video over (src, dst) pairs in `workers` processes; statuses in order."""
    jobs = [(src, dst, kwargs) for src, dst in pairs]
    if workers <= 1:
        return [_prepare_job(job) for job in jobs]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_prepare_job, jobs))


def frame_stats(path: str) -> tuple[int, int, int, list[int]]:
    """(frames, height, width, keyframe indices) of a video, for reports and tests."""
    with av.open(path) as container:
        keys, count, shape = [], 0, (0, 0)
        for count, frame in enumerate(container.decode(video=0), start=1):
            shape = (frame.height, frame.width)
            if frame.key_frame:
                keys.append(count - 1)
    return count, shape[0], shape[1], keys
