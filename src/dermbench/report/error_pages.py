"""The error-analysis pages: per complete cell, thumbnails of its false-benign and false-malignant
test images, the most confident mistakes first (``errors/*.html`` and ``thumbs/*.jpg``)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pandas as pd

from ..metrics.subgroups import subgroup_label
from ..utils.atomic import atomic_write_text
from ..utils.paths import safe_name
from .collect import CellRecord
from .html import fmt, render

#: the two kinds of error, in page order, with their headings
ERROR_KINDS = (("false_benign", "False benign (malignant lesions scored benign — missed cancers)"),
               ("false_malignant", "False malignant (benign lesions scored malignant)"))
#: metadata columns shown under a thumbnail when the predictions file has them
TILE_COLUMNS = ("diagnosis", "fitzpatrick", "site")


def thumbnail(image_path: str | Path, thumbs_dir: Path, size: int = 128) -> str | None:
    """A JPEG thumbnail of an image (read with :func:`open_rgb`), written once; its file name."""
    from ..data.images import ImageReadError, open_rgb
    from ..utils.atomic import atomic_path

    name = hashlib.sha1(str(Path(image_path).absolute()).encode()).hexdigest()[:16] + ".jpg"
    target = thumbs_dir / name
    if target.is_file():
        os.utime(target)  # reused by this report too: not a stale file of an earlier one (report/stale.py)
        return name
    try:
        image = open_rgb(image_path, draft_size=(size * 2, size * 2))
    except (ImageReadError, OSError):
        return None
    image.thumbnail((size, size))
    thumbs_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        image.save(tmp, format="JPEG", quality=82)
    return name


def error_examples(pred: pd.DataFrame, max_per_kind: int) -> dict[str, pd.DataFrame]:
    """False-benign (malignant scored benign; lowest p first) and false-malignant (benign scored
    malignant; highest p first) test images, the most confident mistakes first."""
    false_benign = pred[(pred["label"] == 1) & (pred["pred"] == 0)].sort_values(["p_malignant", "img_id"])
    false_malignant = pred[(pred["label"] == 0) & (pred["pred"] == 1)].sort_values(
        ["p_malignant", "img_id"], ascending=[False, True])
    return {"false_benign": false_benign.head(max_per_kind), "false_malignant": false_malignant.head(max_per_kind),
            "counts": pd.DataFrame([{"false_benign": len(false_benign), "false_malignant": len(false_malignant),
                                     "n": len(pred)}])}


def _tiles(frame: pd.DataFrame, image_paths: dict[str, str] | None, thumbs_dir: Path,
           thumbs_rel: str) -> list[dict[str, Any]]:
    """What the page shows of each image: thumbnail (or none), id, score and metadata."""
    tiles = []
    for _, row in frame.iterrows():
        img_id = str(row["img_id"])
        name = thumbnail(image_paths[img_id], thumbs_dir) if image_paths and img_id in image_paths else None
        # the subgroup labels of the plots and tables (Fitzpatrick III-IV, not DDI's code 34)
        labelled = [(c, subgroup_label(c, row[c])) for c in TILE_COLUMNS if c in row and pd.notna(row[c])]
        extras = [f"{c}={v}" for c, v in labelled if v is not None]
        tiles.append({"src": f"{thumbs_rel}/{name}" if name else None, "img_id": img_id,
                      "p_malignant": fmt(float(row["p_malignant"])), "extras": ", ".join(extras)})
    return tiles


def error_page(cell: CellRecord, pred: pd.DataFrame, image_paths: dict[str, str] | None, thumbs_dir: Path,
               thumbs_rel: str, index_rel: str, max_per_kind: int = 24) -> tuple[str, dict[str, int]]:
    """The error-analysis page of one cell and its counts."""
    examples = error_examples(pred, max_per_kind)
    counts = {k: int(v) for k, v in examples["counts"].iloc[0].to_dict().items()}
    kinds = [{"title": title, "tiles": _tiles(examples[kind], image_paths, thumbs_dir, thumbs_rel)}
             for kind, title in ERROR_KINDS]
    dataset = run_dataset(cell)
    text = render("errors.html", title=f"errors: {cell.entry} / {dataset}", index_href=index_rel,
                  entry=cell.entry, dataset=dataset, seed=cell.seed,
                  threshold=fmt((cell.metrics.get("threshold") or {}).get("value")), counts=counts,
                  max_per_kind=max_per_kind, record=str(cell.path), has_images=image_paths is not None, kinds=kinds)
    return text, counts


def run_dataset(cell: CellRecord) -> str:
    """The dataset as the run saw it: its name, ``+split<k>`` when re-split by a split seed."""
    return cell.dataset if cell.split_seed is None else f"{cell.dataset}+split{cell.split_seed}"


def _test_image_paths(cell: CellRecord, cache: dict[str, dict[str, str] | None]) -> dict[str, str] | None:
    """img_id -> image file of the cell's dataset folder, or None when the folder is not here.
    Every split: a run on a re-split (split seed) has test images from any split of the folder."""
    from ..data.contract import load_dataset
    from ..errors import DermbenchError

    root = str((cell.metrics.get("dataset") or {}).get("root") or (cell.metrics.get("cell") or {}).get("dataset") or "")
    if root not in cache:
        try:
            dataset = load_dataset(root, check_images=False, quiet=True)
            cache[root] = {str(i): p for frame in dataset.splits.values()
                           for i, p in zip(frame["img_id"], frame["path"])}
        except (DermbenchError, OSError):  # the dataset folder is not here (report built on another machine)
            cache[root] = None
    return cache[root]


def write_error_pages(cells: list[CellRecord], out: Path, max_per_kind: int) -> list[dict[str, Any]]:
    """One page per cell with test predictions under ``out/errors``; a link row per page."""
    image_paths: dict[str, dict[str, str] | None] = {}
    links = []
    order = lambda c: (c.dataset, c.entry, -1 if c.split_seed is None else c.split_seed, c.seed)  # noqa: E731
    for c in sorted(cells, key=order):
        pred = c.predictions("test")
        if pred is None:
            continue
        name = safe_name(f"{c.experiment}__{c.paradigm}__{c.label}__{run_dataset(c)}__seed{c.seed}") + ".html"
        text, counts = error_page(c, pred, _test_image_paths(c, image_paths), out / "thumbs", "../thumbs",
                                  "../index.html", max_per_kind)
        atomic_write_text(out / "errors" / name, text)
        links.append({"entry": c.entry, "dataset": run_dataset(c), "seed": c.seed, "href": f"errors/{name}", **counts})
    return links
