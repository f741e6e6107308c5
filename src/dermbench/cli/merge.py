"""``dermbench merge``: merge prepared datasets (partitions carried over, ``source`` column).

    dermbench merge --config merge.yaml [--only merged_clinic] [--skip-missing]
    dermbench merge --paper                       # the shipped config: the study's three groups
    dermbench merge NAME --from A B ... [--out DIR]
"""

from __future__ import annotations

import argparse

HELP = "merge prepared datasets (the study's merged_clinic / merged_dermatoscopic / merged, or your own)"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "merge", help=HELP,
        description=HELP + ". Partitions carry over, colliding file names are renamed <part>__<name>, "
                           "a source column records each row's origin.")
    parser.add_argument("name", nargs="?", help="name of the merged dataset (with --from)")
    parser.add_argument("--from", dest="parts", nargs="+", metavar="DATASET", help="dataset folders to merge")
    parser.add_argument("--out", help="output folder (default: datasets/NAME, or the config's out_root)")
    parser.add_argument("--config", help="merge YAML with 'merges: NAME: {parts: [...]}'")
    parser.add_argument("--paper", action="store_true", help="use the shipped config (configs/merge_paper.yaml)")
    parser.add_argument("--only", nargs="+", default=(), metavar="NAME", help="build only these merges of the config")
    parser.add_argument("--datasets-root", help="where the config's parts live (default: the config's datasets_root)")
    parser.add_argument("--skip-missing", action="store_true", help="merge the parts that exist, recording the rest")
    parser.add_argument("--link", choices=("copy", "hardlink", "symlink"), default=None,
                        help="how images get into the merged images/ (default copy)")
    parser.add_argument("--allow-mixed-premalignant", action="store_true",
                        help="merge parts prepared with different --premalignant policies")
    parser.add_argument("--allow-cross-split-duplicates", action="store_true",
                        help="merge even when one image is in two parts under different splits (leakage)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output folders")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..data.merge import SHIPPED_CONFIG, load_merge_config, merge_datasets, run_merge_config
    from ..errors import MergeError, UsageError

    try:
        if args.config or args.paper:
            if args.parts:
                raise MergeError("use either --config/--paper or NAME --from A B ..., not both")
            config = load_merge_config(args.config or SHIPPED_CONFIG)
            run_merge_config(config, only=args.only, skip_missing=args.skip_missing,
                             datasets_root=args.datasets_root, out_root=args.out, overwrite=args.overwrite,
                             link=args.link, allow_mixed_premalignant=args.allow_mixed_premalignant or None,
                             allow_cross_split_duplicates=args.allow_cross_split_duplicates)
        elif args.parts:
            if not args.name and not args.out:
                raise MergeError("name the merged dataset: dermbench merge NAME --from A B ...")
            out = Path(args.out) if args.out else Path("datasets") / args.name
            merge_datasets(args.parts, out, link=args.link or "copy", overwrite=args.overwrite,
                           allow_mixed_premalignant=args.allow_mixed_premalignant,
                           allow_cross_split_duplicates=args.allow_cross_split_duplicates)
        else:
            raise MergeError("nothing to merge: give --config FILE, --paper, or NAME --from A B ...")
    except FileExistsError as exc:  # an existing output folder without --overwrite
        raise UsageError(str(exc)) from exc
    return 0
