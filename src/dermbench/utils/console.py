"""What dermbench writes to the console: one logger and one progress helper for every part.

Messages go through the standard :mod:`logging` module under the ``dermbench`` logger, so a
library user configures them like any other library's (``logging.getLogger("dermbench")``).
The command line calls :func:`configure` once: plain messages on stderr, ``--quiet`` keeps
warnings and errors only, and progress bars are shown only at INFO level.

Progress bars (:func:`progress`) are tqdm bars on stderr. When stderr is not a terminal (a log
file, a cluster job) they update at most every 30 s, so logs stay readable.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Iterable, Iterator

LOGGER_NAME = "dermbench"


def get_logger(name: str = "") -> logging.Logger:
    """The ``dermbench`` logger, or its child ``dermbench.<name>``."""
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)


class _MessageOnly(logging.Formatter):
    """INFO lines as written; warnings and errors prefixed with their level."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message


def configure(*, quiet: bool = False) -> None:
    """Send dermbench's log records to stderr (INFO, or WARNING with ``quiet``). Idempotent."""
    logger = get_logger()
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    for handler in logger.handlers:
        if getattr(handler, "_dermbench", False):
            # pytest swaps stderr between tests; not setStream, which flushes the old (maybe closed) stream
            handler.stream = sys.stderr
            break
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_MessageOnly())
        handler._dermbench = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False


_NOTED: set[str] = set()


def note_once(key: str, message: str, *, name: str = "") -> bool:
    """Log ``message`` as a warning the first time ``key`` is noted in this process; later calls
    with the same key say nothing (a fact about a dataset, such as a split without malignant
    images, is one line for a whole grid, not one per cell). Returns whether it was logged."""
    if key in _NOTED:
        return False
    _NOTED.add(key)
    get_logger(name).warning("%s", message)
    return True


def is_quiet() -> bool:
    """True when INFO messages (and progress bars) are switched off."""
    return not get_logger().isEnabledFor(logging.INFO)


class _NoBar:
    """Stands in for a tqdm bar when progress is off."""

    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress(total: int | None = None, desc: str = "", *, unit: str = "img", initial: int = 0,
             enabled: bool = True, leave: bool = False) -> Any:
    """A progress bar (tqdm on stderr), or a silent stand-in when disabled or quiet."""
    if not enabled or is_quiet():
        return _NoBar()
    from tqdm.auto import tqdm

    mininterval = 0.1 if sys.stderr.isatty() else 30.0
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave, file=sys.stderr,
                dynamic_ncols=True, mininterval=mininterval)


def track(iterable: Iterable[Any], desc: str = "", *, total: int | None = None, unit: str = "img",
          enabled: bool = True) -> Iterator[Any]:
    """Iterate with a progress bar (see :func:`progress`)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    bar = progress(total, desc, unit=unit, enabled=enabled)
    try:
        for item in iterable:
            yield item
            bar.update(1)
    finally:
        bar.close()
