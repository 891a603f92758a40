"""Train and test a small video model on synthetic data on a CPU: `python tools/quickstart.py [--output DIR] [--cache DIR]` (= `vidformer quickstart`)."""

import sys

from vidformer.cli import main

if __name__ == "__main__":
    sys.exit(main(["quickstart", *sys.argv[1:]]))
