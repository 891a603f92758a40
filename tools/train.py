"""Train a model from a config: `python tools/train.py --config FILE [KEY VALUE ...]` (= `vidformer train`; works under torchrun and srun)."""

import sys

from vidformer.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
