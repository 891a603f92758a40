"""Train and test a small video model on synthetic data on a CPU (= `vidformer quickstart`):
`python tools/quickstart.py [--output DIR] [--cache DIR]`."""

import sys

from vidformer.cli import main

if __name__ == "__main__":
    sys.exit(main(["quickstart", *sys.argv[1:]]))
