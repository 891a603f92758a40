"""What a run leaves behind for people: console/file log lines, a JSON-lines record per epoch,
TensorBoard scalars and the tqdm progress bar. Only the main process writes; the others get no-ops.
"""

import json
import logging
import os
import sys

from iopath.common.file_io import g_pathmgr
from tqdm import tqdm

LOGGER_NAME = "vidformer"


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def setup_logging(output_dir: str | None, is_main: bool) -> logging.Logger:
    """Console (stderr) and OUTPUT_DIR/log.txt handlers on the main process; warnings only elsewhere."""
    logger = get_logger()
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    logger.propagate = False
    fmt = logging.Formatter("[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if is_main and output_dir:
        g_pathmgr.mkdirs(output_dir)
        file_handler = logging.FileHandler(os.path.join(output_dir, "log.txt"))
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
    return logger


class JsonLines:
    """Appends one JSON object per line (OUTPUT_DIR/log.jsonl: one record per epoch)."""

    def __init__(self, path: str | None):
        self.path = path

    def write(self, record: dict) -> None:
        if self.path is None:
            return
        with g_pathmgr.open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def read_json_lines(path: str) -> list[dict]:
    with g_pathmgr.open(path, "r") as f:
        return [json.loads(line) for line in f if line.strip()]


class Scalars:
    """TensorBoard scalars under OUTPUT_DIR/tensorboard (a no-op without a directory)."""

    def __init__(self, log_dir: str | None):
        self.writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir)

    def add(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def progress(total: int, desc: str, enabled: bool) -> tqdm:
    """A progress bar with ETA; on a non-terminal (Slurm log files) it refreshes at most every 30 s."""
    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True, leave=False,
                mininterval=0.5 if sys.stderr.isatty() else 30.0, file=sys.stderr)
