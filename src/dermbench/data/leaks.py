"""Images of a target dataset that a model trained on another dataset has already seen.

A transfer evaluation scores a trained cell on another dataset's validation and test splits. Public
skin-lesion sets overlap (HAM10000 *is* ISIC 2018's training set, ISIC releases reuse archive
images, merged sets contain their parts, a copy may be re-encoded or resized), so before scoring,
every target image that also occurs in the source's training data — its ``train`` split and the
``validation`` split that chose its hyperparameters, threshold and calibration — is excluded and
reported as an :class:`~dermbench.data.exclusions.Exclusion` with one of four reasons, checked in
this order (an image gets the first that applies):

``transfer_same_image``
    the same image id from the same origin. Ids are compared only where they name one image
    across datasets: within an *id namespace* (:func:`id_namespace`: every ISIC-archive-derived
    source — HAM10000, ISIC 2018/2019/2020/2024, the ISIC archive — shares the ``isic`` namespace;
    another public source is its own). A merged set's rows are traced to their part's source
    through its ``source`` column and ``original_img_id``. Synthetic and custom CSV datasets have
    no namespace: their ids say nothing across datasets, so only their file contents are compared.
``transfer_exact_duplicate``
    byte-identical files (the sha256 of the datasets' manifests).
``transfer_near_duplicate``
    a re-encoded, resized or re-lit copy: the audit's perceptual hash within
    ``phash_threshold`` bits, confirmed by the colour layout within ``colour_threshold``
    (:mod:`dermbench.data.audit`, same functions and defaults).
``transfer_same_lesion``
    another image of a lesion or patient the source trained on (same ``lesion_id`` or
    ``patient_id`` within one id namespace).

Image signatures (pHash + colour layout) are cached per dataset content fingerprint, and the
result for a pair of datasets per both fingerprints and the thresholds, so the many cells
transferred from one dataset to another pay for the comparison once.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..utils.atomic import atomic_path, atomic_write_text
from ..utils.paths import cache_dir, safe_name
from .audit import DEFAULT_COLOUR_THRESHOLD, DEFAULT_PHASH_THRESHOLD, PHASH_METHOD, THUMB_SIDE, image_signature
from .dataset import LesionDataset
from .exclusions import (REASON_TRANSFER_EXACT_DUPLICATE, REASON_TRANSFER_NEAR_DUPLICATE,
                         REASON_TRANSFER_SAME_IMAGE, REASON_TRANSFER_SAME_LESION, Exclusion)

#: Bump when what counts as a leak changes; cached results of an older version are recomputed.
LEAK_VERSION = 1
SOURCE_SPLITS = ("train", "validation")
TARGET_SPLITS = ("validation", "test")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
#: sources without an id namespace: their image ids mean nothing outside the dataset
_NO_NAMESPACE = {"", "synthetic", "csv", "merge", "custom"}


def id_namespace(source: Any) -> str | None:
    """The id namespace of a dataset source name (see the module docstring), or None."""
    name = str(source or "").strip().lower()
    if name in _NO_NAMESPACE or name in ("nan", "none"):
        return None
    if name.startswith("isic") or name == "ham10000":
        return "isic"
    from .sources import SOURCES

    return name if name in SOURCES else None


def _plain_id(img_id: Any) -> str:
    text = str(img_id).strip().lower()
    for suffix in _IMAGE_SUFFIXES:
        if text.endswith(suffix):
            return text[: -len(suffix)]
    return text


def origins(dataset: LesionDataset, splits: Iterable[str]) -> pd.DataFrame:
    """One row per image of ``splits``: ``split, img_id, namespace, plain_id, lesion_key,
    patient_key, sha256, path`` (keys None where the image has no namespace)."""
    card = dataset.card or {}
    card_source = card.get("source")
    part_sources = {str(p.get("name")): p.get("source") for p in card.get("parts") or [] if isinstance(p, dict)}
    images_dir = dataset.root / "images"
    frames = []
    for split in splits:
        if split not in dataset.splits:
            continue
        df = dataset.splits[split]
        if "source" in df.columns and card_source == "merge":
            sources = [part_sources.get(str(v), v) for v in df["source"]]
        else:
            sources = [card_source] * len(df)
        namespaces = [id_namespace(s) for s in sources]
        ids = df["original_img_id"].where(df["original_img_id"].notna(), df["img_id"]) \
            if "original_img_id" in df.columns else df["img_id"]
        rel = [Path(p).relative_to(images_dir).as_posix() if Path(p).is_relative_to(images_dir) else None
               for p in df["path"]]
        frame = pd.DataFrame({
            "split": split, "img_id": df["img_id"].astype(str).to_numpy(), "namespace": namespaces,
            "plain_id": [None if ns is None else _plain_id(i) for ns, i in zip(namespaces, ids)],
            "sha256": [dataset.manifest.get(r, "") if r else "" for r in rel],
            "path": df["path"].astype(str).to_numpy()})
        for col in ("lesion_id", "patient_id"):
            values = df[col] if col in df.columns else pd.Series([None] * len(df))
            frame[f"{col}_key"] = [None if ns is None or pd.isna(v) else f"{ns}:{col}:{str(v).strip().lower()}"
                                   for ns, v in zip(namespaces, values)]
        frames.append(frame)
    columns = ["split", "img_id", "namespace", "plain_id", "sha256", "path", "lesion_id_key", "patient_id_key"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


@dataclass
class LeakCheck:
    """What :func:`find_leaks` found: one exclusion per leaked target image, and what was compared."""

    exclusions: list[Exclusion] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)


def find_leaks(source: LesionDataset, target: LesionDataset, *, source_splits: Iterable[str] = SOURCE_SPLITS,
               target_splits: Iterable[str] = TARGET_SPLITS, phash_threshold: int = DEFAULT_PHASH_THRESHOLD,
               colour_threshold: float = DEFAULT_COLOUR_THRESHOLD, near_duplicates: bool = True,
               workers: int | None = None) -> LeakCheck:
    """Target images of ``target_splits`` that occur in ``source``'s ``source_splits`` (module
    docstring): one :class:`Exclusion` each, split and img_id of the target, detail naming the
    source image. Cached per both datasets' fingerprints and the thresholds."""
    source_splits, target_splits = tuple(source_splits), tuple(target_splits)
    settings = {"version": LEAK_VERSION, "source": source.fingerprint, "target": target.fingerprint,
                "source_splits": source_splits, "target_splits": target_splits, "near_duplicates": near_duplicates,
                "phash_threshold": int(phash_threshold), "colour_threshold": float(colour_threshold),
                "phash": PHASH_METHOD}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
    cached = cache_dir("transfer-leaks") / f"{safe_name(source.name)}-to-{safe_name(target.name)}-{key}.json"
    try:
        stored = json.loads(cached.read_text())
        return LeakCheck([Exclusion.from_dict(e) for e in stored["exclusions"]], stored["record"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    check = _find_leaks(source, target, source_splits, target_splits, phash_threshold, colour_threshold,
                        near_duplicates, workers)
    check.record["settings"] = settings
    atomic_write_text(cached, json.dumps({"exclusions": [e.as_dict() for e in check.exclusions],
                                          "record": check.record}, indent=1))
    return check


def _find_leaks(source: LesionDataset, target: LesionDataset, source_splits: tuple[str, ...],
                target_splits: tuple[str, ...], phash_threshold: int, colour_threshold: float,
                near_duplicates: bool, workers: int | None) -> LeakCheck:
    seen = origins(source, source_splits)
    scored = origins(target, target_splits)
    found: dict[tuple[str, str], Exclusion] = {}

    def exclude(row: Any, reason: str, detail: str) -> None:
        found.setdefault((row.split, row.img_id), Exclusion(split=row.split, img_id=row.img_id, reason=reason,
                                                            detail=detail))

    def where(row: Any) -> str:
        return f"{source.name}/{row.split}/{row.img_id}"

    by_id = {(r.namespace, r.plain_id): r for r in seen.itertuples() if r.namespace is not None}
    for row in scored.itertuples():
        hit = by_id.get((row.namespace, row.plain_id)) if row.namespace is not None else None
        if hit is not None:
            exclude(row, REASON_TRANSFER_SAME_IMAGE, f"the same {row.namespace} image as {where(hit)}")
    by_sha = {r.sha256: r for r in seen.itertuples() if r.sha256}
    for row in scored.itertuples():
        hit = by_sha.get(row.sha256) if row.sha256 else None
        if hit is not None:
            exclude(row, REASON_TRANSFER_EXACT_DUPLICATE, f"byte-identical to {where(hit)} (sha256 {row.sha256[:12]})")
    near = 0
    if near_duplicates and len(seen) and len(scored):
        near = _near_duplicates(source, target, seen, scored, phash_threshold, colour_threshold, workers,
                                lambda row, hit, d, c: exclude(row, REASON_TRANSFER_NEAR_DUPLICATE,
                                                               f"a copy of {where(hit)} (pHash distance {d}, "
                                                               f"colour difference {c:.2f})"))
    for col in ("lesion_id_key", "patient_id_key"):
        by_group = {getattr(r, col): r for r in seen.itertuples() if getattr(r, col)}
        for row in scored.itertuples():
            key = getattr(row, col)
            hit = by_group.get(key) if key else None
            if hit is not None:
                what = col.removesuffix("_key")
                exclude(row, REASON_TRANSFER_SAME_LESION,
                        f"{what} {key.rsplit(':', 1)[-1]} is also in {where(hit)}")
    order = {(r.split, r.img_id): i for i, r in enumerate(scored.itertuples())}
    exclusions = sorted(found.values(), key=lambda e: order[(e.split, e.img_id)])
    record = {"source": {"name": source.name, "fingerprint": source.fingerprint, "splits": list(source_splits),
                         "images": int(len(seen))},
              "target": {"name": target.name, "fingerprint": target.fingerprint, "splits": list(target_splits),
                         "images": int(len(scored))},
              "id_namespaces": {"source": sorted({str(n) for n in seen["namespace"] if n is not None}),
                                "target": sorted({str(n) for n in scored["namespace"] if n is not None})},
              "near_duplicate_pairs": int(near),
              "excluded": {reason: sum(e.reason == reason for e in exclusions)
                           for reason in (REASON_TRANSFER_SAME_IMAGE, REASON_TRANSFER_EXACT_DUPLICATE,
                                          REASON_TRANSFER_NEAR_DUPLICATE, REASON_TRANSFER_SAME_LESION)}}
    return LeakCheck(exclusions, record)


def _near_duplicates(source: LesionDataset, target: LesionDataset, seen: pd.DataFrame, scored: pd.DataFrame,
                     phash_threshold: int, colour_threshold: float, workers: int | None, exclude: Any,
                     block: int = 1024) -> int:
    """Pairs (target image, source image) within the pHash threshold whose colour layouts agree;
    calls ``exclude(target row, source row, distance, colour difference)`` for each. Returns the
    number of pairs."""
    s_hash, s_colour, s_ok = _signatures(source, seen, workers)
    t_hash, t_colour, t_ok = _signatures(target, scored, workers)
    s_rows, t_rows = np.flatnonzero(s_ok), np.flatnonzero(t_ok)
    if not len(s_rows) or not len(t_rows):
        return 0
    s_h = s_hash[s_rows]
    seen_rows = list(seen.itertuples())
    scored_rows = list(scored.itertuples())
    pairs = 0
    for start in range(0, len(t_rows), block):
        chunk = t_rows[start:start + block]
        dist = np.bitwise_count(t_hash[chunk][:, None] ^ s_h[None, :])
        for i, j in zip(*np.nonzero(dist <= phash_threshold)):
            ti, si = int(chunk[i]), int(s_rows[j])
            colour = float(np.abs(t_colour[ti] - s_colour[si]).mean())
            if colour <= colour_threshold:
                pairs += 1
                exclude(scored_rows[ti], seen_rows[si], int(dist[i, j]), colour)
    return pairs


def _signatures(dataset: LesionDataset, rows: pd.DataFrame, workers: int | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pHash (uint64), colour layout (float32 [n, 8, 8, 3]) and a readable flag per row of
    ``rows``, computed once per dataset fingerprint (``cache_dir("image-signatures")``)."""
    material = json.dumps({"fingerprint": dataset.fingerprint, "method": PHASH_METHOD, "thumb": THUMB_SIDE,
                           "ids": [f"{s}/{i}" for s, i in zip(rows["split"], rows["img_id"])]})
    key = hashlib.sha256(material.encode()).hexdigest()[:20]
    path = cache_dir("image-signatures") / f"{safe_name(dataset.name)}-{key}.npz"
    try:
        with np.load(path) as stored:
            return stored["hash"], stored["colour"], stored["ok"]
    except (OSError, ValueError, KeyError):
        pass
    n = len(rows)
    hashes = np.zeros(n, dtype=np.uint64)
    colours = np.zeros((n, THUMB_SIDE, THUMB_SIDE, 3), dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    with ThreadPoolExecutor(max_workers=workers or min(8, 2 * (os.cpu_count() or 2))) as pool:
        for k, (h, _reason, _detail, colour) in enumerate(pool.map(image_signature, rows["path"], chunksize=64)):
            if h is not None:  # an unreadable image is the dataset's own exclusion, not a leak
                hashes[k], colours[k], ok[k] = np.uint64(h), colour, True
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, hash=hashes, colour=colours, ok=ok)
    return hashes, colours, ok
