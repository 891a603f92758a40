"""Re-encode videos to a short side of 256 (or 320) with a keyframe every 16 frames, in parallel, resumably.

    python tools/prepare_videos.py SRC_DIR DST_DIR [--short-side 256] [--gop 16] [--workers 8]
    python tools/prepare_videos.py --list train.csv [--prefix DIR] DST_DIR

Short keyframe intervals make random clip access cheap (the Kinetics trimming leaves one keyframe
per ~8 s), and decoding at short side 256 is what the published MViTv2/SlowFast recipes expect.
Output mirrors the source's relative paths as H.264 .mp4 (.webm stays VP9 .webm), video only.
Finished outputs are skipped, so an interrupted run continues where it stopped. With --list, the
list is also written to DST_DIR with the new file names.
"""

import argparse
import os
import sys

from vidformer.data.maintenance import output_name, prepare_videos, read_list, videos_under
from vidformer.errors import UsageError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="SRC_DIR DST_DIR, or DST_DIR with --list")
    parser.add_argument("--list", default=None, help="convert the files of this '<path> <label>' list")
    parser.add_argument("--prefix", default="", help="with --list: folder relative paths are joined to")
    parser.add_argument("--short-side", type=int, default=256, help="target short side in pixels (256 or 320)")
    parser.add_argument("--gop", type=int, default=16, help="keyframe interval in frames")
    parser.add_argument("--crf", type=int, default=23, help="x264/VP9 constant quality (lower is better)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    try:
        if args.list:
            (dst_dir,) = args.paths
            entries = read_list(args.list, args.prefix)
            absolute = [e.rel for e in entries if os.path.isabs(e.rel)]
            if absolute:
                raise UsageError(f"--list needs relative paths to mirror them under DST_DIR; '{absolute[0]}' is absolute")
            pairs = [(e.path, os.path.join(dst_dir, output_name(e.rel))) for e in entries]
        else:
            src_dir, dst_dir = args.paths
            if not os.path.isdir(src_dir):
                raise UsageError(f"source folder '{src_dir}' does not exist")
            pairs = [(os.path.join(src_dir, rel), os.path.join(dst_dir, output_name(rel))) for rel in videos_under(src_dir)]
    except (UsageError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    statuses = prepare_videos(pairs, workers=args.workers, short_side=args.short_side, gop=args.gop, crf=args.crf)
    if args.list:
        with open(os.path.join(dst_dir, os.path.basename(args.list)), "w") as f:
            f.write("".join(e.line.replace(e.rel, output_name(e.rel), 1) + "\n" for e in entries))
    counts = {key: sum(s.startswith(key) for s in statuses) for key in ("done", "skipped", "failed")}
    print(f"{counts['done']} re-encoded, {counts['skipped']} already done, {counts['failed']} failed, into {dst_dir}")
    for (src, _), status in zip(pairs, statuses):
        if status.startswith("failed"):
            print(f"  {src}: {status}")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
