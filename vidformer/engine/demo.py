"""Single-video inference for `vidformer demo`: the top classes of one file (all test views combined), or,
in sliding-window mode, also the top classes of each of N evenly spaced windows over a long video.
The model, its views and its batching are the Recognizer's (engine/recognizer.py)."""

from vidformer.config import get_cfg
from vidformer.engine.evaluator import describe_views
from vidformer.engine.recognizer import Recognizer, load_recognizer
from vidformer.errors import UsageError


def demo_recognizer(config_file: str | None, checkpoint: str | None, overrides=(), *, device=None,
                    allow_partial: bool = False) -> Recognizer:
    """The recognizer of --checkpoint (its own config, or --config's), or of --config's TEST.CHECKPOINT_FILE_PATH."""
    if not checkpoint:
        if not config_file:
            raise UsageError("demo needs --config FILE or a vidformer --checkpoint (which carries its config)")
        checkpoint = get_cfg(config_file, overrides).TEST.CHECKPOINT_FILE_PATH
        if not checkpoint:
            raise UsageError("demo needs weights: --checkpoint FILE or TEST.CHECKPOINT_FILE_PATH in the config")
    return load_recognizer(checkpoint, device, config=config_file, overrides=overrides, allow_partial=allow_partial)


def _top(recognizer: Recognizer, probs, k: int) -> list[dict]:
    values, labels = probs.topk(min(k, probs.numel()))
    return [{"label": int(i), "name": recognizer.class_names[int(i)], "probability": float(v)}
            for v, i in zip(values, labels)]


def predict_video(recognizer: Recognizer, path: str, *, topk: int = 5, windows: int = 0) -> dict:
    """{"video", "views", "top": [...]} for the whole video, plus "windows": [{"start_s", "end_s", "top"}]
    when windows > 0 (that many evenly spaced clips, one centre crop each, first at the start, last at the end)."""
    views = recognizer.views(path)
    crops = recognizer.cfg.TEST.NUM_SPATIAL_CROPS  # a still image gets one temporal view
    result = {"video": path, "views": describe_views(views.shape[0] // crops, crops),
              "top": _top(recognizer, recognizer.scores(views), topk)}
    if windows > 0:
        per_window = recognizer.view_logits(recognizer.views(path, num_clips=windows, num_crops=1))
        spans = window_spans(path, recognizer, windows)
        result["windows"] = [{"start_s": start, "end_s": end, "top": _top(recognizer, w.softmax(-1), topk)}
                             for (start, end), w in zip(spans, per_window)]
    return result


def window_spans(path: str, recognizer: Recognizer, windows: int) -> list[tuple[float, float]]:
    """(start, end) seconds of each temporal window, by the same sampling rule the views were cut with."""
    from vidformer.data import open_video
    from vidformer.data.sampling import view_clip_indices

    cfg = recognizer.cfg
    with open_video(path, cfg.DATA.DECODING_BACKEND) as reader:
        clips = view_clip_indices(reader.num_frames, reader.fps, cfg.DATA, windows)
        fps = reader.fps
    return [(round(float(c[0]) / fps, 2), round(float(c[-1] + 1) / fps, 2)) for c in clips]


def format_prediction(result: dict) -> str:
    lines = [f"{result['video']} ({result['views']}):"]
    lines += [f"  {p['probability']:7.2%}  {p['name']}" for p in result["top"]]
    for w in result.get("windows", []):
        lines.append(f"  {w['start_s']:7.2f}-{w['end_s']:7.2f} s: "
                     + ", ".join(f"{p['name']} {p['probability']:.0%}" for p in w["top"][:3]))
    return "\n".join(lines)
