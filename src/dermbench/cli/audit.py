"""``dermbench audit DATASET... [--json out.json] [--html DIR]``: leakage and quality audit of dataset folders.

Exit code: 0 when nothing is found, 1 when a patient/lesion group or a (near) duplicate image
spans two splits or likely same-lesion images in two splits need review, 2 when a dataset cannot
be loaded.
"""

from __future__ import annotations

import argparse
import json

HELP = ("find patient/lesion overlap, exact and near duplicates, likely same-lesion images, label imbalance and "
        "unreadable images")


def add_parser(subparsers) -> argparse.ArgumentParser:
    # the search's defaults live in dermbench.data.similarity (numpy, pandas): read when the command runs,
    # so building the parser stays light
    parser = subparsers.add_parser(
        "audit", help=HELP,
        description=HELP + " within and across dataset folders. Exits 1 when leakage (a group or a duplicate image "
                           "in two splits) is found or likely same-lesion images in two splits need review.")
    parser.add_argument("datasets", nargs="+", metavar="DATASET", help="dataset folder(s) to audit together")
    parser.add_argument("--json", dest="json_out", metavar="FILE", help="also write the full report as JSON")
    parser.add_argument("--html", dest="html_out", metavar="DIR",
                        help="also write an audit page with thumbnails of every pair found (DIR/audit.html)")
    parser.add_argument("--phash-threshold", type=int, default=6,
                        help="Hamming distance (of 64 pHash bits) at or below which two images are near "
                             "duplicates (default 6)")
    parser.add_argument("--colour-threshold", type=float, default=3.0,
                        help="a pHash match must also have a mean colour-layout difference at or below this "
                             "(0-255 scale, default 3); 255 turns the confirmation off")
    parser.add_argument("--no-near-duplicates", action="store_true",
                        help="skip perceptual hashing (exact duplicates and group overlap only)")
    parser.add_argument("--similarity", choices=("auto", "on", "off"), default="auto",
                        help="embedding-similarity search for photographs of one lesion in two splits: auto (default) "
                             "runs it when a dataset lacks patient or lesion ids for some images")
    parser.add_argument("--similar-backbone", default=None, metavar="NAME",
                        help="backbone of the similarity search (any probe backbone; default "
                             "efficientnet_lite0_imagenet, offline ImageNet weights)")
    parser.add_argument("--similar-threshold", type=float, default=None, metavar="COS",
                        help="cosine similarity at or above which two images are listed (default: the value calibrated "
                             "for the default backbone by benchmarks/audit.py --calibrate, 0.92)")
    parser.add_argument("--similar-neighbours", type=int, default=None, metavar="K",
                        help="nearest neighbours per image considered (default 3)")
    parser.add_argument("--device", default="auto", help="device of the similarity backbone (auto, cpu, cuda ...)")
    parser.add_argument("--workers", type=int, default=None, help="threads for image hashing")
    parser.add_argument("--max-list", type=int, default=20, help="items listed per section in the text report")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..data.audit import audit_datasets, format_report
    from ..data.similarity import DEFAULT_BACKBONE, DEFAULT_NEIGHBOURS, DEFAULT_THRESHOLD
    from ..errors import UsageError
    from ..utils.atomic import atomic_write_text
    from ..utils.console import is_quiet

    args.similar_backbone = args.similar_backbone or DEFAULT_BACKBONE
    args.similar_threshold = DEFAULT_THRESHOLD if args.similar_threshold is None else args.similar_threshold
    args.similar_neighbours = DEFAULT_NEIGHBOURS if args.similar_neighbours is None else args.similar_neighbours

    if not 0.0 < args.similar_threshold <= 1.0:
        raise UsageError(f"--similar-threshold {args.similar_threshold}: a cosine similarity in (0, 1]")
    if args.similar_neighbours < 1:
        raise UsageError(f"--similar-neighbours {args.similar_neighbours}: at least 1")
    search = None
    if args.similarity != "off":
        from ..paradigms.probe.similarity import similarity_search

        search = similarity_search(args.similar_backbone, threshold=args.similar_threshold,
                                   neighbours=args.similar_neighbours, device=args.device, progress=not is_quiet())
    # a dataset that cannot be loaded raises DatasetError: the CLI prints it and exits 2
    report = audit_datasets(args.datasets, phash_threshold=args.phash_threshold,
                            colour_threshold=args.colour_threshold, workers=args.workers,
                            near_duplicates=not args.no_near_duplicates, similarity=search,
                            similarity_without_ids_only=args.similarity == "auto")
    print(format_report(report, max_list=args.max_list))
    if args.json_out:
        atomic_write_text(args.json_out, json.dumps(report.as_dict(), indent=2) + "\n")
        print(f"JSON report: {args.json_out}")
    if args.html_out:
        from ..report.audit_page import write_audit_page

        print(f"audit page: {write_audit_page(report, args.html_out)}")
    return 0 if report.status in ("clean", "unchecked") else 1
