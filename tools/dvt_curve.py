"""Train a small DVT cascade on the quickstart's synthetic motion dataset, choose exit thresholds on a
held-out split for a GFLOPs budget, and measure real early exit on the val split: accuracy against the
full cascade, average GFLOPs, and the accuracy-vs-GFLOPs curve (CSV + PNG).

    python tools/dvt_curve.py --output runs/dvt_curve [--budget 0.6] [KEY VALUE ...]

The held-out (calibration) split is a second synthetic dataset with another seed, read with the
test-time transform: neither the training clips nor the val videos choose the thresholds
(research/dvt.md §6.2 pitfall 5).
"""

import argparse
import json
import os

from vidformer.config import get_cfg
from vidformer.data import build_loader, make_synthetic_dataset
from vidformer.engine.adaptive import (budget_curve, collect_exit_probs, early_exit_evaluate, exit_costs,
                                       search_thresholds, write_curve)
from vidformer.engine.quickstart import QUICKSTART_CONFIG, default_cache, synthetic_dataset
from vidformer.engine.trainer import Trainer

# Three exits on 32 px crops of 8 frames: 4x2x2 -> 4x3x3 -> 4x4x4 tokens (the 7 -> 10 -> 14 ladder, shrunk).
# Every exit's tubelet is 2 frames long: with the 4-frame tubelet of the Kinetics config the first exit had
# only 2 time steps and learned the direction of motion far more slowly than the exits after it.
CASCADE = ("{'embed_dim': 64, 'depth': 3, 'num_heads': 4, 'reuse_dim': 16, 'reuse_hidden': 32, "
           "'exit_patches': ((2, 16, 16), (2, 11, 11), (2, 8, 8)), "
           "'exit_paddings': ((0, 0, 0), (0, 1, 1), (0, 0, 0))}")
# A from-scratch ViT on 256 clips: lr 1e-3 (4e-3 stayed at chance), no drop path, 12 epochs; the
# rest (AdamW, 1 warm-up epoch, cosine, batch 16, no label smoothing) is configs/quickstart.yaml's.
TRAINING = ["MODEL.DROPPATH_RATE", "0.0", "SOLVER.BASE_LR", "0.001", "SOLVER.WARMUP_START_LR", "0.0001",
            "SOLVER.MAX_EPOCH", "12", "TRAIN.EVAL_PERIOD", "4", "TRAIN.CHECKPOINT_PERIOD", "12"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", default="runs/dvt_curve")
    p.add_argument("--cache", default=None, help="synthetic dataset folder (default ~/.cache/vidformer)")
    # the goal is <= 60 % of the full cascade's GFLOPs on val; thresholds from the calibration split spend a
    # few points more or less of it on val (0.590 there gave 0.618 here), so the search aims at 50 %
    p.add_argument("--budget", type=float, default=0.5, help="target average GFLOPs as a share of the full cascade")
    p.add_argument("--train-per-class", type=int, default=64, help="as many as the quickstart trains on")
    p.add_argument("--val-per-class", type=int, default=32, help="1 point of top-1 is under one clip")
    p.add_argument("--calib-per-class", type=int, default=32)
    p.add_argument("opts", nargs="*", help="config KEY VALUE overrides")
    args = p.parse_args()
    cache = args.cache or default_cache()
    data = synthetic_dataset(cache, args.train_per_class, args.val_per_class)
    calib = os.path.join(cache, f"synthetic_motion_calib_{args.calib_per_class}")
    if not os.path.isfile(os.path.join(calib, "val.csv")):
        make_synthetic_dataset(calib, num_classes=4, train_per_class=1, val_per_class=args.calib_per_class,
                               num_frames=32, size=64, seed=1)
    base = ["MODEL.MODEL_NAME", "dvt_deit_s", "MODEL.OVERRIDES", CASCADE, "OUTPUT_DIR", args.output, *TRAINING, *args.opts]
    cfg = get_cfg(QUICKSTART_CONFIG, base + ["DATA.PATH_TO_DATA_DIR", data])
    trainer = Trainer(cfg, resume=False)
    trainer.fit()
    model = trainer.model.eval()

    costs = exit_costs(model)
    cum = [c.cumulative for c in costs]
    calib_loader = build_loader(get_cfg(QUICKSTART_CONFIG, base + ["DATA.PATH_TO_DATA_DIR", calib]), "val")
    val_loader = build_loader(cfg, "val")
    probs, labels = collect_exit_probs(model, calib_loader)
    chosen = search_thresholds(probs, labels, cum, target_gflops=args.budget * cum[-1])

    val_probs, val_labels = collect_exit_probs(model, val_loader)
    exit_top1 = [100.0 * (pk.argmax(-1) == val_labels).double().mean().item() for pk in val_probs]
    real = early_exit_evaluate(model, val_loader, chosen.thresholds, costs)
    curve = budget_curve(val_probs, val_labels, cum)
    write_curve(curve, os.path.join(args.output, "dvt_curve.csv"), os.path.join(args.output, "dvt_curve.png"),
                exit_points=list(zip(cum, exit_top1)), title="DVT on synthetic motion (val split)",
                chosen=type(chosen)(chosen.q, chosen.thresholds, real["top1"], real["gflops"], real["exit_fractions"]))
    result = {
        "exit_gflops_cumulative": cum, "exit_top1_val": exit_top1,
        "full_cascade": {"top1": exit_top1[-1], "gflops": cum[-1]},
        "thresholds": chosen.thresholds, "calibration": vars(chosen),
        "early_exit_val": real, "gflops_share": real["gflops"] / cum[-1],
        "top1_gap": exit_top1[-1] - real["top1"],
        # the same early exit from the command line; one clip per video is the centre clip measured above
        "test_command": f"vidformer test --config {os.path.join(args.output, 'checkpoints', 'config.yaml')} "
                        f"TEST.NUM_ENSEMBLE_VIEWS 1 DVT.THRESHOLDS \"{[round(t, 6) for t in chosen.thresholds[:-1]]}\"",
    }
    with open(os.path.join(args.output, "dvt_curve.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
