"""The command line end to end on real (synthetic) videos: `vidformer train`, `test`, `demo` and
`quickstart`, with a tiny model so it runs in seconds."""

import json
import os

import pytest
import torch

from vidformer.cli import main
from vidformer.data import make_synthetic_dataset
from vidformer.engine.trainer import latest_checkpoint

TINY = ["MODEL.MODEL_NAME", "toy_video", "MODEL.OVERRIDES", "{}", "DATA.NUM_FRAMES", "4", "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_CROP_SIZE", "32",
        "DATA.TRAIN_JITTER_SCALES", "[32, 36]", "TRAIN.BATCH_SIZE", "4", "SOLVER.MAX_EPOCH", "1",
        "TEST.NUM_ENSEMBLE_VIEWS", "2", "DATA_LOADER.NUM_WORKERS", "0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("motion"))
    return make_synthetic_dataset(root, num_classes=4, train_per_class=2, val_per_class=1, num_frames=16, size=32)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run"))
    code = main(["train", "--config", "configs/quickstart.yaml", "DATA.PATH_TO_DATA_DIR", data, "OUTPUT_DIR", out, *TINY])
    assert code == 0
    return out


@pytest.mark.slow
def test_train_verb_writes_checkpoint_logs_and_test_metrics(trained):
    assert latest_checkpoint(trained).endswith("checkpoint_epoch_00001.pyth")
    assert os.path.isfile(os.path.join(trained, "log.jsonl")) and os.path.isfile(os.path.join(trained, "log.txt"))
    metrics = json.load(open(os.path.join(trained, "test_metrics.json")))
    assert metrics["num_videos"] == 4 and metrics["views"] == "2 clips x 1 crop" and metrics["failed_videos"] == []


@pytest.mark.slow
def test_test_verb_on_the_checkpoint_gives_the_training_runs_numbers(trained, tmp_path, capsys):
    before = json.load(open(os.path.join(trained, "test_metrics.json")))
    cfg = os.path.join(trained, "checkpoints", "config.yaml")
    code = main(["test", "--config", cfg, "--checkpoint", latest_checkpoint(trained), "--save-scores",
                 "OUTPUT_DIR", str(tmp_path)])
    assert code == 0
    after = json.load(open(tmp_path / "test_metrics.json"))
    assert (after["top1"], after["top5"], after["num_videos"]) == (before["top1"], before["top5"], before["num_videos"])
    assert (tmp_path / "test_scores.pt").is_file()
    assert "test_metrics.json" in capsys.readouterr().out


def test_test_verb_compiles_and_gives_eagers_view_logits(data, tmp_path):
    """`vidformer test --compile` (MODEL.COMPILE; the aot_eager backend keeps it quick): 3 views in chunks of 2
    compile two graphs (batch 2 and 1), once for all the videos. (Compiled training: tests/test_trainer.py.)"""
    from torch._dynamo.utils import counters

    out = str(tmp_path / "run")
    tiny = [*TINY, "DATA.PATH_TO_DATA_DIR", data, "TEST.NUM_ENSEMBLE_VIEWS", "3", "TEST.BATCH_SIZE", "2"]
    compiled = ["--compile", "MODEL.COMPILE_BACKEND", "aot_eager"]
    assert main(["train", "--config", "configs/quickstart.yaml", "OUTPUT_DIR", out, "TEST.ENABLE", "False", *tiny]) == 0
    scores = {}
    for name, flags in (("eager", []), ("compiled", compiled)):
        graphs = counters["stats"]["unique_graphs"]
        assert main(["test", "--config", "configs/quickstart.yaml", "--checkpoint", latest_checkpoint(out),
                     "--save-scores", "OUTPUT_DIR", str(tmp_path / name), *tiny, *flags]) == 0
        assert counters["stats"]["unique_graphs"] - graphs == (2 if flags else 0)
        scores[name] = torch.load(tmp_path / name / "test_scores.pt", weights_only=True)
    assert scores["compiled"]["view_logits"].shape == (4, 3, 4)
    torch.testing.assert_close(scores["compiled"]["view_logits"], scores["eager"]["view_logits"], atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_demo_prints_names_probabilities_and_windows(trained, data, capsys):
    video = os.path.join(data, "videos", "val", "class2_000.mp4")
    code = main(["demo", video, "--checkpoint", latest_checkpoint(trained), "--topk", "3", "--windows", "3", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    names = open(os.path.join(data, "classes.txt")).read().splitlines()
    assert [p["name"] for p in result["top"]] == [names[p["label"]] for p in result["top"]]
    probs = [p["probability"] for p in result["top"]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    starts = [w["start_s"] for w in result["windows"]]
    assert len(starts) == 3 and starts[0] == 0.0 and starts == sorted(starts) and starts[-1] > 0


def test_usage_errors_exit_with_2(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "missing.mp4"), "--config", "configs/quickstart.yaml"]) == 2
    assert main(["test", "--config", "configs/quickstart.yaml", "OUTPUT_DIR", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "TEST.CHECKPOINT_FILE_PATH is empty" in err


@pytest.mark.slow
def test_quickstart_runs_video_and_one_frame_models(tmp_path, capsys):
    code = main(["quickstart", "--output", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
                 "--train-per-class", "2", "--val-per-class", "1", *TINY])
    assert code == 0
    out = capsys.readouterr().out
    assert "video model (toy_video)" in out and "same model on one frame" in out
    for name, frames in (("video", 4), ("image", 1)):
        assert json.load(open(tmp_path / "out" / name / "test_metrics.json"))["num_videos"] == 4
        config = (tmp_path / "out" / name / "checkpoints" / "config.yaml").read_text()
        assert f"NUM_FRAMES: {frames}\n" in config
    assert os.path.isfile(tmp_path / "cache" / "synthetic_motion_4x2+1" / "val.csv")
