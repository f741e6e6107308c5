"""The dataset contract (PRODUCT §3): load and validate a dataset folder.

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
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

import pandas as pd

from .. import BENIGN, LABELS, MALIGNANT, SPLITS
from . import images as imgio
from ..utils.atomic import atomic_write_text
from ..utils.paths import cache_dir
from .card import CARD_NAME, compute_fingerprint, image_manifest, read_card, sha256_file
from ..errors import DatasetError

REQUIRED_COLUMNS = ("img_id", "benign_malignant")
#: Optional columns with a meaning in the contract; any other column is kept as-is.
OPTIONAL_COLUMNS = ("patient_id", "lesion_id", "fitzpatrick", "age", "sex", "site", "modality",
                    "source", "diagnosis")
#: Extension resolution order for an ``img_id`` given without extension (deterministic).
EXTENSION_ORDER = (".jpg", ".jpeg", ".png")
KNOWN_IMAGE_EXTENSIONS = (".bmp", ".tif", ".tiff", ".gif", ".webp", ".heic", ".dcm", ".jp2", ".ppm")

# Reason codes (stable strings: they appear in run records and reports).
REASON_MISSING_ID = "missing_img_id"
REASON_UNSAFE_ID = "unsafe_img_id"
REASON_DUPLICATE_ID = "duplicate_img_id"
REASON_MISSING_LABEL = "missing_label"
REASON_UNKNOWN_LABEL = "unknown_label"
REASON_AMBIGUOUS = "ambiguous_image"


@dataclass(frozen=True)
class Exclusion:
    """One row that was not used, and why."""

    split: str
    row: int  # 1-based line number in the CSV, header = line 1
    img_id: str
    reason: str
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        where = f"{self.split}_metadata.csv line {self.row}"
        return f"{where} img_id={self.img_id!r}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class LesionDataset:
    """A loaded dataset: one DataFrame per split plus what was excluded.

    Each split frame has, in this order: ``img_id`` (str), ``path`` (absolute image path),
    ``label`` (int, 1 = malignant), ``benign_malignant`` (normalised string), then the optional
    contract columns present (``patient_id``, ``lesion_id``, ...) and any other columns of the CSV.
    Missing values are NaN/None, never the string ``"nan"``.
    """

    root: Path
    name: str
    splits: dict[str, pd.DataFrame]
    exclusions: list[Exclusion] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    card: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, str] = field(default_factory=dict)
    fingerprint: str = ""

    def split(self, name: str) -> pd.DataFrame:
        if name not in self.splits:
            raise KeyError(f"dataset {self.name!r} has no split {name!r}; it has {', '.join(self.splits)}")
        return self.splits[name]

    def counts(self) -> dict[str, dict[str, int]]:
        return {s: {BENIGN: int((df["label"] == 0).sum()), MALIGNANT: int((df["label"] == 1).sum())}
                for s, df in self.splits.items()}

    def exclusion_frame(self) -> pd.DataFrame:
        return pd.DataFrame([e.as_dict() for e in self.exclusions],
                            columns=["split", "row", "img_id", "reason", "detail"])

    def group_ids(self, split: str) -> pd.Series | None:
        """Units a bootstrap over ``split`` resamples (see :func:`dermbench.data.splits.bootstrap_groups`):
        patients and lesions kept together, None when the dataset has no ids (images)."""
        from .splits import bootstrap_groups

        df = self.split(split)
        keys, _unit = bootstrap_groups(df)
        return None if keys is None else pd.Series(keys, index=df.index, name="bootstrap_group")

    def summary(self) -> str:
        lines = [f"dataset {self.name} ({self.root})  fingerprint {self.fingerprint[:12]}"]
        for s, c in self.counts().items():
            lines.append(f"  {s:<10} {c[BENIGN] + c[MALIGNANT]:>7} images  "
                         f"{c[BENIGN]:>6} benign  {c[MALIGNANT]:>6} malignant")
        if self.exclusions:
            by_reason: dict[str, int] = {}
            for e in self.exclusions:
                by_reason[e.reason] = by_reason.get(e.reason, 0) + 1
            parts = ", ".join(f"{n} {r}" for r, n in sorted(by_reason.items()))
            lines.append(f"  excluded {len(self.exclusions)} rows: {parts}")
        for w in self.warnings:
            lines.append(f"  warning: {w}")
        return "\n".join(lines)


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


class _ImageIndex:
    """One directory scan of ``images/`` for fast, deterministic extension resolution."""

    def __init__(self, images_dir: Path):
        self.images_dir = images_dir
        self.files: set[str] = set()
        self.by_stem: dict[str, list[str]] = {}
        self.by_lower: dict[str, list[str]] = {}
        if images_dir.is_dir():
            for dirpath, _dirs, names in os.walk(images_dir):
                rel_dir = Path(dirpath).relative_to(images_dir)
                for n in names:
                    rel = (rel_dir / n).as_posix() if str(rel_dir) != "." else n
                    self.files.add(rel)
                    stem = rel.rsplit(".", 1)[0] if "." in n else rel
                    self.by_stem.setdefault(stem, []).append(rel)
                    self.by_lower.setdefault(rel.lower(), []).append(rel)

    def resolve(self, img_id: str) -> tuple[str | None, str, str]:
        """Return (relative file, reason, detail); file is None when unresolved.

        An id with an accepted extension must exist as given (case-insensitively if unique).
        An id without one is resolved by stem, preferring .jpg, then .jpeg, then .png, so the
        choice never depends on directory order.
        """
        suffix = PurePosixPath(img_id).suffix.lower()
        exact = [img_id] if img_id in self.files else self.by_lower.get(img_id.lower(), [])
        if len(exact) == 1:
            if suffix in imgio.ALLOWED_EXTENSIONS:
                return exact[0], "", ""
            if suffix in KNOWN_IMAGE_EXTENSIONS:
                return None, imgio.REASON_UNSUPPORTED, f"extension {suffix!r}; accepted: .jpg .jpeg .png"
        if suffix in imgio.ALLOWED_EXTENSIONS:
            others = self.by_stem.get(img_id[: -len(suffix)], [])
            hint = f" (but {sorted(others)[0]} exists)" if others else ""
            return None, imgio.REASON_MISSING, f"{img_id} not found in images/{hint}"
        candidates = self.by_stem.get(img_id, [])
        accepted = sorted((c for c in candidates if PurePosixPath(c).suffix.lower() in EXTENSION_ORDER),
                          key=lambda c: (EXTENSION_ORDER.index(PurePosixPath(c).suffix.lower()), c))
        if accepted:
            return accepted[0], "", ""
        if candidates:
            return None, imgio.REASON_UNSUPPORTED, f"found {sorted(candidates)[0]}; accepted: .jpg .jpeg .png"
        return None, imgio.REASON_MISSING, f"no file for {img_id!r} in images/"


def _unsafe(img_id: str) -> str:
    """Why an img_id escapes images/, or '' when it is safe."""
    if "\x00" in img_id:
        return "contains a NUL byte"
    norm = img_id.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return "absolute path"
    if ".." in PurePosixPath(norm).parts:
        return "'..' escapes images/"
    return ""


def _normalise_label(value: Any) -> str | None:
    if value is None:
        return None
    v = str(value).strip().lower()
    return v if v in LABELS else ("" if v else None)


def load_dataset(
    root: str | Path,
    *,
    strict: bool = False,
    check_images: bool = True,
    splits: Iterable[str] = SPLITS,
    quiet: bool = False,
    read_card: bool = True,
    workers: int | None = None,
) -> LesionDataset:
    """Load a dataset folder, excluding and reporting every unusable row.

    ``check_images`` decodes every image once (reduced-size for JPEG, so it is fast) to catch
    truncated and corrupt files before a run starts; ``strict`` raises :class:`DatasetError`
    listing every problem instead of excluding rows.
    """
    root = Path(os.path.abspath(Path(root).expanduser()))
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist (create one with `dermbench synth` "
                           f"or `dermbench prepare`)")
    images_dir = root / "images"
    if not images_dir.is_dir():
        raise DatasetError(f"{root} has no images/ folder; the contract puts every image in {images_dir}")
    warnings: list[str] = []
    exclusions: list[Exclusion] = []
    index = _ImageIndex(images_dir)
    frames: dict[str, pd.DataFrame] = {}
    seen: dict[str, tuple[str, int]] = {}
    csv_hashes: dict[str, str] = {}
    splits = tuple(splits)
    for split in splits:
        csv_path = root / f"{split}_metadata.csv"
        if not csv_path.exists():
            raise DatasetError(f"{root} has no {csv_path.name}; the contract needs one CSV per split "
                               f"({', '.join(f'{s}_metadata.csv' for s in SPLITS)})")
        csv_hashes[split] = sha256_file(csv_path)
        df = read_metadata_csv(csv_path, warnings)
        keep: list[int] = []
        labels: list[int] = []
        names: list[str] = []
        paths: list[str] = []
        for pos, (img_id, label_raw) in enumerate(zip(df["img_id"], df["benign_malignant"])):
            line = pos + 2
            ident = "" if img_id is None else str(img_id)

            def exclude(reason: str, detail: str = "") -> None:
                exclusions.append(Exclusion(split, line, ident, reason, detail))

            if not ident:
                exclude(REASON_MISSING_ID)
                continue
            why = _unsafe(ident)
            if why:
                exclude(REASON_UNSAFE_ID, why)
                continue
            label = _normalise_label(label_raw)
            if label is None:
                exclude(REASON_MISSING_LABEL)
                continue
            if label == "":
                exclude(REASON_UNKNOWN_LABEL, f"{label_raw!r}; expected 'benign' or 'malignant'")
                continue
            key = ident.replace("\\", "/")
            if key in seen:
                other_split, other_line = seen[key]
                exclude(REASON_DUPLICATE_ID, f"already listed in {other_split}_metadata.csv line {other_line}")
                continue
            rel, reason, detail = index.resolve(key)
            if rel is None:
                exclude(reason, detail)
                continue
            seen[key] = (split, line)
            keep.append(pos)
            labels.append(1 if label == MALIGNANT else 0)
            names.append(label)
            # abspath, not resolve(): a symlinked image keeps its place under images/
            paths.append(os.path.abspath(images_dir / rel))
        out = df.iloc[keep].reset_index(drop=True)
        out = out.drop(columns=["benign_malignant"])
        out.insert(1, "path", paths)
        out.insert(2, "label", pd.array(labels, dtype="int64"))
        out.insert(3, "benign_malignant", names)
        out.attrs["csv_lines"] = [k + 2 for k in keep]
        frames[split] = out

    # The manifest (and so the fingerprint) covers every image file the CSVs resolve to, taken
    # before the decode check, so it is the same whether or not images are checked (the card,
    # `dataset_fingerprint`, merge and audit load without checking; runs load with it).
    resolved = [p for df in frames.values() for p in df["path"]]

    if check_images:
        _check_all_images(root, frames, exclusions, workers)

    # Two rows pointing at the same file (e.g. "a" and "a.jpg") are the same image.
    by_path: dict[str, tuple[str, str]] = {}
    for split, df in frames.items():
        drop = []
        for i, (ident, p) in enumerate(zip(df["img_id"], df["path"])):
            if p in by_path:
                o_split, o_id = by_path[p]
                exclusions.append(Exclusion(split, df.attrs["csv_lines"][i], ident, REASON_DUPLICATE_ID,
                                            f"same file as img_id {o_id!r} in {o_split}"))
                drop.append(i)
            else:
                by_path[p] = (split, ident)
        if drop:
            lines = [l for j, l in enumerate(df.attrs["csv_lines"]) if j not in set(drop)]
            frames[split] = df.drop(index=drop).reset_index(drop=True)
            frames[split].attrs["csv_lines"] = lines

    for split, df in frames.items():
        if len(df) == 0:
            warnings.append(f"split {split!r} has no usable rows")
        elif df["label"].nunique() < 2:
            only = MALIGNANT if df["label"].iloc[0] == 1 else BENIGN
            warnings.append(f"split {split!r} has only {only} images: AUROC and other ranking "
                            f"metrics are undefined on it")

    if strict and exclusions:
        listing = "\n  ".join(str(e) for e in exclusions[:50])
        more = f"\n  ... and {len(exclusions) - 50} more" if len(exclusions) > 50 else ""
        raise DatasetError(f"{root}: {len(exclusions)} row(s) cannot be used (strict mode):\n  {listing}{more}")

    manifest = image_manifest(root, resolved)
    card = (read_card_file(root) if read_card else None) or {}
    if card.get("manifest"):
        changed = [k for k, v in manifest.items() if k in card["manifest"] and card["manifest"][k] != v]
        if changed:
            warnings.append(f"{len(changed)} image(s) differ from the sha256 manifest in {CARD_NAME} "
                            f"(e.g. {changed[0]}); the dataset changed since its card was written")
    ds = LesionDataset(
        root=root,
        name=str(card.get("name") or root.name),
        splits=frames,
        exclusions=exclusions,
        warnings=warnings,
        card=card,
        manifest=manifest,
        fingerprint=compute_fingerprint(csv_hashes, manifest),
    )
    # Print a dataset's summary once per process: a grid loads the same dataset for every cell.
    if not quiet and (str(root), ds.fingerprint) not in _SUMMARISED:
        _SUMMARISED.add((str(root), ds.fingerprint))
        print(ds.summary(), file=sys.stderr)
    return ds


_SUMMARISED: set[tuple[str, str]] = set()


def read_card_file(root: Path) -> dict[str, Any] | None:
    return read_card(root)


class _CheckMemo:
    """Decode-check results per image file, memoised in the user cache by (path, size, mtime_ns,
    ctime_ns, inode) and the Pillow version, so re-loading a dataset for every cell of a grid does not decode
    every image again. A changed file is checked again."""

    def __init__(self, root: Path):
        import hashlib
        import json

        import PIL

        self._json = json
        key = hashlib.sha256(str(root).encode()).hexdigest()[:16]
        self.path = cache_dir("image-checks-v2") / f"{key}.json"  # folder = entry format version
        self.pillow = PIL.__version__
        try:
            stored = json.loads(self.path.read_text())
            self.data = stored["files"] if stored.get("pillow") == self.pillow else {}
        except (OSError, ValueError, KeyError, TypeError):
            self.data = {}
        self.dirty = False

    def check(self, path: str) -> tuple[str, str] | None:
        try:
            st = os.stat(path)
        except OSError:
            st = None
        rec = self.data.get(path)
        # ctime and inode as well as size + mtime: a file copied in with its old mtime (cp -p,
        # rsync -a) must be checked again (the same stamp as the sha256 memo in card.py).
        stamp = None if st is None else [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        if stamp is not None and rec and len(rec) == 6 and rec[:4] == stamp:
            return None if rec[4] is None else (rec[4], rec[5])
        try:
            imgio.check_image(path)
            result = None
        except imgio.ImageReadError as err:
            result = (err.reason, err.detail)
        if stamp is not None:
            self.data[path] = stamp + [None if result is None else result[0], "" if result is None else result[1]]
            self.dirty = True
        return result

    def save(self) -> None:
        if self.dirty:
            try:
                atomic_write_text(self.path, self._json.dumps({"pillow": self.pillow, "files": self.data}))
            except OSError:
                pass  # a read-only cache only costs speed


def _check_all_images(root: Path, frames: dict[str, pd.DataFrame], exclusions: list[Exclusion],
                      workers: int | None) -> None:
    memo = _CheckMemo(root)
    n_workers = workers or min(8, (os.cpu_count() or 2) * 2)
    for split, df in list(frames.items()):
        if len(df) == 0:
            continue
        with ThreadPoolExecutor(max_workers=n_workers) as pool:  # Pillow releases the GIL while decoding
            results = list(pool.map(memo.check, df["path"]))
        bad = [i for i, r in enumerate(results) if r is not None]
        if bad:
            lines = df.attrs["csv_lines"]
            for i in bad:
                reason, detail = results[i]
                exclusions.append(Exclusion(split, lines[i], df["img_id"].iloc[i], reason, detail))
            keep_lines = [l for j, l in enumerate(lines) if j not in set(bad)]
            frames[split] = df.drop(index=bad).reset_index(drop=True)
            frames[split].attrs["csv_lines"] = keep_lines
    memo.save()
