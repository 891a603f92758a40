"""Single-video inference: the top classes of one file (all test views combined), or, in sliding-window
mode, the top classes of each of N evenly spaced windows over a long video."""

import os
import tempfile
from dataclasses import dataclass

import torch
from fvcore.common.config import CfgNode
from torch import nn

from vidformer.config import get_cfg
from vidformer.engine.build import build_model
from vidformer.engine.evaluator import aggregate_views, describe_views, view_logits
from vidformer.errors import UsageError


@dataclass
class Prediction:
    label: int
    name: str
    probability: float


def demo_config(config_file: str | None, checkpoint: str | None, overrides: list[str]) -> CfgNode:
    """The config given, else the one a native checkpoint carries ("cfg"), with `overrides` applied."""
    if config_file:
        return get_cfg(config_file, overrides)
    if not checkpoint:
        raise UsageError("demo needs --config FILE or a vidformer --checkpoint (which carries its config)")
    from vidformer.checkpoint import load_checkpoint_file

    ckpt = load_checkpoint_file(checkpoint)
    if not isinstance(ckpt, dict) or "cfg" not in ckpt:
        raise UsageError(f"checkpoint '{checkpoint}' carries no config (it is not a vidformer training checkpoint); "
                         f"pass --config FILE too")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "config.yaml")
        with open(path, "w") as f:
            f.write(ckpt["cfg"])
        return get_cfg(path, overrides)


def load_demo_model(cfg: CfgNode, checkpoint: str | None, *, allow_partial: bool = False) -> nn.Module:
    from vidformer.checkpoint import load_pretrained

    model = build_model(cfg)
    source = checkpoint or cfg.TEST.CHECKPOINT_FILE_PATH
    if not source:
        raise UsageError("demo needs weights: --checkpoint FILE or TEST.CHECKPOINT_FILE_PATH in the config")
    load_pretrained(model, source, strict=False).check_fit(allow_partial)
    return model.eval()


def top_classes(scores: torch.Tensor, names: list[str], k: int) -> list[Prediction]:
    """Top-k of (K,) probabilities (scores that do not sum to 1, e.g. summed softmaxes, are renormalised)."""
    probs = scores / scores.sum() if (scores >= 0).all() and scores.sum() > 0 else scores.softmax(-1)
    values, labels = probs.topk(min(k, probs.numel()))
    return [Prediction(int(i), names[int(i)], float(v)) for v, i in zip(values, labels)]


def label_names(cfg: CfgNode) -> list[str]:
    from vidformer.data import load_label_names

    names = load_label_names(cfg)
    if not names or len(names) != cfg.MODEL.NUM_CLASSES:
        return [f"class {i}" for i in range(cfg.MODEL.NUM_CLASSES)]
    return list(names)


def predict_video(model: nn.Module, cfg: CfgNode, path: str, *, topk: int = 5, windows: int = 0) -> dict:
    """{"video", "views", "top": [...]} for the whole video, plus "windows": [{"window", "top"}] when
    windows > 0 (that many evenly spaced clips, one centre crop each, first at the start, last at the end)."""
    from vidformer.data import load_video_views

    if os.path.isdir(path):
        raise UsageError(f"video '{path}' is a directory; expected a video file")
    if not os.path.isfile(path):
        raise UsageError(f"video '{path}' does not exist")
    names = label_names(cfg)
    views = load_video_views(path, cfg)  # (V, C, T, S, S)
    logits = view_logits(model, views, cfg.TEST.BATCH_SIZE)
    result = {"video": path, "views": describe_views(cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS),
              "top": [p.__dict__ for p in top_classes(aggregate_views(logits, cfg.TEST.ENSEMBLE_METHOD), names, topk)]}
    if windows > 0:
        sliding = cfg.clone()
        sliding.defrost()
        sliding.TEST.NUM_ENSEMBLE_VIEWS, sliding.TEST.NUM_SPATIAL_CROPS = windows, 1
        per_window = view_logits(model, load_video_views(path, sliding), cfg.TEST.BATCH_SIZE)
        spans = window_spans(path, sliding)
        result["windows"] = [{"start_s": start, "end_s": end,
                              "top": [p.__dict__ for p in top_classes(w.softmax(-1), names, topk)]}
                             for (start, end), w in zip(spans, per_window)]
    return result


def window_spans(path: str, cfg: CfgNode) -> list[tuple[float, float]]:
    """(start, end) seconds of each temporal test clip, by the same sampling rule the views were cut with."""
    from vidformer.data import open_video
    from vidformer.data.sampling import view_clip_indices

    with open_video(path, cfg.DATA.DECODING_BACKEND) as reader:
        clips = view_clip_indices(reader.num_frames, reader.fps, cfg.DATA, cfg.TEST.NUM_ENSEMBLE_VIEWS)
        fps = reader.fps
    return [(round(float(c[0]) / fps, 2), round(float(c[-1] + 1) / fps, 2)) for c in clips]


def format_prediction(result: dict) -> str:
    lines = [f"{result['video']} ({result['views']}):"]
    lines += [f"  {p['probability']:7.2%}  {p['name']}" for p in result["top"]]
    for w in result.get("windows", []):
        lines.append(f"  {w['start_s']:7.2f}-{w['end_s']:7.2f} s: "
                     + ", ".join(f"{p['name']} {p['probability']:.0%}" for p in w["top"][:3]))
    return "\n".join(lines)
