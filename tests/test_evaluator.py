"""Multi-view evaluation: view aggregation by hand, metrics files, failed videos, the PySlowFast view
rule on frame-number videos, and two-process gloo evaluation giving one process's metrics."""

import json
import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from tests.toy import ToyVideo
from vidformer.checkpoint import save_checkpoint
from vidformer.config import get_cfg
from vidformer.data import iter_test_videos, make_synthetic_dataset
from vidformer.data.synthetic import read_frame_numbers, write_frame_number_video
from vidformer.engine import distributed as du
from vidformer.engine.evaluator import aggregate_views, describe_views, run_test, score_videos

K = 4
WEIGHT = torch.tensor([1.0, -1.0, 2.0, 0.5])


class Affine(nn.Module):
    """logits = mean(view) * WEIGHT: a model whose output is a known function of its input."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the evaluator a device to read

    def forward(self, x):
        return x.mean(dim=(1, 2, 3, 4))[:, None] * WEIGHT + self.anchor


def _video(values, label, index, path=None):
    views = torch.stack([torch.full((3, 2, 4, 4), v) for v in values])  # (V, C, T, H, W)
    return {"views": views, "label": label, "index": index, "path": path or f"v{index}.mp4", "failed": False, "error": ""}


def test_aggregation_equals_hand_computation():
    values = [0.5, -1.0, 2.0]
    logits = torch.tensor(values)[:, None] * WEIGHT  # (V, K)
    probs = [[math.exp(z) / sum(math.exp(y) for y in row) for z in row] for row in logits.tolist()]
    by_hand = {
        "sum": [sum(p[k] for p in probs) for k in range(K)],
        "logits": [sum(v * w for v in values) for w in WEIGHT.tolist()],
        "max": [max(p[k] for p in probs) for k in range(K)],
    }
    for method, expected in by_hand.items():
        got = score_videos(Affine(), [_video(values, 0, 0)], method=method, chunk=2).scores[0]
        assert got.tolist() == pytest.approx(expected, rel=1e-6), method
    # summed probabilities pick class 2 (view 3 dominates); "max" agrees; summed logits too (sum of values > 0)
    assert aggregate_views(logits, "sum").argmax() == 2 and aggregate_views(logits, "logits").argmax() == 2


def test_views_are_described_like_the_papers():
    assert describe_views(5, 1) == "5 clips x 1 crop" and describe_views(1, 3) == "1 clip x 3 crops"


def _cfg(tmp_path, data_dir="", *overrides):
    return get_cfg(None, [
        "OUTPUT_DIR", str(tmp_path), "DATA.PATH_TO_DATA_DIR", str(data_dir), "MODEL.MODEL_NAME", "toy_video",
        "MODEL.NUM_CLASSES", str(K), "DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "2", "DATA.TRAIN_CROP_SIZE", "32",
        "DATA.TEST_CROP_SIZE", "32", "DATA.TRAIN_JITTER_SCALES", "[32, 32]", "TEST.NUM_ENSEMBLE_VIEWS", "2",
        "TEST.NUM_SPATIAL_CROPS", "3", "DATA_LOADER.NUM_WORKERS", "0", "DATA.MAX_FAILED_FRACTION", "0.5", *overrides])


def test_metrics_files_and_failed_videos_left_out(tmp_path):
    # labels 0, 1, 2 and the model's pick per video: view mean > 0 -> class 2, < 0 -> class 1
    videos = [_video([1.0, 2.0], 2, 0), _video([-1.0, -3.0], 1, 1), _video([0.5, 0.5], 0, 2),
              {"views": None, "label": 3, "index": 3, "path": "broken.mp4", "failed": True, "error": "moov atom not found"}]
    cfg = _cfg(tmp_path, "", "TEST.SAVE_RESULTS", "True", "TEST.NUM_ENSEMBLE_VIEWS", "1", "TEST.NUM_SPATIAL_CROPS", "2")
    metrics = run_test(cfg, model=Affine(), iter_videos=lambda cfg, split, rank, world_size: iter(videos))
    on_disk = json.loads((tmp_path / "test_metrics.json").read_text())
    assert on_disk == metrics
    assert {"top1", "top5", "mean_class_acc", "num_videos", "num_views", "views", "gflops_per_view",
            "failed_videos"} <= set(metrics)
    assert metrics["num_videos"] == 3 and metrics["failed_videos"] == ["broken.mp4"]
    assert metrics["top1"] == pytest.approx(200 / 3)  # 2 of 3 decoded videos; the broken one is not counted
    assert metrics["top5"] == 100.0
    assert metrics["mean_class_acc"] == pytest.approx(200 / 3)  # classes 0, 1, 2 present: 0 %, 100 %, 100 %
    assert metrics["views"] == "1 clip x 2 crops" and metrics["num_views"] == 2
    assert metrics["view_rule"].startswith("view k = temporal clip k // 2, spatial crop k % 2")
    rows = (tmp_path / "test_per_class.csv").read_text().splitlines()
    assert rows[0] == "class_index,class_name,num_videos,top1,top5" and rows[2] == "1,1,1,100.00,100.00"
    assert (tmp_path / "test_confusion.png").stat().st_size > 1000
    saved = torch.load(tmp_path / "test_scores.pt")
    assert saved["index"].tolist() == [0, 1, 2] and saved["scores"].shape == (3, K)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic"))
    make_synthetic_dataset(root, num_classes=K, train_per_class=1, val_per_class=1, num_frames=16, size=32, seed=0)
    with open(os.path.join(root, "broken.mp4"), "wb") as f:
        f.write(b"not a video at all")
    with open(os.path.join(root, "val.csv"), "a") as f:
        f.write("broken.mp4 3\n")  # 5 videos: an odd number, one of them corrupt
    return root


def _checkpoint(tmp_path) -> str:
    torch.manual_seed(0)
    path = str(tmp_path / "toy.pyth")
    save_checkpoint({"model_state": ToyVideo(num_classes=K, num_frames=4, img_size=32).state_dict()}, path)
    return path


def test_corrupt_video_listed_and_not_in_denominator(tmp_path, dataset):
    cfg = _cfg(tmp_path, dataset, "TEST.CHECKPOINT_FILE_PATH", _checkpoint(tmp_path))
    metrics = run_test(cfg)
    assert metrics["num_videos"] == 4 and len(metrics["failed_videos"]) == 1
    assert metrics["failed_videos"][0].endswith("broken.mp4")
    assert metrics["top1"] in (0.0, 25.0, 50.0, 75.0, 100.0)  # a multiple of 1/4: four videos in the denominator
    assert metrics["gflops_per_view"] > 0 and metrics["gflops_per_video"] == pytest.approx(6 * metrics["gflops_per_view"])


def test_views_follow_the_pyslowfast_rule(tmp_path):
    path = write_frame_number_video(str(tmp_path / "numbers.mp4"), 60, height=32, width=48)
    cfg = _cfg(tmp_path, str(tmp_path), "TEST.NUM_ENSEMBLE_VIEWS", "3", "DATA.MEAN", "[0.0, 0.0, 0.0]",
               "DATA.STD", "[1.0, 1.0, 1.0]")
    with open(tmp_path / "val.csv", "w") as f:
        f.write(f"{path} 0\n")
    (item,) = list(iter_test_videos(cfg, "val"))
    assert item["views"].shape == (9, 3, 4, 32, 32)
    # PySlowFast: clip length 4 x 2 = 8 frames at 30 fps; delta = 60 - 8 = 52; clip k starts at
    # k * floor(52 / 2) = 26k; frames floor(linspace(start, start + 7, 4)); view k = clip k // 3, crop k % 3
    for k in range(9):
        start = (k // 3) * 26
        expected = [math.floor(start + i * 7 / 3) for i in range(4)]
        assert read_frame_numbers(item["views"][k]) == expected, k


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _eval_worker(rank, world_size, port, cfg_path):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    env = du.init_distributed(du.DistEnv(rank, world_size, rank, "torchrun"))
    try:
        run_test(get_cfg(cfg_path), env=env)
    finally:
        du.shutdown()


@pytest.mark.slow
def test_two_process_evaluation_matches_one_process(tmp_path, dataset):
    ckpt = _checkpoint(tmp_path)
    one = run_test(_cfg(tmp_path / "one", dataset, "TEST.CHECKPOINT_FILE_PATH", ckpt))
    cfg = _cfg(tmp_path / "two", dataset, "TEST.CHECKPOINT_FILE_PATH", ckpt)
    os.makedirs(tmp_path / "two")
    (tmp_path / "two" / "cfg.yaml").write_text(cfg.dump())
    mp.spawn(_eval_worker, args=(2, _free_port(), str(tmp_path / "two" / "cfg.yaml")), nprocs=2, join=True)
    two = json.loads((tmp_path / "two" / "test_metrics.json").read_text())
    assert two == one and two["num_videos"] == 4
