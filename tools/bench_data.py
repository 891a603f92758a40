"""Data-loading benchmark: `python tools/bench_data.py [--quick] [--json] [--root DIR]`.

Prints train-clip throughput (clips/s per worker) for each installed decoder and multi-view loading
seconds per video with one decode versus one decode per view (vidformer.data.bench).
"""

import argparse
import json
import sys

from vidformer.data.bench import format_table, run_data_benchmark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small videos and clips (a few seconds)")
    parser.add_argument("--root", default=None, help="benchmark on a synthetic dataset kept in this folder (written if absent)")
    parser.add_argument("--backends", nargs="+", default=None, help="decoders to compare (default: every installed one)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    result = run_data_benchmark(quick=args.quick, root=args.root, backends=args.backends, log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(result) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
