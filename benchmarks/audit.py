"""The audit measured: same-lesion recall and false pairs, and cold vs warm speed.

    python benchmarks/audit.py --calibrate [--n 600] [--size 256] [--pairs 60]
    python benchmarks/audit.py --speed [--n 10000] [--size 128] [--repeats 3] [--similarity]

``--calibrate`` builds a synthetic dataset (``dermbench.data.synth``), plants ``--pairs`` second
photographs of lesions (``dermbench.data.similarity.rephotograph``: a crop keeping 70-90% of the
area, zoomed back, brightness/contrast/saturation x 0.8-1.2) in another split than their
original, each with fresh patient and lesion ids, and embeds everything with the audit's default
backbone and views. It prints, for a range of cosine thresholds, the recall of the planted pairs
and the false pairs (distinct lesions in two splits at or above the threshold: all such pairs,
and those the audit lists, i.e. among each image's nearest neighbours), and the threshold the
calibration rule picks: the largest value (on a 0.005 grid) that keeps recall >= 0.9, less 0.01 as
a margin (recall on another set of planted lesions varies by a few pairs). Then it runs
``audit_datasets`` at the package default and reports what the audit itself lists.

``--speed`` builds ``--n`` images (smooth random colour fields, distinct hashes, one planted lesion
leak and one re-encoded copy), then times ``audit_datasets`` cold (a fresh cache: sha256, pHash and
colour thumbnails of every file and, with ``--similarity``, the embeddings) and warm (everything
from the file-stamp memos and the embedding cache), ``--repeats`` times each, and prints the
medians and their ratio.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

SPLITS = ("train", "validation", "test")


def build_simple(root: Path, n: int, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    rows = []
    splits = rng.choice(list(SPLITS), size=n, p=[0.7, 0.15, 0.15])
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
    for s in SPLITS:
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


def plant_rephotographs(root: Path, n_pairs: int, seed: int = 1) -> list[tuple[str, str]]:
    """``n_pairs`` second photographs of distinct lesions, each in another split than its original
    and with fresh ids; returns the (original, copy) img_id pairs."""
    from dermbench.data.similarity import rephotograph

    rng = np.random.default_rng(seed)
    frames = {s: pd.read_csv(root / f"{s}_metadata.csv", dtype=str) for s in SPLITS}
    every = pd.concat([f.assign(_split=s) for s, f in frames.items()], ignore_index=True)
    one_per_lesion = every.drop_duplicates("lesion_id")
    chosen = one_per_lesion.iloc[rng.choice(len(one_per_lesion), size=n_pairs, replace=False)]
    added: dict[str, list[dict]] = {s: [] for s in SPLITS}
    pairs = []
    for k, (_, row) in enumerate(chosen.iterrows()):
        name = f"again_{k:03d}.jpg"
        rephotograph(Image.open(root / "images" / row["img_id"]), rng).save(root / "images" / name, quality=90)
        others = [s for s in SPLITS if s != row["_split"]]
        target = others[int(rng.integers(0, len(others)))]
        added[target].append({**row.drop("_split").to_dict(), "img_id": name, "patient_id": f"PA{k}",
                              "lesion_id": f"LA{k}"})
        pairs.append((row["img_id"], name))
    for s in SPLITS:
        if added[s]:
            pd.concat([frames[s], pd.DataFrame(added[s])]).to_csv(root / f"{s}_metadata.csv", index=False)
    return pairs


def calibrate(args: argparse.Namespace) -> int:
    from dermbench.data.audit import audit_datasets
    from dermbench.data.contract import load_dataset
    from dermbench.data.similarity import DEFAULT_THRESHOLD, view_similarity
    from dermbench.data.synth import make_synthetic_dataset
    from dermbench.paradigms.probe.similarity import similarity_search

    root = Path(args.keep or tempfile.mkdtemp()) / f"calibration_n{args.n}_s{args.size}_p{args.pairs}"
    if not (root / "train_metadata.csv").exists():
        make_synthetic_dataset(root, n=args.n, size=args.size, seed=args.seed, progress=False)
        planted = plant_rephotographs(root, args.pairs, seed=args.seed + 1)
        pd.DataFrame(planted, columns=["original", "copy"]).to_csv(root / "planted.csv", index=False)
    planted = [tuple(r) for r in pd.read_csv(root / "planted.csv", dtype=str).itertuples(index=False)]
    search = similarity_search(threshold=DEFAULT_THRESHOLD, progress=False)
    ds = load_dataset(root, check_images=False, quiet=True)
    t = time.perf_counter()
    emb = search.embed(ds)
    print(f"{len(emb)} images ({args.n} synthetic at {args.size} px + {len(planted)} planted), backbone "
          f"{search.backbone}, views {emb.views}: embedded in {time.perf_counter() - t:.1f} s", flush=True)
    sims = view_similarity(emb.vectors, emb.vectors)
    full = emb.vectors[:1]
    sims_full = view_similarity(full, full)
    pos = {i: k for k, i in enumerate(emb.img_ids)}
    split = np.asarray(emb.labels)
    lesion = {str(i): str(v) for df in ds.splits.values() for i, v in zip(df["img_id"], df["lesion_id"])}
    lesions = np.asarray([lesion[i] for i in emb.img_ids])
    iu = np.triu_indices(len(emb), 1)
    planted_idx = {tuple(sorted((pos[a], pos[b]))) for a, b in planted}
    is_planted = np.fromiter(((a, b) in planted_idx for a, b in zip(*iu)), dtype=bool, count=len(iu[0]))
    distinct = (split[iu[0]] != split[iu[1]]) & (lesions[iu[0]] != lesions[iu[1]]) & ~is_planted
    s_multi, s_single = sims[iu], sims_full[iu]
    print(f"planted pairs: {int(is_planted.sum())}; distinct-lesion pairs across splits: {int(distinct.sum())}")
    print(f"{'cosine':>7} {'recall (3 views)':>17} {'false pairs':>12} {'recall (full view)':>19} {'false pairs':>12}")
    for thr in np.arange(0.85, 0.971, 0.01):
        print(f"{thr:7.2f} {(s_multi[is_planted] >= thr).mean():17.3f} {int((s_multi[distinct] >= thr).sum()):12d} "
              f"{(s_single[is_planted] >= thr).mean():19.3f} {int((s_single[distinct] >= thr).sum()):12d}")
    grid = np.round(np.arange(0.5, 1.0, 0.005), 3)
    keeps = [g for g in grid if (s_multi[is_planted] >= g).mean() >= 0.9]
    chosen = max(keeps) if keeps else None
    margin = None if chosen is None else round(chosen - 0.01, 3)
    print(f"calibration rule: the largest threshold (0.005 grid) with recall >= 0.9 on the planted pairs is {chosen}; "
          f"less the 0.01 margin: {margin}; the package default is {DEFAULT_THRESHOLD}")
    report = audit_datasets([root], similarity=search, near_duplicates=False)
    listed = {frozenset((d["a"]["img_id"], d["b"]["img_id"])) for d in report.similar_pairs if d["across_splits"]}
    want = {frozenset(p) for p in planted}
    found = len(listed & want)
    false = len(listed - want)
    print(f"audit at threshold {DEFAULT_THRESHOLD} (up to {search.neighbours} nearest neighbours per image): "
          f"recall {found}/{len(want)} = {found / len(want):.3f}, false pairs listed {false} "
          f"(of {int(distinct.sum())} distinct-lesion pairs across splits)")
    return 0 if found / len(want) >= 0.9 else 1


def _timed(roots: list[Path], cache: Path, similarity: bool, backbone: str | None = None) -> tuple[float, object]:
    from dermbench.data.audit import audit_datasets
    from dermbench.paradigms.probe.similarity import similarity_search

    os.environ["DERMBENCH_CACHE"] = str(cache)
    t = time.perf_counter()
    search = (similarity_search(backbone, progress=False) if backbone else similarity_search(progress=False)) \
        if similarity else None
    report = audit_datasets(roots, similarity=search)
    return time.perf_counter() - t, report


def speed(args: argparse.Namespace) -> int:
    base = Path(args.keep or tempfile.mkdtemp())
    root = base / f"speed_n{args.n}_s{args.size}"
    if not (root / "train_metadata.csv").exists():
        t = time.perf_counter()
        build_simple(root, args.n, args.size)
        plant_near_copy(root, args.size)
        print(f"built {args.n} images ({args.size} px) in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    cold, warm = [], []
    report = None
    tag = f"sim-{args.similar_backbone or 'default'}" if args.similarity else "hash"
    for r in range(args.repeats):
        cache = base / f"cache_n{args.n}_{tag}_{r}"
        shutil.rmtree(cache, ignore_errors=True)  # cold: nothing memoised, nothing embedded
        wall, report = _timed([root], cache, args.similarity, args.similar_backbone)
        cold.append(wall)
        print(f"cold {r + 1}: {wall:.2f} s {report.timing_s}", flush=True)
        if r + 1 < args.repeats and args.similarity and args.cold_once:
            break
    cache = base / f"cache_n{args.n}_{tag}_0"
    for r in range(args.repeats):
        wall, report = _timed([root], cache, args.similarity, args.similar_backbone)
        warm.append(wall)
        print(f"warm {r + 1}: {wall:.2f} s {report.timing_s}", flush=True)
    s = report.summary()
    found = any("near_copy.jpg" in (d["a"]["img_id"], d["b"]["img_id"])
                for d in report.near_duplicates + report.similar_pairs)
    what = f"on ({args.similar_backbone or 'default backbone'})" if args.similarity else "off"
    print(f"audit of {s['images']} images, similarity search {what}: "
          f"median cold {statistics.median(cold):.2f} s ({len(cold)} run(s)), median warm "
          f"{statistics.median(warm):.2f} s ({len(warm)} runs), ratio {statistics.median(cold) / statistics.median(warm):.1f}x; "
          f"planted re-encoded copy found: {found}; lesion leak found: {s['groups_in_two_splits']}")
    return 0 if found else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--calibrate", action="store_true", help="recall and false pairs of the same-lesion search")
    what.add_argument("--speed", action="store_true", help="cold vs warm audit time")
    parser.add_argument("--n", type=int, default=None, help="images (default 600 calibrate, 10000 speed)")
    parser.add_argument("--size", type=int, default=None, help="image side in px (default 256 calibrate, 128 speed)")
    parser.add_argument("--pairs", type=int, default=60, help="planted same-lesion pairs (calibrate)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="cold and warm runs each (speed)")
    parser.add_argument("--similarity", action="store_true", help="speed: include the similarity search")
    parser.add_argument("--cold-once", action="store_true", help="speed --similarity: one cold run (it is long on CPU)")
    parser.add_argument("--similar-backbone", default=None, help="speed --similarity: another backbone than the default")
    parser.add_argument("--keep", help="build the datasets and caches here (reused) instead of a temp folder")
    args = parser.parse_args(argv)
    if args.calibrate:
        args.n, args.size = args.n or 600, args.size or 256
        return calibrate(args)
    args.n, args.size = args.n or 10_000, args.size or 128
    return speed(args)


if __name__ == "__main__":
    raise SystemExit(main())
