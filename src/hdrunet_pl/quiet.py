"""Quiet console output: narrow filters for third-party messages a user can do nothing about.

The command-line tools call :func:`install_filters` first thing; importing the library
changes nothing. Each filter matches one known message (and, for warnings, its category),
so every other warning still shows. What is silenced, and why:

- torch's ``isinstance(treespec, LeafSpec)`` deprecation, raised inside Lightning;
- Lightning's model-summary note on bf16 precision (the size estimate is all it affects);
- Lightning's note on an ``IterableDataset`` with ``__len__`` (litdata splits the stream
  across workers itself, so its length is right);
- Lightning's notes that a resumed run's ``csv/`` and ``checkpoints/`` folders are not
  empty (the run keeps its earlier ``metrics.csv`` as ``metrics-<n>.csv`` before logging
  again, and a fresh run refuses a folder that holds files already);
- Lightning's note that an epoch has fewer batches than ``log_every_n_steps`` (a small
  folder of photographs): it counts steps across epochs, so training is still logged;
- Lightning's "Tip" lines advertising litlogger and litmodels;
- litdata's INFO lines (chunk mapping and cache size) on opening a streaming data set;
- torch.onnx's "torchvision is not installed" lines (the model uses no torchvision ops);
- OpenCV's ``[ERROR:...] global loadsave.cpp ...`` lines on an image it cannot decode (its
  log has levels, not messages: set to fatal only); the tool's own one-line error names
  the file instead;
- repeats of the package readers' notes on a file (negative values filled, alpha dropped,
  ...): each is shown once per process, not on every read of the file (a training folder
  is read once per crop, a held-out file once per capture setting).

The package's own warnings (a checkpoint whose variant is assumed, ...) are shown as plain
lines too, without Python's ``file.py:line: UserWarning:`` prefix and source line.

The one-shot tools (predict, eval, export) log through :class:`ConsoleHandler`, which
writes above their progress bars instead of through them.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import cv2
from tqdm import tqdm

WARNING_FILTERS: tuple[tuple[str, type[Warning]], ...] = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
    (r"Precision bf16-mixed is not supported by the model summary", UserWarning),
    (r"Your `IterableDataset` has `__len__` defined", UserWarning),
    (r"Experiment logs directory .*csv/? exists and is not empty", UserWarning),
    (r"Checkpoint directory .*checkpoints exists and is not empty", UserWarning),
    (r"The number of training batches \(\d+\) is smaller than the logging interval", UserWarning),
)
"""(message regex, category) pairs ignored by :func:`install_filters`."""

LOG_FILTERS: dict[str, str] = {
    "lightning.pytorch.utilities.rank_zero": r"💡 Tip: ",
    "lightning.fabric.utilities.rank_zero": r"💡 Tip: ",
    "torch.onnx._internal.exporter._registration": r"torchvision is not installed\. Skipping",
}
"""Logger name -> regex of the messages it no longer emits."""

QUIET_LOGGERS: tuple[str, ...] = ("litdata",)
"""Loggers set to WARNING: their INFO lines go, their warnings and errors still show."""

ONCE_LOGGERS: tuple[str, ...] = ("hdrunet_pl.io",)
"""Loggers whose repeated messages are shown once per process (:class:`OncePerMessage`)."""


class DropMessages(logging.Filter):
    """A logging filter that drops records whose message matches ``pattern`` (``re.match``)."""

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return self.pattern.match(record.getMessage()) is None


class OncePerMessage(logging.Filter):
    """A logging filter that passes each distinct message (level and text) only once."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


class ConsoleHandler(logging.StreamHandler):
    """Writes records to stderr through ``tqdm.write``, so that a progress bar being drawn
    is moved below the message instead of being broken by it."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


_PACKAGE_DIR = str(Path(__file__).resolve().parent)


def _show_plainly(previous: Callable[..., None]) -> Callable[..., None]:
    """A ``warnings.showwarning`` that writes the package's own warnings (raised for a
    caller inside the package: a checkpoint whose variant is assumed, ...) as a plain
    ``<message>`` line above any progress bar, the way its logged notes read, and hands
    every other warning to ``previous``."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, UserWarning) and str(filename).startswith(_PACKAGE_DIR):
            tqdm.write(str(message), file=file or sys.stderr)
        else:
            previous(message, category, filename, lineno, file, line)

    show.plain = True  # type: ignore[attr-defined]
    return show


def _add_once(logger: logging.Logger, new: logging.Filter) -> None:
    if not any(type(f) is type(new) for f in logger.filters):
        logger.addFilter(new)


def install_filters() -> None:
    """Silence the known third-party noise listed in this module (idempotent).

    Call it at the start of a command-line tool, before Lightning, torch.onnx or litdata
    run; DDP workers and DataLoader workers started afterwards inherit or redo it."""
    for pattern, category in WARNING_FILTERS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    if not getattr(warnings.showwarning, "plain", False):
        warnings.showwarning = _show_plainly(warnings.showwarning)
    for name, pattern in LOG_FILTERS.items():
        _add_once(logging.getLogger(name), DropMessages(pattern))
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_FATAL)
    for name in ONCE_LOGGERS:
        _add_once(logging.getLogger(name), OncePerMessage())
    for name in QUIET_LOGGERS:
        # a level, not a filter: filters do not apply to records logged on child loggers
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)
