"""Find videos that fail to decode and write a clean list.

    python tools/check_videos.py train.csv [--prefix DIR] [--out train_clean.csv] [--workers 8] [--full]

Reads a Kinetics-style list (`<path> <label>` per line; relative paths are joined to --prefix, default
the list's folder), tries every file with the chosen decoder (first, middle and last frame; every
frame with --full), writes the lines that decode to --out (default: <list>_clean.csv) and the failures
with their reasons to --failed (default: <list>_failed.txt). Exit code 1 when any file failed.
"""

import argparse
import os
import sys

from vidformer.data.maintenance import check_list, read_list
from vidformer.errors import UsageError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("list", help="list file with '<path> <label>' lines")
    parser.add_argument("--prefix", default="", help="folder relative paths are joined to (default: the list's folder)")
    parser.add_argument("--separator", default="", help="path/label separator (default: comma or whitespace)")
    parser.add_argument("--backend", default="pyav", help="decoder to check with: pyav, decord or torchcodec")
    parser.add_argument("--full", action="store_true", help="decode every frame (slower, finds damage mid-file)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=None, help="clean list to write")
    parser.add_argument("--failed", default=None, help="report of failed files to write")
    args = parser.parse_args(argv)
    stem = os.path.splitext(args.list)[0]
    out, failed_report = args.out or f"{stem}_clean.csv", args.failed or f"{stem}_failed.txt"
    try:
        entries = read_list(args.list, args.prefix, args.separator)
        reasons = check_list(entries, backend=args.backend, full=args.full, workers=args.workers)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with open(out, "w") as f:
        f.write("".join(e.line + "\n" for e, reason in zip(entries, reasons) if not reason))
    failed = [(e, reason) for e, reason in zip(entries, reasons) if reason]
    with open(failed_report, "w") as f:
        f.write("".join(f"{e.path}\t{reason}\n" for e, reason in failed))
    print(f"{len(entries) - len(failed)} of {len(entries)} videos decode; clean list: {out}; failures: {failed_report}")
    for e, reason in failed[:10]:
        print(f"  {e.path}: {reason}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
