"""Any known checkpoint layout into a native checkpoint (= `vidformer convert`):
`python tools/convert.py SRC DST --model NAME [--num-frames T] [--allow-partial]`."""

import sys

from vidformer.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
