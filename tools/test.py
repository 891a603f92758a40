"""Multi-view test of a checkpoint: `python tools/test.py --config FILE [--checkpoint FILE] [KEY VALUE ...]` (= `vidformer test`)."""

import sys

from vidformer.cli import main

if __name__ == "__main__":
    sys.exit(main(["test", *sys.argv[1:]]))
