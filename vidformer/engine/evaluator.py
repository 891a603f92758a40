"""Multi-view video evaluation: every test video decoded once, TEST.NUM_ENSEMBLE_VIEWS temporal clips x
TEST.NUM_SPATIAL_CROPS crops cut from it, the views run through the model in chunks, their outputs
combined per video, and top-1 / top-5 / mean-class accuracy written to OUTPUT_DIR/test_metrics.json.

The view rule is PySlowFast's (research/mvitv2_slowfast.md §4.1): view k is temporal clip k // S and
spatial crop k % S. Per-view softmax probabilities are summed per video ("sum", PySlowFast's
DATA.ENSEMBLE_METHOD), or logits are summed ("logits"), or the per-class maximum is taken ("max").
Under several processes each rank scores its own videos and the results are gathered by video index,
so every video counts exactly once. Videos that fail to decode are listed and left out of the
denominator, never scored as right or wrong.
"""

import contextlib
import csv
import json
import os
from dataclasses import dataclass, field
from typing import Iterable

import torch
from fvcore.common.config import CfgNode
from torch import nn

from vidformer.engine import distributed as du
from vidformer.engine.build import build_model
from vidformer.engine.runlog import get_logger, progress, setup_logging
from vidformer.errors import UsageError

ENSEMBLE_METHODS = ("sum", "logits", "max")
# a confusion-matrix image stops being readable beyond a few hundred classes
MAX_CONFUSION_CLASSES = 400


def aggregate_views(view_logits: torch.Tensor, method: str) -> torch.Tensor:
    """(V, K) logits of one video's views -> (K,) video scores."""
    if method == "sum":
        return view_logits.float().softmax(dim=-1).sum(dim=0)
    if method == "logits":
        return view_logits.float().sum(dim=0)
    if method == "max":
        return view_logits.float().softmax(dim=-1).max(dim=0).values
    raise UsageError(f"TEST.ENSEMBLE_METHOD is {method!r}; expected one of {', '.join(ENSEMBLE_METHODS)}")


@torch.no_grad()
def view_logits(model: nn.Module, views: torch.Tensor, chunk: int, autocast_dtype: torch.dtype | None = None
                ) -> torch.Tensor:
    """(V, C, T, H, W) views -> (V, K) logits, `chunk` views per forward pass (bounded memory)."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, views.shape[0], chunk):
        batch = views[start:start + chunk].to(device, non_blocking=True)
        ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
        with ctx:
            out.append(model(batch).float().cpu())
    return torch.cat(out)


def describe_views(num_clips: int, num_crops: int) -> str:
    """'5 clips x 1 crop' — the notation the papers' tables use (temporal x spatial)."""
    return f"{num_clips} clip{'s' * (num_clips != 1)} x {num_crops} crop{'s' * (num_crops != 1)}"


def view_rule(num_crops: int) -> str:
    if num_crops == 1:
        return "view k = temporal clip k, center crop (PySlowFast rule)"
    return f"view k = temporal clip k // {num_crops}, spatial crop k % {num_crops} (PySlowFast rule)"


@dataclass
class VideoScores:
    """Per-video results of one process (or, after merging, of all)."""

    index: list[int] = field(default_factory=list)
    path: list[str] = field(default_factory=list)
    label: list[int] = field(default_factory=list)
    scores: list[torch.Tensor] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # path -> decoder error

    def merged_with(self, others: list["VideoScores"]) -> "VideoScores":
        """All processes' results ordered by video index, each video once."""
        rows, failed = {}, {}
        for part in [self, *others]:
            rows.update({i: (p, l, s) for i, p, l, s in zip(part.index, part.path, part.label, part.scores)})
            failed.update(part.failed)
        out = VideoScores(failed=failed)
        for i in sorted(rows):
            path, label, scores = rows[i]
            out.index.append(i)
            out.path.append(path)
            out.label.append(label)
            out.scores.append(scores)
        return out


def score_videos(model: nn.Module, videos: Iterable[dict], *, method: str, chunk: int,
                 autocast_dtype: torch.dtype | None = None, total: int | None = None, show: bool = False
                 ) -> VideoScores:
    """Score every video the iterable yields (dicts with views, label, index, path, failed, error)."""
    result = VideoScores()
    model.eval()
    bar = progress(total or 0, "test", show)
    for video in videos:
        bar.update()
        if video["failed"]:
            result.failed[video["path"]] = str(video.get("error", "decoding failed"))
            get_logger().warning(f"could not decode {video['path']}: {video.get('error')}; left out of the metrics")
            continue
        logits = view_logits(model, video["views"], chunk, autocast_dtype)
        result.index.append(int(video["index"]))
        result.path.append(video["path"])
        result.label.append(int(video["label"]))
        result.scores.append(aggregate_views(logits, method))
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


def write_confusion_png(path: str, names: list[str], confusion: torch.Tensor) -> None:
    """Row-normalised confusion matrix (rows: true class, columns: predicted); names shown up to 40 classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = confusion.shape[0]
    rates = confusion.float() / confusion.sum(dim=1, keepdim=True).clamp(min=1)
    size = min(4 + 0.25 * k, 40)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    if k <= 40:
        ax.set_xticks(range(k), names, rotation=90, fontsize=8)
        ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.046)
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


def run_test(cfg: CfgNode, *, model: nn.Module | None = None, env: du.DistEnv | None = None,
             iter_videos=None, source: str = "the given model") -> dict:
    """The multi-view test of `cfg` (the given model, named `source` in the metrics, or else
    TEST.CHECKPOINT_FILE_PATH / the latest checkpoint).

    Writes, on the main process, OUTPUT_DIR/test_metrics.json, test_per_class.csv, test_confusion.png
    (up to MAX_CONFUSION_CLASSES classes) and, with TEST.SAVE_RESULTS, test_scores.pt. Returns the metrics.
    """
    env = env or du.DistEnv()
    logger = setup_logging(cfg.OUTPUT_DIR, env.is_main)
    device = du.device_for(env)
    if model is None:
        from vidformer.checkpoint import load_pretrained

        source = checkpoint_to_test(cfg)
        model = build_model(cfg)
        report = load_pretrained(model, source, strict=False)
        logger.info(f"testing {source}\n{report}")
        report.check_fit(cfg.TEST.ALLOW_PARTIAL)
    model = model.to(device).eval()
    if iter_videos is None:
        from vidformer.data import iter_test_videos as iter_videos
    clips, crops = cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.TRAIN.MIXED_PRECISION) if device.type == "cuda" else None
    local = score_videos(model, iter_videos(cfg, cfg.TEST.SPLIT, rank=env.rank, world_size=env.world_size),
                         method=cfg.TEST.ENSEMBLE_METHOD, chunk=cfg.TEST.BATCH_SIZE, autocast_dtype=amp,
                         show=env.is_main)
    parts = du.gather_objects(local)
    merged = parts[0].merged_with(parts[1:])
    num_classes = cfg.MODEL.NUM_CLASSES
    scores = torch.stack(merged.scores) if merged.scores else torch.zeros(0, num_classes)
    labels = torch.tensor(merged.label, dtype=torch.long)
    acc = accuracy_metrics(scores, labels, num_classes)
    gflops = _gflops_per_view(model, cfg) if env.is_main else None
    failed = sorted(merged.failed)
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
    if env.is_main:
        _write_outputs(cfg, metrics, merged, scores, acc)
        logger.info(f"test on {metrics['num_videos']} videos ({metrics['views']}, {cfg.TEST.ENSEMBLE_METHOD}): "
                    f"top-1 {metrics['top1']:.2f}, top-5 {metrics['top5']:.2f}, mean class "
                    f"{metrics['mean_class_acc']:.2f}; {len(failed)} video(s) failed to decode and were left out")
    return metrics


def _write_outputs(cfg: CfgNode, metrics: dict, merged: VideoScores, scores: torch.Tensor, acc: dict) -> None:
    out = cfg.OUTPUT_DIR
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "test_metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    names = _label_names(cfg, cfg.MODEL.NUM_CLASSES)
    write_per_class_csv(os.path.join(out, "test_per_class.csv"), names, acc)
    if cfg.MODEL.NUM_CLASSES <= MAX_CONFUSION_CLASSES:
        write_confusion_png(os.path.join(out, "test_confusion.png"), names, acc["confusion"])
    if cfg.TEST.SAVE_RESULTS:
        torch.save({"index": torch.tensor(merged.index), "label": torch.tensor(merged.label), "scores": scores,
                    "paths": merged.path, "ensemble_method": cfg.TEST.ENSEMBLE_METHOD},
                   os.path.join(out, "test_scores.pt"))
