"""Leakage and quality audit of one or more dataset folders (``dermbench audit``).

What it checks, within each dataset and across all datasets given:

- **group overlap**: a ``patient_id`` or ``lesion_id`` present in two splits (after a merge the
  key is ``(source, id)``, since ids of different datasets are unrelated);
- **exact duplicates**: files with the same sha256 (taken from the dataset manifest, which is
  memoised, so a re-audit does not re-read unchanged files);
- **near duplicates**: a 64-bit perceptual hash (``imagehash.phash``: 32×32 grey DCT, 8×8 low
  frequencies against their median) with Hamming distance <= ``phash_threshold`` (default 6 of 64 bits), *confirmed*
  by the layout of colour: the mean absolute difference of 8×8 RGB thumbnails with each
  channel's mean removed must be <= ``colour_threshold`` (default 3 of 255). A re-encoded,
  resized or re-lit copy lands at pHash 0–4 and colour 0.8–1.6; distinct lesion photographs
  are typically > 20 bits apart. The confirmation matters for small lesions on plain skin:
  distinct ones can sit within 6 bits (pHash sees mostly the background) but differ by 5–26 in
  colour layout (measured on the synthetic demo set);
- **likely same-lesion images** (two photographs of one lesion at other zooms, crops or
  lighting, which no hash finds): each image's nearest neighbours in other splits by the
  similarity of its embeddings at several centre zooms, listed for review above a calibrated
  threshold (:mod:`dermbench.data.similarity`; the caller hands in a
  :class:`~dermbench.data.similarity.SimilaritySearch`, ``dermbench audit`` runs one by default
  when a dataset lacks patient or lesion ids);
- **label balance** per split, and **unreadable images**.

Where a dataset has no patient or lesion ids, group leakage **cannot be checked**: the report
says so for that dataset (``group_check``), its group count is None rather than 0, and the result
line never reads "no leakage found" (the similarity search is then the only check for the same
lesion in two splits).

Duplicates whose copies sit in different splits (train vs validation/test, validation vs test,
also across datasets) are **leakage**, as is any group overlap: :attr:`AuditReport.leakage` is
then true and ``dermbench audit`` exits non-zero. Duplicates inside one split are reported only.

Speed: images are decoded at reduced size (JPEG DCT scaling via Pillow ``draft``) in a thread
pool (Pillow releases the GIL while decoding); the pHash and colour thumbnail of a file are
memoised by its file stamp (:class:`~dermbench.utils.filestamp.FileStampMemo`, like the sha256s)
and the embeddings live in the embedding cache keyed by the images' content, so a second audit of
unchanged files decodes nothing; the all-pairs Hamming search is vectorised in blocks
(``benchmarks/audit.py`` measures a 10,000-image dataset cold and warm).
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import imagehash
import numpy as np
import pandas as pd
from PIL import Image

from .. import SPLITS
from ..errors import ImageReadError
from ..utils.filestamp import FileStampMemo
from .contract import load_dataset
from .dataset import LesionDataset
from .exclusions import IMAGE_REASONS
from .fingerprint import map_in_batches
from .images import open_rgb
from .similarity import SimilaritySearch, ViewEmbeddings, similar_pairs

DEFAULT_PHASH_THRESHOLD = 6
DEFAULT_COLOUR_THRESHOLD = 3.0
THUMB_SIDE = 8
#: decode JPEGs at >= this size (DCT scaling); the hash works on 32×32 anyway
DRAFT_SIZE = (32, 32)
PHASH_METHOD = f"imagehash {imagehash.__version__} phash (hash_size 8, 32x32 DCT)"


def phash(img: Image.Image) -> int:
    """64-bit pHash of a PIL image as an int (imagehash's bit order: row-major, first bit highest)."""
    return int(str(imagehash.phash(img)), 16)


def image_phash(path: str) -> tuple[int | None, str, str]:
    """(hash, error reason, detail) of one image file, decoded at reduced size."""
    h, reason, detail, _thumb = image_signature(path)
    return h, reason, detail


def colour_layout(img: Image.Image) -> np.ndarray:
    """8×8 RGB thumbnail with each channel's mean removed (a brightness or white-balance shift of
    a copy is not a difference; a different lesion is)."""
    thumb = np.asarray(img.resize((THUMB_SIDE, THUMB_SIDE), Image.BOX), dtype=np.float32)
    return thumb - thumb.mean(axis=(0, 1))


def image_signature(path: str) -> tuple[int | None, str, str, np.ndarray | None]:
    """(pHash, error reason, detail, colour layout) of one image file, decoded once at reduced size."""
    h, reason, detail, thumb = _stored_signature(path)
    if h is None:
        return None, reason, detail, None
    return int(h, 16), "", "", _layout_of(thumb)


def _stored_signature(path: str) -> list:
    """What the memo keeps of one file: [pHash hex or None, reason, detail, 8×8 RGB thumbnail hex or None]."""
    try:
        img = open_rgb(path, draft_size=DRAFT_SIZE)
    except ImageReadError as err:
        return [None, err.reason, err.detail, None]
    thumb = np.asarray(img.resize((THUMB_SIDE, THUMB_SIDE), Image.BOX), dtype=np.uint8)
    return [f"{phash(img):016x}", "", "", thumb.tobytes().hex()]


def _layout_of(thumb_hex: str) -> np.ndarray:
    thumb = np.frombuffer(bytes.fromhex(thumb_hex), dtype=np.uint8).reshape(THUMB_SIDE, THUMB_SIDE, 3)
    thumb = thumb.astype(np.float32)
    return thumb - thumb.mean(axis=(0, 1))


def image_signatures(paths: Sequence[str], scope: str, *, workers: int | None = None
                     ) -> list[tuple[int | None, str, str, np.ndarray | None]]:
    """:func:`image_signature` of every path, memoised by file stamp under ``scope`` (e.g. the
    dataset root): an unchanged file is not decoded again."""
    import PIL

    context = f"{PHASH_METHOD}; draft {DRAFT_SIZE}; thumb {THUMB_SIDE} BOX; Pillow {PIL.__version__}"
    with FileStampMemo("image-signatures", scope, context=context) as memo:
        stored = map_in_batches(lambda p: memo.get(p, _stored_signature), list(paths), workers=workers)
    # colour layouts of all images at once (one array op, not one per image)
    thumbs = [t for h, _r, _d, t in stored if h is not None]
    layouts = iter(_layouts_of(thumbs))
    return [(None, r, d, None) if h is None else (int(h, 16), "", "", next(layouts)) for h, r, d, _t in stored]


def _layouts_of(thumb_hexes: list[str]) -> np.ndarray:
    """:func:`_layout_of` of many thumbnails, as one (n, side, side, 3) array."""
    side = THUMB_SIDE
    if not thumb_hexes:
        return np.zeros((0, side, side, 3), dtype=np.float32)
    thumbs = np.frombuffer(bytes.fromhex("".join(thumb_hexes)), dtype=np.uint8).reshape(-1, side, side, 3)
    thumbs = thumbs.astype(np.float32)
    return thumbs - thumbs.mean(axis=(1, 2), keepdims=True)


@dataclass
class ImageRef:
    dataset: str
    split: str
    img_id: str

    def as_dict(self) -> dict[str, str]:
        return {"dataset": self.dataset, "split": self.split, "img_id": self.img_id}


@dataclass
class AuditReport:
    datasets: list[dict[str, Any]] = field(default_factory=list)
    phash: dict[str, Any] = field(default_factory=dict)
    group_overlap: list[dict[str, Any]] = field(default_factory=list)
    exact_duplicates: list[dict[str, Any]] = field(default_factory=list)
    near_duplicates: list[dict[str, Any]] = field(default_factory=list)
    similar_pairs: list[dict[str, Any]] = field(default_factory=list)
    #: the similarity search as run (settings, backbone, cache use) or why it did not run
    similarity: dict[str, Any] = field(default_factory=dict)
    unreadable: list[dict[str, Any]] = field(default_factory=list)
    timing_s: dict[str, float] = field(default_factory=dict)

    @property
    def leakage(self) -> bool:
        """Definite leakage: a patient/lesion id, an identical file or a near copy in two splits."""
        return bool(self.group_overlap
                    or any(d["across_splits"] for d in self.exact_duplicates)
                    or any(d["across_splits"] for d in self.near_duplicates))

    @property
    def review_pairs(self) -> list[dict[str, Any]]:
        """Likely same-lesion pairs across splits that no hash explains: to be looked at."""
        return [d for d in self.similar_pairs if d["across_splits"] and not d["also_found_as"]]

    @property
    def unchecked_groups(self) -> list[str]:
        """Datasets (names) where group leakage could not be checked for some or all rows."""
        return [d["name"] for d in self.datasets if d["group_check"]["status"] != "checked"]

    @property
    def status(self) -> str:
        """``leakage`` (definite), ``review`` (likely same-lesion images across splits), ``unchecked``
        (nothing found, but group leakage could not be checked everywhere) or ``clean``."""
        if self.leakage:
            return "leakage"
        if self.review_pairs:
            return "review"
        return "unchecked" if self.unchecked_groups else "clean"

    def as_dict(self) -> dict[str, Any]:
        return {
            "leakage": self.leakage,
            "status": self.status,
            "summary": self.summary(),
            "datasets": self.datasets,
            "perceptual_hash": self.phash,
            "group_overlap": self.group_overlap,
            "exact_duplicates": self.exact_duplicates,
            "near_duplicates": self.near_duplicates,
            "similarity_search": self.similarity,
            "similar_pairs": self.similar_pairs,
            "unreadable": self.unreadable,
            "timing_s": self.timing_s,
        }

    def summary(self) -> dict[str, Any]:
        checked = [d for d in self.datasets if d["group_check"]["status"] != "cannot_check"]
        return {
            "images": int(sum(d["n_images"] for d in self.datasets)),
            # None, not 0, when no dataset has ids: "no group found" would claim a check that did not happen
            "groups_in_two_splits": len(self.group_overlap) if checked else None,
            "group_leakage_not_checked_for": self.unchecked_groups,
            "exact_duplicate_sets": len(self.exact_duplicates),
            "exact_duplicate_sets_across_splits": sum(d["across_splits"] for d in self.exact_duplicates),
            "near_duplicate_pairs": len(self.near_duplicates),
            "near_duplicate_pairs_across_splits": sum(d["across_splits"] for d in self.near_duplicates),
            "similar_pairs_across_splits": (sum(d["across_splits"] for d in self.similar_pairs)
                                            if self.similarity.get("ran") else None),
            "similar_pairs_to_review": len(self.review_pairs) if self.similarity.get("ran") else None,
            "unreadable_images": len(self.unreadable),
        }


def group_check(splits: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """Whether group leakage can be checked: ``status`` ``checked`` (every row has a patient or
    lesion id), ``partial`` (some rows have none: those cannot be checked) or ``cannot_check``
    (no ids at all), the id columns present and the rows without any id."""
    frames = [df for df in splits.values() if len(df)]
    n = int(sum(len(df) for df in frames))
    cols = [c for c in ("patient_id", "lesion_id") if any(c in df.columns for df in frames)]
    if not cols or not n:
        return {"status": "cannot_check" if n else "checked", "columns": [], "rows_without_id": n,
                "note": "no patient_id or lesion_id: group leakage (one patient or lesion in two splits) cannot be "
                        "checked" if n else ""}
    frame = pd.concat([df.reindex(columns=cols) for df in frames], ignore_index=True)
    has_id = frame.apply(lambda col: col.map(lambda v: v is not None and not (isinstance(v, float) and np.isnan(v))
                                             and str(v).strip() != "")).any(axis=1)
    missing = int((~has_id).sum())
    if missing == n:
        return {"status": "cannot_check", "columns": cols, "rows_without_id": missing,
                "note": f"{', '.join(cols)} empty in every row: group leakage cannot be checked"}
    if missing:
        return {"status": "partial", "columns": cols, "rows_without_id": missing,
                "note": f"{missing} of {n} rows have no patient or lesion id: their group leakage cannot be checked"}
    return {"status": "checked", "columns": cols, "rows_without_id": 0, "note": ""}


def _group_overlap(name: str, splits: dict[str, pd.DataFrame]) -> list[dict[str, Any]]:
    frames = [df.assign(_split=s) for s, df in splits.items() if len(df)]
    if not frames:
        return []
    frame = pd.concat(frames, ignore_index=True)
    found = []
    for col in ("patient_id", "lesion_id"):
        if col not in frame.columns:
            continue
        sub = frame[frame[col].notna()]
        key = sub[col].astype(str)
        if "source" in sub.columns:
            key = sub["source"].astype(str).fillna("") + "::" + key
        keyed = sub.assign(_key=key)
        in_two = keyed.groupby("_key")["_split"].transform("nunique") > 1  # few groups: look only at those
        for group, rows in keyed[in_two].groupby("_key"):
            split_set = sorted(set(rows["_split"]), key=SPLITS.index)
            if len(split_set) > 1:
                found.append({"dataset": name, "column": col, "group": str(group), "splits": split_set,
                              "n_images": int(len(rows)),
                              "img_ids": {s: rows.loc[rows["_split"] == s, "img_id"].astype(str).tolist()[:10]
                                          for s in split_set}})
    return found


def _near_pairs(hashes: np.ndarray, threshold: int, block: int = 256) -> list[tuple[int, int, int]]:
    """All (i, j, distance) with i < j and Hamming distance <= threshold."""
    pairs: list[tuple[int, int, int]] = []
    n = len(hashes)
    for start in range(0, n, block):
        a = hashes[start:start + block]
        dist = np.bitwise_count(a[:, None] ^ hashes[None, start:])  # j >= start: the upper triangle only
        ii, jj = np.nonzero(dist <= threshold)
        keep = jj > ii
        for i, j in zip(ii[keep], jj[keep]):
            pairs.append((int(i + start), int(j + start), int(dist[i, j])))
    return pairs


def _near_pairs_cached(hashes: np.ndarray, threshold: int) -> list[tuple[int, int, int]]:
    """:func:`_near_pairs`, remembered by the hashes themselves (in order) and the threshold: the
    search over every pair is most of a warm audit's time once hashes come from the memo."""
    from ..utils.atomic import atomic_write_bytes
    from ..utils.paths import cache_dir

    key = hashlib.sha256(hashes.astype("<u8").tobytes() + f"|{int(threshold)}|{PHASH_METHOD}".encode()).hexdigest()
    stored = cache_dir("audit-near-pairs") / f"{key[:32]}.npy"
    try:
        found = np.load(stored, allow_pickle=False)
        if found.ndim == 2 and found.shape[1] == 3 and ((0 <= found[:, 0]) & (found[:, 0] < found[:, 1])
                                                        & (found[:, 1] < len(hashes))).all():
            return [(int(a), int(b), int(d)) for a, b, d in found]
    except (OSError, ValueError, EOFError):
        pass
    pairs = _near_pairs(hashes, threshold)
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(pairs, dtype=np.int64).reshape(-1, 3), allow_pickle=False)
    try:
        atomic_write_bytes(stored, buffer.getvalue())
    except OSError:
        pass  # a read-only cache only costs speed
    return pairs


@dataclass
class _Images:
    """Every image of the audited datasets, in one order: where it is, its file, its sha256 and
    the dataset root it belongs to (the scope of its memoised signature)."""

    refs: list[ImageRef] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    shas: list[str] = field(default_factory=list)
    roots: list[str] = field(default_factory=list)


def audit_datasets(roots: Sequence[str | Path], *, phash_threshold: int = DEFAULT_PHASH_THRESHOLD,
                   colour_threshold: float = DEFAULT_COLOUR_THRESHOLD,
                   workers: int | None = None, near_duplicates: bool = True,
                   similarity: SimilaritySearch | None = None, similarity_without_ids_only: bool = False
                   ) -> AuditReport:
    """Audit dataset folders; see the module docstring for what is checked. ``similarity`` runs
    the same-lesion search with the given embedder and settings (None: not run, and the report
    says so); with ``similarity_without_ids_only`` only when some dataset lacks patient or lesion
    ids for some rows (``dermbench audit``'s default)."""
    t0 = time.perf_counter()
    report = AuditReport()
    report.phash = {"method": PHASH_METHOD, "bits": 64, "threshold": int(phash_threshold),
                    "colour_confirmation": f"mean |diff| of mean-removed {THUMB_SIDE}x{THUMB_SIDE} RGB "
                                           f"thumbnails <= {colour_threshold:g}",
                    "colour_threshold": float(colour_threshold)}
    images = _Images()
    loaded: list[tuple[str, LesionDataset]] = []
    names_seen: dict[str, int] = {}
    for root in roots:
        ds = load_dataset(Path(os.path.abspath(Path(root).expanduser())), check_images=False, quiet=True)
        names_seen[ds.name] = names_seen.get(ds.name, 0) + 1
        name = ds.name if names_seen[ds.name] == 1 else f"{ds.name}#{names_seen[ds.name]}"  # same name twice
        report.datasets.append(_dataset_entry(ds, name, root))
        report.unreadable += [{"dataset": name, "split": e.split, "img_id": e.img_id, "reason": e.reason,
                               "detail": e.detail} for e in ds.exclusions if e.reason in IMAGE_REASONS]
        report.group_overlap += _group_overlap(name, ds.splits)
        _add_images(images, ds, name)
        loaded.append((name, ds))
    report.timing_s["load_and_sha256"] = round(time.perf_counter() - t0, 3)
    report.exact_duplicates = _exact_duplicates(images)
    if near_duplicates and images.paths:
        _find_near_duplicates(report, images, phash_threshold, colour_threshold, workers)
    needed = not similarity_without_ids_only or any(d["group_check"]["status"] != "checked" for d in report.datasets)
    if similarity is not None and images.paths and needed:
        _find_similar(report, images, loaded, similarity)
    else:
        reason = ("not requested" if similarity is None else "no images" if not images.paths
                  else "every image has a patient or lesion id; --similarity on runs it anyway")
        report.similarity = {"ran": False, "reason": reason}
    report.timing_s["total"] = round(time.perf_counter() - t0, 3)
    return report


def _dataset_entry(ds: LesionDataset, name: str, root: str | Path) -> dict[str, Any]:
    counts = ds.counts()
    return {
        "name": name, "root": str(Path(root)), "fingerprint": ds.fingerprint,
        "n_images": int(sum(len(df) for df in ds.splits.values())),
        "counts": counts,
        "prevalence": {s: (c["malignant"] / (c["benign"] + c["malignant"]) if c["benign"] + c["malignant"] else None)
                       for s, c in counts.items()},
        "premalignant_policy": ds.card.get("premalignant_policy"),
        "group_check": group_check(ds.splits),
        "load_exclusions": [e.as_dict() for e in ds.exclusions],
        "warnings": ds.warnings,
    }


def _add_images(images: _Images, ds: LesionDataset, name: str) -> None:
    # ds paths are absolute but not symlink-resolved (as ds.root): compare like with like, or a
    # root reached through a symlink would match no manifest entry and hide every duplicate.
    prefix = os.path.join(str(ds.root), "images") + os.sep
    scope = str(Path(ds.root).resolve())
    for split, df in ds.splits.items():
        for img_id, path in zip(df["img_id"], df["path"]):
            images.refs.append(ImageRef(name, split, str(img_id)))
            images.paths.append(path)
            rel = path[len(prefix):].replace(os.sep, "/") if path.startswith(prefix) else None
            images.shas.append(ds.manifest.get(rel, "") if rel else "")
            images.roots.append(scope)


def _exact_duplicates(images: _Images) -> list[dict[str, Any]]:
    by_sha: dict[str, list[int]] = {}
    for i, sha in enumerate(images.shas):
        if sha:
            by_sha.setdefault(sha, []).append(i)
    return [_cluster_entry(members, images.refs, sha256=sha)
            for sha, members in sorted(by_sha.items()) if len(members) > 1]


def _signatures(images: _Images, workers: int | None) -> list[tuple[int | None, str, str, np.ndarray | None]]:
    """Signatures of every image in order, memoised per dataset root."""
    results: list[Any] = [None] * len(images.paths)
    for scope in dict.fromkeys(images.roots):
        rows = [i for i, r in enumerate(images.roots) if r == scope]
        for i, sig in zip(rows, image_signatures([images.paths[i] for i in rows], scope, workers=workers)):
            results[i] = sig
    return results


def _find_near_duplicates(report: AuditReport, images: _Images, phash_threshold: int, colour_threshold: float,
                          workers: int | None) -> None:
    """Hash every image, then list the pairs within ``phash_threshold`` whose colour layouts
    also agree (exact duplicates are already listed)."""
    t1 = time.perf_counter()
    results = _signatures(images, workers)
    report.timing_s["phash"] = round(time.perf_counter() - t1, 3)
    refs, shas = images.refs, images.shas
    for i, (h, reason, detail, _thumb) in enumerate(results):
        if h is None:
            report.unreadable.append({**refs[i].as_dict(), "reason": reason, "detail": detail})
    t2 = time.perf_counter()
    ok = [i for i, r in enumerate(results) if r[0] is not None]
    hashes = np.asarray([results[i][0] for i in ok], dtype=np.uint64)
    for a, b, dist in _near_pairs_cached(hashes, phash_threshold):
        ia, ib = ok[a], ok[b]
        if shas[ia] and shas[ia] == shas[ib]:
            continue  # already an exact duplicate
        colour = float(np.abs(results[ia][3] - results[ib][3]).mean())
        if colour > colour_threshold:
            continue  # alike in pHash only: distinct lesions on similar plain skin
        report.near_duplicates.append({"distance": dist, "colour_difference": round(colour, 2),
                                       "a": _located(refs[ia], images.paths[ia]),
                                       "b": _located(refs[ib], images.paths[ib]),
                                       "across_splits": refs[ia].split != refs[ib].split,
                                       "across_datasets": refs[ia].dataset != refs[ib].dataset})
    report.near_duplicates.sort(key=lambda d: (not d["across_splits"], d["distance"]))
    report.timing_s["near_duplicate_search"] = round(time.perf_counter() - t2, 3)


def _located(ref: ImageRef, path: str) -> dict[str, str]:
    return {**ref.as_dict(), "path": str(path)}


def _find_similar(report: AuditReport, images: _Images, loaded: list[tuple[str, LesionDataset]],
                  search: SimilaritySearch) -> None:
    """The similarity search across splits and datasets: each image's nearest neighbours in
    another split (or dataset) at the search's threshold or above."""
    t1 = time.perf_counter()
    parts = []
    for name, ds in loaded:
        emb = search.embed(ds)
        parts.append(ViewEmbeddings(emb.img_ids, [f"{name}\x1f{lb}" for lb in emb.labels], emb.vectors, emb.views,
                                    emb.backbone, emb.details))
    emb = ViewEmbeddings.concat(parts)
    report.timing_s["similarity_embed"] = round(time.perf_counter() - t1, 3)
    t2 = time.perf_counter()
    pairs = similar_pairs(emb, threshold=search.threshold, neighbours=search.neighbours, across_only=True)
    position = {(r.dataset, r.split, r.img_id): i for i, r in enumerate(images.refs)}
    exact = {frozenset((m["dataset"], m["split"], m["img_id"]) for m in d["members"]) for d in report.exact_duplicates}
    near = {frozenset(((d["a"]["dataset"], d["a"]["split"], d["a"]["img_id"]),
                       (d["b"]["dataset"], d["b"]["split"], d["b"]["img_id"]))) for d in report.near_duplicates}
    for p in pairs:
        ends = []
        for k in (p.i, p.j):
            dataset, split = emb.labels[k].split("\x1f", 1)
            i = position[(dataset, split, emb.img_ids[k])]
            ends.append((dataset, split, emb.img_ids[k], i))
        key = frozenset(e[:3] for e in ends)
        also = "exact duplicate" if any(key <= c for c in exact) else "near duplicate" if key in near else ""
        a, b = (_located(images.refs[e[3]], images.paths[e[3]]) for e in ends)
        report.similar_pairs.append({"similarity": round(p.similarity, 4), "a": a, "b": b,
                                     "across_splits": a["split"] != b["split"],
                                     "across_datasets": a["dataset"] != b["dataset"], "also_found_as": also})
    report.timing_s["similarity_search"] = round(time.perf_counter() - t2, 3)
    report.similarity = {"ran": True, **search.describe(), "images": len(emb),
                         "cache_hit": all(d.get("cache_hit") for d in emb.details.get("parts", [])),
                         "identity": (emb.details.get("parts") or [{}])[0].get("identity")}


def _cluster_entry(members: Iterable[int], refs: list[ImageRef], **extra: Any) -> dict[str, Any]:
    members = list(members)
    splits = {refs[i].split for i in members}
    datasets = {refs[i].dataset for i in members}
    return {**extra, "members": [refs[i].as_dict() for i in members],
            "across_splits": len(splits) > 1, "across_datasets": len(datasets) > 1}


def _ref(d: dict[str, str]) -> str:
    return f"{d['dataset']}/{d['split']}/{d['img_id']}"


def format_report(report: AuditReport, max_list: int = 20) -> str:
    """The readable text report."""
    lines = ["dermbench audit", "==============="]
    for d in report.datasets:
        lines.append(f"dataset {d['name']} ({d['root']}), {d['n_images']} images, fingerprint {d['fingerprint'][:12]}"
                     + (f", premalignant policy {d['premalignant_policy']}" if d.get("premalignant_policy") else ""))
        lines.append(f"  {'split':<11}{'images':>8}{'benign':>8}{'malignant':>11}{'prevalence':>12}")
        for s, c in d["counts"].items():
            n = c["benign"] + c["malignant"]
            prev = d["prevalence"][s]
            lines.append(f"  {s:<11}{n:>8}{c['benign']:>8}{c['malignant']:>11}"
                         f"{'-' if prev is None else f'{100 * prev:.1f}%':>12}")
            if n and (c["benign"] == 0 or c["malignant"] == 0):
                lines.append(f"    warning: split {s} has a single class")
        check = d["group_check"]
        if check["status"] == "checked":
            lines.append(f"  group leakage: checked by {' and '.join(check['columns'])}")
        else:
            lines.append(f"  group leakage: CANNOT CHECK ({check['note']})")
        if d["load_exclusions"]:
            lines.append(f"  {len(d['load_exclusions'])} row(s) excluded when loading (see JSON)")
    p = report.phash
    lines.append("")
    lines.append(f"perceptual hash: {p['method']}, {p['bits']} bits, near duplicate = Hamming distance "
                 f"<= {p['threshold']} and {p.get('colour_confirmation', 'no colour confirmation')}")
    sim = report.similarity
    if sim.get("ran"):
        lines.append(f"similarity search: {sim['backbone']}, views {'/'.join(f'{v:g}' for v in sim['views'])} "
                     f"(centre zooms), cosine >= {sim['threshold']:g}, up to {sim['neighbours']} nearest "
                     f"neighbour(s) per image in other splits" + (" (embeddings from the cache)" if sim.get("cache_hit") else ""))
    else:
        lines.append(f"similarity search: not run ({sim.get('reason', 'not requested')}); photographs of one lesion "
                     f"at other zooms or angles were not looked for")

    def section(title: str, items: list, render) -> None:
        lines.append("")
        lines.append(f"{title}: {len(items)}")
        for item in items[:max_list]:
            lines.append("  " + render(item))
        if len(items) > max_list:
            lines.append(f"  ... and {len(items) - max_list} more (see the JSON report)")

    unchecked = report.unchecked_groups
    lines.append("")
    title = "patient/lesion groups in more than one split (LEAKAGE)"
    if len(unchecked) == len(report.datasets) and all(d["group_check"]["status"] == "cannot_check"
                                                      for d in report.datasets):
        lines.append(f"{title}: cannot check (no patient or lesion ids)")
    else:
        section(title + (f" [not checked: {', '.join(unchecked)}]" if unchecked else ""), report.group_overlap,
                lambda g: f"{g['dataset']}: {g['column']} {g['group']} in {', '.join(g['splits'])} "
                          f"({g['n_images']} images)")
    section("exact duplicate sets (same sha256)", report.exact_duplicates,
            lambda d: ("LEAK " if d["across_splits"] else "") + " = ".join(_ref(m) for m in d["members"]))
    section("near duplicate pairs", report.near_duplicates,
            lambda d: ("LEAK " if d["across_splits"] else "") + f"d={d['distance']}  {_ref(d['a'])} ~ {_ref(d['b'])}")
    if sim.get("ran"):
        section("likely same-lesion pairs across splits (embedding similarity, FOR REVIEW)",
                [d for d in report.similar_pairs if d["across_splits"]],
                lambda d: f"cos={d['similarity']:.3f}  {_ref(d['a'])} ~ {_ref(d['b'])}"
                          + (f"  (also an {d['also_found_as']})" if d["also_found_as"] else ""))
    section("unreadable or missing images", report.unreadable,
            lambda u: f"{u['dataset']}/{u['split']}/{u['img_id']}: {u['reason']}" + (f" ({u['detail']})" if u['detail'] else ""))
    lines.append("")
    t = report.timing_s
    lines.append(f"time: {t.get('total', 0):.2f} s (hashing {t.get('phash', 0):.2f} s, "
                 f"near-duplicate search {t.get('near_duplicate_search', 0):.2f} s"
                 + (f", embeddings {t.get('similarity_embed', 0):.2f} s, similarity search "
                    f"{t.get('similarity_search', 0):.2f} s" if sim.get("ran") else "") + ")")
    lines.append(result_line(report))
    return "\n".join(lines)


def result_line(report: AuditReport) -> str:
    """The last line of the text report. It never says "no leakage found" when a check could not
    run: without patient or lesion ids group leakage is unknown, and without the similarity
    search so are two photographs of one lesion."""
    status = report.status
    if status == "leakage":
        return "RESULT: LEAKAGE FOUND"
    if status == "review":
        return (f"RESULT: LIKELY LEAKAGE: {len(report.review_pairs)} pair(s) of likely same-lesion images in two "
                f"splits to review (not identical files: look at them)")
    if status == "unchecked":
        searched = report.similarity.get("ran")
        return ("RESULT: no duplicate" + (" or similar" if searched else "") + " images found across splits; group "
                f"leakage COULD NOT BE CHECKED for {', '.join(report.unchecked_groups)} (no patient or lesion ids)"
                + ("" if searched else "; the similarity search did not run, so the same lesion photographed twice "
                                       "was not looked for"))
    return "RESULT: no leakage found"
