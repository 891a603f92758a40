"""Top classes of one video: `python tools/demo.py VIDEO --checkpoint FILE [--topk 5] [--windows N] [--json]` (= `vidformer demo`)."""

import sys

from vidformer.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
