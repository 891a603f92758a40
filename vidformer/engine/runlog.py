"""What a run leaves behind for people: console/file log lines, JSON-lines records (one per epoch in
log.jsonl, one every LOG_PERIOD optimizer steps in log_steps.jsonl), TensorBoard scalars and the
progress display. Only the main process writes; the others get no-ops.

On a terminal the progress is a tqdm bar laid out to keep loss and lr visible at 80 columns; when
stderr is a file or a pipe (Slurm logs, `| tee`) it is a plain log line every LOG_PERIOD iterations.
"""

import json
import logging
import os
import sys
import time
from typing import Callable

from iopath.common.file_io import g_pathmgr
from tqdm import tqdm

LOGGER_NAME = "vidformer"
# the bar is fixed at 10 cells, so 80 columns hold "epoch 10/200  45%|####      | 1225/5000 [12:02<1:15:00, loss 1.234, lr 0.00016]"
_BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar:10}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"


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


def log_to_file(logger: logging.Logger, message: str) -> None:
    """`message` into log.txt only (the merged config: a record for later, too long for the console)."""
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, message, None, None)
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def fmt_value(value) -> str:
    """A number as a person reads it in a log line: 4 significant digits for floats."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class JsonLines:
    """Appends one JSON object per line to `path` (a no-op without a path)."""

    def __init__(self, path: str | None):
        self.path = path

    def write(self, record: dict) -> None:
        if self.path is None:
            return
        with g_pathmgr.open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def keep_only(self, keep: Callable[[dict], bool]) -> None:
        """Drop the records a resumed run will write again (those after its checkpoint), so none repeats."""
        if self.path is None or not g_pathmgr.exists(self.path):
            return
        kept = [r for r in read_json_lines(self.path) if keep(r)]
        tmp = self.path + ".rewrite"
        with g_pathmgr.open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        os.replace(tmp, self.path)


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


class LineProgress:
    """The progress of a loop as a log line every `period` iterations (and at the end): what a file or
    pipe gets instead of a bar, since carriage returns would pile up there. Same calls as tqdm's."""

    def __init__(self, total: int, desc: str, period: int, initial: int = 0):
        self.total, self.desc, self.period = total, desc, max(period, 1)
        self.n = self.start_n = initial
        self.postfix = ""
        self.start = time.perf_counter()
        self.logger = get_logger()

    def set_postfix_str(self, text: str, refresh: bool = False) -> None:
        self.postfix = text

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n % self.period == 0 or self.n == self.total:
            elapsed = time.perf_counter() - self.start
            rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
            if self.total:
                eta = (self.total - self.n) / rate if rate > 0 else 0.0
                where = f"{self.n}/{self.total} [{_clock(elapsed)}<{_clock(eta)}]"
            else:  # a length nobody knows ahead
                where = f"{self.n} [{_clock(elapsed)}]"
            self.logger.info(f"{self.desc} {where} {self.postfix}".rstrip())

    def close(self) -> None:
        pass


def _clock(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    h, m = divmod(minutes, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def progress(total: int, desc: str, enabled: bool, *, period: int = 10, initial: int = 0):
    """A progress display with ETA: a tqdm bar on a terminal, else a LineProgress every `period` iterations."""
    if enabled and not sys.stderr.isatty():
        return LineProgress(total, desc, period, initial)
    return tqdm(total=total or None, initial=initial, desc=desc, disable=not enabled, leave=False,
                bar_format=_BAR_FORMAT if total else None, mininterval=0.5, file=sys.stderr)
