"""`vidformer extract`: pre-logits features of every video of TEST.SPLIT, for downstream heads and retrieval.

Each video is decoded once and its test views (TEST.NUM_ENSEMBLE_VIEWS x TEST.NUM_SPATIAL_CROPS, as in
`vidformer test`) go through the model in TEST.BATCH_SIZE chunks. Output in DIR:
  features.npy  (N, D) float32, the views' features averaged, or (N, V, D) with per_view;
  videos.csv    path,label of each row, in the split's order;
  extract.json  what was run: checkpoint, split, views, shape, and the videos that failed to decode
                (left out of the rows and listed, as `vidformer test` lists them).
Under torchrun each rank extracts its share and the rows are gathered by video index, so every video
appears once. Files are written atomically.
"""

import csv
import json
import os

import numpy as np
import torch
from fvcore.common.config import CfgNode

from vidformer.checkpoint.io import atomic_write
from vidformer.engine import distributed as du
from vidformer.engine.evaluator import VideoScores, describe_views
from vidformer.engine.recognizer import Recognizer, label_names, load_model
from vidformer.engine.runlog import get_logger, progress, setup_logging


def run_extract(cfg: CfgNode, checkpoint: str, output_dir: str, *, per_view: bool = False,
                env: du.DistEnv | None = None, allow_partial: bool = False, iter_videos=None) -> dict:
    """Extract cfg's TEST.SPLIT with the weights of `checkpoint` into output_dir; returns the extract.json summary."""
    env = env or du.DistEnv()
    setup_logging(output_dir, env.is_main)
    device = du.device_for(env)
    model, report = load_model(cfg, checkpoint, allow_partial=allow_partial)
    get_logger().info(f"extracting with {checkpoint}\n{report}")
    recognizer = Recognizer(model.to(device), cfg, label_names(cfg), device, report)
    if iter_videos is None:
        from vidformer.data import iter_test_videos as iter_videos
    local = VideoScores()  # `scores` holds each video's (V, D) features here
    bar = progress(0, "extract", env.is_main)
    for video in iter_videos(cfg, cfg.TEST.SPLIT, rank=env.rank, world_size=env.world_size):
        bar.update()
        if video["failed"]:
            local.failed[video["path"]] = str(video.get("error", "decoding failed"))
            get_logger().warning(f"could not decode {video['path']}: {video.get('error')}; left out")
            continue
        feats = recognizer.view_features(video["views"])
        local.index.append(int(video["index"]))
        local.path.append(video["path"])
        local.label.append(int(video["label"]))
        local.scores.append(feats if per_view else feats.mean(0))
    bar.close()
    parts = du.gather_objects(local)
    merged = parts[0].merged_with(parts[1:])
    dim = merged.scores[0].shape[-1] if merged.scores else 0
    shape = (0, cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS, dim) if per_view else (0, dim)
    features = torch.stack(merged.scores).numpy().astype(np.float32) if merged.scores else np.zeros(shape, np.float32)
    failed = sorted(merged.failed)
    summary = {
        "num_videos": len(merged.index), "shape": list(features.shape), "per_view": per_view,
        "views": describe_views(cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS),
        "split": cfg.TEST.SPLIT, "model": cfg.MODEL.MODEL_NAME, "checkpoint": str(checkpoint),
        "failed_videos": failed, "failed_errors": {p: merged.failed[p] for p in failed},
    }
    if env.is_main:
        os.makedirs(output_dir, exist_ok=True)
        atomic_write(os.path.join(output_dir, "features.npy"), lambda f: np.save(f, features), binary=True)

        def write_csv(f):
            w = csv.writer(f)
            w.writerow(["path", "label"])
            w.writerows(zip(merged.path, merged.label))

        atomic_write(os.path.join(output_dir, "videos.csv"), write_csv)
        atomic_write(os.path.join(output_dir, "extract.json"), lambda f: json.dump(summary, f, indent=2))
        get_logger().info(f"features {tuple(features.shape)} of {len(merged.index)} videos -> {output_dir}; "
                          f"{len(failed)} video(s) failed to decode and were left out")
    return summary
