"""The dataset contract (PRODUCT §3): load and validate a dataset folder, and write its card.

::

    <root>/
      images/                  .jpg .jpeg .png (anything else is rejected with a message)
      train_metadata.csv       one row per image; required columns img_id, benign_malignant
      validation_metadata.csv
      test_metadata.csv
      dataset.json             card: source, licence, label mapping, split policy, counts, manifest

Every row that cannot be used is *excluded and reported* with a reason code (and is an error
under ``strict=True``); nothing is dropped silently. Everything downstream is keyed by
``img_id``, never by row position.
"""

from __future__ import annotations

import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

import pandas as pd

from .. import LABELS, MALIGNANT, SPLITS, BENIGN
from ..errors import DatasetError, ImageReadError
from ..utils.atomic import atomic_write_text
from ..utils.console import get_logger
from ..utils.filestamp import FileStampMemo, sha256_file
from . import images as imgio
from .card import CARD_NAME, card_contents, read_card
from .dataset import CSV_LINES, CsvLines, LesionDataset
from .exclusions import (REASON_DUPLICATE_ID, REASON_MISSING_ID, REASON_MISSING_IMAGE, REASON_MISSING_LABEL,
                         REASON_UNKNOWN_LABEL, REASON_UNSAFE_ID, REASON_UNSUPPORTED, Exclusion)
from .fingerprint import compute_fingerprint, image_manifest

REQUIRED_COLUMNS = ("img_id", "benign_malignant")
#: Optional columns with a meaning in the contract; any other column is kept as-is.
OPTIONAL_COLUMNS = ("patient_id", "lesion_id", "fitzpatrick", "age", "sex", "site", "modality",
                    "source", "diagnosis")
#: Extension resolution order for an ``img_id`` given without extension (deterministic).
EXTENSION_ORDER = (".jpg", ".jpeg", ".png")
KNOWN_IMAGE_EXTENSIONS = (".bmp", ".tif", ".tiff", ".gif", ".webp", ".heic", ".dcm", ".jp2", ".ppm")

_log = get_logger("data")


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------

def load_dataset(
    root: str | Path,
    *,
    strict: bool = False,
    check_images: bool = True,
    splits: Iterable[str] = SPLITS,
    quiet: bool = False,
    workers: int | None = None,
) -> LesionDataset:
    """Load a dataset folder, excluding and reporting every unusable row.

    ``check_images`` decodes every image once (reduced-size for JPEG, so it is fast; memoised by
    file stamp) to catch truncated and corrupt files before a run starts; ``strict`` raises
    :class:`DatasetError` listing every problem instead of excluding rows. The dataset's summary is
    logged once per process (a grid loads the same dataset for every cell) unless ``quiet``.
    """
    root = _dataset_root(root)
    return _load(root, card=read_card(root) or {}, strict=strict, check_images=check_images,
                 splits=tuple(splits), quiet=quiet, workers=workers)


def write_card(root: str | Path, **info: Any) -> dict[str, Any]:
    """Write ``dataset.json`` for a dataset folder, computing counts, manifest and fingerprint.

    ``info`` carries what only the producer knows: ``source``, ``licence``, ``label_mapping``,
    ``split_policy``, ``premalignant_policy``, ``excluded`` (rows dropped while preparing), etc.
    Fields of an older card are kept unless ``info`` overrides them; a damaged card (what
    ``validate --write-card`` is for) is replaced.
    """
    root = _dataset_root(root)
    try:
        old = read_card(root) or {}
    except DatasetError:
        old = {}
    dataset = _load(root, card={}, strict=False, check_images=True, splits=SPLITS, quiet=True, workers=None)
    card = card_contents(dataset, info, old)
    atomic_write_text(root / CARD_NAME, json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    return card


def dataset_fingerprint(root: str | Path) -> str:
    """Fingerprint of a dataset folder: its split CSVs and every image they can refer to."""
    return load_dataset(root, check_images=False, quiet=True).fingerprint


def _dataset_root(root: str | Path) -> Path:
    root = Path(os.path.abspath(Path(root).expanduser()))
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist (create one with `dermbench synth` "
                           f"or `dermbench prepare`)")
    if not (root / "images").is_dir():
        raise DatasetError(f"{root} has no images/ folder; the contract puts every image in {root / 'images'}")
    return root


def _load(root: Path, *, card: dict[str, Any], strict: bool, check_images: bool, splits: tuple[str, ...],
          quiet: bool, workers: int | None) -> LesionDataset:
    warnings: list[str] = []
    exclusions: list[Exclusion] = []
    index = _ImageIndex(root / "images")
    frames: dict[str, pd.DataFrame] = {}
    csv_hashes: dict[str, str] = {}
    seen: dict[str, tuple[str, int]] = {}  # normalised img_id -> (split, CSV line) of its first row
    for split in splits:
        csv_path = root / f"{split}_metadata.csv"
        if not csv_path.exists():
            raise DatasetError(f"{root} has no {csv_path.name}; the contract needs one CSV per split "
                               f"({', '.join(f'{s}_metadata.csv' for s in SPLITS)})")
        csv_hashes[split] = sha256_file(csv_path)
        frames[split] = _usable_rows(split, read_metadata_csv(csv_path, warnings), index, seen, exclusions)

    # The manifest (and so the fingerprint) covers every image file the CSVs resolve to, taken
    # before the decode check, so it is the same whether or not images are checked (the card,
    # `dataset_fingerprint`, merge and audit load without checking; runs load with it).
    resolved = [p for df in frames.values() for p in df["path"]]
    if check_images:
        frames = _without_undecodable(root, frames, exclusions, workers)
    frames = _without_same_file_rows(frames, exclusions)
    warnings += index.symlink_warnings()
    warnings += _split_warnings(frames)
    if strict and exclusions:
        listing = "\n  ".join(str(e) for e in exclusions[:50])
        more = f"\n  ... and {len(exclusions) - 50} more" if len(exclusions) > 50 else ""
        raise DatasetError(f"{root}: {len(exclusions)} row(s) cannot be used (strict mode):\n  {listing}{more}")

    manifest = image_manifest(root, resolved)
    warnings += _manifest_warnings(card, manifest)
    dataset = LesionDataset(root=root, name=str(card.get("name") or root.name), splits=frames,
                            exclusions=exclusions, warnings=warnings, card=card, manifest=manifest,
                            fingerprint=compute_fingerprint(csv_hashes, manifest))
    if not quiet and (str(root), dataset.fingerprint) not in _SUMMARISED:
        _SUMMARISED.add((str(root), dataset.fingerprint))
        _log.info(dataset.summary())
    return dataset


_SUMMARISED: set[tuple[str, str]] = set()


# ------------------------------------------------------------------------------------------------
# The metadata CSVs
# ------------------------------------------------------------------------------------------------

def _read_csv_text(path: Path, warnings: list[str]) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # Spreadsheet exports are often cp1252 (curly quotes, accents); latin-1 never fails and
        # keeps ASCII ids intact. Say which was used rather than guessing silently.
        for encoding in ("cp1252", "latin-1"):
            try:
                text = raw.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
        warnings.append(f"{path.name} is not UTF-8 (byte {exc.start}); read as {encoding}")
        return text


def read_metadata_csv(path: Path, warnings: list[str]) -> pd.DataFrame:
    """Read a split CSV as strings, normalising the header (trimmed, lower-case)."""
    text = _read_csv_text(path, warnings)
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=False)
    except pd.errors.EmptyDataError as exc:
        raise DatasetError(f"{path} is empty: it needs a header with {', '.join(REQUIRED_COLUMNS)}") from exc
    except pd.errors.ParserError as exc:
        raise DatasetError(f"{path} is not a valid CSV: {exc}") from exc
    df.columns = [str(c).strip().lower() for c in df.columns]
    dup = sorted({c for c in df.columns if list(df.columns).count(c) > 1})
    if dup:
        raise DatasetError(f"{path} has duplicate columns {dup}; each column name must appear once")
    df = _rename_reserved(df, path, warnings)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DatasetError(
            f"{path} lacks required column(s) {missing}; found {list(df.columns)}. "
            f"The contract needs {list(REQUIRED_COLUMNS)} (img_id = image file name or stem, "
            f"benign_malignant = 'benign' or 'malignant').")
    # Strip whitespace in every cell; empty strings become missing values.
    for col in df.columns:
        df[col] = df[col].str.strip()
    return df.replace({"": None})


#: Columns the loader sets itself in every split frame (the image file, the 0/1 label). A metadata
#: column with one of these names (private CSVs often have a ``label`` or ``path`` of their own) is
#: kept as ``original_<name>``, with a note in the dataset's warnings, never overwritten or dropped.
RESERVED_COLUMNS = ("path", "label")


def _rename_reserved(df: pd.DataFrame, path: Path, warnings: list[str]) -> pd.DataFrame:
    renames: dict[str, str] = {}
    for column in RESERVED_COLUMNS:
        if column in df.columns:
            new, k = f"original_{column}", 2
            while new in df.columns or new in renames.values():
                new, k = f"original_{column}_{k}", k + 1
            renames[column] = new
    if not renames:
        return df
    warnings.append(f"{path.name}: column(s) " + ", ".join(f"{a!r} -> {b!r}" for a, b in renames.items())
                    + f" renamed on read: {', '.join(RESERVED_COLUMNS)} are reserved (the loader sets them)")
    return df.rename(columns=renames)


def unsafe_img_id(img_id: str) -> str:
    """Why an img_id would escape images/ (absolute, ``..``, NUL), or '' when it is safe."""
    if "\x00" in img_id:
        return "contains a NUL byte"
    norm = img_id.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return "absolute path"
    if ".." in norm.split("/"):
        return "'..' escapes images/"
    return ""


def _normalise_label(value: Any) -> str | None:
    """'benign' / 'malignant'; '' for another value; None for a missing one."""
    if value is None:
        return None
    v = str(value).strip().lower()
    return v if v in LABELS else ("" if v else None)


def _row_problem(ident: str, label_raw: Any, seen: dict[str, tuple[str, int]]) -> tuple[str, str]:
    """(reason, detail) why a CSV row cannot be used, or ('', '') when its id and label are fine."""
    if not ident:
        return REASON_MISSING_ID, ""
    why = unsafe_img_id(ident)
    if why:
        return REASON_UNSAFE_ID, why
    label = _normalise_label(label_raw)
    if label is None:
        return REASON_MISSING_LABEL, ""
    if label == "":
        return REASON_UNKNOWN_LABEL, f"{label_raw!r}; expected 'benign' or 'malignant'"
    key = ident.replace("\\", "/")
    if key in seen:
        other_split, other_line = seen[key]
        return REASON_DUPLICATE_ID, f"already listed in {other_split}_metadata.csv line {other_line}"
    return "", ""


def _usable_rows(split: str, df: pd.DataFrame, index: "_ImageIndex", seen: dict[str, tuple[str, int]],
                 exclusions: list[Exclusion]) -> pd.DataFrame:
    """The rows of one split CSV with an id, a label and an image file, in contract column order
    (``img_id, path, label, benign_malignant, ...``); every other row becomes an :class:`Exclusion`."""
    images_dir = index.images_dir
    images_root = os.path.abspath(images_dir)
    keep: list[int] = []
    labels: list[str] = []
    paths: list[str] = []
    for pos, (img_id, label_raw) in enumerate(zip(df["img_id"], df["benign_malignant"])):
        line = pos + 2  # header = line 1
        ident = "" if img_id is None else str(img_id)
        reason, detail = _row_problem(ident, label_raw, seen)
        if not reason:
            rel, reason, detail = index.resolve(ident.replace("\\", "/"))
        if reason:
            exclusions.append(Exclusion(split=split, img_id=ident, reason=reason, detail=detail, row=line))
            continue
        seen[ident.replace("\\", "/")] = (split, line)
        keep.append(pos)
        labels.append(_normalise_label(label_raw))  # type: ignore[arg-type]
        # not resolve(): a symlinked image keeps its place under images/ (rel is a normalised name
        # from the folder scan, so joining it to the absolute images/ is its absolute path)
        paths.append(os.path.join(images_root, rel))
    out = df.iloc[keep].reset_index(drop=True).drop(columns=["benign_malignant"])
    out.insert(1, "path", paths)
    out.insert(2, "label", pd.array([1 if name == MALIGNANT else 0 for name in labels], dtype="int64"))
    out.insert(3, "benign_malignant", labels)
    out.attrs[CSV_LINES] = CsvLines(k + 2 for k in keep)
    return out


class _ImageIndex:
    """One directory scan of ``images/`` for fast, deterministic extension resolution.

    Symlinks are followed (a symlinked sub-folder too, each real folder once). A symlink whose
    target does not exist resolves to a ``missing_image`` exclusion that says so; symlinks to files
    outside ``images/`` are usable and reported (:meth:`symlink_warnings`): the dataset's content
    then lives elsewhere (``prepare --link symlink`` makes such datasets)."""

    def __init__(self, images_dir: Path):
        self.images_dir = images_dir
        self.files: set[str] = set()
        self.by_stem: dict[str, list[str]] = {}
        self.by_lower: dict[str, list[str]] = {}
        self.dangling: dict[str, str] = {}   # relative name -> the missing target
        self.outside: dict[str, str] = {}    # relative name -> real path outside images/
        if images_dir.is_dir():
            real_root = os.path.realpath(images_dir)
            seen_dirs: set[str] = set()
            for dirpath, dirs, names in os.walk(images_dir, followlinks=True):
                real_dir = os.path.realpath(dirpath)
                if real_dir in seen_dirs:  # a symlink loop, or the same folder linked twice
                    dirs[:] = []
                    continue
                seen_dirs.add(real_dir)
                rel_dir = Path(dirpath).relative_to(images_dir).as_posix()
                dir_inside = os.path.commonpath([real_dir, real_root]) == real_root
                # only a symlink can be dangling or lead out of a folder that is inside images/: the
                # folder listing says which entries are links (no stat, no realpath per plain file)
                links = {e.name for e in os.scandir(dirpath) if e.is_symlink()} if names else set()
                for n in names:
                    rel = f"{rel_dir}/{n}" if rel_dir != "." else n
                    if n in links:
                        self._classify(os.path.join(dirpath, n), rel, real_root)
                    elif not dir_inside:  # a plain file in a symlinked folder outside images/
                        self.outside[rel] = os.path.join(real_dir, n)
                    self.files.add(rel)
                    stem = rel.rsplit(".", 1)[0] if "." in n else rel
                    self.by_stem.setdefault(stem, []).append(rel)
                    self.by_lower.setdefault(rel.lower(), []).append(rel)

    def _classify(self, full: str, rel: str, real_root: str) -> None:
        """A symlink: dangling (its target does not exist) or leading outside images/."""
        real = os.path.realpath(full)
        if not os.path.exists(full):
            self.dangling[rel] = os.readlink(full) if os.path.islink(full) else real
        elif os.path.commonpath([real, real_root]) != real_root:
            self.outside[rel] = real

    def symlink_warnings(self) -> list[str]:
        if not self.outside:
            return []
        name, target = next(iter(sorted(self.outside.items())))
        return [f"{len(self.outside)} file(s) in images/ are symlinks to files outside images/ (e.g. {name} -> "
                f"{target}); the dataset's content is those files: keep them in place"]

    def resolve(self, img_id: str) -> tuple[str | None, str, str]:
        """Return (relative file, reason, detail); file is None when unresolved.

        An id with an accepted extension must exist as given (case-insensitively if unique).
        An id without one is resolved by stem, preferring .jpg, then .jpeg, then .png, so the
        choice never depends on directory order. A file that is a dangling symlink is missing.
        """
        rel, reason, detail = self._resolve(img_id)
        if rel is not None and rel in self.dangling:
            return None, REASON_MISSING_IMAGE, f"images/{rel} is a symlink to {self.dangling[rel]}, which does not exist"
        return rel, reason, detail

    def _resolve(self, img_id: str) -> tuple[str | None, str, str]:
        suffix = PurePosixPath(img_id).suffix.lower()
        exact = [img_id] if img_id in self.files else self.by_lower.get(img_id.lower(), [])
        if len(exact) == 1:
            if suffix in imgio.ALLOWED_EXTENSIONS:
                return exact[0], "", ""
            if suffix in KNOWN_IMAGE_EXTENSIONS:
                return None, REASON_UNSUPPORTED, f"extension {suffix!r}; accepted: .jpg .jpeg .png"
        if suffix in imgio.ALLOWED_EXTENSIONS:
            others = self.by_stem.get(img_id[: -len(suffix)], [])
            hint = f" (but {sorted(others)[0]} exists)" if others else ""
            return None, REASON_MISSING_IMAGE, f"{img_id} not found in images/{hint}"
        candidates = self.by_stem.get(img_id, [])
        accepted = sorted((c for c in candidates if PurePosixPath(c).suffix.lower() in EXTENSION_ORDER),
                          key=lambda c: (EXTENSION_ORDER.index(PurePosixPath(c).suffix.lower()), c))
        if accepted:
            return accepted[0], "", ""
        if candidates:
            return None, REASON_UNSUPPORTED, f"found {sorted(candidates)[0]}; accepted: .jpg .jpeg .png"
        return None, REASON_MISSING_IMAGE, f"no file for {img_id!r} in images/"


# ------------------------------------------------------------------------------------------------
# Checks across rows and files
# ------------------------------------------------------------------------------------------------

def _drop_positions(df: pd.DataFrame, drop: Iterable[int]) -> pd.DataFrame:
    """``df`` without the rows at positions ``drop``, keeping its CSV lines aligned."""
    drop = set(drop)
    if not drop:
        return df
    lines = CsvLines(line for j, line in enumerate(df.attrs[CSV_LINES]) if j not in drop)
    out = df.drop(index=sorted(drop)).reset_index(drop=True)
    out.attrs[CSV_LINES] = lines
    return out


def _decode_problem(path: str) -> list[str] | None:
    """[reason, detail] when the image at ``path`` does not decode, else None (memoised value)."""
    try:
        imgio.check_image(path)
    except ImageReadError as err:
        return [err.reason, err.detail]
    return None


def _without_undecodable(root: Path, frames: dict[str, pd.DataFrame], exclusions: list[Exclusion],
                         workers: int | None) -> dict[str, pd.DataFrame]:
    """Decode-check every image (memoised by file stamp and Pillow version, so re-loading a dataset
    for every cell of a grid does not decode every image again); failures become exclusions."""
    import PIL

    n_workers = workers or min(8, (os.cpu_count() or 2) * 2)
    out = {}
    context = f"pillow {PIL.__version__}; max pixels {imgio.MAX_IMAGE_PIXELS}"  # a new limit checks again
    with FileStampMemo("image-checks", str(root), context=context) as memo:
        for split, df in frames.items():
            if len(df) == 0:
                out[split] = df
                continue
            with ThreadPoolExecutor(max_workers=n_workers) as pool:  # Pillow releases the GIL while decoding
                problems = list(pool.map(lambda p: memo.get(p, _decode_problem), df["path"]))
            bad = [i for i, problem in enumerate(problems) if problem is not None]
            for i in bad:
                reason, detail = problems[i]
                exclusions.append(Exclusion(split=split, img_id=str(df["img_id"].iloc[i]), reason=reason,
                                            detail=detail, row=df.attrs[CSV_LINES][i]))
            out[split] = _drop_positions(df, bad)
    return out


def _without_same_file_rows(frames: dict[str, pd.DataFrame], exclusions: list[Exclusion]) -> dict[str, pd.DataFrame]:
    """Two rows pointing at the same file (e.g. "a" and "a.jpg") are the same image: keep the first."""
    by_path: dict[str, tuple[str, str]] = {}
    out = {}
    for split, df in frames.items():
        drop = []
        for i, (ident, path) in enumerate(zip(df["img_id"], df["path"])):
            if path in by_path:
                other_split, other_id = by_path[path]
                exclusions.append(Exclusion(split=split, img_id=str(ident), reason=REASON_DUPLICATE_ID,
                                            detail=f"same file as img_id {other_id!r} in {other_split}",
                                            row=df.attrs[CSV_LINES][i]))
                drop.append(i)
            else:
                by_path[path] = (split, ident)
        out[split] = _drop_positions(df, drop)
    return out


def _split_warnings(frames: dict[str, pd.DataFrame]) -> list[str]:
    warnings = []
    for split, df in frames.items():
        if len(df) == 0:
            warnings.append(f"split {split!r} has no usable rows")
        elif df["label"].nunique() < 2:
            only = MALIGNANT if df["label"].iloc[0] == 1 else BENIGN
            warnings.append(f"split {split!r} has only {only} images: AUROC and other ranking "
                            f"metrics are undefined on it")
    return warnings


def _manifest_warnings(card: dict[str, Any], manifest: dict[str, str]) -> list[str]:
    recorded = card.get("manifest") or {}
    changed = [k for k, v in manifest.items() if k in recorded and recorded[k] != v]
    if not changed:
        return []
    return [f"{len(changed)} image(s) differ from the sha256 manifest in {CARD_NAME} "
            f"(e.g. {changed[0]}); the dataset changed since its card was written"]
