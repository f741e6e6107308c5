"""Reading a dataset's files as published: finding them, CSVs in any common encoding, header
checks, value cleaning, and the image files below the raw folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from ...errors import SourceFormatError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def find_file(raw: Path, names: Sequence[str], what: str, explicit: str | Path | None = None) -> Path:
    """Find a published file by its exact name(s), first directly in ``raw`` then below it."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_absolute() and not path.exists():
            path = raw / path
        if not path.is_file():
            raise SourceFormatError(f"{what}: {path} does not exist")
        return path
    if raw.is_file():
        return raw
    for name in names:
        if (raw / name).is_file():
            return raw / name
    for name in names:
        found = sorted(raw.rglob(name))
        if found:
            return found[0]
    raise SourceFormatError(
        f"{what}: none of {', '.join(names)} found in {raw}. Point --raw at the folder holding the "
        f"files as published, or name the file with --metadata.")


def read_published_csv(path: Path, **kw: Any) -> pd.DataFrame:
    """Read a published CSV as strings: UTF-8 (BOM tolerated), else Windows-1252 (spreadsheet
    exports: curly quotes, accents), else latin-1 — with a warning naming the encoding used; CRLF
    or LF, with or without a final newline; empty cells are missing values."""
    import io
    import warnings

    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        for encoding in ("cp1252", "latin-1"):
            try:
                text = raw.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
        warnings.warn(f"{path.name} is not UTF-8 (byte {exc.start}); read as {encoding}", stacklevel=2)
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, **kw)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SourceFormatError(f"{path} is not a readable CSV: {exc}") from exc
    df.columns = [str(c).strip() for c in df.columns]
    for col in df.columns:
        df[col] = df[col].str.strip()
    return df.replace({"": None})


def check_columns(path: Path, columns: Iterable[str], required: Sequence[str], source: str,
                  allowed_extra: Sequence[str] = ()) -> None:
    """Refuse a file whose header lacks a required column, naming it and any close misspelling."""
    import difflib

    columns = list(columns)
    missing = [c for c in required if c not in columns]
    if not missing:
        return
    known = set(required) | set(allowed_extra)
    unexpected = [c for c in columns if c not in known]
    hints = []
    for m in missing:
        close = difflib.get_close_matches(m, unexpected, n=1, cutoff=0.6)
        if close:
            hints.append(f"column {close[0]!r} looks like a damaged {m!r}")
    hint = ("; " + "; ".join(hints) + " (the header is damaged; fix it or use the file as published)") if hints else ""
    raise SourceFormatError(
        f"{path}: not a {source} file as published: missing column(s) {missing}; "
        f"found {columns}{hint}.")


def parse_bool(value: Any) -> bool | None:
    """``True/False``, ``TRUE/FALSE``, ``1/0``, ``yes/no`` -> bool; empty -> None."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip().casefold()
    if text in ("true", "1", "1.0", "yes", "y", "t"):
        return True
    if text in ("false", "0", "0.0", "no", "n", "f"):
        return False
    if text in ("", "nan", "none"):
        return None
    raise ValueError(f"not a boolean: {value!r}")


def clean_number(value: Any) -> str | None:
    """``80.0`` -> ``80``; ``UNK``/``unknown``/empty -> None; other text kept."""
    if value is None:
        return None
    text = str(value).strip()
    if text.casefold() in ("", "unk", "unknown", "nan", "none", "-1"):
        return None
    try:
        f = float(text)
    except ValueError:
        return text
    return str(int(f)) if f.is_integer() else text


def clean_text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return None if text.casefold() in ("", "unk", "unknown", "nan", "none") else text


class ImageIndex:
    """Every image file below some folders, looked up by stem or file name (case-sensitive first).

    Symlinked folders are followed (an ``images`` folder linked into ``--raw`` is common), each
    real folder once, so a symlink loop cannot hang the walk; a dangling symlink is no file."""

    def __init__(self, roots: Iterable[Path]):
        self.by_name: dict[str, list[Path]] = {}
        self.by_stem: dict[str, list[Path]] = {}
        seen_dirs: set[str] = set()
        for root in roots:
            if not Path(root).is_dir():
                continue
            for dirpath, dirs, names in os.walk(root, followlinks=True):
                real_dir = os.path.realpath(dirpath)
                if real_dir in seen_dirs:
                    dirs[:] = []
                    continue
                seen_dirs.add(real_dir)
                dirs.sort()
                for n in sorted(names):
                    if Path(n).suffix.lower() in IMAGE_EXTENSIONS and not n.startswith("."):
                        p = Path(dirpath) / n
                        if not p.exists():
                            continue
                        self.by_name.setdefault(n, []).append(p)
                        self.by_stem.setdefault(Path(n).stem, []).append(p)
        self.used: set[Path] = set()

    def find(self, name_or_stem: str) -> Path | None:
        hits = self.by_name.get(name_or_stem) or self.by_stem.get(name_or_stem)
        if not hits:
            return None
        hit = hits[0]  # deterministic: folders and names were walked in sorted order
        self.used.add(hit)
        return hit

    def unlisted(self) -> list[str]:
        return sorted(str(p) for hits in self.by_name.values() for p in hits if p not in self.used)


def image_roots(raw: Path, options: dict[str, Any]) -> list[Path]:
    extra = options.get("images") or []
    if isinstance(extra, (str, Path)):
        extra = [extra]
    roots = [Path(p).expanduser() for p in extra]
    for r in roots:
        if not r.is_dir():
            raise SourceFormatError(f"--images {r} is not a folder")
    base = raw if raw.is_dir() else raw.parent
    return roots or [base]


def attach_image_files(frame: pd.DataFrame, index: ImageIndex, lookup_col: str = "img_id") -> pd.Series:
    """The image file of each row (None where the raw folder has none), looked up by ``lookup_col``."""
    return frame[lookup_col].map(lambda v: None if pd.isna(v) else index.find(str(v)))


def fill_from(frame: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the columns of ``other`` (keyed by ``img_id``, first row of an id) filled in
    where ``frame`` has no value; columns ``frame`` lacks are added."""
    other = other.drop_duplicates("img_id").set_index("img_id")
    out = frame.copy()
    for col in other.columns:
        values = out["img_id"].map(other[col])
        out[col] = out[col].where(out[col].notna(), values) if col in out.columns else values
    return out


def with_file_extension(img_id: str, src: str) -> str:
    """The name an image gets in images/: the published name, with the file's extension if the
    published id has none (HAM ``ISIC_0027419`` -> ``ISIC_0027419.jpg``)."""
    if Path(img_id).suffix.lower() in IMAGE_EXTENSIONS:
        return img_id
    return img_id + Path(src).suffix.lower()
