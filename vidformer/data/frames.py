"""Videos stored as folders of image files (PySlowFast frame lists, mmaction2 rawframes), read through the
same VideoReader interface as video files, so the same clip samplers and views apply.

A FrameFiles names a video's frames without listing them when they are numbered (`img_00001.jpg`...):
a Kinetics rawframes split is ~70 M frames, and a path string per frame would not fit in each
DataLoader worker. Only the frames a clip needs are opened and decoded (torchvision.io.decode_image,
libjpeg-turbo / libpng).
"""

import os
import re
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from torchvision.io import ImageReadMode, decode_image

from vidformer.data.decoders import DecodeError, VideoReader, open_video

__all__ = ["FrameFiles", "FrameReader", "open_source", "check_frame_template"]

# the last run of digits in a file name: "78687_000012.jpg" -> ("78687_", "000012", ".jpg")
_NUMBERED = re.compile(r"(.*\D|)(\d+)(\D*)")


@dataclass(frozen=True)
class FrameFiles:
    """The frames of one video, in display order: `folder/template.format(start + i)` for i < count,
    or the explicit `paths` when the names follow no numbered pattern. `fps` is the rate the frames
    were stored at (DATA.FRAMES_FPS), which dense clip sampling needs."""

    folder: str
    count: int
    fps: float
    template: str = ""
    start: int = 0
    paths: tuple[str, ...] = ()

    def path(self, i: int) -> str:
        return self.paths[i] if self.paths else os.path.join(self.folder, self.template.format(self.start + i))

    @classmethod
    def from_paths(cls, paths: Sequence[str], fps: float) -> "FrameFiles":
        """The frames `paths` (in order); kept as a template when they are consecutively numbered files of one folder."""
        folder = os.path.dirname(paths[0])
        match = _NUMBERED.fullmatch(os.path.basename(paths[0]))
        if match:
            prefix, digits, suffix = match.groups()
            number = "{:0%dd}" % len(digits) if digits.startswith("0") and len(digits) > 1 else "{:d}"
            template = _escape(prefix) + number + _escape(suffix)
            numbered = cls(folder, len(paths), fps, template, int(digits))
            if all(numbered.path(i) == p for i, p in enumerate(paths)):
                return numbered
        return cls(folder, len(paths), fps, paths=tuple(paths))


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def check_frame_template(template: str) -> str | None:
    """None when `template` formats a frame number (e.g. "img_{:05d}.jpg"), else what is wrong."""
    try:
        if template.format(1) == template.format(2):
            return "it has no '{}' field for the frame number"
    except (IndexError, KeyError, ValueError) as e:
        return f"it cannot format a frame number ({e})"
    return None


class FrameReader(VideoReader):
    """A FrameFiles as a video: `num_frames` = count, frames decoded to RGB on request."""

    def __init__(self, frames: FrameFiles):
        self.path = frames.folder
        self.frames = frames
        self.num_frames = frames.count
        self.fps = frames.fps
        if frames.count <= 0:
            raise DecodeError(self.path, "the video has no frames")

    def iter_frames(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        shape = None
        for index in self._distinct(indices):
            frame = self._read(index)
            if shape is not None and frame.shape != shape:
                raise DecodeError(self.path, f"its frames differ in size ({shape} and {frame.shape} at frame {index})")
            shape = frame.shape
            yield index, frame

    def _read(self, index: int) -> np.ndarray:
        if not 0 <= index < self.num_frames:
            raise DecodeError(self.path, f"frame {index} requested of {self.num_frames}")
        path = self.frames.path(index)
        if not os.path.isfile(path):
            raise DecodeError(self.path, f"frame {index} '{path}' does not exist")
        try:
            image = decode_image(path, mode=ImageReadMode.RGB, apply_exif_orientation=True)
        except RuntimeError as e:
            raise DecodeError(self.path, f"frame {index} '{path}' is not a readable image ({str(e).splitlines()[0]})") from None
        return image.permute(1, 2, 0).numpy()  # (3, H, W) -> (H, W, 3)


def open_source(source: "str | FrameFiles", backend: str) -> VideoReader:
    """A reader for a dataset record's source: a video (or image) file via open_video, or a FrameFiles."""
    if isinstance(source, FrameFiles):
        return FrameReader(source)
    return open_video(source, backend)
