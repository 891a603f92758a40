"""Video data pipeline on synthetic videos: decoders, dataset layouts, sampling rules, bad files, loaders."""

import multiprocessing
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import vidformer
from vidformer.config import get_cfg
from torchvision import tv_tensors

from vidformer.data import (
    DecodeError,
    TooManyFailedVideos,
    available_backends,
    build_loader,
    build_test_dataset,
    iter_test_videos,
    load_label_names,
    load_video_views,
    make_synthetic_dataset,
    open_video,
)
from vidformer.data.sampling import clip_start, segment_indices
from vidformer.data.synthetic import read_frame_numbers, write_frame_number_video, write_video
from vidformer.data.transforms import TrainTransform, make_views, normalize, parse_randaugment, short_side_resize, uniform_crop
from vidformer.errors import UsageError

TINY = [
    "MODEL.NUM_CLASSES", "4", "DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "2",
    "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_CROP_SIZE", "32", "DATA.TRAIN_JITTER_SCALES", "[40, 48]",
    "TRAIN.BATCH_SIZE", "4", "DATA_LOADER.NUM_WORKERS", "0", "DATA.MAX_FAILED_FRACTION", "0.5",
    "TEST.NUM_ENSEMBLE_VIEWS", "2", "TEST.NUM_SPATIAL_CROPS", "3",
]  # fmt: skip


def tiny_cfg(root, *overrides):
    return get_cfg(overrides=["DATA.PATH_TO_DATA_DIR", str(root), *TINY, *overrides])


@pytest.fixture(scope="module")
def kinetics(tmp_path_factory):
    return make_synthetic_dataset(str(tmp_path_factory.mktemp("kinetics")), train_per_class=2, val_per_class=1, num_frames=24, size=48)


def _csv(root, split):
    with open(os.path.join(root, f"{split}.csv")) as f:
        return [(os.path.join(root, line.split()[0]), int(line.split()[1])) for line in f]


# --- decoders ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_backends_decode_the_same_frames(tmp_path, suffix):
    frames = np.random.default_rng(0).integers(0, 256, (20, 32, 64, 3), dtype=np.uint8)
    frames = np.repeat(np.repeat(frames[:, ::8, ::8], 8, axis=1), 8, axis=2)  # blocky, so compression keeps it
    path = str(tmp_path / f"v{suffix}")
    write_video(path, frames, codec="libx264" if suffix == ".mp4" else "libvpx-vp9")
    indices = [17, 3, 3, 9, 19]
    decoded = {}
    for backend in ("pyav", "decord"):
        with open_video(path, backend) as reader:
            assert (reader.num_frames, reader.fps) == (20, 30.0)
            decoded[backend] = reader.get_frames(indices).astype(np.float64)
    assert decoded["pyav"].shape == (5, 32, 64, 3)
    assert np.abs(decoded["pyav"] - decoded["decord"]).mean() < 1.0
    # and both are the frames that were written (lossy codec: small mean error)
    assert np.abs(decoded["pyav"] - frames[indices]).mean() < 8.0
    assert np.abs(decoded["pyav"][1] - frames[4]).mean() > 3 * np.abs(decoded["pyav"][1] - frames[3]).mean()


def test_seeking_pyav_returns_exact_frame_numbers(tmp_path):
    path = write_frame_number_video(str(tmp_path / "n.mp4"), 120, gop=10)
    for backend in ("pyav", "decord"):
        with open_video(path, backend) as reader:
            assert read_frame_numbers(reader.get_frames([95, 7, 60, 60, 119])) == [95, 7, 60, 60, 119]


def test_missing_backend_names_installed_ones(tmp_path):
    path = write_frame_number_video(str(tmp_path / "n.mp4"), 4)
    assert {"pyav", "decord"} <= set(available_backends())
    with pytest.raises(UsageError, match="installed backends: pyav, decord"):
        open_video(path, "opencv")
    if "torchcodec" not in available_backends():
        with pytest.raises(UsageError, match="'torchcodec' package, which is not installed"):
            open_video(path, "torchcodec")


def test_av1_fails_in_decord_but_not_pyav(tmp_path):
    path = str(tmp_path / "av1.mp4")
    write_video(path, np.zeros((8, 64, 64, 3), np.uint8) + 100, codec="libsvtav1")
    with open_video(path, "pyav") as reader:
        assert reader.get_frames([0, 7]).shape == (2, 64, 64, 3)
    with pytest.raises(DecodeError, match="av1.mp4.*cannot find video stream"):
        open_video(path, "decord")


# --- datasets and loaders ---------------------------------------------------------------------


def test_kinetics_train_and_val_batches(kinetics):
    cfg = tiny_cfg(kinetics, "AUG.NUM_SAMPLE", "2", "AUG.ENABLE", "True", "AUG.RE_PROB", "0.5")
    labels = dict((i, label) for i, (_, label) in enumerate(_csv(kinetics, "train")))
    loader = build_loader(cfg, "train")
    batches = list(loader)
    assert len(batches) == 2  # 8 videos, 4 per batch
    for batch in batches:
        assert batch["video"].shape == (8, 3, 4, 32, 32) and batch["video"].dtype == torch.float32
        assert batch["label"].tolist() == [labels[i] for i in batch["index"].tolist()]
        assert torch.equal(batch["index"][0::2], batch["index"][1::2])  # 2 clips per video, side by side
        assert not torch.equal(batch["video"][0], batch["video"][1])  # ... differently augmented
        assert batch["failed"] == {}
    assert sorted(i for b in batches for i in b["index"][0::2].tolist()) == list(range(8))
    assert len(loader.failures.decoded) == 8
    val = next(iter(build_loader(cfg, "val")))
    assert val["video"].shape == (4, 3, 4, 32, 32) and val["index"].tolist() == [0, 1, 2, 3]
    assert val["label"].tolist() == [label for _, label in _csv(kinetics, "val")]
    # normalised: a mid-grey video would be near 0; synthetic pixels are in [0.15, 1]
    assert -2.0 < float(val["video"].mean()) < 2.0 and float(val["video"].std()) > 0.2


def test_epochs_are_reproducible_and_workers_do_not_change_samples(kinetics):
    cfg = tiny_cfg(kinetics, "AUG.ENABLE", "True")
    first = [b["video"] for b in build_loader(cfg, "train", seed=5)]
    again = build_loader(cfg, "train", seed=5)
    assert all(torch.equal(a, b["video"]) for a, b in zip(first, again))
    again.set_epoch(1)
    assert not torch.equal(first[0], next(iter(again))["video"])
    workers = build_loader(tiny_cfg(kinetics, "AUG.ENABLE", "True", "DATA_LOADER.NUM_WORKERS", "2"), "train", seed=5)
    assert all(torch.equal(a, b["video"]) for a, b in zip(first, workers))
    # the next epoch's samples reach the (persistent) workers too
    workers.set_epoch(1)
    again.set_epoch(1)
    assert all(torch.equal(a["video"], b["video"]) for a, b in zip(again, workers))


# a user's script (or a test whose traceback keeps its loader): the workers are alive when the interpreter exits
_SCRIPT_KEEPING_A_LOADER = """
import sys
from vidformer.config import get_cfg
from vidformer.data import build_loader
loader = build_loader(get_cfg(overrides=sys.argv[1:]), "train")
batch = next(iter(loader))
"""


def test_a_process_holding_a_loader_with_live_workers_exits(kinetics):
    root = os.path.dirname(os.path.dirname(os.path.abspath(vidformer.__file__)))
    overrides = ["DATA.PATH_TO_DATA_DIR", kinetics, *TINY, "DATA_LOADER.NUM_WORKERS", "2"]
    try:
        subprocess.run([sys.executable, "-c", _SCRIPT_KEEPING_A_LOADER, *overrides], env=dict(os.environ, PYTHONPATH=root),
                       check=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the process did not exit: its data workers outlived it")


def test_workers_ignore_a_stop_signal_the_cluster_sends_them(kinetics):
    others = set(multiprocessing.active_children())
    loader = build_loader(tiny_cfg(kinetics, "DATA_LOADER.NUM_WORKERS", "1"), "train")
    first = [b["video"] for b in loader]
    workers = set(multiprocessing.active_children()) - others
    assert len(workers) == 1  # persistent: alive between epochs
    for worker in workers:  # Slurm signals every process of the step, the workers too
        subprocess.run(["kill", "-TERM", str(worker.pid)], check=True)
        subprocess.run(["kill", "-USR1", str(worker.pid)], check=True)
    assert all(torch.equal(a, b["video"]) for a, b in zip(first, loader))


def test_distributed_split(kinetics):
    cfg = tiny_cfg(kinetics)
    seen = []
    for rank in range(2):
        loader = build_loader(cfg, "train", rank=rank, world_size=2)
        batches = list(loader)
        assert len(batches) == 2 and batches[0]["video"].shape[0] == 2  # TRAIN.BATCH_SIZE 4 is per node
        seen += [i for b in batches for i in b["index"].tolist()]
    assert sorted(seen) == list(range(8))
    with pytest.raises(UsageError, match="divisible"):
        build_loader(cfg, "train", world_size=3)
    test_items = [[item["index"] for item in iter_test_videos(cfg, "val", rank, 3)] for rank in range(3)]
    assert test_items == [[0, 3], [1], [2]]


def test_ssv2_layout_with_segment_sampling(tmp_path):
    root = make_synthetic_dataset(str(tmp_path), train_per_class=1, val_per_class=1, num_frames=16, size=32, layout="ssv2")
    cfg = tiny_cfg(root, "DATA.DATASET", "ssv2", "DATA.SEGMENT_SAMPLING", "True", "DATA.RANDOM_FLIP", "False",
                   "DATA.TRAIN_JITTER_SCALES", "[32, 32]", "TEST.NUM_SPATIAL_CROPS", "1")  # fmt: skip
    batch = next(iter(build_loader(cfg, "train")))
    assert batch["video"].shape == (4, 3, 4, 32, 32)
    records = build_test_dataset(cfg, "val").records
    assert [r.label for r in records] == [0, 1, 2, 3]
    assert all(r.path.endswith(".webm") and os.path.isfile(r.path) for r in records)
    assert load_label_names(cfg) == ["moving right", "moving down", "moving left", "moving up"]


def test_folder_and_image_layouts(tmp_path):
    root = make_synthetic_dataset(str(tmp_path / "f"), train_per_class=1, val_per_class=1, num_frames=16, size=48, layout="folder")
    cfg = tiny_cfg(root, "DATA.DATASET", "folder")
    batch = next(iter(build_loader(cfg, "train")))
    assert batch["video"].shape == (4, 3, 4, 32, 32)
    assert load_label_names(cfg) == ["moving_down", "moving_left", "moving_right", "moving_up"]
    assert sorted(batch["label"].tolist()) == [0, 1, 2, 3]
    from PIL import Image

    for split in ("train", "val"):
        for k, name in enumerate(["cat", "dog"]):
            os.makedirs(tmp_path / "img" / split / name)
            Image.fromarray(np.full((40, 50, 3), 60 * k, np.uint8)).save(tmp_path / "img" / split / name / "a.png")
    cfg = tiny_cfg(tmp_path / "img", "DATA.DATASET", "imagefolder", "DATA.NUM_FRAMES", "1", "MODEL.NUM_CLASSES", "2",
                   "TRAIN.BATCH_SIZE", "2", "TEST.NUM_ENSEMBLE_VIEWS", "1")  # fmt: skip
    batch = next(iter(build_loader(cfg, "train")))
    assert batch["video"].shape == (2, 3, 1, 32, 32)
    item = next(iter_test_videos(cfg, "test"))  # no test/ folder: val/ is used
    assert item["views"].shape == (3, 3, 1, 32, 32) and item["label"] == 0


def test_csv_errors_name_file_and_line(tmp_path):
    (tmp_path / "train.csv").write_text("a.mp4 0\n\nb.mp4 zero\n")
    with pytest.raises(UsageError, match=r"train.csv:3: cannot read 'b.mp4 zero'"):
        build_loader(tiny_cfg(tmp_path), "train")
    (tmp_path / "train.csv").write_text("a.mp4,0\nb.mp4,7\n")
    with pytest.raises(UsageError, match=r"train.csv:2: label 7 is outside 0..3"):
        build_loader(tiny_cfg(tmp_path), "train")
    with pytest.raises(UsageError, match="has no val.csv"):
        build_loader(tiny_cfg(tmp_path), "val")


# --- multi-view sampling ----------------------------------------------------------------------


def test_views_follow_the_pyslowfast_rule_on_frame_numbers(tmp_path):
    path = write_frame_number_video(str(tmp_path / "n.mp4"), 100, height=48, width=64)
    cfg = tiny_cfg(tmp_path, "DATA.SAMPLING_RATE", "4", "TEST.NUM_ENSEMBLE_VIEWS", "5")
    views = load_video_views(path, cfg)
    assert views.shape == (15, 3, 4, 32, 32)
    # clip = 4 frames x stride 4 = 16 frames; offset sampling: starts k * floor((100 - 16) / 4) = 21k
    for k in range(15):
        start = 21 * (k // 3)
        assert read_frame_numbers(views[k], cfg.DATA.MEAN, cfg.DATA.STD) == [start, start + 5, start + 10, start + 15], k
    # SSv2: TSN midpoints of 4 segments of the 99-frame span, the same for every temporal clip
    ssv2 = tiny_cfg(tmp_path, "DATA.SEGMENT_SAMPLING", "True", "TEST.NUM_ENSEMBLE_VIEWS", "2")
    views = load_video_views(path, ssv2)
    assert [read_frame_numbers(v, cfg.DATA.MEAN, cfg.DATA.STD) for v in views] == [[12, 37, 62, 86]] * 6
    # one centre clip: floor(84 / 2) = 42
    single = tiny_cfg(tmp_path, "DATA.SAMPLING_RATE", "4", "TEST.NUM_ENSEMBLE_VIEWS", "1", "TEST.NUM_SPATIAL_CROPS", "1")
    assert read_frame_numbers(load_video_views(path, single)[0], cfg.DATA.MEAN, cfg.DATA.STD) == [42, 47, 52, 57]


def test_sampling_rules():
    assert [clip_start(100, 16, k, 5) for k in range(5)] == [0, 21, 42, 63, 84]
    assert clip_start(10, 16, 0, 1) == 0  # shorter than the clip: starts at 0, indices clamp
    assert segment_indices(99, 4).tolist() == [12, 36, 61, 86]  # np.round: 24.5 -> 24, 73.5 -> 74
    rng = np.random.default_rng(0)
    drawn = np.stack([segment_indices(101, 4, rng) for _ in range(200)])
    assert drawn.min(0).tolist() == [0, 25, 50, 75] and drawn.max(0).tolist() == [25, 50, 75, 100]


@pytest.mark.parametrize("height,width", [(40, 60), (60, 40)])
def test_spatial_crops_left_centre_right(height, width):
    cfg = get_cfg(overrides=TINY)
    # pixel value = its column (landscape) or row (portrait) so a crop reveals its offset
    ramp = torch.arange(max(height, width), dtype=torch.uint8)
    frames = (ramp[:width].view(1, 1, 1, width) if width > height else ramp[:height].view(1, 1, height, 1)).expand(2, 3, height, width)
    views = make_views(frames.contiguous(), [torch.tensor([0, 1])], cfg, 3)
    assert views.shape == (3, 3, 2, 32, 32)
    pixels = views * torch.tensor(cfg.DATA.STD).view(1, 3, 1, 1, 1) + torch.tensor(cfg.DATA.MEAN).view(1, 3, 1, 1, 1)
    # short side 40 -> 32 (scale 0.8), long side 60 -> 48; crops start at 0, 8, 16 there = 0, 10, 20 originally
    axis = -1 if width > height else -2
    first = pixels.select(axis, 0)[:, 0, 0, 0] * 255  # the original column/row under the first pixel
    assert torch.allclose(first - first[0], torch.tensor([0.0, 10.0, 20.0]), atol=0.6)
    views1 = make_views(frames.contiguous(), [torch.tensor([0, 1])], tiny_cfg("x", "DATA.TRAIN_JITTER_SCALES", "[32, 32]"), 1)
    assert torch.allclose(views1[0], views[1])  # 1 crop with short side 32 = the centre of 3


def test_multi_view_views_are_distinct_and_match_the_dataset(tmp_path):
    frames = np.random.default_rng(1).integers(0, 256, (30, 6, 8, 3), dtype=np.uint8).repeat(8, axis=1).repeat(8, axis=2)
    write_video(str(tmp_path / "landscape.mp4"), frames)  # 48 x 64: three crops of 32 differ
    (tmp_path / "val.csv").write_text("landscape.mp4 2\n")
    cfg = tiny_cfg(tmp_path, "TEST.NUM_ENSEMBLE_VIEWS", "3")
    item = build_test_dataset(cfg, "val")[0]
    assert item["views"].shape == (9, 3, 4, 32, 32) and not item["failed"] and item["label"] == 2
    flat = item["views"].flatten(1)
    assert (torch.cdist(flat, flat) + 1e3 * torch.eye(9)).min() > 10.0  # 3 x 3 pairwise distinct views
    assert torch.equal(load_video_views(str(tmp_path / "landscape.mp4"), cfg), item["views"])


# --- bad data ---------------------------------------------------------------------------------


@pytest.fixture()
def broken(kinetics, tmp_path):
    """A train/val list with 4 good videos and a corrupt, an empty, a truncated and a missing file."""
    good = [path for path, _ in _csv(kinetics, "train")][:4]
    (tmp_path / "corrupt.mp4").write_bytes(os.urandom(3000))
    (tmp_path / "empty.mp4").write_bytes(b"")
    with open(good[0], "rb") as f:
        (tmp_path / "truncated.mp4").write_bytes(f.read()[:2000])
    bad = [str(tmp_path / name) for name in ("corrupt.mp4", "empty.mp4", "truncated.mp4", "missing.mp4")]
    lines = "".join(f"{path} {k % 4}\n" for k, path in enumerate(good + bad))
    (tmp_path / "train.csv").write_text(lines)
    (tmp_path / "val.csv").write_text(lines)
    return tmp_path, bad


def test_bad_files_are_replaced_in_training_and_counted(broken):
    root, bad = broken
    loader = build_loader(tiny_cfg(root, "TRAIN.BATCH_SIZE", "8", "DATA.MAX_FAILED_FRACTION", "0.9"), "train")
    batch = next(iter(loader))
    assert batch["video"].shape[0] == 8 and set(bad) <= set(batch["failed"])
    assert not set(batch["index"].tolist()) & {4, 5, 6, 7}
    assert len(loader.failures.decoded) == 4 and loader.failures.failed.keys() == batch["failed"].keys() == set(bad)


def test_bad_files_are_reported_failed_in_test(broken):
    root, bad = broken
    items = list(iter_test_videos(tiny_cfg(root, "DATA.MAX_FAILED_FRACTION", "0.6"), "val"))
    assert [item["failed"] for item in items] == [False] * 4 + [True] * 4
    reasons = [item["error"] for item in items[4:]]
    assert all(path in reason for path, reason in zip(bad, reasons))
    assert "empty file" in reasons[1] and "no such file" in reasons[3]
    assert items[4]["views"] is None and items[0]["views"].shape == (6, 3, 4, 32, 32)


def test_too_many_failures_stop_the_run(broken):
    root, _ = broken
    # judged from the 5th video on (1 / 0.2): 4 good, then 2 of 6 failed > 20%
    with pytest.raises(TooManyFailedVideos, match=r"2 of 6 videos failed to decode \(33.3% > DATA.MAX_FAILED_FRACTION 20.0%\).*check_videos"):
        list(iter_test_videos(tiny_cfg(root, "DATA.MAX_FAILED_FRACTION", "0.2"), "val"))
    with pytest.raises(TooManyFailedVideos):
        list(build_loader(tiny_cfg(root, "TRAIN.BATCH_SIZE", "8", "DATA.MAX_FAILED_FRACTION", "0.1"), "train"))


# --- transforms, labels -----------------------------------------------------------------------


def test_train_transform_uses_one_set_of_parameters_per_clip():
    cfg = get_cfg(overrides=[*TINY, "AUG.ENABLE", "True", "AUG.RE_PROB", "1.0", "AUG.AA_TYPE", "rand-m9-n4-mstd0.5-inc1"])
    frame = torch.randint(0, 256, (1, 3, 44, 56), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    clips = [TrainTransform(cfg)(frame.expand(6, -1, -1, -1)) for _ in range(4)]  # a static video
    for clip in clips:
        assert clip.shape == (3, 6, 32, 32)
        assert torch.equal(clip[:, :1].expand_as(clip), clip)  # every frame got the same crop, ops, erasing
    assert not torch.equal(clips[0], clips[1])
    assert parse_randaugment("rand-m7-n4-mstd0.5-inc1") == {"num_ops": 4, "magnitude": 7, "num_magnitude_bins": 11}
    with pytest.raises(UsageError, match="AUG.AA_TYPE"):
        parse_randaugment("autoaug-v0")


@pytest.mark.parametrize("overrides", [
    [],  # RandomResizedCrop, flip
    ["DATA.TRAIN_JITTER_SCALES_RELATIVE", "[]"],  # short-side jitter, random crop
    ["AUG.COLOR_JITTER", "0.4", "AUG.RE_PROB", "1.0", "AUG.RE_MODE", "const"],  # chunked, erasing
])  # fmt: skip
def test_train_transform_computes_the_torchvision_pipeline_bit_for_bit(overrides):
    cfg = get_cfg(overrides=[*TINY, *overrides])
    transform = TrainTransform(cfg)
    frames = torch.randint(0, 256, (6, 50, 70, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)).permute(0, 3, 1, 2)
    for seed in range(4):
        torch.manual_seed(seed)
        fast, after_fast = transform(frames), torch.rand(1)
        torch.manual_seed(seed)
        whole = transform.transform(tv_tensors.Video(frames)).as_subclass(torch.Tensor).permute(1, 0, 2, 3)
        assert fast.is_contiguous() and torch.equal(fast, whole) and torch.equal(after_fast, torch.rand(1))


@pytest.mark.parametrize("crops,views", [(3, 6), (1, 2)])
def test_views_equal_the_plain_definition_bit_for_bit(tmp_path, crops, views):
    # the definition: every needed frame float, short side resized, normalised, then the clip's crop
    frames = np.random.default_rng(2).integers(0, 256, (40, 12, 16, 3), dtype=np.uint8).repeat(4, axis=1).repeat(4, axis=2)
    write_video(str(tmp_path / "v.mp4"), frames)
    cfg = tiny_cfg(tmp_path, "TEST.NUM_SPATIAL_CROPS", str(crops))
    got = load_video_views(str(tmp_path / "v.mp4"), cfg)
    with open_video(str(tmp_path / "v.mp4")) as reader:
        decoded = torch.from_numpy(reader.get_frames(range(40))).permute(0, 3, 1, 2)
    resized = normalize(short_side_resize(decoded.float() / 255.0, 32 if crops == 3 else 40), cfg.DATA.MEAN, cfg.DATA.STD)
    clips = [[0, 2, 4, 7], [32, 34, 36, 39]]  # 4 x 2 = 8 frames at the start and the end, linspace rounded down
    expected = [uniform_crop(resized[clip], 32, k if crops == 3 else 1).permute(1, 0, 2, 3) for clip in clips for k in range(crops)]
    assert got.shape == (views, 3, 4, 32, 32) and torch.equal(got, torch.stack(expected))


def test_pyav_frames_are_those_of_a_plain_sequential_decode(tmp_path):
    import av

    path = str(tmp_path / "v.mp4")
    write_video(path, np.random.default_rng(3).integers(0, 256, (30, 24, 40, 3), dtype=np.uint8), gop=10)
    with av.open(path) as container:
        plain = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    indices = [29, 3, 3, 12, 0]
    with open_video(path) as reader:
        assert np.array_equal(reader.get_frames(indices), plain[indices])


def test_label_names(kinetics, tmp_path):
    assert load_label_names(tiny_cfg(kinetics))[1] == "moving down"
    names = tmp_path / "names.txt"
    names.write_text("a\nb\n")
    with pytest.raises(UsageError, match="has 2 names but MODEL.NUM_CLASSES is 4"):
        load_label_names(tiny_cfg(kinetics, "DATA.LABEL_NAMES_FILE", str(names)))
    assert load_label_names(tiny_cfg(tmp_path)) is None
    k400 = load_label_names(tiny_cfg(tmp_path, "MODEL.NUM_CLASSES", "400"))  # the shipped list
    assert len(set(k400)) == 400 and k400 == sorted(k400) and k400[:2] == ["abseiling", "air drumming"] and k400[-1] == "zumba"
