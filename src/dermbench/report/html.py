"""Rendering of the report's HTML pages: Jinja2 templates (``report/templates``) with autoescape.

The pages are self-contained within the report folder: figures and thumbnails are files beside
them, referenced by relative links, with inline CSS and no script or network resource. Every
value a template prints is escaped by Jinja2's autoescape, which is on for every template; no
value is marked safe, so a model, dataset, file or error name, or an image id, is always text.

Tables reach the templates as :class:`Table` (headers and rows of :class:`TableCell`): the kind of
a cell (plain text, a link, a coloured paradigm tag) is data, so no Python code writes HTML.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable, Mapping

import pandas as pd

#: package folder of the templates (shipped as package data)
TEMPLATES = "templates"


@lru_cache(maxsize=1)
def environment() -> Any:
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("dermbench.report", TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True)


def render(template: str, **context: Any) -> str:
    """A template of ``report/templates`` rendered with ``context`` (every value escaped)."""
    return environment().get_template(template).render(**context)


@dataclass(frozen=True)
class TableCell:
    text: str
    classes: str = ""                # CSS classes: "num" (right-aligned number), "nowrap"
    href: str | None = None          # the text is a link to this (relative) address
    tag_colour: str | None = None    # the text is a tag on this background colour (a paradigm)
    #: the text in pieces a line may break between (after ``+ / :``): long model names wrap at their
    #: parts instead of overflowing the page or breaking mid-word (empty: the text as one piece)
    segments: tuple[str, ...] = ()


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[TableCell]]

    def __len__(self) -> int:
        return len(self.rows)


def fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


#: characters after which a model or dataset name may wrap
BREAK_AFTER = "+/:,"


def segments(text: str) -> tuple[str, ...]:
    """``text`` cut after each of :data:`BREAK_AFTER` (the pieces join back to ``text``)."""
    pieces, start = [], 0
    for k, ch in enumerate(text):
        if ch in BREAK_AFTER:
            pieces.append(text[start:k + 1])
            start = k + 1
    if start < len(text):
        pieces.append(text[start:])
    return tuple(pieces) if len(pieces) > 1 else ()


def table(df: pd.DataFrame, columns: Iterable[str] | None = None, headers: Mapping[str, str] | None = None, *,
          links: Mapping[str, str] | None = None, tags: Mapping[str, Callable[[str], str]] | None = None,
          numeric: Iterable[str] = (), breakable: Iterable[str] = ()) -> Table:
    """A :class:`Table` of ``df``'s ``columns`` (all by default), headed by ``headers`` where given.

    ``breakable``: columns of names (models, datasets) whose long values may wrap after ``+ / : ,``
    (:func:`segments`), so a table of long model names fits the page.
    ``links``: column -> link text; the column's value is the address. ``tags``: column -> a
    function giving the tag colour of a value. Floats and ``numeric`` columns are right-aligned;
    a column whose header mentions a CI does not wrap.
    """
    columns = list(columns or df.columns)
    headers, links, tags, numeric = dict(headers or {}), dict(links or {}), dict(tags or {}), set(numeric)
    breakable = set(breakable)
    rows = []
    for _, row in df.iterrows():
        cells = []
        for c in columns:
            v = row.get(c)
            v = v.item() if hasattr(v, "item") else v
            classes = (["num"] if c in numeric or isinstance(v, float) else []) + (["nowrap"] if "CI" in c else [])
            if c in links:
                cells.append(TableCell(links[c], " ".join(classes), href=str(v)))
            elif c in tags:
                cells.append(TableCell(str(v), " ".join(classes), tag_colour=tags[c](str(v))))
            else:
                text = fmt(v)
                cells.append(TableCell(text, " ".join(classes),
                                       segments=segments(text) if c in breakable and len(text) > 24 else ()))
        rows.append(cells)
    return Table([headers.get(c, c) for c in columns], rows)
