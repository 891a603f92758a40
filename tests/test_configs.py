"""Every config in configs/ loads, builds its model and runs one tiny forward/backward.

The published architectures are too big for a CPU test, so each family is shrunk with
MODEL.OVERRIDES (widths, depths); everything else (frames, strides, head, recipe keys) is what the
config says, only at TINY_FRAMES/TINY_CROP.
"""

import glob
import os

import pytest
import torch

from vidformer.config import get_cfg
from vidformer.engine.build import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))

# family prefix of MODEL.MODEL_NAME -> builder overrides that make it tiny
TINY = {
    "mvitv2": "{'depths': (1, 1, 1, 1), 'embed_dim': 16, 'num_heads': 1}",
    "poolformer": "{'depths': (1, 1, 1, 1), 'dims': (8, 16, 24, 32), 'attn_head_dim': 8}",
    "uniformer": "{'dims': (16, 32, 32, 64), 'depths': (1, 1, 1, 1), 'head_dim': 16}",
    "cvt": "{'embed_dims': (16, 24, 32), 'depths': (1, 1, 1), 'num_heads': (1, 2, 2)}",
    "dvt": "{'embed_dim': 16, 'depth': 1, 'num_heads': 2, 'reuse_dim': 8, 'reuse_hidden': 16, 'exit_patches': ((4, 16, 16), (2, 11, 11), (2, 8, 8)), 'exit_paddings': ((0, 0, 0), (0, 1, 1), (0, 0, 0))}",
}
TINY_FRAMES, TINY_CROP = 4, 32


def _shrunk(path):
    cfg = get_cfg(path)
    family = next((f for f in TINY if cfg.MODEL.MODEL_NAME.startswith(f)), None)
    assert family is not None, f"{path}: no TINY overrides for {cfg.MODEL.MODEL_NAME}; add them to tests/test_configs.py"
    frames = 1 if cfg.DATA.NUM_FRAMES == 1 else TINY_FRAMES
    return get_cfg(path, ["MODEL.OVERRIDES", TINY[family], "DATA.NUM_FRAMES", str(frames),
                          "DATA.TRAIN_CROP_SIZE", str(TINY_CROP), "DATA.TEST_CROP_SIZE", str(TINY_CROP)])


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, ROOT) for p in CONFIGS])
def test_config_builds_and_steps(path):
    cfg = _shrunk(path)
    torch.manual_seed(0)
    model = build_model(cfg)
    x = torch.randn(2, 3, cfg.DATA.NUM_FRAMES, TINY_CROP, TINY_CROP)
    logits = model(x)
    assert logits.shape == (2, cfg.MODEL.NUM_CLASSES)
    # cascades (DVT) train every exit, as the trainer does: the summed loss reaches every head
    outputs = model.forward_exits(x) if hasattr(model, "forward_exits") else [logits]
    sum(torch.nn.functional.cross_entropy(o, torch.tensor([0, 1])) for o in outputs).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
