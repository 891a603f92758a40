"""Find videos that fail to decode and write a clean list.

    python tools/check_videos.py train.csv [--prefix DIR] [--out train_clean.csv] [--workers 8] [--full]
    python tools/check_videos.py --config CONFIG [--split train] [KEY VALUE ...]

Reads a Kinetics-style list (`<path> <label>` per line; relative paths are joined to --prefix, default
the list's folder), tries every file with the chosen decoder (first, middle and last frame; every
frame with --full), writes the lines that decode to --out (default: <list>_clean.csv) and the failures
with their reasons to --failed (default: <list>_failed.txt). With --config it checks the --split of the
config's DATA.DATASET layout instead (any layout, frame folders and UCF101/HMDB51 included, with
DATA.DECODING_BACKEND) and writes only the failures (default: <dataset>_<split>_failed.txt).
Exit code 1 when any file failed, 2 for bad usage.
"""

import argparse
import os
import sys

from vidformer.config import get_cfg
from vidformer.data.loader import check_backend
from vidformer.data.maintenance import check_list, check_records, read_list
from vidformer.data.records import read_records
from vidformer.errors import UsageError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("args", nargs="*", metavar="LIST | KEY VALUE",
                        help="list file with '<path> <label>' lines; with --config, config overrides")
    parser.add_argument("--config", default=None, help="check a split of this config's dataset instead of a list")
    parser.add_argument("--split", default="train", choices=("train", "val", "test"), help="split to check with --config")
    parser.add_argument("--prefix", default="", help="folder relative paths are joined to (default: the list's folder)")
    parser.add_argument("--separator", default="", help="path/label separator (default: comma or whitespace)")
    parser.add_argument("--backend", default=None, help="decoder to check with: pyav (default), decord or torchcodec")
    parser.add_argument("--full", action="store_true", help="decode every frame (slower, finds damage mid-file)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=None, help="clean list to write")
    parser.add_argument("--failed", default=None, help="report of failed files to write")
    args = parser.parse_args(argv)
    try:
        if args.config:
            return _check_config(args)
        if len(args.args) != 1:
            raise UsageError(f"give one list file (or --config FILE); got {len(args.args)} arguments")
        return _check_list_file(args, args.args[0])
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _check_list_file(args: argparse.Namespace, list_file: str) -> int:
    stem = os.path.splitext(list_file)[0]
    out, failed_report = args.out or f"{stem}_clean.csv", args.failed or f"{stem}_failed.txt"
    entries = read_list(list_file, args.prefix, args.separator)
    reasons = check_list(entries, backend=args.backend or "pyav", full=args.full, workers=args.workers)
    with open(out, "w") as f:
        f.write("".join(e.line + "\n" for e, reason in zip(entries, reasons) if not reason))
    failed = [(e.path, reason) for e, reason in zip(entries, reasons) if reason]
    _write_failures(failed_report, failed)
    print(f"{len(entries) - len(failed)} of {len(entries)} videos decode; clean list: {out}; failures: {failed_report}")
    return _show(failed)


def _check_config(args: argparse.Namespace) -> int:
    cfg = get_cfg(args.config, args.args)
    records = read_records(cfg, args.split)
    if not args.backend:
        check_backend(cfg, records)
    reasons = check_records(records, backend=args.backend or cfg.DATA.DECODING_BACKEND, full=args.full, workers=args.workers)
    failed = [(r.path, reason) for r, reason in zip(records, reasons) if reason]
    failed_report = args.failed or f"{cfg.DATA.DATASET}_{args.split}_failed.txt"
    _write_failures(failed_report, failed)
    print(f"{len(records) - len(failed)} of {len(records)} videos of the {args.split} split decode; failures: {failed_report}")
    return _show(failed)


def _write_failures(path: str, failed: list[tuple[str, str]]) -> None:
    with open(path, "w") as f:
        f.write("".join(f"{name}\t{reason}\n" for name, reason in failed))


def _show(failed: list[tuple[str, str]]) -> int:
    for name, reason in failed[:10]:
        print(f"  {name}: {reason}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
