"""``dermbench synth``: write the seeded ABCD-rule synthetic dataset."""

from __future__ import annotations

import argparse

from .cells import seed_arg


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("synth", help="write a seeded synthetic lesion dataset (demo / tests)",
                       description="Draw a seeded, labelled synthetic lesion dataset in the contract layout "
                                   "(ABCD rule: malignant lesions are more asymmetric, with irregular borders, "
                                   "more colours and larger diameter). A demo and test fixture, never a "
                                   "medical result.")
    p.add_argument("--out", required=True, help="dataset folder to create")
    p.add_argument("--n", type=int, default=600, help="number of images (default 600)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    p.add_argument("--seed", type=seed_arg, default=0, help="random seed (default 0)")
    p.add_argument("--malignant-fraction", type=float, default=0.35, help="share of malignant images (default 0.35)")
    p.add_argument("--modality", choices=("mixed", "dermoscopic", "clinical"), default="mixed",
                   help="draw every image as a dermoscopic or a clinical view (default mixed: both)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..data.contract import load_dataset
    from ..data.synth import make_synthetic_dataset

    out = make_synthetic_dataset(args.out, n=args.n, size=args.size, seed=args.seed,
                                 malignant_fraction=args.malignant_fraction, overwrite=args.overwrite,
                                 modality=args.modality)
    ds = load_dataset(out, quiet=True)
    print(ds.summary())
    print(f"wrote {out}")
    return 0
