"""Video decoders behind one interface: open a file, read its length and frame rate, fetch frames by index.

Frame i of a video is the i-th frame a full sequential decode yields in presentation order, whatever
the timestamps say: constant or variable frame rate, jittered or gapped timestamps, a stream that
starts late, B-frames, long GOPs. `num_frames` is the number of frames such a decode yields. Frames
come in the displayed orientation: a rotation in the file's display matrix (phone videos) is applied.

Backends: "pyav" (default, always installed; decodes H.264/VP9/AV1), "decord" (random access via
get_batch; its bundled FFmpeg 4.1 cannot open AV1) and "torchcodec" (when importable). PyAV indexes
the file once at open (one demux pass, no decoding) by the packets' presentation timestamps, then
seeks to the keyframe before a needed frame and matches decoded frames to indices by timestamp.
Each reader uses one decode thread, because the DataLoader workers already provide the parallelism.
Every failure to open or decode a file is a DecodeError naming the file.
"""

import functools
import importlib.util
import os
from typing import Iterator, Sequence

import numpy as np

from vidformer.errors import UsageError

__all__ = ["DecodeError", "VideoReader", "open_video", "available_backends", "BACKENDS"]

BACKENDS = ("pyav", "decord", "torchcodec")
_MODULES = {"pyav": "av", "decord": "decord", "torchcodec": "torchcodec"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# decord and torchcodec hand back frames in batches of this many, so a request for many frames never
# holds them all at full resolution at once (callers consume frames one by one; see iter_frames).
_BATCH = 8


class DecodeError(RuntimeError):
    """A video (or image) that is missing, empty, truncated or cannot be decoded; the message has its path."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot decode '{path}': {reason}")
        self.path = path
        self.reason = reason


class VideoReader:
    """One opened file. `num_frames` and `fps` (the container's average rate) are known after opening.
    `iter_frames` yields uint8 RGB frames (H, W, 3) one by one in ascending index order; `get_frames`
    returns them stacked (N, H, W, 3) for indices in any order, repeats allowed."""

    path: str
    num_frames: int
    fps: float

    def iter_frames(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        """(index, frame) for every distinct index in `indices`, ascending."""
        raise NotImplementedError

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        rows: dict[int, list[int]] = {}  # frame index -> its rows in the result (repeats allowed)
        for row, index in enumerate(indices):
            rows.setdefault(int(index), []).append(row)
        stacked = None
        for index, frame in self.iter_frames(indices):
            if stacked is None:
                stacked = np.empty((len(indices), *frame.shape), frame.dtype)
            elif frame.shape != stacked.shape[1:]:
                raise DecodeError(self.path, f"frame {index} is {frame.shape[1]}x{frame.shape[0]} after frames of {stacked.shape[2]}x{stacked.shape[1]} (a size change mid-stream)")
            stacked[rows[index]] = frame
        return stacked

    def _distinct(self, indices: Sequence[int]) -> list[int]:
        wanted = sorted(set(int(i) for i in indices))
        if not wanted:
            raise ValueError("no frame indices requested")
        if wanted[0] < 0 or wanted[-1] >= self.num_frames:
            raise IndexError(f"frame indices {wanted[0]}..{wanted[-1]} are outside 0..{self.num_frames - 1} of '{self.path}'")
        return wanted

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@functools.cache
def _installed(backend: str) -> bool:
    # asked at every open: a module search costs about 0.4 ms, and the answer does not change
    return importlib.util.find_spec(_MODULES[backend]) is not None


def available_backends() -> list[str]:
    """Backends whose package can be imported here."""
    return [name for name in BACKENDS if _installed(name)]


def open_video(path: str, backend: str = "pyav") -> VideoReader:
    """Open `path` with `backend`; an image file opens as a one-frame video whatever the backend."""
    if backend not in BACKENDS:
        raise UsageError(f"DATA.DECODING_BACKEND '{backend}' is unknown; installed backends: {', '.join(available_backends())}")
    if not _installed(backend):
        raise UsageError(
            f"DATA.DECODING_BACKEND '{backend}' needs the '{_MODULES[backend]}' package, which is not installed; "
            f"installed backends: {', '.join(available_backends())}"
        )
    if os.path.isdir(path):
        raise DecodeError(path, "is a directory, not a video file")
    if not os.path.isfile(path):
        raise DecodeError(path, "a directory, not a video file" if os.path.isdir(path) else "no such file")
    if os.path.getsize(path) == 0:
        raise DecodeError(path, "empty file")
    if path.lower().endswith(IMAGE_EXTENSIONS):
        return _ImageReader(path)
    if backend == "pyav":
        return _PyAVReader(path)
    _check_has_video(path)  # decord opens a text file as ANSI art and says little about audio-only files
    return {"decord": _DecordReader, "torchcodec": _TorchCodecReader}[backend](path)


def _open_container(path: str):
    """A PyAV input container with a real video stream, or the DecodeError that says why not."""
    import av

    try:
        container = av.open(path)
    except av.error.InvalidDataError:
        raise DecodeError(path, "not a media file (FFmpeg finds no audio or video in it), or a damaged one") from None
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise DecodeError(path, f"PyAV cannot open it ({e})") from None
    if container.format.name == "tty":  # FFmpeg opens *.txt files as ANSI art
        container.close()
        raise DecodeError(path, "not a media file (it reads as text)")
    if not container.streams.video:
        kinds = sorted({stream.type for stream in container.streams})
        container.close()
        raise DecodeError(path, f"no video stream (the file has {', '.join(kinds) + ' only' if kinds else 'no streams'})")
    return container


def _check_has_video(path: str) -> None:
    _open_container(path).close()


def _rotate(array: np.ndarray, degrees: float) -> np.ndarray:
    """Apply a display-matrix rotation (counter-clockwise degrees, FFmpeg's sign) to an (H, W, C) frame."""
    quarter_turns = int(round(degrees / 90)) % 4
    return np.ascontiguousarray(np.rot90(array, quarter_turns)) if quarter_turns else array


class _PyAVReader(VideoReader):
    """PyAV with a presentation-timestamp index built by one demux pass at open (packets are read,
    not decoded): frame i is the i-th smallest timestamp. A request seeks to the keyframe before each
    run of needed frames, decodes forward, and converts to RGB only the frames that are needed.
    A stream whose packets lack distinct timestamps (raw elementary streams) is read by counting
    decoded frames from the start instead."""

    def __init__(self, path: str):
        import av

        self.path = path
        self._open()
        rate = self._stream.average_rate or self._stream.guessed_rate
        if not rate:
            self._container.close()
            raise DecodeError(path, "the video stream has no frame rate")
        self.fps = float(rate)
        try:
            self._build_index()
        except av.error.FFmpegError as e:
            self._container.close()
            raise DecodeError(path, f"PyAV cannot read its packets ({e})") from None
        if self.num_frames <= 0:
            self._container.close()
            raise DecodeError(path, "the video has no frames")

    def _build_index(self) -> None:
        pts, keys, seek_ts, timestamped = [], [], [], True
        for packet in self._container.demux(self._stream):
            if packet.size == 0 or packet.is_discard:  # the demuxer's final flush packet; frames an edit list cuts
                continue
            if packet.pts is None:
                timestamped = False
                break
            pts.append(packet.pts)
            if packet.is_keyframe:
                keys.append(packet.pts)
                # mp4 indexes keyframes by decode time, mkv by presentation time: the smaller is safe for both
                seek_ts.append(min(packet.pts, packet.dts if packet.dts is not None else packet.pts))
        self._pts = np.sort(np.asarray(pts, dtype=np.int64))
        if not timestamped or len(np.unique(self._pts)) != len(self._pts) or not keys:
            self._pts = None  # no usable timestamps: a frame's index is its count from the start
            self.num_frames = sum(1 for _ in self._decode_from_start())
            return
        self.num_frames = len(self._pts)
        self._position = {int(p): i for i, p in enumerate(self._pts)}
        # keyframes by presentation position; _key_before[i]: the last keyframe at or before frame i
        order = np.argsort(keys)
        key_positions = np.searchsorted(self._pts, np.asarray(keys)[order])
        self._seek_ts = np.asarray(seek_ts)[order]
        self._key_before = np.maximum(np.searchsorted(key_positions, np.arange(self.num_frames), side="right") - 1, 0)
        self._key_positions = key_positions

    def _open(self) -> None:
        from av.video.reformatter import VideoReformatter

        # one RGB converter for the reader, on one thread: frame.to_ndarray(format="rgb24") sets up a
        # fresh swscale context, with a thread per CPU, for every frame (6x the conversion itself at
        # 256p); the pixels are the same
        self._rgb = VideoReformatter()
        self._container = _open_container(self.path)
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "NONE"
        self._stream.codec_context.thread_count = 1

    def _decode_from_start(self) -> Iterator:
        """Every frame from the file's start: reopened rather than sought, which some files refuse."""
        self._container.close()
        self._open()
        return self._container.decode(self._stream)

    def _decode_from(self, key: int | None) -> Iterator[tuple[int, object]]:
        """(index, av.VideoFrame) from keyframe number `key` on (None: from the start); frames whose
        timestamp the index does not know are skipped."""
        if key is None:
            frames = self._decode_from_start()
        else:
            self._container.seek(int(self._seek_ts[key]), stream=self._stream, backward=True)
            frames = self._container.decode(self._stream)
        for frame in frames:
            index = self._position.get(frame.pts)
            if index is not None:
                yield index, frame

    def iter_frames(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        import av

        wanted = self._distinct(indices)
        try:
            if self._pts is None:
                yield from self._iter_counted(wanted)
                return
            k, key = 0, int(self._key_before[wanted[0]])
            while True:
                progressed = False
                for index, frame in self._decode_from(key):
                    if index < wanted[k]:
                        continue  # decoded on the way, not converted
                    if index > wanted[k]:
                        break  # frame wanted[k] did not come
                    yield index, self._to_rgb(frame)
                    k, progressed = k + 1, True
                    if k == len(wanted):
                        return
                    if self._key_positions[self._key_before[wanted[k]]] > index:
                        break  # a keyframe lies between here and the next needed frame: seek to it
                else:
                    if progressed or key is None:
                        raise DecodeError(self.path, f"decoding ends before frame {wanted[k]} of {self.num_frames} (truncated or corrupt file)")
                if progressed and (k == 0 or self._key_positions[self._key_before[wanted[k]]] > wanted[k - 1]):
                    key = int(self._key_before[wanted[k]])
                elif key is not None and not progressed:
                    key = None  # the seek landed past frame wanted[k], or it did not decode from there
                else:
                    raise DecodeError(self.path, f"frame {wanted[k]} of {self.num_frames} cannot be decoded (corrupt file)")
        except av.error.FFmpegError as e:
            raise DecodeError(self.path, f"PyAV failed while decoding ({e})") from None

    def _to_rgb(self, frame) -> np.ndarray:
        return _rotate(self._rgb.reformat(frame, format="rgb24", threads=1).to_ndarray(), frame.rotation)

    def _iter_counted(self, wanted: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        k = 0
        for index, frame in enumerate(self._decode_from_start()):
            if index == wanted[k]:
                yield index, self._to_rgb(frame)
                k += 1
                if k == len(wanted):
                    return
        raise DecodeError(self.path, f"decoding ends before frame {wanted[k]} of {self.num_frames} (truncated or corrupt file)")

    def close(self) -> None:
        self._container.close()


def _decord_reason(error: Exception) -> str:
    # decord prefixes its messages with a source location and a failed check; keep the message
    reason = str(error).splitlines()[0].split("ERROR")[-1].strip()
    if "DECORDArrayCopyFromTo" in reason:
        # decord 0.6 mis-sizes its output for some frame widths (16, 24, 48 pixels, after rotation too)
        reason = "decord 0.6 cannot return frames of this width (a decord bug); use DATA.DECODING_BACKEND pyav"
    return reason


def _in_batches(wanted: list[int], fetch) -> Iterator[tuple[int, np.ndarray]]:
    """(index, frame) for the ascending `wanted`, fetched _BATCH at a time by the random-access backends."""
    for start in range(0, len(wanted), _BATCH):
        batch = wanted[start : start + _BATCH]
        yield from zip(batch, fetch(batch))


class _DecordReader(VideoReader):
    """decord: its own index of the file (it applies the display rotation itself)."""

    def __init__(self, path: str):
        import decord

        self.path = path
        try:
            self._reader = decord.VideoReader(path, num_threads=1)
        except (decord.DECORDError, RuntimeError) as e:
            raise DecodeError(path, f"decord cannot open it ({_decord_reason(e)})") from None
        self.fps = float(self._reader.get_avg_fps())
        self.num_frames = len(self._reader)
        if self.num_frames <= 0:
            raise DecodeError(path, "the video has no frames")

    def iter_frames(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        import decord

        def fetch(batch: list[int]) -> np.ndarray:
            try:
                return self._reader.get_batch(batch).asnumpy()
            except (decord.DECORDError, RuntimeError) as e:
                raise DecodeError(self.path, f"decord failed while decoding ({_decord_reason(e)})") from None

        return _in_batches(self._distinct(indices), fetch)

    def close(self) -> None:
        # decord leaks memory when readers linger (decord #197/#208); drop it now
        self._reader = None


class _TorchCodecReader(VideoReader):
    """torchcodec in exact seek mode (it scans the file's packets at open, as PyAV does here).
    Untested here: torchcodec needs FFmpeg's shared libraries, which this machine lacks."""

    def __init__(self, path: str):
        from torchcodec.decoders import VideoDecoder

        self.path = path
        try:
            self._decoder = VideoDecoder(path, num_ffmpeg_threads=1, dimension_order="NHWC", seek_mode="exact")
        except (RuntimeError, ValueError) as e:
            raise DecodeError(path, f"torchcodec cannot open it ({e})") from None
        metadata = self._decoder.metadata
        # the header's average rate, as PyAV and decord report it (torchcodec's average_fps is from its scan)
        self.fps = float(metadata.average_fps_from_header or metadata.average_fps)
        self.num_frames = len(self._decoder)
        if self.num_frames <= 0:
            raise DecodeError(path, "the video has no frames")

    def iter_frames(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        def fetch(batch: list[int]) -> np.ndarray:
            try:
                return self._decoder.get_frames_at(batch).data.numpy()
            except (RuntimeError, ValueError) as e:
                raise DecodeError(self.path, f"torchcodec failed while decoding ({e})") from None

        return _in_batches(self._distinct(indices), fetch)

    def close(self) -> None:
        self._decoder = None


class _ImageReader(VideoReader):
    """An image as a one-frame video (image datasets for the T=1 configs)."""

    def __init__(self, path: str):
        from PIL import Image, UnidentifiedImageError

        self.path = path
        try:
            with Image.open(path) as image:
                self._frame = np.array(image.convert("RGB"))
        except (UnidentifiedImageError, OSError) as e:
            raise DecodeError(path, f"not a readable image ({e})") from None
        self.num_frames = 1
        self.fps = 30.0

    def iter_frames(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        return iter([(0, self._frame)] if self._distinct(indices) else [])
