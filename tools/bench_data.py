"""Data-loading benchmark: `python tools/bench_data.py [--quick] [--json] [--root DIR]`,
`python tools/bench_data.py --memory [--seconds 10]` or `python tools/bench_data.py --loader`.

Prints train-clip throughput (clips/s per worker, next to the decode alone) for each installed
decoder and the seconds per video of the 10 x 3 test views with one decode versus one decode per
view, on Kinetics-like 256p and 720p files it writes; with --memory, the peak RSS that the 10 x 3 test
views and one training sample of a 10 s 720p H.264 video add to a fresh process, next to the
whole-batch loader's figure and the 1.0 GB goal; with --loader, the DataLoader settings that
vidformer.data.loader.build_loader chooses against the alternatives (vidformer.data.bench).
"""

import argparse
import json
import sys

from vidformer.data.bench import (
    format_loader_table, format_memory_table, format_table, run_data_benchmark, run_loader_benchmark, run_memory_benchmark,
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small videos and clips (seconds, for tests)")
    parser.add_argument("--root", default=None, help="keep the benchmark's videos in this folder (written if absent) for later runs")
    parser.add_argument("--backends", nargs="+", default=None, help="decoders to compare (default: every installed one)")
    parser.add_argument("--memory", action="store_true", help="measure added peak RSS on a 720p video instead of speed")
    parser.add_argument("--seconds", type=int, default=10, help="--memory: length of the 720p video")
    parser.add_argument("--video", default=None, help="--memory: measure on this file instead of a written one")
    parser.add_argument("--loader", action="store_true", help="compare DataLoader settings (persistent workers, prefetch)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if args.memory:
        result = run_memory_benchmark(seconds=args.seconds, backends=args.backends, path=args.video, log=log)
        print(json.dumps(result) if args.json else format_memory_table(result))
    elif args.loader:
        result = run_loader_benchmark(root=args.root, log=log)
        print(json.dumps(result) if args.json else format_loader_table(result))
    else:
        result = run_data_benchmark(quick=args.quick, root=args.root, backends=args.backends, log=log)
        print(json.dumps(result) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
