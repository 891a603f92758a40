"""`vidformer VERB ...`: the command line. Each verb is a (help, add_arguments, run) entry in VERBS.

Exit codes: 0 success, 2 bad usage or bad input (the message names the key, file or name),
1 runtime failure.
"""

import argparse
import json
import sys

from vidformer.errors import UsageError


def _flops_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="registered model name (see `vidformer flops --list`)", nargs="?")
    p.add_argument("--num-frames", type=int, default=None, help="frames per view (default: the model's own)")
    p.add_argument("--img-size", type=int, default=None, help="crop size (default: the model's own)")
    p.add_argument("--num-classes", type=int, default=400)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--list", action="store_true", help="list the registered models and exit")


def _flops(args: argparse.Namespace) -> int:
    from vidformer.flops import model_flops
    from vidformer.models import create_model, list_models

    if args.list or not args.model:
        if not args.list:
            raise UsageError("flops needs a MODEL; one of: " + ", ".join(list_models()))
        print("\n".join(list_models()))
        return 0
    model = create_model(args.model, num_classes=args.num_classes, num_frames=args.num_frames, img_size=args.img_size)
    cfg = model.pretrained_cfg
    report = model_flops(model, cfg.num_frames, cfg.crop_size)
    # cascades with early exits (DVT) also get per-exit and cumulative GFLOPs, reuse costs included
    exits = None
    if hasattr(model, "forward_exits"):
        from vidformer.engine.adaptive import exit_costs, format_exit_costs

        exits = exit_costs(model, cfg.num_frames, cfg.crop_size)
    if args.json:
        extra = {"exits": [vars(e) for e in exits]} if exits else {}
        print(json.dumps(dict(report.as_dict(), model=args.model, **extra)))
    else:
        print(f"{args.model}: {report}")
        if exits:
            print(format_exit_costs(exits))
    return 0


def _config_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument("--config", required=required, help="YAML config (see configs/)")
    p.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides, e.g. TRAIN.BATCH_SIZE 32")


def _train_args(p: argparse.ArgumentParser) -> None:
    _config_args(p)
    resume = p.add_mutually_exclusive_group()
    resume.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                        help="resume from CHECKPOINT, or bare: the latest in OUTPUT_DIR (the default, TRAIN.AUTO_RESUME)")
    resume.add_argument("--no-resume", dest="resume", action="store_false", help="start from scratch")


def _train(args: argparse.Namespace) -> int:
    from vidformer.config import get_cfg
    from vidformer.engine import distributed
    from vidformer.engine.evaluator import run_test
    from vidformer.engine.trainer import STOPPED_EXIT_CODE, NonFiniteLossError, NonFiniteWeightsError, Trainer, latest_checkpoint

    cfg = get_cfg(args.config, args.opts)
    env = distributed.init_distributed()
    try:
        model = None
        if cfg.TRAIN.ENABLE:
            trainer = Trainer(cfg, env=env, resume=args.resume)
            trainer.fit()
            if trainer.stopped:  # SIGTERM/SIGUSR1: checkpoint written, the same command continues
                return STOPPED_EXIT_CODE
            model = trainer.model
        if cfg.TEST.ENABLE:
            run_test(cfg, model=model, env=env, source=latest_checkpoint(cfg.OUTPUT_DIR) or "the trained model")
    except (NonFiniteLossError, NonFiniteWeightsError) as e:
        print(f"vidformer train: {e}", file=sys.stderr)
        return 1
    finally:
        distributed.shutdown()
    return 0


def _test_args(p: argparse.ArgumentParser) -> None:
    _config_args(p)
    p.add_argument("--checkpoint", default=None, help="weights to test (default TEST.CHECKPOINT_FILE_PATH, "
                                                      "else the latest checkpoint in OUTPUT_DIR)")
    p.add_argument("--save-scores", action="store_true", help="also write per-video scores (OUTPUT_DIR/test_scores.pt)")


def _test(args: argparse.Namespace) -> int:
    import os

    from vidformer.config import get_cfg
    from vidformer.engine import distributed
    from vidformer.engine.evaluator import run_test

    opts = list(args.opts)
    if args.checkpoint:
        opts += ["TEST.CHECKPOINT_FILE_PATH", args.checkpoint]
    if args.save_scores:
        opts += ["TEST.SAVE_RESULTS", "True"]
    cfg = get_cfg(args.config, opts)
    env = distributed.init_distributed()
    try:
        metrics = run_test(cfg, env=env)
    finally:
        distributed.shutdown()
    if env.is_main:
        print(json.dumps({k: metrics[k] for k in ("top1", "top5", "mean_class_acc", "num_videos", "views")}))
        print(f"metrics: {os.path.join(cfg.OUTPUT_DIR, 'test_metrics.json')}")
    return 0


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="a video file")
    _config_args(p, required=False)
    p.add_argument("--checkpoint", default=None, help="weights (a vidformer checkpoint also carries its config)")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--windows", type=int, default=0, metavar="N",
                   help="sliding-window mode: also print the top classes of N evenly spaced clips over the video")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _demo(args: argparse.Namespace) -> int:
    from vidformer.engine.demo import demo_config, format_prediction, load_demo_model, predict_video

    cfg = demo_config(args.config, args.checkpoint, args.opts)
    model = load_demo_model(cfg, args.checkpoint)
    result = predict_video(model, cfg, args.video, topk=args.topk, windows=args.windows)
    print(json.dumps(result) if args.json else format_prediction(result))
    return 0


def _quickstart_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", default="./quickstart", help="folder for checkpoints, logs and metrics")
    p.add_argument("--cache", default=None, help="folder for the synthetic dataset (default ~/.cache/vidformer)")
    _config_args(p, required=False)
    p.add_argument("--train-per-class", type=int, default=64, help="synthetic training videos per class")
    p.add_argument("--val-per-class", type=int, default=16, help="synthetic validation videos per class")


def _quickstart(args: argparse.Namespace) -> int:
    from vidformer.engine.quickstart import QUICKSTART_CONFIG, run_quickstart, summary

    results = run_quickstart(args.output, cache=args.cache, config=args.config or QUICKSTART_CONFIG,
                             overrides=args.opts, train_per_class=args.train_per_class,
                             val_per_class=args.val_per_class)
    print(summary(results))
    return 0


def _convert_args(p: argparse.ArgumentParser, inflate: bool = False) -> None:
    p.add_argument("src", help="checkpoint to read (path or iopath URI; any layout the model knows)")
    p.add_argument("dst", help="native checkpoint to write (.pth, or .safetensors for the bare state dict)")
    p.add_argument("--model", required=True, help="registered model name")
    p.add_argument("--num-frames", type=int, required=inflate, default=None,
                   help="frames of the target model (1 = image model)")
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--num-classes", type=int, default=None, help="default: the checkpoint's class count")
    p.add_argument("--method", choices=("center", "average"), default="center",
                   help="2-D -> 3-D kernel inflation (center: exact on static clips; average: I3D)")


def _convert(args: argparse.Namespace) -> int:
    from vidformer.checkpoint import convert_checkpoint

    if args.verb == "inflate" and args.num_frames < 2:
        raise UsageError(f"inflate makes a video model: --num-frames must be >= 2, got {args.num_frames}")
    report = convert_checkpoint(args.src, args.dst, args.model, num_frames=args.num_frames, img_size=args.img_size,
                                num_classes=args.num_classes, inflate=args.method)
    print(report)
    print(f"wrote {args.dst}")
    return 0


def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=None,
                   help="registered names (default: mvitv2_s and one model per other family)")
    p.add_argument("--frames", type=int, default=None, help="frames per clip (default 16; --quick: 4)")
    p.add_argument("--img-size", type=int, default=None, help="crop size (default 224; --quick: 32)")
    p.add_argument("--batch", type=int, default=1, help="clips per step")
    p.add_argument("--iters", type=int, default=None, help="timed steps per configuration (default 5; --quick: 2)")
    p.add_argument("--modes", nargs="+", default=["forward", "train"], choices=("forward", "train"),
                   help="forward and/or train (forward+backward)")
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"),
                   help="fp32 and/or bf16 (autocast)")
    p.add_argument("--device", default=None, help="cpu or cuda[:i] (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the cores this process may use)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--no-data", action="store_true", help="skip the data-loading benchmark")
    p.add_argument("--json", default=None, metavar="OUT", help="write every figure to this JSON file")
    p.add_argument("--quick", action="store_true", help="tiny models and shapes: a smoke test of the bench")


def _bench(args: argparse.Namespace) -> int:
    from vidformer.engine.bench import run_from_args

    return run_from_args(args)


VERBS = {
    "train": ("train a model from a config (one process, torchrun or srun), then run the multi-view test",
              _train_args, _train),
    "test": ("multi-view test of a checkpoint; writes OUTPUT_DIR/test_metrics.json", _test_args, _test),
    "demo": ("top classes of one video (optionally over sliding windows)", _demo_args, _demo),
    "quickstart": ("train and test a small video model on synthetic data on a CPU (minutes)",
                   _quickstart_args, _quickstart),
    "flops": ("parameters (M) and GFLOPs per view of a registered model", _flops_args, _flops),
    "convert": ("convert a checkpoint (any known layout) into a native vidformer checkpoint", _convert_args, _convert),
    "inflate": ("inflate an image checkpoint into a video model's native checkpoint",
                lambda p: _convert_args(p, inflate=True), _convert),
    "bench": ("model throughput and memory against torchvision / naive attention, data loading, matmul ceiling",
              _bench_args, _bench),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidformer", description="Video recognition: train, test, convert, measure.")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, (help_text, add_arguments, _) in VERBS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verb:
        parser.print_help()
        return 2
    try:
        return VERBS[args.verb][2](args) or 0
    except UsageError as e:
        print(f"vidformer {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vidformer {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
