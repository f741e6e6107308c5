"""Writing a dataset folder in the contract layout, atomically (``prepare``, ``merge``, ``import-hdf5``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from .. import MALIGNANT, SPLITS
from ..errors import SourceFormatError
from .contract import unsafe_img_id, write_card

LINK_MODES = ("copy", "hardlink", "symlink")
#: Column order of the written CSVs (other columns follow in their own order).
CONTRACT_ORDER = ("img_id", "benign_malignant", "patient_id", "lesion_id", "diagnosis", "fitzpatrick",
                  "age", "sex", "site", "modality")
#: Columns of the frames given to :func:`write_dataset` that are not written to the CSVs.
_WORKING_COLUMNS = ("src", "split", "label_key")


def absolute(path: str | Path) -> Path:
    """An absolute path without resolving symlinks (the contract loader needs absolute roots)."""
    return Path(os.path.abspath(Path(path).expanduser()))


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse to write into a non-empty ``out`` unless ``overwrite``."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"{out} already exists and is not empty; pass --overwrite to replace it")


def place_image(src: str, dest: Path, link: str, image_bytes: Callable[[str], bytes] | None) -> None:
    """Put one image at ``dest``: its bytes from ``image_bytes(src)``, or the file ``src`` linked as asked."""
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


def _refuse_unsafe_names(splits: dict[str, pd.DataFrame]) -> None:
    # Names come from published metadata or an HDF5 file: one like "../x.jpg" would be written
    # outside images/ (and the contract loader would then reject it). Refuse before writing.
    unsafe = [f"{i!r} ({unsafe_img_id(str(i)) or 'empty'})" for df in splits.values() for i in df["img_id"]
              if not str(i).strip() or unsafe_img_id(str(i))]
    if unsafe:
        raise SourceFormatError(f"{len(unsafe)} image name(s) would escape images/: {', '.join(unsafe[:5])}")


def _write_contents(folder: Path, splits: dict[str, pd.DataFrame], *, link: str,
                    image_bytes: Callable[[str], bytes] | None, extra_files: dict[str, pd.DataFrame],
                    workers: int) -> None:
    """Images and split CSVs (and any extra CSV files) into an empty ``folder``."""
    images = folder / "images"
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
        df = df.drop(columns=[c for c in _WORKING_COLUMNS if c in df.columns])
        df.to_csv(folder / f"{split}_metadata.csv", index=False, lineterminator="\n")
    for name, frame in extra_files.items():
        frame.to_csv(folder / name, index=False, lineterminator="\n")


def move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder ``tmp`` to ``out``, replacing an existing ``out`` (which is put
    back if the rename fails), so ``out`` is always either the old or the new complete folder."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


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
    crash never leaves a half-made dataset that looks complete. Returns the written card.

    ``splits[s]`` frames need ``img_id`` and ``src`` (dropped on writing) plus the CSV columns.
    """
    out = absolute(out)
    check_out_dir(out, overwrite)
    _refuse_unsafe_names(splits)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        _write_contents(tmp, splits, link=link, image_bytes=image_bytes, extra_files=extra_files or {},
                        workers=workers)
        written = write_card(tmp, **card)
        move_into_place(tmp, out)
        return written
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def counts_table(splits: dict[str, pd.DataFrame]) -> str:
    """Images, benign and malignant per split, as printable lines."""
    lines = [f"  {'split':<11}{'images':>8}{'benign':>8}{'malignant':>11}"]
    for s in SPLITS:
        df = splits.get(s)
        n = 0 if df is None else len(df)
        m = 0 if df is None else int((df["benign_malignant"] == MALIGNANT).sum())
        lines.append(f"  {s:<11}{n:>8}{n - m:>8}{m:>11}")
    return "\n".join(lines)
