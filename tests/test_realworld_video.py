"""The files users have: variable frame rate, jittered, gapped and late-starting timestamps, B-frames,
long GOPs, rotation, odd sizes, audio beside video; audio-only files, directories and text files;
and the memory of the test views of a high-resolution clip.

Every fixture is a frame-number video (frame i's colour encodes i), so a request for frame i must
return the i-th frame of a full sequential decode, whatever the timestamps say.
"""

import json
import os
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from torchvision import tv_tensors

import vidformer
from vidformer.config import get_cfg
from vidformer.data import DecodeError, available_backends, open_video
from vidformer.data.datasets import decode_views
from vidformer.data.sampling import view_clip_indices
from vidformer.data.synthetic import read_frame_numbers, write_frame_number_video, write_video
from vidformer.data.transforms import TrainTransform

BACKENDS = available_backends()
N = 120
TB = Fraction(1, 90000)
_rng = np.random.default_rng(0)
# phone-like: each frame interval 33.3 ms +- 3 ms, so the timestamps drift from i / fps
_JITTER = np.concatenate([[0], np.cumsum(np.rint((1 / 30 + _rng.uniform(-0.003, 0.003, N - 1)) * 90000))]).astype(int)
CASES = {
    "jittered": dict(pts=_JITTER, time_base=TB),
    "dropped": dict(pts=[3000 * j for j in sorted(_rng.choice(N + 5, N, replace=False))], time_base=TB),
    "late_start": dict(pts=[135000 + 3000 * i for i in range(N)], time_base=TB),  # starts at 1.5 s
    "30_to_15_fps": dict(pts=[3000 * i if i < 60 else 180000 + 6000 * (i - 60) for i in range(N)], time_base=TB),
    "bframes_jittered": dict(crf=18, bframes=3, pts=_JITTER, time_base=TB),
    "long_gop_bframes": dict(crf=18, bframes=2, gop=250),
    "with_audio": dict(audio=True),
}


def _sequential_numbers(path):
    with av.open(path) as container:
        return read_frame_numbers(np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]))


@pytest.fixture(scope="module")
def awkward(tmp_path_factory):
    root = tmp_path_factory.mktemp("awkward")
    return {name: write_frame_number_video(str(root / f"{name}.mp4"), N, height=32, width=64, **opts) for name, opts in CASES.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_frames_are_those_of_a_sequential_decode(awkward, case):
    path = awkward[case]
    assert _sequential_numbers(path) == list(range(N))
    rng = np.random.default_rng(1)
    requests = [rng.integers(0, N, 8).tolist() for _ in range(12)] + [[N - 1, 0, 59, 60, 61, N - 1]]
    fps = {}
    for backend in BACKENDS:
        with open_video(path, backend) as reader:
            assert reader.num_frames == N, backend
            fps[backend] = reader.fps
            for indices in requests:
                assert read_frame_numbers(reader.get_frames(indices)) == indices, (backend, indices)
    assert len(set(fps.values())) == 1, fps  # the same average rate, so every backend samples the same clips


def test_views_are_the_same_with_every_backend(awkward):
    cfg = get_cfg(overrides=["DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "4", "DATA.TEST_CROP_SIZE", "32",
                             "DATA.TRAIN_JITTER_SCALES", "[32, 40]", "TEST.NUM_ENSEMBLE_VIEWS", "3"])  # fmt: skip
    for case in ("30_to_15_fps", "bframes_jittered"):
        views = {b: decode_views(awkward[case], cfg, 3, 3, b) for b in BACKENDS}
        numbers = [read_frame_numbers(v, cfg.DATA.MEAN, cfg.DATA.STD) for v in views["pyav"]]
        # index-based sampling at the container's average rate (a 30 -> 15 fps file averages 20 fps)
        with open_video(awkward[case]) as reader:
            clips = view_clip_indices(reader.num_frames, reader.fps, cfg.DATA, 3)
        assert numbers == [clip.tolist() for clip in clips for _ in range(3)] and numbers[0][0] == 0
        assert all(torch.equal(views["pyav"], v) for v in views.values())


def test_rotation_is_applied_by_every_backend(tmp_path):
    # (decord 0.6 fails on some widths, e.g. 48, rotated or not: these sizes it handles)
    height, width = 64, 96
    frames = np.full((6, height, width, 3), 40, np.uint8)
    frames[:, : height // 3, : width // 3] = 230  # a bright top-left corner shows the orientation
    for degrees in (90, 180, -90):
        path = str(tmp_path / f"rot{degrees}.mp4")
        write_video(path, frames, rotation=degrees, crf=0)
        shown = np.rot90(frames[0], degrees // 90 % 4)  # counter-clockwise, as players show it
        for backend in BACKENDS:
            with open_video(path, backend) as reader:
                got = reader.get_frames([0, 5])
            assert got.shape[1:] == shown.shape, (degrees, backend)
            assert np.abs(got[0].astype(int) - shown).mean() < 3, (degrees, backend)


@pytest.mark.parametrize("height,width", [(98, 144), (61, 97), (71, 143)])
def test_odd_sizes_decode_and_train_crops_fit(tmp_path, height, width):
    path = write_frame_number_video(str(tmp_path / "odd.mp4"), 20, height=height, width=width)
    for backend in BACKENDS:
        with open_video(path, backend) as reader:
            assert reader.get_frames([3, 19]).shape == (2, height, width, 3)
            assert read_frame_numbers(reader.get_frames([3, 19])) == [3, 19]
    # short-side jitter whose low end is the crop: 98 -> 224 must not come out 223 (RandomCrop raised);
    # 32 of 40 is configs/quickstart.yaml's
    clip = torch.zeros(2, 3, height, width, dtype=torch.uint8)
    torch.manual_seed(0)
    for crop, scales in ((224, "[224, 225]"), (32, "[32, 40]")):
        cfg = get_cfg(overrides=["DATA.TRAIN_CROP_SIZE", str(crop), "DATA.TRAIN_JITTER_SCALES", scales,
                                 "DATA.TRAIN_JITTER_SCALES_RELATIVE", "[]"])  # fmt: skip
        for _ in range(6):
            assert TrainTransform(cfg)(clip).shape == (3, 2, crop, crop)


def test_files_that_are_no_video_are_named_with_the_reason(tmp_path):
    audio_only = str(tmp_path / "speech.m4a")
    with av.open(audio_only, "w") as container:
        stream = container.add_stream("aac", rate=16000, layout="mono")
        for start in range(0, 8192, 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    (tmp_path / "notes.txt").write_text("not a video\n" * 40)
    (tmp_path / "list.mp4").write_text("a.mp4 0\nb.mp4 1\n" * 40)
    os.mkdir(tmp_path / "clips.mp4")
    expected = {
        audio_only: "no video stream",
        str(tmp_path / "notes.txt"): "not a media file",
        str(tmp_path / "list.mp4"): "not a media file",
        str(tmp_path / "clips.mp4"): "is a directory",
    }
    for path, reason in expected.items():
        for backend in BACKENDS:
            with pytest.raises(DecodeError, match=reason) as caught:
                open_video(path, backend)
            assert caught.value.path == path and path in str(caught.value)


def test_audio_beside_video_is_ignored(awkward):
    with open_video(awkward["with_audio"]) as reader:
        assert (reader.num_frames, reader.fps) == (N, 30.0)


_MEMORY_CHILD = """
import json, sys, torch
from vidformer.config import get_cfg
from vidformer.data.datasets import decode_views
from vidformer.data.sampling import view_clip_indices
torch.set_num_threads(1)
cfg = get_cfg(overrides=["DATA.NUM_FRAMES", "8", "DATA.SAMPLING_RATE", "2", "DATA.TEST_CROP_SIZE", "224",
                         "DATA.TRAIN_JITTER_SCALES", "[256, 320]", "TEST.NUM_ENSEMBLE_VIEWS", "4", "TEST.NUM_SPATIAL_CROPS", "3"])
def kb(field):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field + ":"))
open("/proc/self/clear_refs", "w").write("5")
before = kb("VmRSS")
views = decode_views(sys.argv[1], cfg, 4, 3, "pyav")
print(json.dumps({"added_mb": (kb("VmHWM") - before) / 1024, "views_mb": views.numel() * 4 / 2**20}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's peak-RSS reset")
def test_views_of_a_720p_clip_never_hold_every_frame_as_float(tmp_path):
    cells = np.random.default_rng(0).integers(0, 256, (1, 45, 80, 3), dtype=np.uint8)
    path = str(tmp_path / "hd.mp4")
    write_video(path, cells.repeat(16, axis=1).repeat(16, axis=2).repeat(24, axis=0), gop=24, crf=30)
    root = os.path.dirname(os.path.dirname(os.path.abspath(vidformer.__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, path], env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # 4 clips of 8 frames over 24 frames need all 24: as float at 720p that is 24 x 10.5 MB = 253 MB (twice
    # that with the /255 copy); resized as they are decoded they take 24 x 1 MB, next to 12 views of 4.6 MB
    full_size_float = 24 * 720 * 1280 * 3 * 4 / 2**20
    assert result["added_mb"] < result["views_mb"] + 0.5 * full_size_float, result


def test_train_transform_in_chunks_equals_the_whole_clip():
    cfg = get_cfg(overrides=["DATA.TRAIN_CROP_SIZE", "32", "AUG.ENABLE", "True", "AUG.AA_TYPE", "rand-m9-n4-mstd0.5-inc1",
                             "AUG.RE_PROB", "1.0", "AUG.RE_MODE", "pixel"])  # fmt: skip
    transform = TrainTransform(cfg)
    for seed in range(6):
        clip = torch.randint(0, 256, (10, 3, 40, 52), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
        torch.manual_seed(seed)
        chunked, after_chunked = transform(clip), torch.rand(1)
        torch.manual_seed(seed)
        whole = transform.transform(tv_tensors.Video(clip)).as_subclass(torch.Tensor).permute(1, 0, 2, 3)
        assert torch.equal(chunked, whole) and torch.equal(after_chunked, torch.rand(1))
