"""Inference fusion (layers.fuse_for_inference) on CvT: the BatchNorm of every Q/K/V projection folded into its
depthwise conv gives the same eval logits; fusing is idempotent and final (a fused model refuses to train);
the inference paths (load_model, load_recognizer, a test from a checkpoint) fuse, a trainer's model is not fused.
"""

import copy

import pytest
import torch

import vidformer
from tests.test_cvt import TINY, randomize_norms, tiny
from vidformer.checkpoint import save_checkpoint
from vidformer.config import get_cfg
from vidformer.engine.evaluator import run_test
from vidformer.engine.recognizer import load_model
from vidformer.errors import UsageError
from vidformer.layers import fuse_for_inference

NUM_CLASSES = 5


def trained_looking(model):
    """Non-trivial BatchNorm statistics, affines and eps, so a fold that drops any of them shows in the logits."""
    randomize_norms(model)
    for i, m in enumerate(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)):
        m.eps = 0.05 * (i % 3)  # 0 for some: the fold must not add its own
    return model.eval()


def batchnorms(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def rel_diff(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("frames", [1, 4])
def test_fused_eval_logits_equal_the_unfused_ones(frames):
    torch.manual_seed(0)
    model = trained_looking(tiny(frames))
    x = torch.randn(2, 3, frames, 32, 32)
    with torch.no_grad():
        want = model(x)
        dropped = copy.deepcopy(model)
        for proj in (m for m in dropped.modules() if hasattr(m, "bn")):
            proj.bn = torch.nn.Identity()
        assert rel_diff(dropped(x), want) > 1e-2  # the norms matter: a fold that loses them cannot pass below
        fused = fuse_for_inference(copy.deepcopy(model))
        got = fused(x)
    assert not batchnorms(fused) and len(batchnorms(model)) == 3 * sum(TINY["depths"])
    conv = fused.stages[1].blocks[0].attn.conv_proj_k.conv
    assert conv.bias is not None and conv.weight.ndim == (4 if frames == 1 else 5)  # the checkpoint layout kept
    assert rel_diff(got, want) < 1e-5


def test_fusing_twice_changes_nothing_and_a_fused_model_refuses_to_train():
    torch.manual_seed(0)
    model = fuse_for_inference(trained_looking(tiny(1)))
    assert model.fused_for_inference and not model.training
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert fuse_for_inference(model) is model
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    with pytest.raises(UsageError, match="fused for inference"):
        model.train()
    model.eval()  # eval stays allowed


def _cfg(tmp_path, *overrides):
    return get_cfg(None, [
        "OUTPUT_DIR", str(tmp_path), "MODEL.MODEL_NAME", "cvt_13", "MODEL.NUM_CLASSES", str(NUM_CLASSES),
        "MODEL.OVERRIDES", repr(TINY), "DATA.NUM_FRAMES", "1", "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_CROP_SIZE",
        "32", "TEST.NUM_ENSEMBLE_VIEWS", "1", "TEST.NUM_SPATIAL_CROPS", "2", "TEST.SAVE_RESULTS", "True",
        "DATA_LOADER.NUM_WORKERS", "0", *overrides])


@pytest.fixture
def checkpoint(tmp_path):
    """A trainer-format checkpoint of a tiny image CvT with non-trivial norms (eps is not in a state dict: kept);
    (path, the model)."""
    cfg = _cfg(tmp_path)
    torch.manual_seed(0)
    model = randomize_norms(tiny(1, num_classes=NUM_CLASSES)).eval()
    path = str(tmp_path / "cvt.pyth")
    save_checkpoint({"model_state": model.state_dict(), "cfg": cfg.dump(), "epoch": 1}, path)
    return path, model


def test_load_model_and_load_recognizer_give_fused_models(tmp_path, checkpoint):
    path, model = checkpoint
    x = torch.randn(2, 3, 1, 32, 32)
    with torch.no_grad():
        want = model(x)
    loaded, _ = load_model(_cfg(tmp_path), path)
    recognizer = vidformer.load_recognizer(path, "cpu")
    for fused in (loaded, recognizer.model):
        assert fused.fused_for_inference and not batchnorms(fused)
        with torch.no_grad():
            assert rel_diff(fused(x), want) < 1e-5
    with pytest.raises(UsageError, match="fused for inference"):
        recognizer.model.train()


def test_a_test_from_a_checkpoint_fuses_and_a_handed_in_model_keeps_training(tmp_path, checkpoint):
    path, model = checkpoint
    gen = torch.Generator().manual_seed(3)
    videos = [{"views": torch.randn(2, 3, 1, 32, 32, generator=gen), "label": i % NUM_CLASSES, "index": i,
               "path": f"v{i}.mp4", "failed": False, "error": ""} for i in range(3)]

    def iter_videos(cfg, split, rank, world_size):
        return iter(videos)

    run_test(_cfg(tmp_path / "given"), model=model, iter_videos=iter_videos)
    assert not getattr(model, "fused_for_inference", False) and batchnorms(model)
    model.train()  # the trainer's model goes on training
    run_test(_cfg(tmp_path / "loaded", "TEST.CHECKPOINT_FILE_PATH", path), iter_videos=iter_videos)
    given, loaded = (torch.load(tmp_path / d / "test_scores.pt") for d in ("given", "loaded"))
    assert rel_diff(loaded["view_logits"], given["view_logits"]) < 1e-5
