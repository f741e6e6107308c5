"""``dermbench audit DATASET... [--json out.json]``: leakage and quality audit of dataset folders.

Exit code: 0 when no leakage is found, 1 when a patient/lesion group or a (near) duplicate image
spans two splits, 2 when a dataset cannot be loaded.
"""

from __future__ import annotations

import argparse
import json

HELP = "find patient/lesion overlap, exact and near duplicates, label imbalance and unreadable images"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "audit", help=HELP,
        description=HELP + " within and across dataset folders. Exits 1 when leakage "
                           "(a group or a duplicate image in two splits) is found.")
    parser.add_argument("datasets", nargs="+", metavar="DATASET", help="dataset folder(s) to audit together")
    parser.add_argument("--json", dest="json_out", metavar="FILE", help="also write the full report as JSON")
    parser.add_argument("--phash-threshold", type=int, default=6,
                        help="Hamming distance (of 64 pHash bits) at or below which two images are near "
                             "duplicates (default 6)")
    parser.add_argument("--colour-threshold", type=float, default=3.0,
                        help="a pHash match must also have a mean colour-layout difference at or below this "
                             "(0-255 scale, default 3); 255 turns the confirmation off")
    parser.add_argument("--no-near-duplicates", action="store_true",
                        help="skip perceptual hashing (exact duplicates and group overlap only)")
    parser.add_argument("--workers", type=int, default=None, help="threads for image hashing")
    parser.add_argument("--max-list", type=int, default=20, help="items listed per section in the text report")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..data.audit import audit_datasets, format_report
    from ..utils.atomic import atomic_write_text

    # a dataset that cannot be loaded raises DatasetError: the CLI prints it and exits 2
    report = audit_datasets(args.datasets, phash_threshold=args.phash_threshold,
                            colour_threshold=args.colour_threshold, workers=args.workers,
                            near_duplicates=not args.no_near_duplicates)
    print(format_report(report, max_list=args.max_list))
    if args.json_out:
        atomic_write_text(args.json_out, json.dumps(report.as_dict(), indent=2) + "\n")
        print(f"JSON report: {args.json_out}")
    return 1 if report.leakage else 0
