"""Any known checkpoint layout into a native checkpoint: `python tools/convert.py SRC DST --model NAME [--num-frames T] [--allow-partial]` (= `vidformer convert`)."""

import sys

from vidformer.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
