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


def table(df: pd.DataFrame, columns: Iterable[str] | None = None, headers: Mapping[str, str] | None = None, *,
          links: Mapping[str, str] | None = None, tags: Mapping[str, Callable[[str], str]] | None = None,
          numeric: Iterable[str] = ()) -> Table:
    """A :class:`Table` of ``df``'s ``columns`` (all by default), headed by ``headers`` where given.

    ``links``: column -> link text; the column's value is the address. ``tags``: column -> a
    function giving the tag colour of a value. Floats and ``numeric`` columns are right-aligned;
    a column whose header mentions a CI does not wrap.
    """
    columns = list(columns or df.columns)
    headers, links, tags, numeric = dict(headers or {}), dict(links or {}), dict(tags or {}), set(numeric)
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
                cells.append(TableCell(fmt(v), " ".join(classes)))
        rows.append(cells)
    return Table([headers.get(c, c) for c in columns], rows)
