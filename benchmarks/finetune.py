"""Benchmark of the finetune training loop against the study's way of feeding a model.

The study's loop decoded every training image in full with PIL on every read, squashed it to
224×224, then augmented it. dermbench's loop (:func:`dermbench.paradigms.finetune.train.fit`)
decodes each image once, at reduced size, into the memory-mapped uint8 image cache, and augments
the cached pixels with ``torchvision.transforms.v2``.

On generated 600×450 JPEGs (quality 90, lesion-like texture) it prints training images/s of

* **study**: a ``DataLoader`` over PIL full decodes + ``Resize((224, 224))`` + the paper's
  augmentation on the PIL image, and the same model / optimiser step;
* **dermbench**: ``fit()`` itself (AdamW, cosine, the paper augmentation, weighted oversampling),
  reading its ``train_log.csv`` (the training phase of each epoch; validation excluded),

with the same model, resolution, batch size and workers, as the ratio dermbench / study. The cache
build is timed separately (it happens once per dataset and resolution, shared by every model,
seed and paradigm). ``--data-only`` also times the two input pipelines without a model, which
shows the feeding cost a GPU would see.

The two sides alternate ``--repeats`` times so that load from other processes on a shared machine
hits both alike; the medians and the per-repeat ratios are printed with the load average. Model
compute dominates on a CPU (a bigger model pushes the ratio towards 1); ``--model test_resnet``
isolates the feeding cost.

Default: ~2-3 minutes on a 2-core CPU.

    python benchmarks/finetune.py [--images 96] [--epochs 1] [--repeats 3] [--model resnet10t]
                                  [--size 224] [--batch 32] [--workers 2] [--data-only]

On a machine with a GPU, the prepared GPU check (training and extraction images/s against timm's
published figures, kill-and-resume, Ray placement; ``benchmarks/device_check.py``):

    python benchmarks/finetune.py --device-check      # the same as: python benchmarks/device_check.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def lesion_jpeg(path: Path, w: int, h: int, seed: int) -> None:
    """A 600×450-style dermoscopy stand-in: smooth skin tone, a dark irregular blob, sensor noise."""
    rng = np.random.default_rng(seed)
    coarse = (rng.random((h // 50 + 2, w // 50 + 2, 3)) * 60 + np.array([170, 120, 100])).astype(np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
    yy, xx = np.ogrid[:h, :w]
    angle = np.arctan2(yy - h / 2, xx - w / 2)
    radius = min(w, h) * rng.uniform(0.2, 0.35) * (1 + 0.15 * np.sin(3 * angle + rng.uniform(0, 6)))
    img[np.hypot(xx - w / 2, yy - h / 2) < radius] *= np.float32(rng.uniform(0.35, 0.6))
    img += rng.standard_normal((h, w, 3), dtype=np.float32) * 6
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)


def make_dataset(root: Path, n: int) -> Path:
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        name = f"bench_{i:04d}.jpg"
        lesion_jpeg(root / "images" / name, 600, 450, seed=i)
        rows.append(f"{name},{'malignant' if i % 3 == 0 else 'benign'}")
    n_val = max(4, n // 8)
    splits = {"train": rows[: n - 2 * n_val], "validation": rows[n - 2 * n_val: n - n_val], "test": rows[n - n_val:]}
    for split, part in splits.items():
        (root / f"{split}_metadata.csv").write_text("img_id,benign_malignant\n" + "\n".join(part) + "\n")
    return root


class StudyImages:
    """The study's dataset: full decode of the original file on every read, squash, augment on PIL."""

    def __init__(self, frame, transform):
        self.paths = [str(p) for p in frame["path"]]
        self.labels = frame["label"].to_numpy()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from dermbench.data.images import open_rgb

        return self.transform(open_rgb(self.paths[i])), int(self.labels[i])


def study_transform(size: int, mean, std):
    import torch
    from torchvision.transforms import v2

    from dermbench.paradigms.finetune.augment import paper_policy

    # As the study: squash the decoded PIL image, augment the PIL image, then to a normalised tensor.
    return v2.Compose([v2.Resize((size, size), antialias=True), *paper_policy(size), v2.PILToTensor(),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


def study_train_images_per_s(ds, args, model_name: str) -> float:
    """Images/s of the study's way: same model, optimiser, batch, workers; PIL decode every epoch."""
    import torch
    from torch.utils.data import DataLoader

    from dermbench.models import build_classifier
    from dermbench.paradigms.finetune.train import make_oversampler

    torch.manual_seed(0)
    built = build_classifier(model_name, weights="random")
    model = built.model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    frame = ds.split("train")
    data = StudyImages(frame, study_transform(args.size, built.data_config["mean"], built.data_config["std"]))
    rates = []
    for epoch in range(args.epochs):
        sampler = make_oversampler(frame["label"].to_numpy(), seed=epoch)
        loader = DataLoader(data, batch_size=args.batch, sampler=sampler, num_workers=args.workers,
                            persistent_workers=False)
        model.train()
        t0, seen = time.perf_counter(), 0
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()
            seen += len(y)
        rates.append(seen / (time.perf_counter() - t0))
    return float(np.median(rates))


def dermbench_train_images_per_s(ds, args, model_name: str, work: Path) -> float:
    import pandas as pd

    from dermbench.models import build_classifier
    from dermbench.paradigms.finetune.settings import FinetuneSettings
    from dermbench.paradigms.finetune.train import LOG_CSV, fit, seed_everything

    seed_everything(0)
    built = build_classifier(model_name, weights="random")
    settings = FinetuneSettings.from_preset("paper", image_size=args.size, epochs=args.epochs, patience=args.epochs,
                                            batch_size=args.batch, workers=args.workers, resize="squash",
                                            weights="random")
    fit(built.model, ds, settings, seed=0, work_dir=work, mean=built.data_config["mean"],
        std=built.data_config["std"], progress=False)
    return float(pd.read_csv(work / LOG_CSV)["train_images_per_s"].median())


def data_only(ds, args) -> tuple[float, float]:
    """Input pipeline alone (no model): images/s of the study's loader and of dermbench's."""
    from torch.utils.data import DataLoader

    from dermbench.data.pipeline.decode import ResizePolicy
    from dermbench.data.pipeline.loaders import make_loader
    from dermbench.paradigms.finetune.augment import train_transform

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    frame = ds.split("train")

    def rate(loader) -> float:
        t0, seen = time.perf_counter(), 0
        for batch in loader:
            seen += len(batch["label"] if isinstance(batch, dict) else batch[1])
        return seen / (time.perf_counter() - t0)

    study = rate(DataLoader(StudyImages(frame, study_transform(args.size, mean, std)), batch_size=args.batch,
                            shuffle=True, num_workers=args.workers))
    ours = rate(make_loader(ds, "train", policy=ResizePolicy(args.size, "squash"), shuffle=True,
                            transform=train_transform("paper", args.size, mean, std), batch_size=args.batch,
                            workers=args.workers, progress=False))
    return study, ours


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=96, help="generated 600x450 JPEGs (default 96)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per side and repeat (median taken)")
    parser.add_argument("--model", default="resnet10t", help="timm model, random init (default resnet10t)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats of both sides (median)")
    parser.add_argument("--data-only", action="store_true", help="also time the input pipelines without a model")
    parser.add_argument("--threads", type=int, help="torch intra-op threads of the training process "
                                                  "(default: torch's; 1 avoids OpenMP spin contention with "
                                                  "the loader workers on a busy 2-core machine)")
    parser.add_argument("--device-check", action="store_true",
                        help="run the GPU check instead (benchmarks/device_check.py: training and extraction "
                             "images/s against timm's published figures, kill-and-resume, Ray placement)")
    args = parser.parse_args(argv)

    if args.device_check:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from device_check import main as device_check_main

        return device_check_main([])

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from dermbench.data.contract import load_dataset
    from dermbench.data.pipeline.decode import ResizePolicy
    from dermbench.data.pipeline.image_cache import build_image_cache

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["DERMBENCH_CACHE"] = str(tmp / "cache")
        t0 = time.perf_counter()
        ds = load_dataset(make_dataset(tmp / "bench", args.images), quiet=True)
        print(f"{args.images} JPEGs 600x450 written in {time.perf_counter() - t0:.1f}s; "
              f"{len(ds.split('train'))} train images; model {args.model} (random init) at {args.size}px, "
              f"batch {args.batch}, {args.workers} workers, torch threads {torch.get_num_threads()}, CPU")
        t0 = time.perf_counter()
        build_image_cache(ds, ResizePolicy(args.size, "squash"), progress=False)
        cache_s = time.perf_counter() - t0
        print(f"image cache build (once per dataset x resolution): {cache_s:.2f}s "
              f"({args.images / cache_s:.0f} images/s)")
        if args.data_only:
            study, ours = data_only(ds, args)
            print(f"input pipeline only: study {study:.1f} img/s, dermbench {ours:.1f} img/s, ratio {ours / study:.2f}x")
        # Alternate the two sides so drifting load from other processes hits both alike.
        study_rates, our_rates = [], []
        for r in range(args.repeats):
            study_rates.append(study_train_images_per_s(ds, args, args.model))
            our_rates.append(dermbench_train_images_per_s(ds, args, args.model, tmp / f"work{r}"))
            print(f"  repeat {r + 1}: study {study_rates[-1]:.1f} img/s, dermbench {our_rates[-1]:.1f} img/s")
        study, ours = float(np.median(study_rates)), float(np.median(our_rates))
        ratios = [o / s for o, s in zip(our_rates, study_rates)]
        print(f"training images/s (median of {args.repeats}): study (PIL full decode every epoch) {study:.1f}, "
              f"dermbench fit() {ours:.1f}; ratio {ours / study:.2f}x "
              f"(per-repeat ratios {', '.join(f'{x:.2f}' for x in ratios)}); load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
