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
    if args.json:
        print(json.dumps(dict(report.as_dict(), model=args.model)))
    else:
        print(f"{args.model}: {report}")
    return 0


VERBS = {
    "flops": ("parameters (M) and GFLOPs per view of a registered model", _flops_args, _flops),
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
