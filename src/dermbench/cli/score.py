"""``dermbench score``: strictly validate a predictions CSV and score it against ground truth."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import UsageError, quote
from ..runs.bounds import N_BOOT_MAX
from .cells import n_boot_arg, seed_arg


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("score", help="validate and score a predictions CSV against a dataset split",
                       description="Validate a predictions file (columns img_id,p_malignant) as strictly as the "
                                   "ISIC challenge scorer — duplicate, missing or extra ids, NaN, values outside "
                                   "[0, 1] — then print every metric with bootstrap 95% CIs.")
    p.add_argument("predictions", help="CSV with img_id and p_malignant columns")
    p.add_argument("--truth", required=True, help="dataset folder (contract layout) holding the ground truth")
    p.add_argument("--split", default="test", help="split to score against (default: test)")
    p.add_argument("--threshold", type=float, default=0.5, help="operating threshold on p_malignant (default 0.5)")
    p.add_argument("--n-boot", type=n_boot_arg, default=1000,
                   help=f"bootstrap replicates for CIs (default 1000; 0 = none; at most {N_BOOT_MAX})")
    p.add_argument("--seed", type=seed_arg, default=0, help="bootstrap seed")
    p.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..data.contract import load_dataset
    from ..runs.score import read_predictions_csv, score_frame, validate_against_truth

    if not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold must lie in [0, 1], got {args.threshold}")
    ds = load_dataset(args.truth, splits=(args.split,), check_images=False, quiet=True)
    excluded = {e.img_id: e for e in ds.exclusions if e.split == args.split}
    frame = validate_against_truth(read_predictions_csv(args.predictions), ds.split(args.split),
                                   where=str(args.predictions), excluded=excluded)
    result = score_frame(frame, threshold=args.threshold, n_boot=args.n_boot, seed=args.seed)
    not_scored = frame.attrs.get("not_scored") or {}
    if not_scored:
        result["not_scored"] = not_scored
    print(format_metrics(result))
    if not_scored:
        first, reason = next(iter(not_scored.items()))
        print(f"note: {len(not_scored)} prediction(s) not scored: the dataset excluded those images from "
              f"{args.split} when it was loaded (e.g. {quote(first)}: {reason}); `dermbench validate "
              f"{args.truth}` lists every exclusion")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def format_metrics(result: dict) -> str:
    lines = [f"n={result['n']} ({result['n_malignant']} malignant, {result['n_benign']} benign)  "
             f"threshold={result['threshold']:.4g}  CIs: {result.get('bootstrap', {}).get('unit', 'image')} bootstrap"]
    for name, m in result["metrics"].items():
        v = m.get("value")
        if v is None:
            reason = result.get("undefined", {}).get(name, "undefined")
            lines.append(f"  {name:<20} undefined ({reason})")
            continue
        lo, hi = m.get("ci_low"), m.get("ci_high")
        ci = f"  [{lo:.4f}, {hi:.4f}]" if lo is not None and hi is not None else ""
        lines.append(f"  {name:<20} {v:.4f}{ci}")
    c = result.get("confusion", {})
    if c:
        lines.append(f"  confusion            tn={c.get('tn')} fp={c.get('fp')} fn={c.get('fn')} tp={c.get('tp')}")
    return "\n".join(lines)
