"""Model, data and matmul benchmark with ratios against references from the same run:
`python tools/bench.py [--models mvitv2_s ...] [--json OUT] [--quick]` (= `vidformer bench`)."""

import sys

from vidformer.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
