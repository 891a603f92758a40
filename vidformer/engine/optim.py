"""Optimizer and learning-rate schedule from a config: AdamW/SGD parameter groups with weight-decay
exclusions and optional layer-wise lr decay, and the per-step linear-warmup + half-cosine schedule.

The recipe follows PySlowFast's MViTv2 configs (research/mvitv2_slowfast.md §5): 1-D parameters
(norms, biases) and the model's `no_weight_decay()` names get no decay; the lr is updated every
optimizer step, warming up linearly from SOLVER.WARMUP_START_LR and then following half a cosine
down to SOLVER.COSINE_END_LR at the last step.
"""

import math
import re

import torch
from fvcore.common.config import CfgNode
from torch import nn

_BLOCK = re.compile(r"^(.*?\bblocks\.\d+)\.")


def param_groups(model: nn.Module, weight_decay: float, *, zero_wd_1d: bool = True,
                 layer_decay: float = 1.0) -> list[dict]:
    """Parameter groups: (decay or not) x (layer id when layer_decay < 1), each with an `lr_scale`."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    layer_ids = _layer_ids([n for n, _ in named]) if layer_decay < 1.0 else {n: 0 for n, _ in named}
    num_layers = max(layer_ids.values(), default=0)
    groups: dict[tuple[bool, int], dict] = {}
    for name, p in named:
        no_decay = name in skip or (zero_wd_1d and p.ndim <= 1)
        layer = layer_ids[name]
        key = (no_decay, layer)
        if key not in groups:
            groups[key] = {"params": [], "names": [], "weight_decay": 0.0 if no_decay else weight_decay,
                           "lr_scale": layer_decay ** (num_layers - layer)}
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return list(groups.values())


def _layer_ids(names: list[str]) -> dict[str, int]:
    """Depth of each parameter for layer-wise lr decay, read from the `...blocks.N.` names every family uses.

    Blocks are numbered 1..L in definition order; parameters before the first block (patch embedding,
    cls token, position tables) are layer 0, those between blocks (stage transitions) belong to the
    next block, and those after the last block (final norm, head) are layer L + 1.
    """
    blocks: list[str] = []
    for name in names:
        m = _BLOCK.match(name)
        if m and m.group(1) not in blocks:
            blocks.append(m.group(1))
    block_of = {n: (blocks.index(m.group(1)) + 1 if (m := _BLOCK.match(n)) else None) for n in names}
    first_block = next((i for i, n in enumerate(names) if block_of[n] is not None), len(names))
    ids = {}
    next_id = len(blocks) + 1
    for i in reversed(range(len(names))):
        name = names[i]
        if block_of[name] is not None:
            next_id = block_of[name]
        ids[name] = next_id if i > first_block else (block_of[name] or 0)
    return ids


def build_optimizer(model: nn.Module, cfg: CfgNode, base_lr: float) -> torch.optim.Optimizer:
    """AdamW or SGD over `param_groups(model)`; the schedule sets each group's lr = schedule(step) * lr_scale."""
    groups = param_groups(model, cfg.SOLVER.WEIGHT_DECAY, zero_wd_1d=cfg.SOLVER.ZERO_WD_1D_PARAM,
                          layer_decay=cfg.SOLVER.LAYER_DECAY)
    for g in groups:
        g["lr"] = base_lr * g["lr_scale"]
    if cfg.SOLVER.OPTIMIZING_METHOD == "adamw":
        return torch.optim.AdamW(groups, lr=base_lr, betas=tuple(cfg.SOLVER.BETAS), eps=1e-8)
    return torch.optim.SGD(groups, lr=base_lr, momentum=cfg.SOLVER.MOMENTUM, nesterov=cfg.SOLVER.NESTEROV)


class WarmupCosine:
    """lr per optimizer step: linear from `start_lr` to `base_lr` over `warmup_steps`, then half a cosine
    to `end_lr` at `total_steps` (PySlowFast's COSINE_AFTER_WARMUP, evaluated at fractional epochs)."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, base_lr: float, start_lr: float, end_lr: float,
                 warmup_steps: int, total_steps: int):
        self.optimizer = optimizer
        self.base_lr, self.start_lr, self.end_lr = base_lr, start_lr, end_lr
        self.warmup_steps, self.total_steps = warmup_steps, max(total_steps, 1)
        self.step_count = 0
        self._apply()

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.start_lr + (self.base_lr - self.start_lr) * step / self.warmup_steps
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        return self.end_lr + (self.base_lr - self.end_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    @property
    def lr(self) -> float:
        return self.lr_at(self.step_count)

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def _apply(self) -> None:
        lr = self.lr
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)

    def state_dict(self) -> dict:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self._apply()


def scaled_lrs(cfg: CfgNode, global_batch: int) -> tuple[float, float, float]:
    """(base, warmup start, cosine end) lr, multiplied by global_batch / SOLVER.REFERENCE_BATCH when
    SOLVER.LR_SCALE_BY_BATCH is on (the linear scaling rule behind 1.6e-3 for 512 clips)."""
    s = global_batch / cfg.SOLVER.REFERENCE_BATCH if cfg.SOLVER.LR_SCALE_BY_BATCH else 1.0
    return cfg.SOLVER.BASE_LR * s, cfg.SOLVER.WARMUP_START_LR * s, cfg.SOLVER.COSINE_END_LR * s
