"""Every error dermbench raises on purpose, in one place.

:class:`DermbenchError` is the base: its message is the whole story (what is wrong and what to
do), so the command line prints it on one line without a traceback and exits with the class's
``exit_code``. Anything that is *not* a ``DermbenchError`` is a bug and keeps its traceback.

Each error also derives from the built-in exception a caller would naturally catch
(``ValueError`` for bad values, ``KeyError`` for an unknown name, ``RuntimeError`` for a missing
resource), so library users can catch either.

This module imports nothing from dermbench, so every layer can raise these without cycles.
"""

from __future__ import annotations


#: At most this many characters of a user's value are quoted in a message (:func:`quote`).
QUOTE_LIMIT = 200
#: A message line longer than this is cut (a safety net for a value quoted without :func:`quote`).
LINE_LIMIT = 1000


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters of the user's data
    (``'ISIC_00…' (+149999800 more characters)``): a 150 MB id is not echoed whole."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... (+{len(value) - limit} more characters)"
    text = repr(value)
    if len(text) > limit:
        return f"{text[:limit]}... (+{len(text) - limit} more characters)"
    return text


def _cut_long_lines(message: str) -> str:
    if len(message) <= LINE_LIMIT:
        return message
    lines = []
    for line in message.split("\n"):
        if len(line) > LINE_LIMIT:
            line = f"{line[:LINE_LIMIT]}... (+{len(line) - LINE_LIMIT} more characters)"
        lines.append(line)
    return "\n".join(lines)


class DermbenchError(Exception):
    """Base class: a problem the user can act on. The message says what is wrong and what to do."""

    #: exit status of the command line: 2 = input it cannot use, 1 = it ran and found a problem
    exit_code = 2

    def __str__(self) -> str:  # KeyError subclasses would quote the message otherwise
        return _cut_long_lines(str(self.args[0])) if self.args else self.__class__.__name__


# --- input that cannot be used (exit 2) ----------------------------------------------------------
class UsageError(DermbenchError, ValueError):
    """A command-line argument or option value that cannot be used."""


class ConfigError(DermbenchError, ValueError):
    """A run configuration that cannot be used; the message names every problem and its key."""


class UnknownNameError(DermbenchError, KeyError):
    """A name that is not registered (model, source, head, prompt set ...); lists close matches."""


class DatasetError(DermbenchError, ValueError):
    """A dataset folder that does not satisfy the contract (or a row refused under ``--strict``)."""


class SourceFormatError(DermbenchError, ValueError):
    """Raw files of a public dataset that do not look as published."""


class MergeError(DermbenchError, ValueError):
    """Datasets that cannot be merged as asked."""


class HDF5LayoutError(DermbenchError, ValueError):
    """An HDF5 file that is not in the study's layout."""


class SynthError(DermbenchError, ValueError):
    """Synthetic-dataset parameters that cannot be used."""


class PredictionsError(DermbenchError, ValueError):
    """A predictions file that does not validate against the ground truth."""


class PromptSetError(DermbenchError, ValueError):
    """A prompt set (YAML) that cannot be used."""


class ThresholdPolicyError(DermbenchError, ValueError):
    """An operating-threshold policy string that cannot be parsed."""


class ImageReadError(DermbenchError):
    """An image that cannot be used; ``reason`` is an exclusion reason code (``missing_image`` ...)."""

    def __init__(self, path: object, reason: str, detail: str = ""):
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {reason}" + (f" ({detail})" if detail else ""))


# --- a resource that is missing or unreachable (exit 2) ------------------------------------------
class WeightsNotFoundError(DermbenchError, RuntimeError):
    """Model weights that are not on this machine; the message says what to download and where."""


class ServerUnreachable(DermbenchError, ConnectionError):
    """Nothing answers at a model server's URL."""


class RequestFailed(DermbenchError, RuntimeError):
    """A request to a model server that failed for good (after retries, or a non-retryable status);
    ``attempts`` says how many were made. A zeroshot cell records it as that image's failed answer."""

    def __init__(self, message: str, attempts: int):
        super().__init__(message)
        self.attempts = attempts


class ExecutorError(DermbenchError, RuntimeError):
    """An executor (worker pool, Ray) that cannot run the grid as asked."""


class CacheError(DermbenchError, RuntimeError):
    """A cache file that is corrupt or inconsistent; the message names the file."""


# --- it ran and found nothing or a problem (exit 1) -------------------------------------------------
class NoRunsError(DermbenchError, FileNotFoundError):
    """A runs folder that holds no run records (nothing to report)."""

    exit_code = 1
