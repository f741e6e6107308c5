"""Export a prepared dataset to one HDF5 file and import it back.

The study's embedding pipeline read one HDF5 file with a group per partition holding
``img_id`` and ``benign_malignant`` string datasets. :func:`export_hdf5` writes that layout and
adds what makes the file self-contained, so users of the old layout can move over both ways::

    /                      attrs: format="dermbench-hdf5", version=1, card=<dataset.json as JSON>
    /<partition>/img_id            (N,) UTF-8 strings
    /<partition>/benign_malignant  (N,) UTF-8 strings "benign" / "malignant"
    /<partition>/label             (N,) int8, 1 = malignant
    /<partition>/image             (N,) variable-length uint8: the image file's bytes, unchanged
    /<partition>/columns/<name>    (N,) UTF-8 strings: every other CSV column ("" = missing)

Partitions are ``train``, ``validation``, ``test`` (``group_names`` renames them, e.g. ``val``).
:func:`import_hdf5` also reads files without ``image`` (images then come from a folder) and
partition groups named ``val``/``valid``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .. import SPLITS
from ..errors import HDF5LayoutError
from ..utils.console import get_logger
from .exclusions import exclusions_for, summarise_by_reason

FORMAT = "dermbench-hdf5"
VERSION = 1
GROUP_ALIASES = {"train": "train", "training": "train", "validation": "validation", "val": "validation",
                 "valid": "validation", "test": "test", "testing": "test"}


def export_hdf5(dataset: str | Path, out: str | Path, *, include_images: bool = True,
                group_names: Sequence[str] = SPLITS) -> Path:
    """Write a contract dataset folder to ``out`` (atomically); returns ``out``."""
    import h5py

    from ..utils.atomic import atomic_path
    from .contract import load_dataset

    if len(group_names) != 3:
        raise ValueError(f"group_names needs three names (train, validation, test), got {list(group_names)}")
    ds = load_dataset(Path(os.path.abspath(Path(dataset).expanduser())), quiet=True)
    string = h5py.string_dtype("utf-8")
    out = Path(out)
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["version"] = VERSION
            f.attrs["card"] = json.dumps({k: v for k, v in ds.card.items() if k != "manifest"})
            f.attrs["fingerprint"] = ds.fingerprint
            for split, group_name in zip(SPLITS, group_names):
                df = ds.splits[split]
                g = f.create_group(group_name)
                g.create_dataset("img_id", data=np.asarray(df["img_id"].astype(str), dtype=object), dtype=string)
                g.create_dataset("benign_malignant", data=np.asarray(df["benign_malignant"], dtype=object),
                                 dtype=string)
                g.create_dataset("label", data=df["label"].to_numpy(dtype=np.int8))
                cols = g.create_group("columns")
                for col in df.columns:
                    if col in ("img_id", "path", "label", "benign_malignant"):
                        continue
                    values = [("" if pd.isna(v) else str(v)) for v in df[col]]
                    cols.create_dataset(col, data=np.asarray(values, dtype=object), dtype=string)
                if include_images:
                    images = g.create_dataset("image", (len(df),), dtype=h5py.vlen_dtype(np.uint8))
                    for i, path in enumerate(df["path"]):
                        images[i] = np.frombuffer(Path(path).read_bytes(), dtype=np.uint8)
    return out


def _sniff_extension(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    raise HDF5LayoutError("an image in the file is neither JPEG nor PNG")


def import_hdf5(path: str | Path, out: str | Path, *, images: str | Path | None = None, overwrite: bool = False,
                link: str = "copy", quiet: bool = False) -> dict[str, Any]:
    """Turn an HDF5 file of the layout above (or the study's: ``img_id`` + ``benign_malignant`` per
    partition, images in a folder given by ``images``) into a contract folder; returns its card."""
    import h5py

    from .sources.raw import ImageIndex
    from .writer import write_dataset

    path = Path(path)
    with h5py.File(path, "r") as f:
        groups = {GROUP_ALIASES[k.lower()]: k for k in f.keys() if k.lower() in GROUP_ALIASES}
        if not groups:
            raise HDF5LayoutError(f"{path}: no partition group (train/validation/test); found {sorted(f.keys())}")
        card_in = json.loads(f.attrs["card"]) if "card" in f.attrs else {}
        index = ImageIndex([Path(images)]) if images else None
        blobs: dict[str, bytes] = {}
        splits: dict[str, pd.DataFrame] = {}
        missing: list[str] = []
        for split in SPLITS:
            if split not in groups:
                splits[split] = pd.DataFrame(columns=["img_id", "benign_malignant", "src"])
                continue
            g = f[groups[split]]
            for required in ("img_id", "benign_malignant"):
                if required not in g:
                    raise HDF5LayoutError(f"{path}: group {groups[split]!r} has no {required!r} dataset")
            frame = pd.DataFrame({"img_id": list(g["img_id"].asstr()[()]),
                                  "benign_malignant": list(g["benign_malignant"].asstr()[()])})
            if "columns" in g:
                for col in g["columns"]:
                    frame[col] = [v or None for v in g["columns"][col].asstr()[()]]
            if "image" in g:
                src, ids = [], []
                for i, (img_id, blob) in enumerate(zip(frame["img_id"], g["image"])):
                    data = bytes(np.asarray(blob, dtype=np.uint8).tobytes())
                    key = f"{split}:{i}"
                    blobs[key] = data
                    src.append(key)
                    ids.append(img_id if Path(img_id).suffix.lower() in (".jpg", ".jpeg", ".png")
                               else img_id + _sniff_extension(data))
                frame["src"], frame["img_id"] = src, ids
            elif index is not None:
                found = frame["img_id"].map(lambda v: index.find(str(v)))
                missing += frame.loc[found.isna(), "img_id"].tolist()
                frame = frame[found.notna()].copy()
                frame["src"] = found[found.notna()].map(str)
                frame["img_id"] = [i if Path(i).suffix else i + Path(s).suffix.lower()
                                   for i, s in zip(frame["img_id"], frame["src"])]
            else:
                raise HDF5LayoutError(f"{path}: group {groups[split]!r} holds no images; pass the image folder "
                                      f"(--images DIR)")
            splits[split] = frame
    card = {k: v for k, v in card_in.items() if k not in ("counts", "manifest", "fingerprint", "n_images",
                                                          "load_exclusions", "written_by", "written_at")}
    card.update({"name": Path(out).name, "imported_from": str(path.resolve()),
                 "excluded": card_in.get("excluded", []) + summarise_by_reason(exclusions_for(
                     missing, "missing_image", "no image file with this id in the --images folder"))})
    card.setdefault("source", "hdf5")

    def image_bytes(src: str) -> bytes:
        return blobs[src] if src in blobs else Path(src).read_bytes()

    written = write_dataset(Path(out), splits, link=link, overwrite=overwrite,
                            image_bytes=image_bytes if blobs else None, card=card)
    if not quiet:
        get_logger("data").info(f"imported {path} -> {out} ({written['n_images']} images)")
    return written
