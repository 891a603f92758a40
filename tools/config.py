"""The merged config as YAML: `python tools/config.py FILE [KEY VALUE ...]` (= `vidformer config`)."""

import sys

from vidformer.cli import main

if __name__ == "__main__":
    sys.exit(main(["config", *sys.argv[1:]]))
