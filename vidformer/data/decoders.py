"""Video decoders behind one interface: open a file, read its length and frame rate, fetch frames by index.

Backends: "pyav" (default, always installed; decodes H.264/VP9/AV1), "decord" (random access via
get_batch; its bundled FFmpeg 4.1 cannot open AV1) and "torchcodec" (when importable). Each reader
uses one decode thread, because the DataLoader workers already provide the parallelism. Every
failure to open or decode a file is a DecodeError naming the file.
"""

import importlib.util
import os
from typing import Sequence

import numpy as np

from vidformer.errors import UsageError

__all__ = ["DecodeError", "VideoReader", "open_video", "available_backends", "BACKENDS"]

BACKENDS = ("pyav", "decord", "torchcodec")
_MODULES = {"pyav": "av", "decord": "decord", "torchcodec": "torchcodec"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# A container may announce a few more frames than it delivers (edit lists, a dropped last frame);
# requests past the end are served by the last frame when at least this share was decodable.
_MIN_DECODABLE_SHARE = 0.9


class DecodeError(RuntimeError):
    """A video (or image) that is missing, empty, truncated or cannot be decoded; the message has its path."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot decode '{path}': {reason}")
        self.path = path
        self.reason = reason


class VideoReader:
    """One opened file. `num_frames` and `fps` are known after opening; `get_frames` returns
    uint8 RGB frames (N, H, W, 3) for the requested indices (any order, repeats allowed)."""

    path: str
    num_frames: int
    fps: float

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def available_backends() -> list[str]:
    """Backends whose package can be imported here."""
    return [name for name in BACKENDS if importlib.util.find_spec(_MODULES[name]) is not None]


def open_video(path: str, backend: str = "pyav") -> VideoReader:
    """Open `path` with `backend`; an image file opens as a one-frame video whatever the backend."""
    if backend not in BACKENDS:
        raise UsageError(f"DATA.DECODING_BACKEND '{backend}' is unknown; installed backends: {', '.join(available_backends())}")
    if backend not in available_backends():
        raise UsageError(
            f"DATA.DECODING_BACKEND '{backend}' needs the '{_MODULES[backend]}' package, which is not installed; "
            f"installed backends: {', '.join(available_backends())}"
        )
    if not os.path.isfile(path):
        raise DecodeError(path, "a directory, not a video file" if os.path.isdir(path) else "no such file")
    if os.path.getsize(path) == 0:
        raise DecodeError(path, "empty file")
    if path.lower().endswith(IMAGE_EXTENSIONS):
        return _ImageReader(path)
    return {"pyav": _PyAVReader, "decord": _DecordReader, "torchcodec": _TorchCodecReader}[backend](path)


def _check_length(path: str, num_frames: int) -> int:
    if num_frames <= 0:
        raise DecodeError(path, "the video has no frames")
    return num_frames


def _gather(path: str, decoded: dict[int, np.ndarray], indices: Sequence[int], announced: int) -> np.ndarray:
    """Frames for `indices` from the {index: frame} map, serving indices past the end by the last frame."""
    if not decoded:
        raise DecodeError(path, f"no frame could be decoded among the requested indices {min(indices)}..{max(indices)}")
    last = max(decoded)
    missing = [i for i in indices if i not in decoded]
    if missing and (min(missing) <= last or last + 1 < _MIN_DECODABLE_SHARE * announced):
        raise DecodeError(path, f"decoded frames stop at {last + 1} of {announced} announced (truncated or corrupt file)")
    return np.stack([decoded.get(i, decoded[last]) for i in indices])


class _PyAVReader(VideoReader):
    """PyAV: seek to the keyframe before the first needed frame, decode forward to the last one,
    convert to RGB only the frames that are needed."""

    def __init__(self, path: str):
        import av

        self.path = path
        try:
            self._container = av.open(path)
            self._stream = self._container.streams.video[0]
        except (av.error.FFmpegError, IndexError, UnicodeDecodeError) as e:
            raise DecodeError(path, f"PyAV cannot open it ({e})") from None
        self._stream.thread_type = "NONE"
        self._stream.codec_context.thread_count = 1
        rate = self._stream.average_rate or self._stream.guessed_rate
        if not rate:
            raise DecodeError(path, "the video stream has no frame rate")
        self.fps = float(rate)
        self._time_base = float(self._stream.time_base)
        self._start = self._stream.start_time or 0
        self.num_frames = _check_length(path, self._stream.frames or self._count_packets())

    def _count_packets(self) -> int:
        # WebM and some MKV files carry no frame count; counting packets is a demux, not a decode.
        import av

        try:
            count = sum(1 for packet in self._container.demux(self._stream) if packet.pts is not None)
            self._container.seek(0)
        except av.error.FFmpegError as e:
            raise DecodeError(self.path, f"PyAV cannot read its packets ({e})") from None
        return count

    def _index_of(self, pts: int) -> int:
        return int(round((pts - self._start) * self._time_base * self.fps))

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        import av

        wanted = set(int(i) for i in indices)
        first, last = min(wanted), max(wanted)
        decoded: dict[int, np.ndarray] = {}
        try:
            # seek() lands on the keyframe at or before this timestamp
            self._container.seek(int(first / self.fps / self._time_base) + self._start, stream=self._stream, backward=True)
            for frame in self._container.decode(self._stream):
                if frame.pts is None:
                    continue
                index = self._index_of(frame.pts)
                if index in wanted:
                    decoded[index] = frame.to_ndarray(format="rgb24")
                if index >= last:
                    break
        except av.error.FFmpegError as e:
            if not decoded:
                raise DecodeError(self.path, f"PyAV failed while decoding ({e})") from None
        return _gather(self.path, decoded, [int(i) for i in indices], self.num_frames)

    def close(self) -> None:
        self._container.close()


def _decord_reason(error: Exception) -> str:
    # decord prefixes its messages with a source location and a failed check; keep the message
    return str(error).splitlines()[0].split("ERROR")[-1].strip()


class _DecordReader(VideoReader):
    def __init__(self, path: str):
        import decord

        self.path = path
        try:
            self._reader = decord.VideoReader(path, num_threads=1)
        except (decord.DECORDError, RuntimeError) as e:
            raise DecodeError(path, f"decord cannot open it ({_decord_reason(e)})") from None
        self.fps = float(self._reader.get_avg_fps())
        self.num_frames = _check_length(path, len(self._reader))

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        import decord

        unique = sorted(set(int(i) for i in indices if i < self.num_frames))
        try:
            frames = self._reader.get_batch(unique).asnumpy() if unique else np.empty((0,))
        except (decord.DECORDError, RuntimeError) as e:
            raise DecodeError(self.path, f"decord failed while decoding ({_decord_reason(e)})") from None
        return _gather(self.path, dict(zip(unique, frames)), [int(i) for i in indices], self.num_frames)

    def close(self) -> None:
        # decord leaks memory when readers linger (decord #197/#208); drop it now
        self._reader = None


class _TorchCodecReader(VideoReader):
    def __init__(self, path: str):
        from torchcodec.decoders import VideoDecoder

        self.path = path
        try:
            self._decoder = VideoDecoder(path, num_ffmpeg_threads=1, dimension_order="NHWC", seek_mode="exact")
        except (RuntimeError, ValueError) as e:
            raise DecodeError(path, f"torchcodec cannot open it ({e})") from None
        metadata = self._decoder.metadata
        self.fps = float(metadata.average_fps)
        self.num_frames = _check_length(path, len(self._decoder))

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        unique = sorted(set(int(i) for i in indices if i < self.num_frames))
        try:
            frames = self._decoder.get_frames_at(unique).data.numpy() if unique else np.empty((0,))
        except (RuntimeError, ValueError) as e:
            raise DecodeError(self.path, f"torchcodec failed while decoding ({e})") from None
        return _gather(self.path, dict(zip(unique, frames)), [int(i) for i in indices], self.num_frames)

    def close(self) -> None:
        self._decoder = None


class _ImageReader(VideoReader):
    """An image as a one-frame video (image datasets for the T=1 configs)."""

    def __init__(self, path: str):
        from PIL import Image, UnidentifiedImageError

        self.path = path
        try:
            with Image.open(path) as image:
                self._frame = np.asarray(image.convert("RGB"))
        except (UnidentifiedImageError, OSError) as e:
            raise DecodeError(path, f"not a readable image ({e})") from None
        self.num_frames = 1
        self.fps = 30.0

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        return np.stack([self._frame] * len(indices))
