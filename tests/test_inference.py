"""Inference and deployment: load_recognizer (predict, features, tensors, still images, partial weights),
`vidformer extract`, `vidformer export` (.pt2 for every family, .onnx when installed) and
forward_intermediates of every family, on the quickstart model at its tiny size and tiny family configs."""

import csv
import importlib.util
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import vidformer
from vidformer.checkpoint import convert_checkpoint, save_checkpoint
from vidformer.cli import main
from vidformer.config import get_cfg
from vidformer.data import make_synthetic_dataset
from vidformer.engine.bench import QUICK_OVERRIDES
from vidformer.engine import distributed as du
from vidformer.engine.build import build_model
from vidformer.engine.evaluator import aggregate_views
from vidformer.engine.export import export_model
from vidformer.engine.extract import run_extract
from vidformer.errors import UsageError
from vidformer.models import create_model
from tests import toy  # noqa: F401  registers toy_video

FAMILIES = ("mvitv2_s", "uniformer_s", "poolformer_s12", "cvt_13", "dvt_deit_s")
ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("motion"))
    return make_synthetic_dataset(root, num_classes=4, train_per_class=1, val_per_class=1, num_frames=16, size=32)


def _quickstart_checkpoint(folder, data: str, frames: int) -> tuple[str, str]:
    """A checkpoint in the trainer's format (weights + the config it carries) of the quickstart model."""
    cfg = get_cfg("configs/quickstart.yaml", ["DATA.PATH_TO_DATA_DIR", data, "OUTPUT_DIR", str(folder),
                                              "DATA.NUM_FRAMES", str(frames), "TEST.NUM_ENSEMBLE_VIEWS", "2",
                                              "DATA_LOADER.NUM_WORKERS", "0"])
    torch.manual_seed(frames)
    model = build_model(cfg)
    path = os.path.join(folder, f"checkpoint_T{frames}.pyth")
    save_checkpoint({"model_state": model.state_dict(), "cfg": cfg.dump(), "model_name": cfg.MODEL.MODEL_NAME,
                     "epoch": 1}, path)
    config = os.path.join(folder, f"config_T{frames}.yaml")
    with open(config, "w") as f:
        f.write(cfg.dump())
    return path, config


@pytest.fixture(scope="module")
def video_ckpt(data, tmp_path_factory):
    return _quickstart_checkpoint(tmp_path_factory.mktemp("video_ckpt"), data, 8)


@pytest.fixture(scope="module")
def recognizer(video_ckpt):
    return vidformer.load_recognizer(video_ckpt[0], "cpu")


def _video(data: str, i: int = 2) -> str:
    return os.path.join(data, "videos", "val", f"class{i}_000.mp4")


def _still(tmp_path) -> str:
    path = str(tmp_path / "x.jpg")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
    return path


def test_predict_is_the_models_view_average_sorted_and_named(recognizer, data):
    names = open(os.path.join(data, "classes.txt")).read().splitlines()
    assert recognizer.class_names == names and recognizer.device.type == "cpu"
    top = recognizer.predict(_video(data), topk=3)
    probs = [p for _, p in top]
    assert len(top) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    views = recognizer.views(_video(data))
    assert views.shape == (2, 3, 8, 32, 32)  # 2 clips x 1 crop of the checkpoint's config
    with torch.no_grad():
        scores = aggregate_views(recognizer.model(views), "sum")
    expected = scores / scores.sum()
    assert top[0] == (names[int(expected.argmax())], pytest.approx(float(expected.max()), abs=1e-6))


def test_features_and_tensor_input(recognizer, data):
    views = recognizer.views(_video(data))
    feats = recognizer.features(_video(data))
    with torch.no_grad():
        expected = recognizer.model.forward_features(views).mean(0)
    assert feats.shape == (64,) and torch.allclose(feats, expected, atol=1e-6)
    assert recognizer.predict(views) == recognizer.predict(_video(data))  # (V, C, T, H, W) views
    assert recognizer.view_logits(views[0]).shape == (1, 4)  # one (C, T, H, W) clip
    with pytest.raises(UsageError, match="path, a"):
        recognizer.predict(views[0, 0])


def test_still_image_is_refused_by_a_video_model_and_taken_by_an_image_model(recognizer, data, tmp_path, capsys):
    image = _still(tmp_path)
    with pytest.raises(UsageError, match="'.*x.jpg' has 1 frame; this model needs T=8 frames"):
        recognizer.predict(image)
    assert main(["demo", image, "--checkpoint", recognizer.report.source, "--device", "cpu"]) == 2
    assert "has 1 frame" in capsys.readouterr().err
    image_ckpt, _ = _quickstart_checkpoint(tmp_path, data, 1)
    still = vidformer.load_recognizer(image_ckpt, "cpu")
    assert still.views(image).shape == (1, 3, 1, 32, 32)  # one view: every temporal clip of a still is the same
    assert len(still.predict(image, topk=2)) == 2
    assert main(["demo", image, "--checkpoint", image_ckpt, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["views"] == "1 clip x 1 crop"


def test_weights_that_fill_little_of_the_model_are_refused_unless_allowed(video_ckpt, tmp_path):
    ckpt = torch.load(video_ckpt[0], weights_only=True)
    few = {k: v for k, v in list(ckpt["model_state"].items())[:5]}
    path = str(tmp_path / "partial.pyth")
    save_checkpoint({"model_state": few, "cfg": ckpt["cfg"]}, path)
    with pytest.raises(UsageError, match=r"does not fit the model: 5 of \d+ model tensors loaded.*allow_partial=True"):
        vidformer.load_recognizer(path, "cpu")
    assert len(vidformer.load_recognizer(path, "cpu", allow_partial=True).predict(torch.zeros(3, 8, 32, 32))) == 4


def test_a_converted_checkpoint_brings_its_own_test_config(tmp_path, data):
    torch.manual_seed(0)
    src = str(tmp_path / "src.pth")
    torch.save(create_model("toy_video", num_classes=4, num_frames=4, img_size=32).state_dict(), src)
    dst = str(tmp_path / "converted.pth")
    convert_checkpoint(src, dst, "toy_video", num_frames=4, img_size=32)
    r = vidformer.load_recognizer(dst, "cpu")
    assert (r.cfg.MODEL.MODEL_NAME, r.cfg.MODEL.NUM_CLASSES, r.cfg.DATA.NUM_FRAMES) == ("toy_video", 4, 4)
    assert r.views(_video(data)).shape[2:] == (4, 32, 32) and len(r.predict(_video(data), topk=2)) == 2
    with pytest.raises(UsageError, match="carries no config"):
        vidformer.load_recognizer(src, "cpu")


@pytest.mark.slow
def test_extract_writes_every_video_once_in_split_order_and_lists_failures(recognizer, video_ckpt, data, tmp_path):
    rows = open(os.path.join(data, "val.csv")).read().splitlines()
    broken = os.path.join(data, "videos", "val", "broken.mp4")
    with open(broken, "wb") as f:
        f.write(b"not a video")
    split = tmp_path / "split"
    split.mkdir()
    (split / "test.csv").write_text("\n".join(rows[:2] + ["videos/val/broken.mp4 1"] + rows[2:]) + "\n")
    opts = ["TEST.SPLIT", "test", "DATA.PATH_PREFIX", data, "DATA.PATH_TO_DATA_DIR", str(split),
            "DATA.MAX_FAILED_FRACTION", "0.5"]
    out = tmp_path / "feats"
    assert main(["extract", "--config", video_ckpt[1], "--checkpoint", video_ckpt[0], "--output", str(out), *opts]) == 0
    feats = np.load(out / "features.npy")
    listed = list(csv.reader(open(out / "videos.csv")))
    assert listed[0] == ["path", "label"] and feats.shape == (4, 64) and feats.dtype == np.float32
    assert [os.path.basename(p) for p, _ in listed[1:]] == [os.path.basename(r.split()[0]) for r in rows]
    assert [int(label) for _, label in listed[1:]] == [0, 1, 2, 3]
    np.testing.assert_allclose(feats[2], recognizer.features(_video(data, 2)).numpy(), atol=1e-5)
    summary = json.load(open(out / "extract.json"))
    assert [os.path.basename(p) for p in summary["failed_videos"]] == ["broken.mp4"] and summary["num_videos"] == 4
    per_view = tmp_path / "per_view"
    assert main(["extract", "--config", video_ckpt[1], "--checkpoint", video_ckpt[0], "--output", str(per_view),
                 "--per-view", *opts]) == 0
    views = np.load(per_view / "features.npy")
    assert views.shape == (4, 2, 64)
    np.testing.assert_allclose(views.mean(1), feats, atol=1e-6)


@pytest.mark.slow
def test_two_ranks_extract_every_video_once_in_order(video_ckpt, tmp_path, monkeypatch):
    """Each rank extracts videos rank, rank + 2, ...; the gather (here handed rank 1's part by hand, as
    torch.distributed would) puts them back in the split's order on rank 0, which alone writes."""
    ckpt, config = video_ckpt
    run_extract(get_cfg(config), ckpt, str(tmp_path / "one"))
    parts = []
    monkeypatch.setattr(du, "gather_objects", lambda obj: parts.append(obj) or [obj])
    run_extract(get_cfg(config), ckpt, str(tmp_path / "rank1"), env=du.DistEnv(1, 2))
    assert parts[0].index == [1, 3] and not (tmp_path / "rank1" / "features.npy").exists()
    monkeypatch.setattr(du, "gather_objects", lambda obj: [obj, parts[0]])
    two = run_extract(get_cfg(config), ckpt, str(tmp_path / "two"), env=du.DistEnv(0, 2))
    assert two["num_videos"] == 4
    assert (tmp_path / "two" / "videos.csv").read_text() == (tmp_path / "one" / "videos.csv").read_text()
    np.testing.assert_allclose(np.load(tmp_path / "two" / "features.npy"), np.load(tmp_path / "one" / "features.npy"),
                               atol=1e-6)


def _tiny(name: str, frames: int = 4, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=5, num_frames=frames, img_size=32, drop_path_rate=0.0, head_dropout=0.0,
                        **dict(QUICK_OVERRIDES[name.split("_")[0]], **extra)).eval()


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in FAMILIES if n != "uniformer_s"])  # UniFormer: the export verb's test
def test_every_family_exports_to_pt2_with_the_models_logits(name, tmp_path):
    # PoolFormer's pooling takes another branch on grids shorter than its window: 6 frames pool 3 in time
    frames = 6 if name == "poolformer_s12" else 4
    model = _tiny(name, frames, **({"depth": 1} if name == "dvt_deit_s" else {}))
    out = str(tmp_path / f"{name}.pt2")
    summary = export_model(model, out, num_frames=frames, img_size=32)
    assert summary["max_abs_diff"] <= 1e-4
    assert summary["dynamic"] == (["batch", "frames"] if name in ("uniformer_s", "poolformer_s12") else ["batch"])
    program = torch.export.load(out).module()
    x = torch.randn(3, 3, 2 * frames if "frames" in summary["dynamic"] else frames, 32, 32)
    with torch.no_grad():
        assert (program(x) - model(x)).abs().max() <= 1e-4


@pytest.mark.slow
def test_export_verb_on_a_checkpoint(recognizer, video_ckpt, tmp_path, capsys):
    out = tmp_path / "model.pt2"
    assert main(["export", video_ckpt[0], str(out), "--num-frames", "4"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["input"] == ["batch", 3, "frames", 32, 32] and summary["max_abs_diff"] <= 1e-4
    views = recognizer.views(_video(recognizer.cfg.DATA.PATH_TO_DATA_DIR))  # 8 frames: twice the exported length
    with torch.no_grad():
        assert (torch.export.load(str(out)).module()(views) - recognizer.model(views)).abs().max() <= 1e-4
    assert main(["export", video_ckpt[0], str(tmp_path / "model.tflite")]) == 2
    assert "expected one of .pt2, .onnx" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not ONNX, reason="onnx, onnxscript and onnxruntime (pip install 'vidformer[export]')")
def test_onnx_export_runs_in_onnxruntime_with_the_models_logits(tmp_path):
    summary = export_model(_tiny("poolformer_s12", 6), str(tmp_path / "poolformer.onnx"), num_frames=6, img_size=32)
    assert summary["max_abs_diff"] is not None and summary["max_abs_diff"] <= 1e-4
    assert summary["dynamic"] == ["batch", "frames"] and len(summary["checked_shapes"]) == 3


def _last_block(model) -> torch.nn.Module:
    if hasattr(model, "blocks4"):
        return model.blocks4[-1]
    if hasattr(model, "exits"):
        return model.exits[-1].blocks[-1]
    if hasattr(model, "stages"):
        return model.stages[-1].blocks[-1]
    return model.blocks[-1]


@pytest.mark.parametrize("name", FAMILIES)
def test_forward_intermediates_gives_per_stage_maps_ending_in_the_last_blocks_tokens(name):
    model = _tiny(name, frames=8)
    x = torch.randn(2, 3, 8, 32, 32)
    seen = []
    hook = _last_block(model).register_forward_hook(lambda m, i, o: seen.append(o[0] if isinstance(o, tuple) else o))
    with torch.no_grad():
        feats, maps = model.forward_intermediates(x)
        expected = model.forward_features(x)
    hook.remove()
    stages = {"mvitv2_s": 2, "cvt_13": 3, "dvt_deit_s": 3}.get(name, 4)
    assert len(maps) == stages and all(m.ndim == 5 and m.shape[0] == 2 for m in maps)
    assert torch.equal(feats, expected)
    last = seen[0]
    if last.ndim == 3:  # tokens (B, P + N, C): the maps leave the prefix (cls) tokens out
        last = last[:, last.shape[1] - maps[-1][0, 0].numel():].transpose(1, 2).reshape(maps[-1].shape)
    assert torch.equal(maps[-1], last)
    only = model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
    assert [m.shape for m in only] == [maps[0].shape, maps[-1].shape]
    assert [m.shape for m in model.forward_intermediates(x, indices=1, intermediates_only=True)] == [maps[-1].shape]
