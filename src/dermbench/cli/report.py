"""``dermbench report RUNS --out DIR``: tables, plots and a self-contained ``index.html``."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "report", help="build tables, plots and index.html from a runs folder",
        description="Read every complete cell under RUNS and write: results.csv (cell x split x metric with CI "
                    "bounds), leaderboards per dataset (markdown), metric_matrix__<metric>.csv and "
                    "overall_best_by_<metric>.csv, plots, paired DeLong tables, an error-analysis page per run "
                    "and index.html (opens offline).")
    p.add_argument("runs", help="runs folder (the runs_root of `dermbench run`)")
    p.add_argument("--out", default="report", help="report folder (default: ./report)")
    p.add_argument("--metric", default="auroc", help="metric to rank by (default auroc)")
    p.add_argument("--split", default="test", choices=("test", "validation"), help="split to rank on (default test)")
    p.add_argument("--top-k", type=int, default=5, help="models per dataset in DeLong, ROC and reliability (default 5)")
    p.add_argument("--no-error-pages", action="store_true", help="skip the error-analysis pages and thumbnails")
    p.add_argument("--max-thumbs", type=int, default=24, help="thumbnails per kind of error and page (default 24)")
    p.add_argument("--small-n", type=int, default=100, metavar="N",
                   help="mark results whose test set has fewer images than this as small (default 100)")
    p.add_argument("--small-positives", type=int, default=20, metavar="N",
                   help="... or fewer malignant (or benign) images than this (default 20)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..report import ReportOptions, build_report
    from ..utils.console import get_logger, is_quiet

    if args.top_k < 1 or args.max_thumbs < 0:
        raise UsageError(f"--top-k must be 1 or more and --max-thumbs 0 or more (got {args.top_k}, {args.max_thumbs})")
    if args.small_n < 0 or args.small_positives < 0:
        raise UsageError(f"--small-n and --small-positives must be 0 or more (got {args.small_n}, {args.small_positives})")
    options = ReportOptions(metric=args.metric, split=args.split, top_k=args.top_k,
                            error_pages=not args.no_error_pages, max_thumbs=args.max_thumbs, quiet=is_quiet(),
                            small_n=args.small_n, small_positives=args.small_positives)
    report = build_report(args.runs, args.out, options)  # a runs folder or metric it cannot use: UsageError
    print(f"report of {report.n_cells} cell(s) ({report.n_incomplete} failed or partial): {report.index}")
    if report.n_cells == 0:  # a page of failures only: not a result (exit 1, as `run` with a failed cell)
        get_logger("report").warning(f"no complete cell under {args.runs}: the report lists only the "
                                     f"{report.n_incomplete} failed, partial or corrupt one(s); re-run them "
                                     f"(`dermbench run CONFIG`)")
        return 1
    return 0
