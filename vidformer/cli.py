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


VERBS = {
    "flops": ("parameters (M) and GFLOPs per view of a registered model", _flops_args, _flops),
    "convert": ("convert a checkpoint (any known layout) into a native vidformer checkpoint", _convert_args, _convert),
    "inflate": ("inflate an image checkpoint into a video model's native checkpoint",
                lambda p: _convert_args(p, inflate=True), _convert),
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
