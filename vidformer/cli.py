"""`vidformer VERB ...`: the command line. Each verb is a (help, add_arguments, run) entry in VERBS.

Exit codes: 0 success, 2 bad usage or bad input (one line naming the key, file, value or flag and what
was expected), 1 runtime failure (one line; `--debug` adds the traceback), 130 interrupted.
"""

import argparse
import difflib
import errno
import json
import os
import re
import sys
import traceback

import torch

import vidformer
from vidformer.config import COMPILE_BACKENDS, COMPILE_MODES, check_output_dir
from vidformer.errors import UsageError


def _int_at_least(low: int):
    """argparse type: an integer >= low."""
    expected = "a positive integer (>= 1)" if low == 1 else f"an integer >= {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value
    return parse


_positive_int, _nonnegative_int = _int_at_least(1), _int_at_least(0)


def _flops_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="registered model name (see `vidformer flops --list`)", nargs="?")
    p.add_argument("--num-frames", type=_positive_int, default=None, help="frames per view (default: the model's own)")
    p.add_argument("--img-size", type=_positive_int, default=None, help="crop size (default: the model's own)")
    p.add_argument("--num-classes", type=_positive_int, default=400)
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
    p.add_argument("opts", nargs="*", metavar="KEY VALUE",
                   help="config overrides anywhere among the options, e.g. TRAIN.BATCH_SIZE 32")


def _seed_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=_nonnegative_int, default=None, help="RNG_SEED (python, numpy, torch, workers)")


def _allow_partial_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-partial", action="store_true",
                   help="use weights that fill less than 90%% of the model (another model or size: refused otherwise)")


def _compile_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--compile", action="store_true",
                   help="MODEL.COMPILE True: torch.compile the model's forward (MODEL.COMPILE_BACKEND, MODEL.COMPILE_MODE)")


def _overrides(args: argparse.Namespace) -> list[str]:
    """args.opts, then the flags that are config keys (--seed, --compile)."""
    opts = list(args.opts)
    if getattr(args, "seed", None) is not None:
        opts += ["RNG_SEED", str(args.seed)]
    if getattr(args, "compile", False):
        opts += ["MODEL.COMPILE", "True"]
    return opts


def _train_args(p: argparse.ArgumentParser) -> None:
    _config_args(p)
    resume = p.add_mutually_exclusive_group()
    resume.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                        help="resume from CHECKPOINT, or bare: the latest in OUTPUT_DIR (the default, TRAIN.AUTO_RESUME)")
    resume.add_argument("--no-resume", dest="resume", action="store_false", help="start from scratch")
    _allow_partial_arg(p)
    _seed_arg(p)
    _compile_arg(p)


def _train(args: argparse.Namespace) -> int:
    from vidformer.config import get_cfg
    from vidformer.engine import distributed
    from vidformer.engine.evaluator import run_test
    from vidformer.engine.trainer import STOPPED_EXIT_CODE, NonFiniteLossError, NonFiniteWeightsError, Trainer, latest_checkpoint

    opts = _overrides(args) + (["TRAIN.ALLOW_PARTIAL", "True", "TEST.ALLOW_PARTIAL", "True"] if args.allow_partial else [])
    cfg = get_cfg(args.config, opts)
    check_output_dir(cfg.OUTPUT_DIR)
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
    _config_args(p, required=False)
    p.add_argument("--checkpoint", default=None, help="weights to test (default TEST.CHECKPOINT_FILE_PATH, "
                                                      "else the latest checkpoint in OUTPUT_DIR)")
    p.add_argument("--save-scores", action="store_true",
                   help="also write per-video scores and per-view logits (OUTPUT_DIR/test_scores.pt)")
    p.add_argument("--scores", nargs="+", default=None, metavar="SCORES_PT",
                   help="no model, no videos: the ensemble of saved test_scores.pt files (same videos, same "
                        "order) by TEST.ENSEMBLE_METHOD; put KEY VALUE overrides before --scores")
    _allow_partial_arg(p)
    _seed_arg(p)
    _compile_arg(p)


def _test(args: argparse.Namespace) -> int:
    from vidformer.config import get_cfg
    from vidformer.engine import distributed
    from vidformer.engine.evaluator import run_ensemble, run_test

    opts = _overrides(args)
    if args.scores:
        if args.checkpoint or args.save_scores:
            raise UsageError("--scores ensembles saved scores; it takes no --checkpoint or --save-scores")
        cfg = get_cfg(args.config, opts)
        check_output_dir(cfg.OUTPUT_DIR)
        if not distributed.detect_env().is_main:  # no model runs: under torchrun/srun, one process writes
            return 0
        metrics = run_ensemble(cfg, args.scores)
    else:
        if not args.config:
            raise UsageError("test needs --config FILE (or --scores A.pt B.pt ... to ensemble saved scores)")
        if args.allow_partial:
            opts += ["TEST.ALLOW_PARTIAL", "True"]
        if args.checkpoint:
            opts += ["TEST.CHECKPOINT_FILE_PATH", args.checkpoint]
        if args.save_scores:
            opts += ["TEST.SAVE_RESULTS", "True"]
        cfg = get_cfg(args.config, opts)
        check_output_dir(cfg.OUTPUT_DIR)
        env = distributed.init_distributed()
        try:
            metrics = run_test(cfg, env=env)
        finally:
            distributed.shutdown()
        if not env.is_main:
            return 0
    keys = ["top1", "top5", "mean_class_acc", "num_videos", "views"]
    keys += [k for k in ("adaptive", "adaptive_views") if k in metrics]
    print(json.dumps({k: metrics[k] for k in keys}))
    print(f"metrics: {os.path.join(cfg.OUTPUT_DIR, 'test_metrics.json')}")
    return 0


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="a video file (an image model, DATA.NUM_FRAMES 1, also takes a still image)")
    _config_args(p, required=False)
    p.add_argument("--checkpoint", default=None, help="weights (a vidformer checkpoint also carries its config)")
    p.add_argument("--topk", type=_positive_int, default=5, help="how many classes to print")
    p.add_argument("--windows", type=_nonnegative_int, default=0, metavar="N",
                   help="sliding-window mode: also print the top classes of N evenly spaced clips over the video")
    p.add_argument("--device", default=None, help="cpu or cuda[:i] (default: cuda when available)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _allow_partial_arg(p)


def _demo(args: argparse.Namespace) -> int:
    from vidformer.engine.demo import demo_recognizer, format_prediction, predict_video

    recognizer = demo_recognizer(args.config, args.checkpoint, args.opts, device=args.device,
                                 allow_partial=args.allow_partial)
    result = predict_video(recognizer, args.video, topk=args.topk, windows=args.windows)
    print(json.dumps(result) if args.json else format_prediction(result))
    return 0


def _extract_args(p: argparse.ArgumentParser) -> None:
    _config_args(p)
    p.add_argument("--checkpoint", required=True, help="weights to extract with")
    p.add_argument("--output", required=True, metavar="DIR", help="folder for features.npy, videos.csv, extract.json")
    p.add_argument("--per-view", action="store_true", help="keep every test view: features.npy is (N, V, D)")


def _extract(args: argparse.Namespace) -> int:
    from vidformer.config import get_cfg
    from vidformer.engine import distributed
    from vidformer.engine.extract import run_extract

    cfg = get_cfg(args.config, args.opts)
    env = distributed.init_distributed()
    try:
        summary = run_extract(cfg, args.checkpoint, args.output, per_view=args.per_view, env=env,
                              allow_partial=getattr(args, "allow_partial", False))
    finally:
        distributed.shutdown()
    if env.is_main:
        print(json.dumps({k: summary[k] for k in ("num_videos", "shape", "views", "failed_videos")}))
    return 0


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a vidformer checkpoint (training or `vidformer convert` file)")
    p.add_argument("output", help="OUT.pt2 (torch.export) or OUT.onnx (needs pip install 'vidformer[export]')")
    p.add_argument("--num-frames", type=int, default=None, help="clip length (default: the checkpoint's)")
    p.add_argument("--img-size", type=int, default=None, help="crop size (default: the checkpoint's)")
    _config_args(p, required=False)


def _export(args: argparse.Namespace) -> int:
    from vidformer.engine.export import export_checkpoint

    summary = export_checkpoint(args.checkpoint, args.output, num_frames=args.num_frames, img_size=args.img_size,
                                config=args.config, overrides=args.opts,
                                allow_partial=getattr(args, "allow_partial", False))
    print(json.dumps(summary))
    return 0


def _quickstart_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", default="./quickstart", help="folder for checkpoints, logs and metrics")
    p.add_argument("--cache", default=None, help="folder for the synthetic dataset (default ~/.cache/vidformer)")
    _config_args(p, required=False)
    p.add_argument("--train-per-class", type=_positive_int, default=64, help="synthetic training videos per class")
    p.add_argument("--val-per-class", type=_positive_int, default=16, help="synthetic validation videos per class")
    _seed_arg(p)


def _quickstart(args: argparse.Namespace) -> int:
    from vidformer.engine.quickstart import QUICKSTART_CONFIG, run_quickstart, summary

    check_output_dir(args.output, "--output")
    results = run_quickstart(args.output, cache=args.cache, config=args.config or QUICKSTART_CONFIG,
                             overrides=_overrides(args), train_per_class=args.train_per_class,
                             val_per_class=args.val_per_class)
    print(summary(results))
    return 0


def _convert_args(p: argparse.ArgumentParser, inflate: bool = False) -> None:
    p.add_argument("src", help="checkpoint to read (path or iopath URI; any layout the model knows)")
    p.add_argument("dst", help="native checkpoint to write (.pth, or .safetensors for the bare state dict)")
    p.add_argument("--model", required=True, help="registered model name")
    p.add_argument("--num-frames", type=_positive_int, required=inflate, default=None,
                   help="frames of the target model (1 = image model)")
    p.add_argument("--img-size", type=_positive_int, default=None)
    p.add_argument("--num-classes", type=_positive_int, default=None, help="default: the checkpoint's class count")
    p.add_argument("--method", choices=("center", "average"), default="center",
                   help="2-D -> 3-D kernel inflation (center: exact on static clips; average: I3D)")
    _allow_partial_arg(p)


def _convert(args: argparse.Namespace) -> int:
    from vidformer.checkpoint import convert_checkpoint

    if args.verb == "inflate" and args.num_frames < 2:
        raise UsageError(f"inflate makes a video model: --num-frames must be >= 2, got {args.num_frames}")
    report = convert_checkpoint(args.src, args.dst, args.model, num_frames=args.num_frames, img_size=args.img_size,
                                num_classes=args.num_classes, inflate=args.method, allow_partial=args.allow_partial)
    print(report)
    print(f"wrote {args.dst}")
    return 0


def _models_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'mvitv2_*' or '*.k400*'")
    p.add_argument("--pretrained", action="store_true",
                   help="list the model zoo (published checkpoints, loadable by name) instead of the registry")
    p.add_argument("--json", action="store_true", help="print one JSON list")


def _models(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from vidformer.checkpoint.remote import cache_path
    from vidformer.checkpoint.zoo import list_pretrained
    from vidformer.models import list_models

    if not args.pretrained:
        names = list_models(args.pattern)
        if not names:
            raise UsageError(f"no registered model matches '{args.pattern}'; try `vidformer models`")
        print(json.dumps(names) if args.json else "\n".join(names))
        return 0
    entries = list_pretrained(args.pattern)
    if not entries:
        raise UsageError(f"no zoo entry matches '{args.pattern}'; try `vidformer models --pretrained`")
    if args.json:
        print(json.dumps([dict(asdict(e), model=e.model, num_classes=e.num_classes, cache_path=cache_path(e))
                          for e in entries]))
        return 0
    rows = [("name", "data", "frames x rate, crop", "top-1 (clips x crops)", "layout", "file")]
    for e in entries:
        top1 = f"{e.top1} ({e.views})" if e.top1 is not None else "-"
        where = "cached" if os.path.isfile(cache_path(e)) else ("download" if e.url else "by hand (browser)")
        rows.append((e.name, f"{e.tag} ({e.num_classes})", e.geometry, top1, e.layout, where))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print("load one: vidformer.create_model(MODEL, pretrained=NAME), or zoo:NAME wherever a checkpoint path goes")
    return 0


def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=None,
                   help="registered names (default: mvitv2_s and one model per other family)")
    p.add_argument("--frames", type=_positive_int, default=None, help="frames per clip (default 16; --quick: 4)")
    p.add_argument("--img-size", type=_positive_int, default=None, help="crop size (default 224; --quick: 32)")
    p.add_argument("--batch", type=_positive_int, default=1, help="clips per step")
    p.add_argument("--shapes", nargs="+", default=None, metavar="TxS[xB]",
                   help="run every model at each of these shapes, frames x crop [x batch] (e.g. 2x32 8x112x4 16x224); "
                        "replaces --frames/--img-size/--batch")
    p.add_argument("--iters", type=_positive_int, default=None,
                   help="timed steps per configuration (default 5; --quick: 2)")
    p.add_argument("--modes", nargs="+", default=["forward", "train"], choices=("forward", "train"),
                   help="forward and/or train (forward+backward)")
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"),
                   help="fp32 and/or bf16 (autocast)")
    p.add_argument("--device", default=None, help="cpu or cuda[:i] (default cpu)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="torch threads (default: the cores this process may use)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--no-fuse", action="store_true",
                   help="time forward steps on the model as trained, not fused for inference (as `test` runs it)")
    p.add_argument("--no-data", action="store_true", help="skip the data-loading benchmark")
    p.add_argument("--json", default=None, metavar="OUT", help="write every figure to this JSON file")
    p.add_argument("--quick", action="store_true", help="tiny models and shapes: a smoke test of the bench")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile both sides alike; the first call (compile included) is reported apart")
    p.add_argument("--compile-backend", default="inductor", choices=COMPILE_BACKENDS, help="backend under --compile")
    p.add_argument("--compile-mode", default="default", choices=COMPILE_MODES, help="inductor's mode under --compile")


def _bench(args: argparse.Namespace) -> int:
    from vidformer.engine.bench import run_from_args

    return run_from_args(args)


def _config_verb_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="YAML config (see configs/)")
    p.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides, e.g. TRAIN.BATCH_SIZE 32")


def _config(args: argparse.Namespace) -> int:
    from vidformer.config import get_cfg

    print(get_cfg(args.file, args.opts).dump(), end="")
    return 0


VERBS = {
    "train": ("train a model from a config (one process, torchrun or srun), then run the multi-view test",
              _train_args, _train),
    "test": ("multi-view test of a checkpoint; writes OUTPUT_DIR/test_metrics.json", _test_args, _test),
    "demo": ("top classes of one video (optionally over sliding windows)", _demo_args, _demo),
    "extract": ("pre-logits features of every video of TEST.SPLIT into DIR/features.npy and DIR/videos.csv",
                _extract_args, _extract),
    "export": ("export a checkpoint's model to .pt2 (torch.export) or .onnx, checked against the model",
               _export_args, _export),
    "quickstart": ("train and test a small video model on synthetic data on a CPU (minutes)",
                   _quickstart_args, _quickstart),
    "flops": ("parameters (M) and GFLOPs per view of a registered model", _flops_args, _flops),
    "convert": ("convert a checkpoint (any known layout) into a native vidformer checkpoint", _convert_args, _convert),
    "inflate": ("inflate an image checkpoint into a video model's native checkpoint",
                lambda p: _convert_args(p, inflate=True), _convert),
    "models": ("registered model names, or with --pretrained the model zoo (published checkpoints)",
               _models_args, _models),
    "bench": ("model throughput and memory against torchvision / naive attention, data loading, matmul ceiling",
              _bench_args, _bench),
    "config": ("print the merged config (defaults, FILE with its _BASE_ chain, KEY VALUE overrides) as YAML",
               _config_verb_args, _config),
}


class _Parser(argparse.ArgumentParser):
    """argparse with a did-you-mean for a mistyped choice (a verb, --method ...) or option."""

    verbs: dict[str, argparse.ArgumentParser]  # build_parser sets it: verb name -> its parser

    def error(self, message: str):
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            message += _did_you_mean(choice[1], re.findall(r"'([^']*)'", choice[2]))
        super().error(message)


def _did_you_mean(word: str, candidates) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vidformer", description="Video recognition: train, test, convert, measure.")
    parser.add_argument("--version", action="version", version=f"vidformer {vidformer.__version__}")
    parser.add_argument("--debug", action="store_true", help="print the traceback of any error")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    parser.verbs = sub.choices
    for name, (help_text, add_arguments, _) in VERBS.items():
        verb = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(verb)
        # also accepted after the verb; SUPPRESS keeps a --debug given before the verb
        verb.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help="print the traceback of any error")
    return parser


def parse_args(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Parse `argv`; a verb's KEY VALUE overrides may stand anywhere among its options (argparse alone
    takes them only in one run after the positionals)."""
    parser = parser or build_parser()
    args, extra = parser.parse_known_args(argv)
    flags = [a for a in extra if a.startswith("-") and not _is_number(a)]
    if flags or (extra and not hasattr(args, "opts")):
        verb = parser.verbs[args.verb] if args.verb else parser
        # argparse has no public list of a parser's options; _actions is where it keeps them
        known = [o for action in verb._actions for o in action.option_strings]
        hint = _did_you_mean(flags[0], known) if flags else ""
        verb.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    if extra:
        args.opts = list(args.opts) + extra
    return args


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# OSErrors about a path the user gave (a file in the way of a folder, no permission): bad input, exit 2
_PATH_ERRNOS = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EACCES, errno.EPERM, errno.EROFS,
                errno.ENAMETOOLONG}


def _failure(e: BaseException) -> tuple[int, str]:
    """(exit code, one line) for an exception that reached the command line."""
    if isinstance(e, UsageError):
        return 2, str(e)
    if isinstance(e, OSError):  # a path the user gave, or the machine (a full disk): not a bug either way
        if e.filename is None:
            return 1, str(e)
        return (2 if e.errno in _PATH_ERRNOS else 1), f"'{e.filename}': {e.strerror}"
    if isinstance(e, (torch.cuda.OutOfMemoryError, MemoryError)):
        return 1, (f"out of memory ({type(e).__name__}); lower TRAIN.BATCH_SIZE or TEST.BATCH_SIZE (or the clip: "
                   f"DATA.NUM_FRAMES, the crop size)")
    # vidformer.data is imported only by the verbs that read videos, so only then can a DecodeError be here
    from vidformer.data.decoders import DecodeError

    if isinstance(e, DecodeError):
        return 2, str(e)
    return 1, (f"internal error: {type(e).__name__}: {e} (a bug; run again with --debug for the traceback "
               f"and report it)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(argv, parser)
    if not args.verb:
        parser.print_help()
        return 2
    try:
        return VERBS[args.verb][2](args) or 0
    except KeyboardInterrupt:
        print(f"vidformer {args.verb}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            traceback.print_exc()
        code, line = _failure(e)
        print(f"vidformer {args.verb}: error: {line}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
