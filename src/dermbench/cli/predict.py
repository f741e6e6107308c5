"""``dermbench predict CELL IMAGES...``: a completed finetune or probe cell scores new images."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "predict", help="score new images with a completed finetune or probe cell",
        description="Load the model of a completed finetune or probe cell (its best checkpoint, or its backbone "
                    "and saved head; nothing in the cell folder is executed) and score image files with the "
                    "same decoding and preprocessing as in training. Writes a CSV with p_malignant, the "
                    "decision at the cell's recorded operating threshold and the cell's identity (model, "
                    "weights, training dataset and fingerprint, threshold policy, calibration). Images that "
                    "cannot be read are listed with their reason in <out>.unreadable.csv and on the console; "
                    "the exit status is then 1.",
        epilog="examples:\n"
               "  dermbench predict runs/demo/probe/handcrafted+logreg/synth/seed42 photos/ --out predictions.csv\n"
               "  dermbench predict CELL lesion1.jpg lesion2.png\n"
               "  dermbench predict CELL images.csv        # a CSV with a path column (and optional img_id)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cell", help="folder of a complete cell: runs/<experiment>/<paradigm>/<label>/<dataset>/seed<k>")
    p.add_argument("images", nargs="+", help="image files, folders (searched recursively) or CSVs of image paths")
    p.add_argument("--out", default="predictions.csv", help="CSV to write (default ./predictions.csv)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default auto)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..runs.predict import predict_images
    from ..utils.atomic import atomic_write_text
    from ..utils.console import get_logger, is_quiet

    result = predict_images(args.cell, args.images, device=args.device, progress=not is_quiet())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, result.frame.to_csv(index=False, lineterminator="\n"))
    for note in result.notes:
        get_logger("predict").info(note)
    ident = result.identity
    print(f"{len(result.frame)} image(s) scored by {ident['paradigm']}/{ident['cell_label']} (trained on "
          f"{ident['train_dataset']}, operating threshold {result.threshold:.4g} by {ident['threshold_policy']}) "
          f"-> {out}")
    if len(result.frame):
        counts = result.frame["decision"].value_counts()
        print(f"  malignant: {int(counts.get('malignant', 0))}, benign: {int(counts.get('benign', 0))}")
    if not len(result.unreadable):
        return 0
    listing = out.with_name(out.stem + ".unreadable.csv")
    atomic_write_text(listing, result.unreadable.to_csv(index=False, lineterminator="\n"))
    print(f"{len(result.unreadable)} image(s) could not be read (listed in {listing}):")
    for row in result.unreadable.head(20).itertuples():
        print(f"  {row.image}: {row.reason}" + (f" ({row.detail})" if row.detail else ""))
    if len(result.unreadable) > 20:
        print(f"  ... and {len(result.unreadable) - 20} more")
    return 1
