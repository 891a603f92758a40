"""Adaptive inference: early exit through a cascade (DVT) with per-exit confidence thresholds, the search
for thresholds that meet a GFLOPs or accuracy target on a held-out split, the accuracy-vs-GFLOPs curve
(CSV and PNG), and adaptive multi-view testing for any model (a video stops taking views once confident).

Thresholds follow the official DVT code (research/dvt.md §4.2): for q on a grid, the fraction of the
split that exits at exit k is set proportional to q^k, thresholds are read off the sorted confidences
(max softmax probability), and each operating point is scored on the same split. A search result
therefore meets its target on the split it was searched on by construction.
"""

import csv
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from vidformer.engine.ensemble import aggregate_views
from vidformer.errors import UsageError
from vidformer.flops import flops_by_module

# DVT's grid of q (1/20 .. 59/20) widened at both ends so the curve reaches "all at the first exit"
# and "all at the last exit"
DEFAULT_QS = (0.001, 0.01, 0.02) + tuple(i / 20 for i in range(1, 60)) + (4.0, 8.0, 20.0, 100.0)


def _batches(loader: Iterable) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """(clips, labels) from a loader yielding dicts with "video"/"label" (vidformer's) or (x, y) pairs."""
    for batch in loader:
        if isinstance(batch, dict):
            yield batch["video"], batch["label"]
        else:
            yield batch[0], batch[1]


# -- cost ------------------------------------------------------------------------------------------


@dataclass
class ExitCost:
    """GFLOPs of one exit for one view: its own cost, the cumulative cost of reaching it, and how much
    of its own cost is feature reuse and relationship reuse (measured against twins without them)."""

    exit: int
    grid: tuple[int, int, int]
    gflops: float
    cumulative: float
    feature_reuse: float
    relation_reuse: float


class _AllExits(nn.Module):
    """A cascade whose forward runs every exit and its head, so one fvcore trace sees all of them."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack(self.model.forward_exits(x))


def exit_costs(model: nn.Module, num_frames: int | None = None, img_size: int | None = None) -> list[ExitCost]:
    """Per-exit GFLOPs (fvcore, 1 multiply-add = 1 FLOP) of a cascade for one view (batch 1).

    One trace of the whole cascade, attributed to modules: exit k's own cost is everything run inside
    exits.k; its feature-reuse part is the blocks' f_l modules plus the share of each norm2/fc1 that reads
    the D' reused channels (a linear layer's cost is proportional to its input width); its
    relation-reuse part is the r(.) module with its resizing.
    """
    cfg = model.pretrained_cfg
    x = torch.zeros(1, 3, num_frames or cfg.num_frames, img_size or cfg.crop_size, img_size or cfg.crop_size,
                    device=next(model.parameters()).device)
    by_module = flops_by_module(_AllExits(model), x)
    model.reset_exit_counts()
    rows, cumulative = [], 0.0
    for k, (exit_, grid) in enumerate(zip(model.exits, model.token_grids)):
        name = f"model.exits.{k}"
        own = by_module.get(name, 0) / 1e9
        cumulative += own
        feature = 0.0
        for i, blk in enumerate(exit_.blocks):
            if blk.reuse is not None:
                share = blk.reuse.mlp.fc2.out_features / blk.mlp.fc1.in_features
                feature += by_module.get(f"{name}.blocks.{i}.reuse", 0)
                feature += share * (by_module.get(f"{name}.blocks.{i}.mlp.fc1", 0)
                                    + by_module.get(f"{name}.blocks.{i}.norm2", 0))
        relation = by_module.get(f"{name}.relation_reuse", 0)
        rows.append(ExitCost(k, grid, own, cumulative, feature / 1e9, relation / 1e9))
    return rows


def format_exit_costs(rows: list[ExitCost]) -> str:
    lines = ["exit  tokens (t,h,w)   GFLOPs  cumulative  of which feature reuse / relation reuse"]
    for r in rows:
        lines.append(f"{r.exit + 1:>4}  {str(r.grid):<15} {r.gflops:7.3f}  {r.cumulative:10.3f}  "
                     f"{r.feature_reuse:.3f} / {r.relation_reuse:.3f}")
    return "\n".join(lines)


# -- confidences and thresholds -------------------------------------------------------------------


@torch.no_grad()
def collect_exit_probs(model: nn.Module, loader: Iterable) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities (K, N, C) of every exit for every clip (all exits run: the "simulated"
    protocol of the paper's curves), and labels (N,)."""
    model.eval()
    device = next(model.parameters()).device
    probs, labels = [], []
    for x, y in _batches(loader):
        probs.append(torch.stack([o.float().softmax(-1).cpu() for o in model.forward_exits(x.to(device))]))
        labels.append(y.cpu())
    if not probs:  # e.g. a process whose share of a small split is empty
        return torch.zeros(model.num_exits, 0, model.num_classes), torch.zeros(0, dtype=torch.long)
    return torch.cat(probs, dim=1), torch.cat(labels)


def exit_proportions(q: float, num_exits: int) -> list[float]:
    """Target fraction of clips leaving at each exit, proportional to q^k (MSDNet/DVT)."""
    w = [q ** (k + 1) for k in range(num_exits)]
    return [v / sum(w) for v in w]


def find_thresholds(confidence: torch.Tensor, proportions: Sequence[float]) -> torch.Tensor:
    """Per-exit thresholds (K,) so that about proportions[k] of all N clips leave at exit k.

    confidence: (K, N) max softmax probability of every clip at every exit. Clips that left earlier do
    not count at later exits; an exit whose quota is 0 or cannot be filled gets +inf (nobody leaves
    there); the last exit takes everyone left (-inf).
    """
    k_exits, n = confidence.shape
    thresholds = torch.full((k_exits,), math.inf)
    remaining = torch.ones(n, dtype=torch.bool)
    for k in range(k_exits - 1):
        quota = math.floor(n * proportions[k])
        candidates = confidence[k][remaining].sort(descending=True).values
        if 0 < quota <= candidates.numel():
            thresholds[k] = candidates[quota - 1]
        remaining &= confidence[k] < thresholds[k]
    thresholds[-1] = -math.inf
    return thresholds


def exit_taken(confidence: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """(N,) index of the first exit whose confidence reaches its threshold (the last one otherwise)."""
    passes = confidence >= thresholds[:, None]
    passes[-1] = True
    return passes.int().argmax(dim=0)


@dataclass
class OperatingPoint:
    """One point of the accuracy-vs-GFLOPs curve: thresholds, and what they give on the split."""

    q: float
    thresholds: list[float]
    top1: float
    gflops: float
    exit_fractions: list[float] = field(default_factory=list)


def evaluate_thresholds(probs: torch.Tensor, labels: torch.Tensor, thresholds: torch.Tensor,
                        cumulative_gflops: Sequence[float], q: float = float("nan")) -> OperatingPoint:
    """Top-1 (%) and average GFLOPs per clip when each clip leaves at its first confident exit."""
    conf, pred = probs.max(dim=-1)  # (K, N)
    taken = exit_taken(conf, thresholds)
    n = labels.numel()
    correct = pred[taken, torch.arange(n)] == labels
    cost = torch.tensor(cumulative_gflops, dtype=torch.float64)[taken]
    fractions = torch.bincount(taken, minlength=probs.shape[0]).double() / n
    return OperatingPoint(q, thresholds.tolist(), 100.0 * correct.double().mean().item(), cost.mean().item(),
                          fractions.tolist())


def budget_curve(probs: torch.Tensor, labels: torch.Tensor, cumulative_gflops: Sequence[float],
                 qs: Sequence[float] = DEFAULT_QS) -> list[OperatingPoint]:
    """Operating points over q, plus the two ends (all clips at the first exit, all at the last), by GFLOPs."""
    conf = probs.max(dim=-1).values
    k_exits = probs.shape[0]
    ends = [torch.full((k_exits,), -math.inf), torch.full((k_exits,), math.inf)]
    points = [evaluate_thresholds(probs, labels, find_thresholds(conf, exit_proportions(q, k_exits)),
                                  cumulative_gflops, q) for q in qs]
    points += [evaluate_thresholds(probs, labels, t, cumulative_gflops) for t in ends]
    return sorted(points, key=lambda p: (p.gflops, -p.top1))


def search_thresholds(probs: torch.Tensor, labels: torch.Tensor, cumulative_gflops: Sequence[float], *,
                      target_gflops: float | None = None, target_top1: float | None = None,
                      qs: Sequence[float] = DEFAULT_QS) -> OperatingPoint:
    """The best operating point on this split: highest top-1 within `target_gflops` average GFLOPs, or
    fewest GFLOPs reaching `target_top1` (%). Exactly one target must be given.

    Under a GFLOPs target, ties in top-1 go to the point that spends more of the budget: on a small split
    that every exit gets right, the cheapest tied point sends almost everything to the first exit, and its
    few extra mistakes on unseen clips are not ruled out by a tie on this one."""
    if (target_gflops is None) == (target_top1 is None):
        raise UsageError("give exactly one of target_gflops or target_top1")
    points = budget_curve(probs, labels, cumulative_gflops, qs)
    if target_gflops is not None:
        within = [p for p in points if p.gflops <= target_gflops * (1 + 1e-9)]
        if not within:
            raise UsageError(f"target of {target_gflops:.4g} GFLOPs per clip is below the first exit's cost "
                             f"({cumulative_gflops[0]:.4g} GFLOPs); no thresholds can meet it")
        return max(within, key=lambda p: (p.top1, p.gflops))
    reaching = [p for p in points if p.top1 >= target_top1]
    if not reaching:
        best = max(p.top1 for p in points)
        raise UsageError(f"target top-1 {target_top1:.2f}% is above the best on this split ({best:.2f}%)")
    return min(reaching, key=lambda p: (p.gflops, -p.top1))


def write_curve(points: list[OperatingPoint], csv_path: str, png_path: str | None = None, *,
                exit_points: Sequence[tuple[float, float]] = (), chosen: OperatingPoint | None = None,
                title: str = "accuracy vs. GFLOPs") -> None:
    """The curve as CSV (q, thresholds, exit fractions, gflops, top1) and, if asked, as a PNG; exit_points
    are (cumulative GFLOPs, top-1) of every exit run on all clips, drawn as markers."""
    k_exits = len(points[0].thresholds)
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["q", *(f"threshold_{k + 1}" for k in range(k_exits)),
                    *(f"exit_fraction_{k + 1}" for k in range(k_exits)), "gflops", "top1"])
        for p in points:
            w.writerow([p.q, *p.thresholds, *(round(v, 6) for v in p.exit_fractions), round(p.gflops, 6),
                        round(p.top1, 4)])
    if png_path is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    ax.plot([p.gflops for p in points], [p.top1 for p in points], "-", color="tab:blue", label="early exit")
    if exit_points:
        ax.plot(*zip(*exit_points), "s", color="tab:gray", label="single exit, all clips")
    if chosen is not None:
        ax.plot([chosen.gflops], [chosen.top1], "*", ms=12, color="tab:red", label="chosen thresholds")
    ax.set_xlabel("average GFLOPs per clip")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)


# -- real early exit ------------------------------------------------------------------------------


@torch.no_grad()
def early_exit_evaluate(model: nn.Module, loader: Iterable, thresholds: Sequence[float],
                        costs: list[ExitCost]) -> dict:
    """Run the cascade with real batched early exit; top-1 (%), average GFLOPs per clip from the work each
    exit actually did (model.exit_counts), and the fraction of clips that left at each exit."""
    model.eval()
    model.reset_exit_counts()
    device = next(model.parameters()).device
    hits, n, taken = 0, 0, torch.zeros(model.num_exits, dtype=torch.long)
    for x, y in _batches(loader):
        logits, index = model.forward_early_exit(x.to(device), list(thresholds))
        hits += (logits.argmax(-1).cpu() == y).sum().item()
        n += y.numel()
        taken += torch.bincount(index.cpu(), minlength=model.num_exits)
    gflops = sum(c * cost.gflops for c, cost in zip(model.exit_counts, costs)) / max(n, 1)
    return {"top1": 100.0 * hits / max(n, 1), "gflops": gflops, "num_clips": n,
            "exit_fractions": (taken.double() / max(n, 1)).tolist(), "exit_counts": list(model.exit_counts)}


# -- adaptive multi-view testing (any model) ------------------------------------------------------


def _view_confidence(view_logits: torch.Tensor) -> torch.Tensor:
    """Confidence after each prefix of views: max class of the running mean of view softmaxes. (V,)"""
    probs = view_logits.float().softmax(-1).cumsum(0)
    return probs.max(dim=-1).values / torch.arange(1, view_logits.shape[0] + 1)


def views_until_confident(run: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]],
                          views: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A video's views (V, C, T, H, W) run one at a time, in order, until the running mean of their softmax
    reaches `threshold` (FrameExit's idea over clips, research/dvt.md §5.2.7). `run` maps (1, C, T, H, W)
    to (logits (1, K), exit index (1,) or None). Returns the logits (v, K) of the v views used, and their
    exits when `run` reports them."""
    logits, exits = [], []
    for v in range(views.shape[0]):
        out, taken = run(views[v:v + 1])
        logits.append(out)
        exits.append(taken)
        if _view_confidence(torch.cat(logits))[-1] >= threshold:
            break
    return torch.cat(logits), None if exits[0] is None else torch.cat(exits)


@torch.no_grad()
def adaptive_views(model: nn.Module, videos: Iterable[dict], threshold: float, *, method: str = "sum") -> dict:
    """Multi-view test that evaluates each video's views in order and stops once the running mean of their
    softmax reaches `threshold` (views_until_confident). `videos` yields the evaluator's dicts (views
    (V, C, T, H, W), label); the prediction aggregates the views used with `method`.
    Returns top-1 (%), the average number of views used, and the number of videos."""
    model.eval()
    device = next(model.parameters()).device
    hits, used, n = 0, 0, 0
    for video in videos:
        if video.get("failed"):
            continue
        logits, _ = views_until_confident(lambda view: (model(view.to(device)).float().cpu(), None),
                                          video["views"], threshold)
        hits += int(aggregate_views(logits, method).argmax().item() == int(video["label"]))
        used += logits.shape[0]
        n += 1
    return {"top1": 100.0 * hits / max(n, 1), "avg_views": used / max(n, 1), "num_videos": n,
            "threshold": threshold}


def view_exit_curve(per_video_logits: list[torch.Tensor], labels: Sequence[int], thresholds: Sequence[float],
                    method: str = "sum") -> list[dict]:
    """What adaptive_views would give at each threshold, from every view's logits computed once (the stop
    rule depends only on the views seen so far, so this equals the real run)."""
    rows = []
    for t in thresholds:
        hits, used = 0, 0
        for logits, label in zip(per_video_logits, labels):
            conf = _view_confidence(logits)
            stop = int((conf >= t).int().argmax()) if bool((conf >= t).any()) else logits.shape[0] - 1
            hits += int(aggregate_views(logits[:stop + 1], method).argmax().item() == int(label))
            used += stop + 1
        n = max(len(labels), 1)
        rows.append({"threshold": t, "top1": 100.0 * hits / n, "avg_views": used / n})
    return rows
