"""Data-loading benchmark: `python tools/bench_data.py [--quick] [--json] [--root DIR]`, or
`python tools/bench_data.py --memory [--seconds 10]`.

Prints train-clip throughput (clips/s per worker) for each installed decoder and multi-view loading
seconds per video with one decode versus one decode per view; with --memory, the peak RSS that the
10 x 3 test views and one training sample of a 10 s 720p H.264 video add to a fresh process, next to
the whole-batch loader's figure and the 1.0 GB goal (vidformer.data.bench).
"""

import argparse
import json
import sys

from vidformer.data.bench import format_memory_table, format_table, run_data_benchmark, run_memory_benchmark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small videos and clips (a few seconds)")
    parser.add_argument("--root", default=None, help="benchmark on a synthetic dataset kept in this folder (written if absent)")
    parser.add_argument("--backends", nargs="+", default=None, help="decoders to compare (default: every installed one)")
    parser.add_argument("--memory", action="store_true", help="measure added peak RSS on a 720p video instead of speed")
    parser.add_argument("--seconds", type=int, default=10, help="--memory: length of the 720p video")
    parser.add_argument("--video", default=None, help="--memory: measure on this file instead of a written one")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if args.memory:
        result = run_memory_benchmark(seconds=args.seconds, backends=args.backends, path=args.video, log=log)
        print(json.dumps(result) if args.json else format_memory_table(result))
        return 0
    result = run_data_benchmark(quick=args.quick, root=args.root, backends=args.backends, log=log)
    print(json.dumps(result) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
