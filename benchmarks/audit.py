"""Audit speed on a 10,000-image synthetic dataset.

    python benchmarks/audit.py [--n 10000] [--size 128] [--workers N] [--keep DIR]

Builds a contract dataset of small JPEGs (smooth random colour fields, distinct perceptual
hashes; ``--generator synth`` uses ``dermbench.data.synth`` instead), plants one lesion leak (simple) and
one re-encoded near duplicate, then times ``audit_datasets`` (cold: sha256 and pHash of every
image) and again warm (sha256 memoised; pHash recomputed). Prints the wall times.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def build_simple(root: Path, n: int, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    rows = []
    splits = rng.choice(["train", "validation", "test"], size=n, p=[0.7, 0.15, 0.15])
    for i in range(n):
        grid = rng.integers(0, 255, size=(6, 6, 3), dtype=np.uint8)
        img = Image.fromarray(grid).resize((size, size), Image.Resampling.BILINEAR)
        name = f"img{i:05d}.jpg"
        img.save(root / "images" / name, quality=85)
        rows.append({"img_id": name, "benign_malignant": "malignant" if rng.random() < 0.3 else "benign",
                     "lesion_id": f"L{i}", "split": splits[i]})
    # plant a leak: lesion L0 again in another split
    first_split = rows[0]["split"]
    other = "test" if first_split != "test" else "train"
    rows[2]["lesion_id"] = "L0"
    rows[2]["split"] = other
    frame = pd.DataFrame(rows)
    for s in ("train", "validation", "test"):
        frame[frame["split"] == s].drop(columns="split").to_csv(root / f"{s}_metadata.csv", index=False)


def plant_near_copy(root: Path, size: int) -> None:
    """A resized, re-encoded copy of the first training image, added to the test split."""
    train = pd.read_csv(root / "train_metadata.csv", dtype=str)
    source = train.iloc[0]
    buf = io.BytesIO()
    Image.open(root / "images" / source["img_id"]).resize((size - 16, size - 16)).save(buf, format="JPEG", quality=60)
    (root / "images" / "near_copy.jpg").write_bytes(buf.getvalue())
    test = pd.read_csv(root / "test_metadata.csv", dtype=str)
    copy = {**source.to_dict(), "img_id": "near_copy.jpg", "lesion_id": "Lcopy"}
    if "patient_id" in copy:
        copy["patient_id"] = "Pcopy"
    pd.concat([test, pd.DataFrame([copy])]).to_csv(root / "test_metadata.csv", index=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--generator", choices=("simple", "synth"), default="simple")
    parser.add_argument("--keep", help="build the dataset here (reused if it exists) instead of a temp folder")
    args = parser.parse_args(argv)

    from dermbench.data.audit import audit_datasets, format_report

    with tempfile.TemporaryDirectory() as tmp:
        # a fresh hash memo, so "cold" really hashes every file
        os.environ["DERMBENCH_CACHE"] = str(Path(tmp) / "cache")
        root = Path(args.keep) if args.keep else Path(tmp) / "bench"
        if not (root / "train_metadata.csv").exists():
            t = time.perf_counter()
            if args.generator == "synth":
                from dermbench.data.synth import make_synthetic_dataset

                make_synthetic_dataset(root, n=args.n, size=args.size, progress=False)
            else:
                build_simple(root, args.n, args.size)
            plant_near_copy(root, args.size)
            print(f"built {args.n} images ({args.size} px) in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        for run in ("cold", "warm"):
            t = time.perf_counter()
            report = audit_datasets([root], workers=args.workers)
            wall = time.perf_counter() - t
            s = report.summary()
            print(f"audit {run}: {s['images']} images in {wall:.2f} s  ({report.timing_s})  "
                  f"leakage={report.leakage} groups={s['groups_in_two_splits']} "
                  f"near_pairs_across_splits={s['near_duplicate_pairs_across_splits']}")
        print(format_report(report, max_list=5).splitlines()[-1])
        found = any("near_copy.jpg" in (d["a"]["img_id"], d["b"]["img_id"]) for d in report.near_duplicates)
        print(f"planted re-encoded copy found as a near duplicate: {found}")
        if not found:
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
