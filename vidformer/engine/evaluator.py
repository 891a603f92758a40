"""Multi-view video evaluation: every test video decoded once, TEST.NUM_ENSEMBLE_VIEWS temporal clips x
TEST.NUM_SPATIAL_CROPS crops cut from it, the views run through the model in chunks, their outputs
combined per video, and top-1 / top-5 / mean-class accuracy written to OUTPUT_DIR/test_metrics.json (with
test_per_class.csv, test_confusion.png and test/ scalars and hparams in OUTPUT_DIR/tensorboard).

The view rule is PySlowFast's (research/mvitv2_slowfast.md §4.1): view k is temporal clip k // S and
spatial crop k % S. Views are combined by vidformer.engine.ensemble.aggregate_views (TEST.ENSEMBLE_METHOD).
Under several processes each rank scores its own videos and the results are gathered by video index,
so every video counts exactly once. Videos that fail to decode are listed and left out of the
denominator, never scored as right or wrong.

Adaptive testing (vidformer.engine.adaptive): a cascade (DVT) with DVT.THRESHOLDS, or thresholds searched
for DVT.GFLOPS_BUDGET on a calibration split, runs real early exit on every view; TEST.ADAPTIVE_VIEWS stops
a video's views once their mean softmax is confident. `run_ensemble` scores saved test_scores.pt files of
several models together.
"""

import contextlib
import csv
import json
import math
import os
import sys
import textwrap
import time
from dataclasses import dataclass, field
from typing import Iterable

import torch
from fvcore.common.config import CfgNode
from torch import nn
from tqdm import tqdm

from vidformer.checkpoint.io import atomic_write, save_checkpoint
from vidformer.engine import distributed as du
from vidformer.engine.adaptive import collect_exit_probs, exit_costs, search_thresholds, views_until_confident
from vidformer.engine.build import build_model, cfg_compile_options
from vidformer.engine.ensemble import ENSEMBLE_METHODS, aggregate_views, ensemble_scores, load_scores
from vidformer.engine.runlog import Scalars, get_logger, progress, setup_logging
from vidformer.errors import UsageError
from vidformer.layers import fuse_for_inference

__all__ = ["ENSEMBLE_METHODS", "aggregate_views", "view_logits", "describe_views", "view_rule", "score_videos",
           "accuracy_metrics", "run_test", "run_ensemble"]

# up to this many classes the confusion picture is the matrix with a count in every cell; beyond it, a
# chart of the most confused pairs (a 400 x 400 grid cannot be read)
MAX_MATRIX_CLASSES = 30
CONFUSED_PAIRS = 20


def _forward(model: nn.Module, batch: torch.Tensor, autocast_dtype: torch.dtype | None,
             exit_thresholds: list[float] | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, C, T, H, W) -> (B, K) logits on the CPU, and with exit thresholds the exit each view took (B,)."""
    device = next(model.parameters()).device
    batch = batch.to(device, non_blocking=True)
    ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    with ctx:
        if exit_thresholds is None:
            return model(batch).float().cpu(), None
        logits, taken = model.forward_early_exit(batch, exit_thresholds)
    return logits.float().cpu(), taken.cpu()


def _chunked(model: nn.Module, views: torch.Tensor, chunk: int, autocast_dtype: torch.dtype | None = None,
             exit_thresholds: list[float] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    outs = [_forward(model, views[s:s + chunk], autocast_dtype, exit_thresholds)
            for s in range(0, views.shape[0], chunk)]
    logits = torch.cat([o for o, _ in outs])
    return logits, None if exit_thresholds is None else torch.cat([t for _, t in outs])


@torch.no_grad()
def view_logits(model: nn.Module, views: torch.Tensor, chunk: int, autocast_dtype: torch.dtype | None = None
                ) -> torch.Tensor:
    """(V, C, T, H, W) views -> (V, K) logits, `chunk` views per forward pass (bounded memory)."""
    return _chunked(model, views, chunk, autocast_dtype)[0]


def describe_views(num_clips: int, num_crops: int) -> str:
    """'5 clips x 1 crop' — the notation the papers' tables use (temporal x spatial)."""
    return f"{num_clips} clip{'s' * (num_clips != 1)} x {num_crops} crop{'s' * (num_crops != 1)}"


def view_rule(num_crops: int) -> str:
    if num_crops == 1:
        return "view k = temporal clip k, center crop (PySlowFast rule)"
    return f"view k = temporal clip k // {num_crops}, spatial crop k % {num_crops} (PySlowFast rule)"


# fields of VideoScores that hold one entry per scored video
_PER_VIDEO = ("index", "path", "label", "scores", "view_logits", "exits", "views_used")


@dataclass
class VideoScores:
    """Per-video results of one process (or, after merging, of all). view_logits (v, K) are kept on request;
    exits (v,) only under early exit; v (views_used) is below the view count only under TEST.ADAPTIVE_VIEWS."""

    index: list[int] = field(default_factory=list)
    path: list[str] = field(default_factory=list)
    label: list[int] = field(default_factory=list)
    scores: list[torch.Tensor] = field(default_factory=list)
    view_logits: list[torch.Tensor] = field(default_factory=list)
    exits: list[torch.Tensor] = field(default_factory=list)
    views_used: list[int] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # path -> decoder error

    def merged_with(self, others: list["VideoScores"]) -> "VideoScores":
        """All processes' results ordered by video index, each video once."""
        rows, failed = {}, {}
        for part in [self, *others]:
            kept = [f for f in _PER_VIDEO if len(getattr(part, f)) == len(part.index)]
            for j, i in enumerate(part.index):
                rows[i] = {f: getattr(part, f)[j] for f in kept}
            failed.update(part.failed)
        out = VideoScores(failed=failed)
        for i in sorted(rows):
            for name, value in rows[i].items():
                getattr(out, name).append(value)
        return out


class _Progress:
    """The test's progress: a tqdm bar with a total on a terminal; elsewhere (Slurm logs, pipes) no bar and
    a log line every `period` videos, so a log file reads as lines."""

    def __init__(self, total: int | None, show: bool, period: int):
        self.total, self.period, self.done, self.start = total, period, 0, time.monotonic()
        self.lines = show and not sys.stderr.isatty() and period > 0
        self.bar = progress(total, "test", show and sys.stderr.isatty())

    def update(self) -> None:
        self.bar.update()
        self.done += 1
        if self.lines and (self.done % self.period == 0 or self.done == self.total):
            rate = self.done / max(time.monotonic() - self.start, 1e-9)
            of = f"/{self.total}" if self.total else ""
            eta = f", ETA {tqdm.format_interval((self.total - self.done) / rate)}" if self.total else ""
            get_logger().info(f"test: {self.done}{of} videos, {rate:.2f} videos/s{eta}")

    def close(self) -> None:
        self.bar.close()


def score_videos(model: nn.Module, videos: Iterable[dict], *, method: str, chunk: int,
                 autocast_dtype: torch.dtype | None = None, total: int | None = None, show: bool = False,
                 exit_thresholds: list[float] | None = None, view_threshold: float = 0.0,
                 keep_view_logits: bool = False, log_period: int = 0) -> VideoScores:
    """Score every video the iterable yields (dicts with views, label, index, path, failed, error).

    exit_thresholds: run a cascade's real early exit on every view (model.forward_early_exit).
    view_threshold > 0: a video's views run one at a time and stop once their mean softmax reaches it.
    """
    result = VideoScores()
    model.eval()
    bar = _Progress(total, show, log_period)
    for video in videos:
        bar.update()
        if video["failed"]:
            # logged once by the data loader's failure tracker (vidformer.data.failures)
            result.failed[video["path"]] = str(video.get("error", "decoding failed"))
            continue
        with torch.no_grad():
            if view_threshold > 0:
                logits, exits = views_until_confident(
                    lambda view: _forward(model, view, autocast_dtype, exit_thresholds), video["views"], view_threshold)
            else:
                logits, exits = _chunked(model, video["views"], chunk, autocast_dtype, exit_thresholds)
        result.index.append(int(video["index"]))
        result.path.append(video["path"])
        result.label.append(int(video["label"]))
        result.scores.append(aggregate_views(logits, method))
        result.views_used.append(logits.shape[0])
        if keep_view_logits:
            result.view_logits.append(logits)
        if exits is not None:
            result.exits.append(exits)
    bar.close()
    return result


def accuracy_metrics(scores: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """top-1 / top-5 / mean class accuracy in percent, per-class counts and the confusion matrix."""
    k = min(5, scores.shape[1])
    topk = scores.topk(k, dim=1).indices
    hit1 = topk[:, 0] == labels
    hit5 = (topk == labels[:, None]).any(dim=1)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    confusion.index_put_((labels, topk[:, 0]), torch.ones_like(labels), accumulate=True)
    per_class_n = confusion.sum(dim=1)
    per_class_top1 = confusion.diag().float() / per_class_n.clamp(min=1)
    per_class_top5 = torch.zeros(num_classes).index_add_(0, labels, hit5.float()) / per_class_n.clamp(min=1)
    present = per_class_n > 0
    n = max(labels.numel(), 1)
    return {
        "top1": 100.0 * hit1.sum().item() / n,
        "top5": 100.0 * hit5.sum().item() / n,
        "mean_class_acc": 100.0 * per_class_top1[present].mean().item() if present.any() else 0.0,
        "per_class_n": per_class_n,
        "per_class_top1": 100.0 * per_class_top1,
        "per_class_top5": 100.0 * per_class_top5,
        "confusion": confusion,
    }


def _label_names(cfg: CfgNode, num_classes: int) -> list[str]:
    from vidformer.data import load_label_names

    names = load_label_names(cfg)
    if not names or len(names) != num_classes:
        return [str(i) for i in range(num_classes)]
    return list(names)


def write_per_class_csv(path: str, names: list[str], acc: dict) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class_index", "class_name", "num_videos", "top1", "top5"])
        for i, name in enumerate(names):
            w.writerow([i, name, int(acc["per_class_n"][i]), f"{acc['per_class_top1'][i]:.2f}",
                        f"{acc['per_class_top5'][i]:.2f}"])


def most_confused_pairs(confusion: torch.Tensor, n: int = CONFUSED_PAIRS) -> list[tuple[int, int, int]]:
    """(true, predicted, videos) of the n largest off-diagonal cells, largest first."""
    off = confusion.clone()
    off.fill_diagonal_(0)
    counts, flat = off.flatten().topk(min(n, off.numel()))
    k = confusion.shape[0]
    return [(int(i) // k, int(i) % k, int(c)) for c, i in zip(counts, flat) if c > 0]


def _heading(title: str, subtitle: str, width_in: float) -> str:
    """Title lines wrapped to the figure's width (about 11 characters per inch at 9 pt), then the subtitle."""
    lines = textwrap.wrap(title, max(int(width_in * 11), 30)) if title else []
    return "\n".join([*lines, subtitle])


def write_confusion_png(path: str, names: list[str], confusion: torch.Tensor, title: str = "") -> None:
    """Up to MAX_MATRIX_CLASSES classes: the confusion matrix (rows: true class, columns: predicted), a count
    in every non-zero cell and the colour its share of the row. More classes: a bar chart of the
    CONFUSED_PAIRS most confused (true -> predicted) pairs, named."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = confusion.shape[0]
    if k <= MAX_MATRIX_CLASSES:
        rates = confusion.float() / confusion.sum(dim=1, keepdim=True).clamp(min=1)
        size = 3.5 + 0.32 * k
        fig, ax = plt.subplots(figsize=(size + 1.2, size))
        im = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
        for (i, j), count in zip(torch.cartesian_prod(torch.arange(k), torch.arange(k)).tolist(),
                                 confusion.flatten().tolist()):
            if count:
                ax.text(j, i, str(count), ha="center", va="center", fontsize=8 if k <= 15 else 6,
                        color="white" if rates[i, j] > 0.5 else "black")
        ax.set_xticks(range(k), names, rotation=90, fontsize=8)
        ax.set_yticks(range(k), names, fontsize=8)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class's videos")
        ax.set_title(_heading(title, "cells: videos", size + 1.2), fontsize=9)
    else:
        pairs = most_confused_pairs(confusion)
        per_class = confusion.sum(dim=1)
        fig, ax = plt.subplots(figsize=(9, 1.6 + 0.32 * max(len(pairs), 3)))
        if pairs:
            labels = [f"{names[t]}  \u2192  {names[p]}" for t, p, _ in pairs]
            counts = [c for _, _, c in pairs]
            ax.barh(range(len(pairs)), counts, color="tab:blue")
            ax.set_yticks(range(len(pairs)), labels, fontsize=8)
            ax.invert_yaxis()
            for y, (t, _, c) in enumerate(pairs):
                ax.text(c, y, f" {c} ({100.0 * c / max(int(per_class[t]), 1):.0f} % of the class)", va="center",
                        fontsize=7)
            ax.set_xlim(0, max(counts) * 1.35)
            ax.xaxis.get_major_locator().set_params(integer=True)
        else:
            ax.text(0.5, 0.5, "no video was confused with another class", ha="center", va="center",
                    transform=ax.transAxes)
            ax.set_yticks([])
        ax.set_xlabel("videos of the true class predicted as the other")
        heading = f"{len(pairs)} most confused pairs of {k} classes (true \u2192 predicted)"
        # over the figure, not the axes: the class names on the left push the axes to the right
        fig.suptitle(_heading(title, heading, 9), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _gflops_per_view(model: nn.Module, cfg: CfgNode) -> float | None:
    from vidformer.flops import count_flops

    x = torch.zeros(1, 3, cfg.DATA.NUM_FRAMES, cfg.DATA.TEST_CROP_SIZE, cfg.DATA.TEST_CROP_SIZE,
                    device=next(model.parameters()).device)
    try:
        return round(count_flops(model, x), 4)
    except Exception as e:  # tracing is best-effort metadata; the accuracy stands without it
        get_logger().warning(f"GFLOPs not counted ({type(e).__name__}: {e})")
        return None


def checkpoint_to_test(cfg: CfgNode) -> str:
    """TEST.CHECKPOINT_FILE_PATH, else the latest checkpoint in OUTPUT_DIR/checkpoints."""
    from vidformer.engine.trainer import latest_checkpoint

    path = cfg.TEST.CHECKPOINT_FILE_PATH or latest_checkpoint(cfg.OUTPUT_DIR)
    if not path:
        raise UsageError(f"no weights to test: TEST.CHECKPOINT_FILE_PATH is empty and OUTPUT_DIR "
                         f"'{cfg.OUTPUT_DIR}' has no checkpoints/checkpoint_epoch_*.pyth")
    return path


def _json_thresholds(thresholds: list[float]) -> list[float | None]:
    """+inf (no view may leave at that exit) as null, the rest rounded, for test_metrics.json."""
    return [None if math.isinf(t) else round(float(t), 6) for t in thresholds]


def _view_batches(videos: Iterable[dict], chunk: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """(views, labels) chunks of every decoded video's views, each view labelled with its video's label."""
    for video in videos:
        if video["failed"]:
            continue
        for s in range(0, video["views"].shape[0], chunk):
            views = video["views"][s:s + chunk]
            yield views, torch.full((views.shape[0],), int(video["label"]), dtype=torch.long)


def _exit_thresholds(cfg: CfgNode, model: nn.Module, env: du.DistEnv, iter_videos) -> tuple[list[float] | None, dict]:
    """The exit thresholds of the DVT section (given, or searched for DVT.GFLOPS_BUDGET on the calibration
    split), and what the metrics report about them; (None, {}) when the section asks for no early exit."""
    dvt = cfg.DVT
    if not dvt.THRESHOLDS and dvt.GFLOPS_BUDGET <= 0:
        return None, {}
    if not hasattr(model, "forward_early_exit"):
        raise UsageError(f"DVT.THRESHOLDS / DVT.GFLOPS_BUDGET ask for early exit, but MODEL.MODEL_NAME "
                         f"'{cfg.MODEL.MODEL_NAME}' has no exits (only the DVT cascade, dvt_*, has)")
    if dvt.THRESHOLDS and dvt.GFLOPS_BUDGET > 0:
        raise UsageError("set DVT.THRESHOLDS or DVT.GFLOPS_BUDGET, not both")
    costs = exit_costs(model, cfg.DATA.NUM_FRAMES, cfg.DATA.TEST_CROP_SIZE)
    cumulative = [c.cumulative for c in costs]
    info = {"exit_gflops_cumulative": [round(c, 6) for c in cumulative], "full_gflops": round(cumulative[-1], 6)}
    if dvt.THRESHOLDS:
        if len(dvt.THRESHOLDS) != model.num_exits - 1:
            raise UsageError(f"DVT.THRESHOLDS has {len(dvt.THRESHOLDS)} values; the cascade has {model.num_exits} "
                             f"exits, so give {model.num_exits - 1} (confidence thresholds of exits 1.."
                             f"{model.num_exits - 1}; the last exit takes every view left)")
        if any(not 0.0 <= float(t) for t in dvt.THRESHOLDS):
            raise UsageError(f"DVT.THRESHOLDS {list(dvt.THRESHOLDS)}: expected softmax confidences >= 0 "
                             f"(above 1: no view leaves at that exit)")
        return [float(t) for t in dvt.THRESHOLDS], dict(info, source="DVT.THRESHOLDS")
    if dvt.GFLOPS_BUDGET < cumulative[0]:
        raise UsageError(f"DVT.GFLOPS_BUDGET {dvt.GFLOPS_BUDGET:g} is below the first exit's cost "
                         f"({cumulative[0]:.4g} GFLOPs per view; the exits cost {info['exit_gflops_cumulative']} "
                         f"cumulative)")
    calib = cfg.clone()
    calib.defrost()
    calib.DATA.PATH_TO_DATA_DIR = dvt.CALIBRATION_DATA_DIR or cfg.DATA.PATH_TO_DATA_DIR
    split = dvt.CALIBRATION_SPLIT
    same = calib.DATA.PATH_TO_DATA_DIR == cfg.DATA.PATH_TO_DATA_DIR and split == cfg.TEST.SPLIT
    if same and env.is_main:
        get_logger().warning(f"DVT.CALIBRATION_SPLIT is the test split ('{split}' of the same folder): the "
                             f"thresholds are chosen on the videos they are scored on, so the result is optimistic")
    if env.is_main:
        get_logger().info(f"searching exit thresholds for DVT.GFLOPS_BUDGET {dvt.GFLOPS_BUDGET:g} on the "
                          f"'{split}' split of {calib.DATA.PATH_TO_DATA_DIR} (every exit on every view)")
    videos = iter_videos(calib, split, rank=env.rank, world_size=env.world_size)
    parts = du.gather_objects(collect_exit_probs(model, _view_batches(videos, cfg.TEST.BATCH_SIZE)))
    probs, labels = torch.cat([p for p, _ in parts], dim=1), torch.cat([y for _, y in parts])
    if labels.numel() == 0:
        raise UsageError(f"DVT.CALIBRATION_SPLIT '{split}' of '{calib.DATA.PATH_TO_DATA_DIR}' has no decodable video "
                         f"to search the exit thresholds on")
    point = search_thresholds(probs, labels, cumulative, target_gflops=dvt.GFLOPS_BUDGET)
    info.update(source="DVT.GFLOPS_BUDGET", gflops_budget=dvt.GFLOPS_BUDGET, calibration={
        "data_dir": calib.DATA.PATH_TO_DATA_DIR, "split": split, "num_views": labels.numel(),
        "same_as_test": same, "top1_per_view": round(point.top1, 4), "avg_gflops_per_view": round(point.gflops, 6),
        "exit_shares": [round(f, 6) for f in point.exit_fractions]})
    return point.thresholds[:-1], info


def _videos_on_rank(cfg: CfgNode, env: du.DistEnv) -> int:
    from vidformer.data import read_records

    return len(range(env.rank, len(read_records(cfg, cfg.TEST.SPLIT)), env.world_size))


def run_test(cfg: CfgNode, *, model: nn.Module | None = None, env: du.DistEnv | None = None,
             iter_videos=None, source: str = "the given model") -> dict:
    """The multi-view test of `cfg` (the given model, named `source` in the metrics, or else
    TEST.CHECKPOINT_FILE_PATH / the latest checkpoint).

    Writes, on the main process, OUTPUT_DIR/test_metrics.json, test_per_class.csv, test_confusion.png,
    test/ scalars and hparams in OUTPUT_DIR/tensorboard and, with TEST.SAVE_RESULTS, test_scores.pt (per-video
    scores and per-view logits). Returns the metrics.
    """
    env = env or du.DistEnv()
    logger = setup_logging(cfg.OUTPUT_DIR, env.is_main)
    device = du.device_for(env)
    view_threshold = float(cfg.TEST.ADAPTIVE_VIEWS)
    if not 0.0 <= view_threshold <= 1.0:
        raise UsageError(f"TEST.ADAPTIVE_VIEWS is {view_threshold:g}; expected a confidence in (0, 1], or 0 for off")
    if model is None:
        from vidformer.checkpoint import load_pretrained

        source = checkpoint_to_test(cfg)
        model = build_model(cfg)
        report = load_pretrained(model, source, strict=False)
        logger.info(f"testing {source}\n{report}")
        report.check_fit(cfg.TEST.ALLOW_PARTIAL)
        model = fuse_for_inference(model)  # built for this test alone; a model handed in (the trainer's) is not fused
    model = model.to(device).eval()
    total = None
    if iter_videos is None:
        from vidformer.data import iter_test_videos as iter_videos

        total = _videos_on_rank(cfg, env)
    thresholds, early_exit = _exit_thresholds(cfg, model, env, iter_videos)
    clips, crops = cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.TRAIN.MIXED_PRECISION) if device.type == "cuda" else None
    # compiled for the views only (calibration, FLOP counting and a cascade's forward_early_exit run the plain
    # model); how many graphs: build.compile_options
    views_model = torch.compile(model, **cfg_compile_options(cfg)) if cfg.MODEL.COMPILE else model
    local = score_videos(views_model, iter_videos(cfg, cfg.TEST.SPLIT, rank=env.rank, world_size=env.world_size),
                         method=cfg.TEST.ENSEMBLE_METHOD, chunk=cfg.TEST.BATCH_SIZE, autocast_dtype=amp,
                         total=total, show=env.is_main, exit_thresholds=thresholds, view_threshold=view_threshold,
                         keep_view_logits=cfg.TEST.SAVE_RESULTS, log_period=cfg.LOG_PERIOD)
    parts = du.gather_objects(local)
    merged = parts[0].merged_with(parts[1:])
    num_classes = cfg.MODEL.NUM_CLASSES
    scores = torch.stack(merged.scores) if merged.scores else torch.zeros(0, num_classes)
    labels = torch.tensor(merged.label, dtype=torch.long)
    acc = accuracy_metrics(scores, labels, num_classes)
    gflops = _gflops_per_view(model, cfg) if env.is_main else None
    failed = sorted(merged.failed)
    avg_views = sum(merged.views_used) / max(len(merged.views_used), 1)
    metrics = {
        "top1": round(acc["top1"], 4),
        "top5": round(acc["top5"], 4),
        "mean_class_acc": round(acc["mean_class_acc"], 4),
        "num_videos": len(merged.index),
        "num_views": clips * crops,
        "views": describe_views(clips, crops),
        "view_rule": view_rule(crops),
        "ensemble_method": cfg.TEST.ENSEMBLE_METHOD,
        "gflops_per_view": gflops,
        "gflops_per_video": None if gflops is None else round(gflops * clips * crops, 4),
        "failed_videos": failed,
        "failed_errors": {p: merged.failed[p] for p in failed},
        "split": cfg.TEST.SPLIT,
        "model": cfg.MODEL.MODEL_NAME,
        "checkpoint": source,
    }
    per_view = gflops
    if thresholds is not None:
        taken = torch.cat(merged.exits) if merged.exits else torch.zeros(0, dtype=torch.long)
        cost = torch.tensor(early_exit["exit_gflops_cumulative"], dtype=torch.float64)
        shares = torch.bincount(taken, minlength=model.num_exits).double() / max(taken.numel(), 1)
        per_view = cost[taken].mean().item() if taken.numel() else 0.0
        metrics["adaptive"] = dict(thresholds=_json_thresholds(thresholds), avg_gflops_per_view=round(per_view, 6),
                                   exit_shares=[round(s, 6) for s in shares.tolist()], **early_exit)
    if view_threshold > 0:
        used = torch.tensor(merged.views_used)
        metrics["adaptive_views"] = {
            "threshold": view_threshold, "avg_views": round(avg_views, 4), "max_views": clips * crops,
            # share of the videos that stopped after 1, 2, ... views
            "views_used_shares": [round(s, 6) for s in (torch.bincount(used, minlength=clips * crops + 1)[1:].double()
                                                         / max(used.numel(), 1)).tolist()]}
    if per_view is not None and (thresholds is not None or view_threshold > 0):
        metrics["gflops_per_video"] = round(per_view * avg_views, 6)
    if env.is_main:
        names = _label_names(cfg, num_classes)
        payload = _scores_payload(merged, scores, metrics, names, clips * crops) if cfg.TEST.SAVE_RESULTS else None
        _write_outputs(cfg, metrics, names, acc, payload)
        adaptive = ""
        if thresholds is not None:
            adaptive += (f"; early exit: {metrics['adaptive']['avg_gflops_per_view']:.4g} of "
                         f"{early_exit['full_gflops']:.4g} GFLOPs per view on average")
        if view_threshold > 0:
            adaptive += f"; adaptive views: {avg_views:.2f} of {clips * crops} views per video on average"
        logger.info(f"test on {metrics['num_videos']} videos ({metrics['views']}, {cfg.TEST.ENSEMBLE_METHOD}): "
                    f"top-1 {metrics['top1']:.2f}, top-5 {metrics['top5']:.2f}, mean class "
                    f"{metrics['mean_class_acc']:.2f}{adaptive}; {len(failed)} video(s) failed to decode and were "
                    f"left out")
    return metrics


def _scores_payload(merged: VideoScores, scores: torch.Tensor, metrics: dict, names: list[str],
                    num_views: int) -> dict:
    """test_scores.pt: per-video scores (N, K), per-view logits (N, V, K; NaN rows for views adaptive testing
    did not run), labels, paths and what the views were, in video-index order."""
    n, k = scores.shape
    logits = torch.full((n, num_views, k), math.nan)
    for i, v in enumerate(merged.view_logits):
        logits[i, :v.shape[0]] = v
    payload = {"index": torch.tensor(merged.index, dtype=torch.long),
               "label": torch.tensor(merged.label, dtype=torch.long), "scores": scores, "view_logits": logits,
               "views_used": torch.tensor(merged.views_used, dtype=torch.long), "paths": list(merged.path),
               "class_names": list(names),
               **{key: metrics[key] for key in ("ensemble_method", "views", "view_rule", "split", "model", "checkpoint")}}
    if merged.exits:
        exits = torch.full((n, num_views), -1, dtype=torch.long)
        for i, e in enumerate(merged.exits):
            exits[i, :e.numel()] = e
        payload["exits"] = exits  # exit each view left at (-1: not run)
    return payload


def _write_json(path: str, obj: dict) -> None:
    atomic_write(path, lambda f: json.dump(obj, f, indent=2))


def _write_outputs(cfg: CfgNode, metrics: dict, names: list[str], acc: dict, payload: dict | None = None) -> None:
    out = cfg.OUTPUT_DIR
    os.makedirs(out, exist_ok=True)
    _write_json(os.path.join(out, "test_metrics.json"), metrics)
    write_per_class_csv(os.path.join(out, "test_per_class.csv"), names, acc)
    title = (f"{metrics['model']} on {metrics['split']} ({metrics['views']}, {metrics['num_videos']} videos): "
             f"top-1 {metrics['top1']:.2f} %")
    write_confusion_png(os.path.join(out, "test_confusion.png"), names, acc["confusion"], title)
    _write_tensorboard(cfg, metrics)
    if payload is not None:
        save_checkpoint(payload, os.path.join(out, "test_scores.pt"))


def _write_tensorboard(cfg: CfgNode, metrics: dict) -> None:
    """test/ scalars and the run's hparams (model, data, views, recipe) with its test accuracy."""
    scalars = Scalars(os.path.join(cfg.OUTPUT_DIR, "tensorboard"))
    values = {key: metrics[key] for key in ("top1", "top5", "mean_class_acc")}
    if metrics.get("gflops_per_video") is not None:
        values["gflops_per_video"] = metrics["gflops_per_video"]
    if "adaptive" in metrics:
        values["avg_gflops_per_view"] = metrics["adaptive"]["avg_gflops_per_view"]
    if "adaptive_views" in metrics:
        values["avg_views"] = metrics["adaptive_views"]["avg_views"]
    for key, value in values.items():
        scalars.add(f"test/{key}", value, 0)
    hparams = {"model": str(metrics["model"]), "split": str(metrics["split"]), "views": str(metrics["views"]),
               "ensemble_method": str(metrics["ensemble_method"]), "num_frames": cfg.DATA.NUM_FRAMES,
               "sampling_rate": cfg.DATA.SAMPLING_RATE, "test_crop_size": cfg.DATA.TEST_CROP_SIZE,
               "base_lr": cfg.SOLVER.BASE_LR, "batch_size": cfg.TRAIN.BATCH_SIZE, "max_epoch": cfg.SOLVER.MAX_EPOCH,
               "optimizer": cfg.SOLVER.OPTIMIZING_METHOD}
    scalars.writer.add_hparams(hparams, {f"hparam/test_{key}": value for key, value in values.items()}, run_name=".")
    scalars.close()


def run_ensemble(cfg: CfgNode, paths: list[str]) -> dict:
    """Metrics of the ensemble of saved test_scores.pt files (same videos, same order), without a model or
    a video: per file its views combined by TEST.ENSEMBLE_METHOD, then the files summed. Writes the test's
    files (test_metrics.json, per-class CSV, confusion picture, TensorBoard) to OUTPUT_DIR."""
    if len(set(paths)) != len(paths):
        raise UsageError(f"--scores names a file twice: {' '.join(paths)}")
    setup_logging(cfg.OUTPUT_DIR, True)
    files = {path: load_scores(path) for path in paths}
    method = cfg.TEST.ENSEMBLE_METHOD
    scores = ensemble_scores(files, method)
    first = next(iter(files.values()))
    labels = torch.as_tensor(first["label"], dtype=torch.long)
    num_classes = scores.shape[1]
    names = list(first.get("class_names") or [str(i) for i in range(num_classes)])
    acc = accuracy_metrics(scores, labels, num_classes)
    models = [str(saved.get("model", "?")) for saved in files.values()]
    metrics = {
        "top1": round(acc["top1"], 4),
        "top5": round(acc["top5"], 4),
        "mean_class_acc": round(acc["mean_class_acc"], 4),
        "num_videos": labels.numel(),
        "views": " + ".join(str(saved.get("views", "?")) for saved in files.values()),
        "ensemble_method": method,
        "split": str(first.get("split", "?")),
        "model": "ensemble of " + " + ".join(models),
        "ensemble": {"files": list(paths), "models": models,
                     "top1_each": [round(accuracy_metrics(s["scores"].float(), labels, num_classes)["top1"], 4)
                                   for s in files.values()]},
    }
    _write_outputs(cfg, metrics, names, acc)
    get_logger().info(f"ensemble of {len(files)} score files on {metrics['num_videos']} videos ({method}): "
                      f"top-1 {metrics['top1']:.2f}, top-5 {metrics['top5']:.2f}")
    return metrics
