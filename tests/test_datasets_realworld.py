"""Data as users have it: broken videos counted once per run, clean stops, frame-folder datasets that give the
same frames as the video, and UCF101 / HMDB51 from their official split files."""

import importlib.util
import json
import logging
import os
import socket

import numpy as np
import pytest
import torch
from PIL import Image

from vidformer import cli
from vidformer.checkpoint import save_checkpoint
from vidformer.config import get_cfg
from vidformer.data import FailureTracker, TooManyFailedVideos, build_loader, iter_test_videos, load_label_names, read_records
from vidformer.data import frames
from vidformer.data import loader as loader_module
from vidformer.data.datasets import ClipDataset
from vidformer.data.synthetic import frame_number_color, read_frame_numbers, write_frame_number_video
from vidformer.engine.build import build_model
from vidformer.engine.quickstart import QUICKSTART_CONFIG
from vidformer.errors import ConfigError, UsageError

TINY = [
    "MODEL.NUM_CLASSES", "4", "DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "2", "DATA.TRAIN_CROP_SIZE", "32",
    "DATA.TEST_CROP_SIZE", "32", "DATA.TRAIN_JITTER_SCALES", "[32, 40]", "DATA.TRAIN_JITTER_SCALES_RELATIVE", "[]",
    "DATA.MEAN", "[0.0, 0.0, 0.0]", "DATA.STD", "[1.0, 1.0, 1.0]", "DATA_LOADER.NUM_WORKERS", "0",
    "TEST.NUM_ENSEMBLE_VIEWS", "3", "TEST.NUM_SPATIAL_CROPS", "3",
]  # fmt: skip


def _check_videos():
    path = os.path.join(os.path.dirname(__file__), "..", "tools", "check_videos.py")
    spec = importlib.util.spec_from_file_location("check_videos", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def tiny_cfg(root, *overrides):
    return get_cfg(overrides=["DATA.PATH_TO_DATA_DIR", str(root), *TINY, *overrides])


@pytest.fixture(scope="module")
def numbered(tmp_path_factory):
    """A 40-frame frame-number video, a folder of the same frames as PNG files and one as JPEG rawframes."""
    root = tmp_path_factory.mktemp("numbered")
    video = write_frame_number_video(str(root / "numbers.mp4"), 40, height=36, width=48)
    for folder, name in (("png", "frame_{:04d}.png"), ("jpg", "img_{:05d}.jpg")):
        os.makedirs(root / folder)
        for i in range(40):
            frame = np.full((36, 48, 3), frame_number_color(i), dtype=np.uint8)
            Image.fromarray(frame).save(root / folder / name.format(i + 1), quality=100)
    return root, video


def _with_lists(tmp_path, lines: dict[str, str]):
    for name, text in lines.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def _frame_list(folder, video_id: str, label: str, count=40) -> str:
    header = "original_vido_id video_id frame_id path labels\n"
    return header + "".join(f"{video_id} 0 {i} {folder}/frame_{i + 1:04d}.png {label}\n" for i in range(count))


# --- broken videos: counted once per distinct video and run ---------------------------------


def test_a_broken_file_counts_once_however_often_it_is_read():
    tracker = FailureTracker(0.05, "train")
    for _ in range(3):  # three epochs, and a retry within the last
        tracker.add([f"good{i}.mp4" for i in range(24)], {"bad.mp4": "cannot decode 'bad.mp4': not a media file"})
        tracker.add([], {"bad.mp4": "cannot decode 'bad.mp4': not a media file"})
        tracker.check()
    assert list(tracker.failed) == ["bad.mp4"] and tracker.read == 25  # 4 %: the run goes on
    tracker.add(["good0.mp4"], {"bad2.mp4": "cannot decode 'bad2.mp4': no video stream"})
    with pytest.raises(TooManyFailedVideos, match=r"^2 of 26 videos failed to decode \(7.7% > DATA.MAX_FAILED_FRACTION 5.0%\)"):
        tracker.check()


@pytest.fixture()
def one_bad_in_25(numbered, tmp_path):
    _, video = numbered
    lines = []
    for i in range(24):  # distinct paths, one encode
        os.symlink(video, tmp_path / f"good{i}.mp4")
        lines.append(f"good{i}.mp4 {i % 4}")
    (tmp_path / "bad.mp4").write_bytes(b"this is no video")
    lines.insert(7, "bad.mp4 1")
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_one_bad_video_in_25_never_stops_training_at_5_percent(one_bad_in_25, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("vidformer"), "propagate", True)  # a run's logger stops propagating
    cfg = tiny_cfg(one_bad_in_25, "TRAIN.BATCH_SIZE", "5", "DATA.MAX_FAILED_FRACTION", "0.05", "DATA_LOADER.NUM_WORKERS", "2")
    loader = build_loader(cfg, "train")
    with caplog.at_level(logging.WARNING, logger="vidformer"):
        for epoch in range(3):
            loader.set_epoch(epoch)
            for batch in loader:
                assert batch["video"].shape[0] == 5
    bad = str(one_bad_in_25 / "bad.mp4")
    assert list(loader.failures.failed) == [bad] and loader.failures.read == 25
    assert sum(bad in r.getMessage() for r in caplog.records) == 1  # logged once, not once per epoch


def test_too_many_failed_videos_stop_in_one_line_without_a_worker_traceback(one_bad_in_25):
    for i in range(3):
        (one_bad_in_25 / f"good{i}.mp4").unlink()  # missing now: 4 of 25 fail
    cfg = tiny_cfg(one_bad_in_25, "TRAIN.BATCH_SIZE", "5", "DATA.MAX_FAILED_FRACTION", "0.05", "DATA_LOADER.NUM_WORKERS", "1")
    with pytest.raises(TooManyFailedVideos) as stop:
        for epoch in range(2):
            loader = build_loader(cfg, "train")
            loader.set_epoch(epoch)
            list(loader)
    message = str(stop.value)
    assert "\n" not in message and "Traceback" not in message and "worker" not in message
    assert "videos failed to decode" in message and "MAX_FAILED_FRACTION" in message


def test_a_sample_with_no_decodable_video_stops_the_run_in_one_line(tmp_path):
    (tmp_path / "train.csv").write_text("".join(f"missing{i}.mp4 0\n" for i in range(12)))
    loader = build_loader(tiny_cfg(tmp_path, "TRAIN.BATCH_SIZE", "2", "DATA_LOADER.NUM_WORKERS", "1"), "train")
    with pytest.raises(TooManyFailedVideos, match=r"^10 videos in a row failed to decode in the train split \(last: cannot decode .*no such file\)") as stop:
        next(iter(loader))
    assert "\n" not in str(stop.value)


def test_a_missing_decoder_is_reported_before_any_video_is_read(one_bad_in_25, monkeypatch):
    monkeypatch.setattr(loader_module, "available_backends", lambda: ["pyav"])
    cfg = tiny_cfg(one_bad_in_25, "DATA.DECODING_BACKEND", "decord")
    with pytest.raises(UsageError, match=r"DATA.DECODING_BACKEND 'decord' is not installed \(pip install decord\)"):
        build_loader(cfg, "train")
    with pytest.raises(UsageError, match="not installed"):
        iter_test_videos(cfg, "train")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = get_cfg(QUICKSTART_CONFIG)
    path = str(tmp_path_factory.mktemp("ckpt") / "tiny.pyth")
    save_checkpoint({"model_state": build_model(cfg).state_dict()}, path)
    return cfg, path


@pytest.mark.parametrize("case", ["all bad", "no such folder"])
def test_vidformer_test_on_unusable_data_ends_in_one_line_exit_2(checkpoint, tmp_path, capsys, case):
    cfg, path = checkpoint
    (tmp_path / "val.csv").write_text("a.mp4 0\nb.mp4 1\n")
    (tmp_path / "a.mp4").write_text("a text file, not a video")
    data = str(tmp_path if case == "all bad" else tmp_path / "nowhere")
    config = tmp_path / "cfg.yaml"
    config.write_text(cfg.dump())
    rc = cli.main(["test", "--config", str(config), "--checkpoint", path, "DATA.PATH_TO_DATA_DIR", data,
                   "OUTPUT_DIR", str(tmp_path / "out"), "DATA_LOADER.NUM_WORKERS", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    before, message = err.split("vidformer test: error: ")
    assert len([line for line in message.splitlines() if line.strip()]) == 1  # (then tqdm's bar is cleared)
    assert ("none of the 2 videos read from the val split decoded" if case == "all bad" else "is not a folder") in message


# --- frame folders: the same frames as the video ----------------------------------------------


def _test_views(cfg) -> list[list[int]]:
    (item,) = list(iter_test_videos(cfg, "val"))
    assert not item["failed"], item["error"]
    return [read_frame_numbers(view) for view in item["views"]]


def _train_clips(cfg, seed=3) -> list[list[int]]:
    dataset = ClipDataset(cfg, read_records(cfg, "train"), train=True, seed=seed)
    clips = []
    for epoch in range(3):
        dataset.epoch = epoch
        clips.append(read_frame_numbers(dataset[0]["video"][0]))
    return clips


@pytest.mark.parametrize("segment", ["False", "True"])
def test_frame_list_and_rawframes_give_the_views_of_the_video(numbered, tmp_path, segment):
    root, video = numbered
    (tmp_path / "video").mkdir()
    _with_lists(tmp_path / "video", {"val.csv": f"{video} 2\n", "train.csv": f"{video} 2\n"})
    frame_list = _frame_list(root / "png", "v1", "2")
    _with_lists(tmp_path, {"val.csv": frame_list, "train.csv": frame_list})
    (tmp_path / "raw").mkdir()
    _with_lists(tmp_path / "raw", {"val.csv": f"{root / 'jpg'} 40 2\n", "train.csv": f"{root / 'jpg'} 40 2\n"})
    common = ["DATA.SEGMENT_SAMPLING", segment]
    from_video = tiny_cfg(tmp_path / "video", *common)
    from_list = tiny_cfg(tmp_path, "DATA.DATASET", "framelist", *common)
    from_raw = tiny_cfg(tmp_path / "raw", "DATA.DATASET", "rawframes", *common)
    views = _test_views(from_video)
    assert views[0] != views[-1] or segment == "True"  # the clips differ: the check has teeth
    assert _test_views(from_list) == views and _test_views(from_raw) == views
    clips = _train_clips(from_video)
    assert _train_clips(from_list) == clips and _train_clips(from_raw) == clips
    (record,) = read_records(from_list, "val")
    assert record.path == str(root / "png") and record.frames.template == "frame_{:04d}.png"  # not 40 path strings


def test_frame_list_reads_only_the_frames_it_needs(numbered, tmp_path, monkeypatch):
    root, _ = numbered
    _with_lists(tmp_path, {"val.csv": _frame_list(root / "png", "v1", "0")})
    opened = []
    real = frames.decode_image
    monkeypatch.setattr(frames, "decode_image", lambda path, **kw: opened.append(path) or real(path, **kw))
    _test_views(tiny_cfg(tmp_path, "DATA.DATASET", "framelist"))
    assert 0 < len(opened) == len(set(opened)) <= 3 * 4  # 3 clips x 4 frames at most, each once


def test_ssv2_frame_lists_take_their_labels_from_the_json(numbered, tmp_path):
    root, _ = numbered
    (tmp_path / "something-something-v2-labels.json").write_text(json.dumps({"Pushing something": "0", "Pulling something": "3"}))
    (tmp_path / "something-something-v2-validation.json").write_text(json.dumps([{"id": "77", "template": "Pulling [something]"}]))
    _with_lists(tmp_path, {"val.csv": _frame_list(root / "png", "77", '""')})
    (record,) = read_records(tiny_cfg(tmp_path, "DATA.DATASET", "framelist"), "test")  # no test.csv: val.csv
    assert record.label == 3 and record.frames.count == 40
    names = load_label_names(tiny_cfg(tmp_path, "DATA.DATASET", "framelist", "MODEL.NUM_CLASSES", "2"))
    assert names == ["Pushing something", "Pulling something"]


def test_frame_list_mistakes_are_named(numbered, tmp_path):
    root, _ = numbered
    cfg = tiny_cfg(tmp_path, "DATA.DATASET", "framelist")
    _with_lists(tmp_path, {"val.csv": _frame_list(root / "png", "v1", '"1,2"')})
    with pytest.raises(UsageError, match=r"val.csv:2: video v1 has labels \[1, 2\], several classes"):
        read_records(cfg, "val")
    _with_lists(tmp_path, {"val.csv": _frame_list(root / "png", "v1", '""')})
    with pytest.raises(UsageError, match="video v1 has no labels, and there is no something-something-v2-labels.json"):
        read_records(cfg, "val")
    _with_lists(tmp_path, {"val.csv": "video path label\n"})
    with pytest.raises(UsageError, match="val.csv:1: expected the frame-list header 'original_vido_id video_id frame_id path labels'"):
        read_records(cfg, "val")


def test_rawframes_with_the_wrong_start_index_names_the_missing_frame(numbered, tmp_path):
    root, _ = numbered
    _with_lists(tmp_path, {"val.csv": f"{root / 'jpg'} 40 1\n"})
    # mmaction2's frequent off-by-one: frames numbered from 1, list read from 0
    cfg = tiny_cfg(tmp_path, "DATA.DATASET", "rawframes", "DATA.FRAME_START_INDEX", "0", "DATA.MAX_FAILED_FRACTION", "1.0")
    with pytest.raises(TooManyFailedVideos, match=r"frame 0 '.*img_00000.jpg' does not exist"):
        list(iter_test_videos(cfg, "val"))
    with pytest.raises(ConfigError, match="DATA.FRAME_TEMPLATE 'img.jpg': it has no '{}' field"):
        read_records(tiny_cfg(tmp_path, "DATA.DATASET", "rawframes", "DATA.FRAME_TEMPLATE", "img.jpg"), "val")
    _with_lists(tmp_path, {"val.csv": f"{root / 'jpg'} 0 40 1\n"})
    with pytest.raises(UsageError, match=r"val.csv:1: cannot read .*'<frame folder> <num_frames> <label>'"):
        read_records(tiny_cfg(tmp_path, "DATA.DATASET", "rawframes"), "val")


def test_check_videos_checks_any_layout_from_its_config(numbered, tmp_path, capsys):
    root, _ = numbered
    _with_lists(tmp_path, {"train.csv": f"{root / 'jpg'} 40 1\n{root / 'gone'} 40 2\n{root / 'jpg'} 41 3\n"})
    config = tmp_path / "cfg.yaml"
    config.write_text(tiny_cfg(tmp_path, "DATA.DATASET", "rawframes").dump())
    report = tmp_path / "failed.txt"
    assert _check_videos()(["--config", str(config), "--failed", str(report), "--workers", "1"]) == 1
    failed = [line.split("\t") for line in report.read_text().splitlines()]
    assert [name for name, _ in failed] == [str(root / "gone"), str(root / "jpg")]
    assert "frame 0" in failed[0][1] and "img_00041.jpg' does not exist" in failed[1][1]  # the folder has 40, not 41
    assert "1 of 3 videos of the train split decode" in capsys.readouterr().out


# --- UCF101 and HMDB51 from their official split files ------------------------------------------


def test_ucf101_official_splits(tmp_path):
    splits = tmp_path / "ucfTrainTestlist"
    splits.mkdir()
    crlf = lambda lines: "".join(line + "\r\n" for line in lines)  # noqa: E731  (the official files' endings)
    (splits / "classInd.txt").write_text(crlf(["1 ApplyEyeMakeup", "2 HandstandPushups", "3 YoYo"]))
    (splits / "trainlist01.txt").write_text(crlf(["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1",
                                                  "HandstandPushups/v_HandStandPushups_g08_c01.avi 2"]))
    (splits / "testlist01.txt").write_text(crlf(["YoYo/v_YoYo_g01_c01.avi", "handstandPushups/v_HandStandPushups_g01_c01.avi"]))
    (splits / "testlist02.txt").write_text(crlf(["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"]))
    cfg = tiny_cfg(tmp_path, "DATA.DATASET", "ucf101", "MODEL.NUM_CLASSES", "3", "DATA.PATH_PREFIX", "/data/UCF-101")
    train = read_records(cfg, "train")
    assert [(r.path, r.label) for r in train] == [("/data/UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0),
                                                  ("/data/UCF-101/HandstandPushups/v_HandStandPushups_g08_c01.avi", 1)]
    assert [r.label for r in read_records(cfg, "val")] == [2, 1] == [r.label for r in read_records(cfg, "test")]
    split2 = tiny_cfg(tmp_path, "DATA.DATASET", "ucf101", "MODEL.NUM_CLASSES", "3", "DATA.SPLIT_ID", "2")
    assert [r.label for r in read_records(split2, "test")] == [0]
    assert load_label_names(cfg) == ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
    (splits / "trainlist01.txt").write_text(crlf(["YoYo/v_YoYo_g08_c01.avi 1"]))
    with pytest.raises(UsageError, match=r"trainlist01.txt:1: cannot read 'YoYo/v_YoYo_g08_c01.avi 1'"):
        read_records(cfg, "train")
    with pytest.raises(ConfigError, match="DATA.SPLIT_ID is 4; expected one of 1, 2, 3"):
        tiny_cfg(tmp_path, "DATA.SPLIT_ID", "4")


def test_hmdb51_official_splits(tmp_path):
    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    for name, lines in {"wave": ["wave_a.avi 1", "wave_b.avi 2", "wave_c.avi 0"], "brush_hair": ["hair_a.avi 2", "hair_b.avi 1"]}.items():
        (splits / f"{name}_test_split1.txt").write_text("".join(line + " \n" for line in lines))
        (splits / f"{name}_test_split2.txt").write_text(f"{lines[0].split()[0]} 2 \n")
    cfg = tiny_cfg(tmp_path, "DATA.DATASET", "hmdb51", "MODEL.NUM_CLASSES", "2")
    root = str(tmp_path)
    assert [(r.path, r.label) for r in read_records(cfg, "train")] == [(f"{root}/brush_hair/hair_b.avi", 0), (f"{root}/wave/wave_a.avi", 1)]
    assert [(r.path, r.label) for r in read_records(cfg, "test")] == [(f"{root}/brush_hair/hair_a.avi", 0), (f"{root}/wave/wave_b.avi", 1)]
    split2 = tiny_cfg(tmp_path, "DATA.DATASET", "hmdb51", "MODEL.NUM_CLASSES", "2", "DATA.SPLIT_ID", "2")
    assert [os.path.basename(r.path) for r in read_records(split2, "val")] == ["hair_a.avi", "wave_a.avi"]
    assert load_label_names(cfg) == ["brush_hair", "wave"]
    with pytest.raises(UsageError, match="hmdb51 layout needs '<class>_test_split3.txt' files"):
        read_records(tiny_cfg(tmp_path, "DATA.DATASET", "hmdb51", "MODEL.NUM_CLASSES", "2", "DATA.SPLIT_ID", "3"), "train")


def _tracker_worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        tracker = FailureTracker(0.1, "train")
        steps = [  # rank 0 alone would stop at step 1 (2 of 12 = 16.7 %); together: 2 of 22 = 9.1 %
            ([f"r0_{i}.mp4" for i in range(10)], {"a.mp4": "a", "b.mp4": "b"}) if rank == 0 else
            ([f"r1_{i}.mp4" for i in range(10)], {"a.mp4": "a"}),
            ([], {"c.mp4": "c"} if rank == 1 else {}),
        ]
        outcome = "ran on"
        for step, (decoded, failed) in enumerate(steps, start=1):
            tracker.add(decoded, failed)
            try:
                tracker.check()
            except TooManyFailedVideos as e:
                outcome = f"step {step}: {str(e).split(' (')[0]}"
                break
        (out_dir / f"rank{rank}.txt").write_text(outcome)
    finally:
        torch.distributed.destroy_process_group()


def test_under_several_processes_the_share_is_global_and_every_rank_stops_at_the_same_step(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: the children need nothing the parent has not imported (no CUDA here), and start in no time
    torch.multiprocessing.start_processes(_tracker_worker, args=(port, tmp_path), nprocs=2, start_method="fork")
    assert (tmp_path / "rank0.txt").read_text() == (tmp_path / "rank1.txt").read_text() == "step 2: 3 of 23 videos failed to decode"
