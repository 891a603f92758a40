"""Parameters and GFLOPs per view: `python tools/flops.py MODEL [--num-frames T] [--img-size S]` (= `vidformer flops`)."""

import sys

from vidformer.cli import main

if __name__ == "__main__":
    sys.exit(main(["flops", *sys.argv[1:]]))
