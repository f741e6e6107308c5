"""``dermbench prepare SOURCE --raw DIR --out datasets/NAME``: a public dataset as published ->
the dataset contract.

The source's own options (``--total`` for ISIC 2024, ``--balance`` for SD-198, ...) are parsed
only once the source is known, so building the top-level parser imports no source module
(``dermbench prepare SOURCE --help`` lists them).
"""

from __future__ import annotations

import argparse
import sys

from .cells import seed_arg

HELP = "turn a public dataset as published (or a CSV + mapping table) into the dataset contract"


def _source_lines() -> str:
    from ..data.sources import SOURCES

    return "\n".join(f"  {e.name:<15} {e.description}" for e in SOURCES)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    from ..data.sources.labels import DEFAULT_LABEL_DEFINITION, LABEL_DEFINITIONS, PREMALIGNANT_POLICIES
    from ..data.splits import SPLIT_GROUPINGS
    from ..data.writer import LINK_MODES

    parser.add_argument("--raw", required=True, help="folder with the files as published (metadata + images)")
    parser.add_argument("--out", required=True, help="dataset folder to create, e.g. datasets/ham10000")
    parser.add_argument("--images", action="append", default=None,
                        help="folder(s) to look for images in, if not under --raw (repeatable)")
    parser.add_argument("--seed", type=seed_arg, default=42, help="seed for splits and subsampling (default 42)")
    parser.add_argument("--premalignant", choices=PREMALIGNANT_POLICIES, default="paper",
                        help="actinic keratosis / akiec / ACK: 'paper' = what the study did per dataset "
                             "(HAM/ISIC akiec and PAD ACK malignant, SD-198 AK benign), or one rule for all")
    parser.add_argument("--labels", choices=LABEL_DEFINITIONS, default=DEFAULT_LABEL_DEFINITION,
                        help="label definition: 'complete' (default) = every diagnosis mapped, premalignant per "
                             "--premalignant; 'study' = exactly what the MICCAI study evaluated (e.g. ISIC 2018 / "
                             "HAM10000 melanoma vs nevus only, other diagnoses excluded and counted)")
    parser.add_argument("--split", choices=SPLIT_GROUPINGS, default="grouped",
                        help="'grouped' (default): no patient or lesion in two splits; 'ungrouped': the study's "
                             "image-level stratified split, for comparison only (the report marks it as leaky)")
    parser.add_argument("--ratios", default=None,
                        help="train/validation/test ratios when no official split exists, e.g. 70/15/15 "
                             "(default: the source's)")
    parser.add_argument("--link", choices=LINK_MODES, default="copy",
                        help="how images get into images/: copy (default), hardlink or symlink")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    parser.add_argument("--group-similar", action="store_true",
                        help="find likely same-lesion images (two photographs of one lesion; the embedding-similarity "
                             "search of `dermbench audit`) and keep each group of them in one split; for datasets "
                             "without patient or lesion ids. Recorded in dataset.json (group_similar)")
    parser.add_argument("--similar-backbone", default=None, metavar="NAME",
                        help="backbone of --group-similar (default efficientnet_lite0_imagenet, offline weights)")
    parser.add_argument("--similar-threshold", type=float, default=None, metavar="COS",
                        help="cosine similarity at or above which --group-similar joins two images (default: the "
                             "audit's calibrated value)")
    parser.add_argument("--device", default="auto", help="device of the --group-similar backbone (auto, cpu, cuda ...)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "prepare", help=HELP,
        description=HELP + ". Run `dermbench prepare SOURCE --help` for a source's own options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="sources:\n" + _source_lines(),
    )
    parser.add_argument("source", help="dataset source name (see below)")
    parser.add_argument("args", nargs=argparse.REMAINDER,
                        help="--raw DIR --out DIR [--labels complete|study] [--split grouped|ungrouped] [--seed S] "
                             "[--premalignant POLICY] [source options]")
    parser.set_defaults(func=run)
    return parser


def source_parser(name: str) -> argparse.ArgumentParser:
    from ..data.sources import SOURCES

    entry = SOURCES.entry(name)
    cls = entry.load()
    from .main import OneLineErrorParser

    parser = OneLineErrorParser(
        prog=f"dermbench prepare {entry.name}",
        description=f"{entry.description}. Licence: {entry.meta.get('licence', '?')}. {entry.meta.get('url', '')}\n\n"
                    + (cls.__module__ and (sys.modules[cls.__module__].__doc__ or "")),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(parser)
    cls.add_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..data.sources import SOURCES
    from ..data.sources.prepare import prepare
    from ..data.splits import parse_ratios
    from ..errors import DermbenchError, UsageError

    parser = source_parser(args.source)  # an unknown source: the CLI prints the did-you-mean error
    opts = parser.parse_args(args.args)
    if opts.quiet:  # -q after the source name is the command's own option: quiet everything, as before it
        from ..utils.console import configure

        configure(quiet=True)
    entry = SOURCES.entry(args.source)
    common = {"raw", "out", "seed", "premalignant", "labels", "split", "ratios", "link", "overwrite", "quiet",
              "group_similar", "similar_backbone", "similar_threshold", "device"}
    options = {k: v for k, v in vars(opts).items() if k not in common}
    if not opts.group_similar and (opts.similar_backbone or opts.similar_threshold is not None):
        raise UsageError("--similar-backbone/--similar-threshold apply to --group-similar; add --group-similar")
    search = None
    if opts.group_similar:
        from ..data.similarity import DEFAULT_BACKBONE, DEFAULT_THRESHOLD
        from ..paradigms.probe.similarity import similarity_search
        from ..utils.console import is_quiet

        threshold = DEFAULT_THRESHOLD if opts.similar_threshold is None else opts.similar_threshold
        if not 0.0 < threshold <= 1.0:
            raise UsageError(f"--similar-threshold {threshold}: a cosine similarity in (0, 1]")
        search = similarity_search(opts.similar_backbone or DEFAULT_BACKBONE, threshold=threshold, device=opts.device,
                                   progress=not (opts.quiet or is_quiet()))
    try:
        prepare(entry.name, opts.raw, opts.out, seed=opts.seed, premalignant=opts.premalignant, labels=opts.labels,
                split=opts.split, link=opts.link,
                overwrite=opts.overwrite, ratios=parse_ratios(opts.ratios) if opts.ratios else None,
                options=options, quiet=opts.quiet, group_similar=search)
    except DermbenchError:
        raise
    except (FileExistsError, ValueError, OSError) as exc:  # an existing --out, a bad --ratios, an unreadable file
        raise UsageError(str(exc)) from exc
    return 0
