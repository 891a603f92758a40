"""`vidformer quickstart`: the first command a newcomer runs, with no dataset and no GPU.

It writes the synthetic motion dataset (the class is the direction a sprite moves) to a cache
folder, trains configs/quickstart.yaml's small video model on it, runs the multi-view test, then
trains and tests the same model at DATA.NUM_FRAMES 1. The video model should be far above chance
and the one-frame model near it: one frame does not show which way something moves, so the gap is
what the video model learned from time.
"""

import os
import time

from fvcore.common.config import CfgNode

from vidformer.config import get_cfg
from vidformer.engine.evaluator import run_test
from vidformer.engine.trainer import Trainer, latest_checkpoint
from vidformer.errors import UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICKSTART_CONFIG = os.path.join(ROOT, "configs", "quickstart.yaml")
NUM_CLASSES = 4


def default_cache() -> str:
    base = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    return os.path.join(base, "vidformer")


def synthetic_dataset(cache: str, train_per_class: int, val_per_class: int) -> str:
    """The synthetic dataset folder for these sizes, written on first use (about 5 videos per second)."""
    from vidformer.data import make_synthetic_dataset

    root = os.path.join(cache, f"synthetic_motion_{NUM_CLASSES}x{train_per_class}+{val_per_class}")
    if not os.path.isfile(os.path.join(root, "val.csv")):
        print(f"writing the synthetic dataset to {root} ...", flush=True)
        make_synthetic_dataset(root, num_classes=NUM_CLASSES, train_per_class=train_per_class,
                               val_per_class=val_per_class, num_frames=32, size=64, seed=0)
    return root


def _train_and_test(cfg: CfgNode) -> dict:
    trainer = Trainer(cfg, resume=False)
    trainer.fit()
    return run_test(cfg, model=trainer.model, source=latest_checkpoint(cfg.OUTPUT_DIR))


def run_quickstart(output_dir: str, *, cache: str | None = None, config: str = QUICKSTART_CONFIG,
                   overrides: list[str] = (), train_per_class: int = 64, val_per_class: int = 16) -> dict:
    """Train and test the video model and its one-frame control; returns {"video": metrics, "image": metrics}."""
    if not os.path.isfile(config):
        raise UsageError(f"quickstart config '{config}' does not exist (it ships in the repository's configs/; "
                         f"pass --config)")
    data = synthetic_dataset(cache or default_cache(), train_per_class, val_per_class)
    results = {}
    start = time.perf_counter()
    for name, frames in (("video", None), ("image", 1)):
        extra = [] if frames is None else ["DATA.NUM_FRAMES", str(frames)]
        cfg = get_cfg(config, ["DATA.PATH_TO_DATA_DIR", data, "OUTPUT_DIR", os.path.join(output_dir, name),
                               *overrides, *extra])
        print(f"training the {name} model ({cfg.MODEL.MODEL_NAME}, {cfg.DATA.NUM_FRAMES} frame(s)) ...", flush=True)
        results[name] = _train_and_test(cfg)
    results["seconds"] = round(time.perf_counter() - start, 1)
    return results


def summary(results: dict) -> str:
    chance = 100.0 / NUM_CLASSES
    video, image = results["video"], results["image"]
    return "\n".join([
        f"quickstart finished in {results['seconds']:.0f} s. Multi-view top-1 on the synthetic val split "
        f"({video['num_videos']} videos, {video['views']}; chance {chance:.0f} %):",
        f"  video model ({video['model']}):   {video['top1']:6.2f} %",
        f"  same model on one frame:          {image['top1']:6.2f} %  (motion is invisible in one frame)",
        f"checkpoint: {video['checkpoint']}",
        f"logs:       {os.path.dirname(os.path.dirname(video['checkpoint']))}/log.jsonl, log.txt, tensorboard/",
        f"next:       vidformer demo VIDEO --checkpoint {video['checkpoint']}",
    ])
