"""An image checkpoint into a video model's native checkpoint (= `vidformer inflate`):
`python tools/inflate.py SRC DST --model NAME --num-frames T [--method center|average]`."""

import sys

from vidformer.cli import main

if __name__ == "__main__":
    sys.exit(main(["inflate", *sys.argv[1:]]))
