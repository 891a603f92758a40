"""Inference-mode fusions: exact rewrites of a trained model that drop per-element work at eval.

A module that can be simplified for inference defines `fuse_(self)`, which rewrites it in place (for
example a BatchNorm folded into the conv next to it, replaced by nn.Identity) so that its eval-mode
output is unchanged up to float rounding. `fuse_for_inference` calls every such method once, children
first, and marks the model: a fused model is inference-only (its state dict no longer has the keys a
checkpoint of the family has), so putting it back into training mode raises.
"""

import torch
from torch import nn


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """Fuse `model` in place for eval (idempotent) and return it, in eval mode.

    The mark `fused_for_inference` is what VideoModel.train checks before it lets the model train.
    """
    model.eval()
    if not getattr(model, "fused_for_inference", False):
        with torch.no_grad():
            for module in reversed(list(model.modules())):  # children before their parents
                if hasattr(module, "fuse_"):
                    module.fuse_()
        model.fused_for_inference = True
    return model
