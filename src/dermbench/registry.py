"""Lazy, string-keyed plugin registries.

Every kind of code plugin (paradigm, probe head, dataset source, prompt set) has one
:class:`Registry`; models are data, one catalog (:mod:`dermbench.models`). An entry maps a name
to a ``"module.path:attribute"`` string that is imported only when the entry is used, so
``import dermbench`` never imports torch, transformers, open_clip, TensorFlow or an HTTP client
(the lm-evaluation-harness pattern). Entries can also carry metadata (description, licence,
source) that ``dermbench ls`` shows without importing anything.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Iterator

from .errors import UnknownNameError


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "package.module:attribute"
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Any:
        module_name, _, attr = self.target.partition(":")
        module = importlib.import_module(module_name)
        obj = module
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
        return obj


class Registry:
    """A named collection of lazily imported plugins."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, target: str, description: str = "", **meta: Any) -> None:
        key = name.lower()
        if key in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[key] = Entry(name=name, target=target, description=description, meta=meta)

    def entry(self, name: str) -> Entry:
        key = str(name).lower()
        if key not in self._entries:
            raise UnknownNameError(self.unknown_message(name))
        return self._entries[key]

    def get(self, name: str) -> Any:
        return self.entry(name).load()

    def unknown_message(self, name: str) -> str:
        names = self.names()
        close = difflib.get_close_matches(str(name).lower(), [n.lower() for n in names], n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Available: {', '.join(names)}"

    def names(self) -> list[str]:
        return sorted(e.name for e in self._entries.values())

    def __contains__(self, name: object) -> bool:
        return str(name).lower() in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries)
