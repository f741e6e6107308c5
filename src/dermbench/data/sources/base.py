"""What a dataset source is: a :class:`Source` subclass that reads the files as published.

A source module only knows its published format. It subclasses :class:`Source`, declares its
label table (``LABEL_TABLE``: published diagnosis -> ``benign`` / ``malignant`` /
``premalignant`` / ``exclude``), its split defaults, and implements :meth:`Source.read`, which
returns a :class:`SourceRows` frame with one row per image: ``img_id`` (the file name the image
gets in ``images/``), ``label_key`` (the value looked up in the table), ``src`` (where the image
comes from), optional contract columns, and ``split`` when the dataset has an official split.
:func:`dermbench.data.sources.prepare.prepare` does the rest identically for every source, with
the helpers of :mod:`.raw` (reading published files) and :mod:`.labels` (the label table).

A source prepares its data under a named label definition (:data:`.labels.LABEL_DEFINITIONS`,
chosen with :meth:`Source.select_labels`): ``complete`` uses ``LABEL_TABLE``; ``study`` uses
``STUDY_LABEL_TABLE`` (or, when that is None, ``LABEL_TABLE`` with the premalignant policy fixed
to ``paper``). A source without a ``study`` definition sets ``NO_STUDY_LABELS`` to the reason,
which is the error message.
"""

from __future__ import annotations

import abc
import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ... import MALIGNANT
from ...errors import UsageError
from ..exclusions import Exclusion
from ..splits import SplitSpec
from .labels import DEFAULT_LABEL_DEFINITION, LABEL_DEFINITIONS
from .raw import ImageIndex


@dataclass
class SourceRows:
    """What :meth:`Source.read` returns."""

    frame: pd.DataFrame
    excluded: list[Exclusion] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: When images are not files (HDF5, .npz arrays): ``src`` value -> encoded image bytes.
    image_bytes: Callable[[str], bytes] | None = None
    #: Where image files are looked up when ``frame`` has no ``src`` column (by ``image_lookup``
    #: if present, else ``img_id``); rows with no file are excluded as ``missing_image``.
    image_index: ImageIndex | None = None


class Source(abc.ABC):
    """Base class of a dataset source. Subclasses set the class attributes and ``read``."""

    name: str = ""
    title: str = ""
    licence: str = ""
    url: str = ""
    modality: str | None = None
    #: published diagnosis (normalised with :func:`.labels.normalise_key`) -> benign/malignant/premalignant/exclude
    LABEL_TABLE: dict[str, str] = {}
    #: what the study did with premalignant lesions in this dataset (the ``paper`` policy)
    PAPER_PREMALIGNANT: str = MALIGNANT
    SPLIT: SplitSpec | None = SplitSpec()
    LABEL_SOURCE: str = "diagnosis"  # which published field the table is keyed on (for the card)
    #: the ``study`` definition: its table (None = ``LABEL_TABLE`` under the ``paper`` premalignant
    #: policy), what it labels, and what the card says about it (e.g. what cannot be reproduced)
    STUDY_LABEL_TABLE: dict[str, str] | None = None
    STUDY_LABEL_SOURCE: str | None = None
    STUDY_NOTE: str = ""
    #: why the source has no ``study`` definition (set only on such sources; the refusal message)
    NO_STUDY_LABELS: str = ""
    #: the definition being prepared (set by :meth:`select_labels`)
    labels: str = DEFAULT_LABEL_DEFINITION

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Source-specific options of ``dermbench prepare``."""

    def __init__(self, options: argparse.Namespace | dict | None = None):
        if options is None:
            options = {}
        self.options = dict(vars(options)) if isinstance(options, argparse.Namespace) else dict(options)

    def option(self, key: str, default: Any = None) -> Any:
        value = self.options.get(key, default)
        return default if value is None else value

    @abc.abstractmethod
    def read(self, raw: Path) -> SourceRows:
        """Read the raw files as published into rows with labels and contract columns."""

    def select_labels(self, definition: str) -> None:
        """Prepare under the named label definition; refuse one the source does not have, or
        source options that contradict it (a subclass checks its own options here)."""
        if definition not in LABEL_DEFINITIONS:
            raise UsageError(f"--labels {definition!r}: choose one of {', '.join(LABEL_DEFINITIONS)}")
        if definition == "study" and self.NO_STUDY_LABELS:
            raise UsageError(f"{self.name} has no 'study' label definition: {self.NO_STUDY_LABELS}")
        self.labels = definition

    @property
    def label_source(self) -> str:
        """What the label table is keyed on, under the selected definition (for the card)."""
        if self.labels == "study" and self.STUDY_LABEL_SOURCE:
            return self.STUDY_LABEL_SOURCE
        return self.LABEL_SOURCE

    def given_split_policy(self) -> str:
        """How the card describes a split that came with the data (every row has ``split``)."""
        return "official split as published"

    def subsample(self, frame: pd.DataFrame, rng: np.random.Generator) -> tuple[pd.DataFrame, list[Exclusion], str]:
        """Paper subsampling after labelling (ISIC 2024, SD-198). Default: keep everything."""
        return frame, [], ""

    def label_table(self) -> dict[str, str]:
        """published value -> benign/malignant/premalignant/exclude under the selected definition."""
        if self.labels == "study" and self.STUDY_LABEL_TABLE is not None:
            return dict(self.STUDY_LABEL_TABLE)
        return dict(self.LABEL_TABLE)
