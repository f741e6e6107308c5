"""What every dataset source shares: label mapping with a premalignant policy, image lookup,
exclusion bookkeeping, and writing a contract folder atomically.

A source module only knows its published format. It subclasses :class:`Source`, declares its
label table (``LABEL_TABLE``: published diagnosis -> ``benign`` / ``malignant`` /
``premalignant`` / ``exclude``), its split defaults, and implements :meth:`Source.read`, which
returns a :class:`SourceRows` frame with one row per image: ``img_id`` (the file name the image
gets in ``images/``), ``label_key`` (the value looked up in the table), ``src`` (where the image
comes from), optional contract columns, and ``split`` when the dataset has an official split.
:func:`prepare` does the rest identically for every source.
"""

from __future__ import annotations

import abc
import argparse
import os
import shutil
import sys
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from ... import BENIGN, MALIGNANT, SPLITS
from ..splits import SplitSpec, split_frame
from ...errors import SourceFormatError

PREMALIGNANT_POLICIES = ("paper", "malignant", "benign", "exclude")
LINK_MODES = ("copy", "hardlink", "symlink")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
#: Values a label table may map to.
TABLE_VALUES = (BENIGN, MALIGNANT, "premalignant", "exclude")


@dataclass
class Excluded:
    """Rows dropped while preparing, summarised by reason (the full list goes to excluded.csv)."""

    reason: str
    img_ids: list[str]
    detail: str = ""

    def as_card(self, examples: int = 10) -> dict[str, Any]:
        return {"reason": self.reason, "count": len(self.img_ids), "detail": self.detail,
                "examples": self.img_ids[:examples]}


@dataclass
class SourceRows:
    """What :meth:`Source.read` returns."""

    frame: pd.DataFrame
    excluded: list[Excluded] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: When images are not files (HDF5, .npz arrays): ``src`` value -> encoded image bytes.
    image_bytes: Callable[[str], bytes] | None = None
    #: Where image files are looked up when ``frame`` has no ``src`` column (by ``image_lookup``
    #: if present, else ``img_id``); rows with no file are excluded as ``missing_image``.
    image_index: "ImageIndex | None" = None


class Source(abc.ABC):
    """Base class of a dataset source. Subclasses set the class attributes and ``read``."""

    name: str = ""
    title: str = ""
    licence: str = ""
    url: str = ""
    modality: str | None = None
    #: published diagnosis (normalised with :func:`normalise_key`) -> benign/malignant/premalignant/exclude
    LABEL_TABLE: dict[str, str] = {}
    #: what the study did with premalignant lesions in this dataset (the ``paper`` policy)
    PAPER_PREMALIGNANT: str = MALIGNANT
    SPLIT: SplitSpec | None = SplitSpec()
    LABEL_SOURCE: str = "diagnosis"  # which published field the table is keyed on (for the card)

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

    def subsample(self, frame: pd.DataFrame, rng: np.random.Generator) -> tuple[pd.DataFrame, list[Excluded], str]:
        """Paper subsampling after labelling (ISIC 2024, SD-198). Default: keep everything."""
        return frame, [], ""

    def label_table(self) -> dict[str, str]:
        return dict(self.LABEL_TABLE)


# --------------------------------------------------------------------------- label mapping

def normalise_key(value: Any) -> str:
    """Exact-match key: Unicode NFC, case-folded, trimmed, inner whitespace collapsed."""
    text = unicodedata.normalize("NFC", str(value))
    return " ".join(text.casefold().split())


def resolve_premalignant(table_value: str, policy: str, paper_default: str) -> str:
    """Turn a table value into benign/malignant/exclude under the premalignant policy."""
    if table_value != "premalignant":
        return table_value
    if policy == "paper":
        return paper_default
    return policy


def apply_label_table(
    frame: pd.DataFrame, table: dict[str, str], policy: str, paper_default: str, source: str
) -> tuple[pd.DataFrame, list[Excluded], dict[str, str]]:
    """Label every row by exact normalised lookup of ``label_key``.

    An unknown value is an error listing every unknown value with its count: a published
    dataset's table is complete, and guessing (e.g. by substring) is how "melanose solar"
    became malignant in the study's hospital set.
    Returns (labelled frame, exclusions, the mapping as applied: key -> final label).
    """
    if policy not in PREMALIGNANT_POLICIES:
        raise ValueError(f"premalignant policy {policy!r}; choose one of {', '.join(PREMALIGNANT_POLICIES)}")
    norm_table = {normalise_key(k): v for k, v in table.items()}
    bad_values = sorted({v for v in norm_table.values() if v not in TABLE_VALUES})
    if bad_values:
        raise ValueError(f"{source}: label table maps to {bad_values}; allowed: {', '.join(TABLE_VALUES)}")
    keys = frame["label_key"].map(lambda v: None if pd.isna(v) else normalise_key(v))
    unknown = keys[~keys.isin(list(norm_table)) & keys.notna()]
    if len(unknown):
        counts = unknown.value_counts()
        listing = ", ".join(f"{k!r} ({n})" for k, n in counts.items())
        raise SourceFormatError(
            f"{source}: {len(counts)} diagnosis value(s) are not in the label table: {listing}. "
            f"Add them to the mapping table (exact names; nothing is matched by substring).")
    applied = {k: resolve_premalignant(v, policy, paper_default) for k, v in norm_table.items()}
    table_value = keys.map(lambda k: None if k is None else norm_table[k])
    final = keys.map(lambda k: None if k is None else applied[k])
    excluded: list[Excluded] = []
    missing = final.isna()
    if missing.any():
        excluded.append(Excluded("missing_diagnosis", frame.loc[missing, "img_id"].astype(str).tolist(),
                                 "no value in the labelled column"))
    premal = (final == "exclude") & (table_value == "premalignant")
    if premal.any():
        excluded.append(Excluded("premalignant_excluded", frame.loc[premal, "img_id"].astype(str).tolist(),
                                 "premalignant policy 'exclude'"))
    other = (final == "exclude") & (table_value == "exclude")
    if other.any():
        classes = sorted(set(keys[other]))
        excluded.append(Excluded("excluded_class", frame.loc[other, "img_id"].astype(str).tolist(),
                                 "classes the label table excludes: " + ", ".join(classes)))
    keep = final.isin([BENIGN, MALIGNANT])
    out = frame.loc[keep].copy()
    out["benign_malignant"] = final[keep]
    return out, excluded, applied


def format_mapping(table: dict[str, str], applied: dict[str, str], counts: pd.Series | None = None) -> str:
    """The label mapping as a printable table (published value, table entry, final label, rows)."""
    rows = []
    width = max([len("published value")] + [len(k) for k in table]) + 2
    rows.append(f"  {'published value':<{width}}{'table':<14}{'label':<11}rows")
    for key, value in table.items():
        nk = normalise_key(key)
        n = int(counts.get(nk, 0)) if counts is not None else ""
        rows.append(f"  {key:<{width}}{value:<14}{applied.get(nk, value):<11}{n}")
    return "\n".join(rows)


# --------------------------------------------------------------------------- raw file helpers

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
    """Every image file below some folders, looked up by stem or file name (case-sensitive first)."""

    def __init__(self, roots: Iterable[Path]):
        self.by_name: dict[str, list[Path]] = {}
        self.by_stem: dict[str, list[Path]] = {}
        for root in roots:
            if not Path(root).is_dir():
                continue
            for dirpath, dirs, names in os.walk(root):
                dirs.sort()
                for n in sorted(names):
                    if Path(n).suffix.lower() in IMAGE_EXTENSIONS and not n.startswith("."):
                        p = Path(dirpath) / n
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


def with_file_extension(img_id: str, src: str) -> str:
    """The name an image gets in images/: the published name, with the file's extension if the
    published id has none (HAM ``ISIC_0027419`` -> ``ISIC_0027419.jpg``)."""
    if Path(img_id).suffix.lower() in IMAGE_EXTENSIONS:
        return img_id
    return img_id + Path(src).suffix.lower()


# --------------------------------------------------------------------------- writing a dataset

def place_image(src: str, dest: Path, link: str, image_bytes: Callable[[str], bytes] | None) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if image_bytes is not None:
        dest.write_bytes(image_bytes(src))
        return
    if link == "copy":
        shutil.copyfile(src, dest)
    elif link == "hardlink":
        try:
            os.link(src, dest)
        except OSError as exc:  # cross-device or unsupported: say so rather than silently copying
            raise OSError(f"cannot hard-link {src} -> {dest} ({exc}); use --link copy or symlink") from exc
    elif link == "symlink":
        os.symlink(os.path.abspath(src), dest)
    else:
        raise ValueError(f"--link {link!r}; choose one of {', '.join(LINK_MODES)}")


def absolute(path: str | Path) -> Path:
    """An absolute path without resolving symlinks (the contract loader needs absolute roots)."""
    return Path(os.path.abspath(Path(path).expanduser()))


def check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"{out} already exists and is not empty; pass --overwrite to replace it")


def write_dataset(
    out: Path,
    splits: dict[str, pd.DataFrame],
    *,
    link: str = "copy",
    overwrite: bool = False,
    image_bytes: Callable[[str], bytes] | None = None,
    card: dict[str, Any],
    extra_files: dict[str, pd.DataFrame] | None = None,
    workers: int = 4,
) -> dict[str, Any]:
    """Write a contract folder atomically: everything goes to a hidden sibling temp folder that
    is renamed into place only when the images, CSVs and ``dataset.json`` are all written, so a
    crash never leaves a half-made dataset that looks complete.

    ``splits[s]`` frames need ``img_id`` and ``src`` (dropped on writing) plus the CSV columns.
    """
    from concurrent.futures import ThreadPoolExecutor

    from ..card import write_card

    from ..contract import _unsafe

    out = absolute(out)
    check_out_dir(out, overwrite)
    # Names come from published metadata or an HDF5 file: one like "../x.jpg" would be written
    # outside images/ (and the contract loader would then reject it). Refuse before writing.
    unsafe = [f"{i!r} ({_unsafe(str(i)) or 'empty'})" for df in splits.values() for i in df["img_id"]
              if not str(i).strip() or _unsafe(str(i))]
    if unsafe:
        raise SourceFormatError(f"{len(unsafe)} image name(s) would escape images/: {', '.join(unsafe[:5])}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        images = tmp / "images"
        images.mkdir()
        jobs = [(str(s), images / str(i)) for df in splits.values() for s, i in zip(df["src"], df["img_id"])]
        if image_bytes is not None:
            for s, d in jobs:  # one reader (HDF5 handles are not thread-safe)
                place_image(s, d, link, image_bytes)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(lambda job: place_image(job[0], job[1], link, None), jobs))
        for split in SPLITS:
            df = splits.get(split, pd.DataFrame(columns=["img_id", "benign_malignant"]))
            df = df.drop(columns=[c for c in ("src", "split", "label_key") if c in df.columns])
            df.to_csv(tmp / f"{split}_metadata.csv", index=False, lineterminator="\n")
        for name, frame in (extra_files or {}).items():
            frame.to_csv(tmp / name, index=False, lineterminator="\n")
        written = write_card(tmp, **card)
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return written
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def counts_table(splits: dict[str, pd.DataFrame]) -> str:
    lines = [f"  {'split':<11}{'images':>8}{'benign':>8}{'malignant':>11}"]
    for s in SPLITS:
        df = splits.get(s)
        n = 0 if df is None else len(df)
        m = 0 if df is None else int((df["benign_malignant"] == MALIGNANT).sum())
        lines.append(f"  {s:<11}{n:>8}{n - m:>8}{m:>11}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the common pipeline

CONTRACT_ORDER = ("img_id", "benign_malignant", "patient_id", "lesion_id", "diagnosis", "fitzpatrick",
                  "age", "sex", "site", "modality")


def prepare(
    source: str | Source,
    raw: str | Path,
    out: str | Path,
    *,
    seed: int = 42,
    premalignant: str = "paper",
    link: str = "copy",
    overwrite: bool = False,
    ratios: Sequence[float] | None = None,
    options: dict[str, Any] | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Turn a dataset as published into a contract folder; returns the written card.

    Steps: read the published files -> label by the source's table under the premalignant
    policy -> drop rows without an image (reported) -> the paper's subsampling (ISIC 2024,
    SD-198) -> official or grouped stratified split -> write atomically with ``dataset.json``.
    """
    from . import SOURCES

    options = dict(options or {})
    if isinstance(source, str):
        entry = SOURCES.entry(source)
        src = entry.load()(options)
        meta = entry.meta
    else:
        src, meta = source, {}
    raw = Path(raw).expanduser()
    if not raw.exists():
        raise SourceFormatError(f"--raw {raw} does not exist")
    out = absolute(out)
    if out.resolve() == raw.resolve() or out.resolve() in raw.resolve().parents:
        raise SourceFormatError(f"--out {out} would replace the raw files in --raw {raw}; write the dataset "
                                f"to another folder")
    check_out_dir(out, overwrite)
    if link not in LINK_MODES:
        raise ValueError(f"--link {link!r}; choose one of {', '.join(LINK_MODES)}")

    def say(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr)

    rows = src.read(raw)
    frame = rows.frame.reset_index(drop=True)
    excluded = list(rows.excluded)
    unlisted: list[str] = []
    if "src" not in frame.columns:
        if rows.image_index is None:
            raise TypeError(f"source {src.name}: read() returned neither a src column nor an image_index")
        lookup = "image_lookup" if "image_lookup" in frame.columns else "img_id"
        frame["src"] = attach_image_files(frame, rows.image_index, lookup)
        unlisted = rows.image_index.unlisted()
        frame = frame.drop(columns=[c for c in ("image_lookup",) if c in frame.columns])
    n_read = len(frame) + sum(len(e.img_ids) for e in excluded)
    table = src.label_table()
    key_counts = frame["label_key"].map(lambda v: None if pd.isna(v) else normalise_key(v)).value_counts()
    frame, label_excl, applied = apply_label_table(frame, table, premalignant, src.PAPER_PREMALIGNANT, src.name)
    excluded += label_excl
    no_image = frame["src"].isna()
    if no_image.any():
        excluded.append(Excluded("missing_image", frame.loc[no_image, "img_id"].astype(str).tolist(),
                                 "metadata row whose image file is not in the raw folder"))
        frame = frame.loc[~no_image].copy()
    frame["img_id"] = [with_file_extension(str(i), str(p)) for i, p in zip(frame["img_id"], frame["src"])]
    if src.modality and "modality" not in frame.columns:
        frame["modality"] = src.modality
    rng = np.random.default_rng(seed)
    frame, sub_excl, sub_policy = src.subsample(frame, rng)
    excluded += sub_excl
    if len(frame) == 0:
        reasons = ", ".join(f"{len(e.img_ids)} {e.reason}" for e in excluded)
        raise SourceFormatError(f"{src.name}: no usable rows in {raw} ({reasons}). Are the images under "
                                f"--raw (or --images)?")
    dupes = frame["img_id"].str.lower().duplicated(keep="first")
    if dupes.any():
        excluded.append(Excluded("duplicate_img_id", frame.loc[dupes, "img_id"].tolist(),
                                 "same image file listed twice; first row kept"))
        frame = frame.loc[~dupes]
    if "split" in frame.columns and frame["split"].notna().all():
        if ratios is not None:
            raise SourceFormatError(f"{src.name} has an official train/validation/test split; --ratios does "
                                    f"not apply to it (drop --ratios to use the official split)")
        split_policy = "official split as published"
        split_names = frame["split"]
    else:
        spec = src.SPLIT or SplitSpec()
        if ratios is not None:
            spec = SplitSpec(tuple(ratios), spec.group_by, spec.stratify_by)  # type: ignore[arg-type]
        split_names, split_policy = split_frame(frame, spec, seed=seed)
    if sub_policy:
        split_policy = f"{sub_policy}; {split_policy}"
    cols = [c for c in CONTRACT_ORDER if c in frame.columns]
    cols += [c for c in frame.columns if c not in cols and c not in ("label_key", "split")]
    frame = frame[cols]
    splits = {s: frame.loc[split_names == s].reset_index(drop=True) for s in SPLITS}

    say(f"{src.title or src.name}: {n_read} rows read from {raw}")
    say(f"label mapping ({src.LABEL_SOURCE} -> label, premalignant policy {premalignant!r}):")
    say(format_mapping(table, applied, key_counts))
    for e in excluded:
        say(f"  excluded {len(e.img_ids)} row(s): {e.reason}" + (f" ({e.detail})" if e.detail else ""))
    if unlisted:
        say(f"  {len(unlisted)} image file(s) have no metadata row (not used), e.g. "
            f"{unlisted[0]}")
    for note in rows.notes:
        say(f"  note: {note}")
    say(f"split: {split_policy}")
    say(counts_table(splits))

    excluded_frame = pd.DataFrame(
        [{"img_id": i, "reason": e.reason, "detail": e.detail} for e in excluded for i in e.img_ids],
        columns=["img_id", "reason", "detail"])
    card = {
        "name": out.name,
        "source": src.name,
        "source_title": src.title,
        "licence": src.licence or meta.get("licence", ""),
        "url": src.url or meta.get("url", ""),
        "raw": str(raw.resolve()),
        "label_source": src.LABEL_SOURCE,
        "label_mapping": applied,
        "label_table": table,
        "premalignant_policy": premalignant,
        "premalignant_paper_default": src.PAPER_PREMALIGNANT,
        "split_policy": split_policy,
        "seed": seed,
        "image_link": link if rows.image_bytes is None else "written",
        "excluded": [e.as_card() for e in excluded],
        "unlisted_images": {"count": len(unlisted), "examples": unlisted[:20]},
        "notes": rows.notes,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()
                    if isinstance(v, (str, int, float, bool, Path, type(None), list))},
    }
    written = write_dataset(out, splits, link=link, overwrite=overwrite, image_bytes=rows.image_bytes,
                            card=card, extra_files={"excluded.csv": excluded_frame} if len(excluded_frame) else None)
    say(f"wrote {out} ({written['n_images']} images, fingerprint {written['fingerprint'][:12]})")
    return written
