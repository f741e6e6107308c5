"""``dermbench validate``: check a dataset folder against the contract, or a run config."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import UsageError
from .run import add_var_argument, parse_variables


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("validate", help="check a dataset folder against the contract, or a run config YAML",
                       description="Validate a dataset folder (every excluded row is listed with its reason; "
                                   "exit 1 when rows are excluded under --strict) or a run configuration "
                                   "(unknown keys, wrong types and unknown model names are errors).")
    p.add_argument("paths", nargs="+", help="dataset folders and/or config .yaml files")
    p.add_argument("--strict", action="store_true", help="fail when any row would be excluded")
    p.add_argument("--no-image-check", action="store_true", help="do not decode images (faster, misses corrupt files)")
    p.add_argument("--write-card", action="store_true", help="(re)write dataset.json with counts, manifest and fingerprint")
    p.add_argument("--json", metavar="FILE", help="also write the exclusions and counts as JSON")
    add_var_argument(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    status = 0
    report = {}
    for raw in args.paths:
        path = Path(raw)
        if path.suffix.lower() in (".yaml", ".yml"):
            from ..runner.config import load_config
            from ..runner.grid import expand_grid

            cells = expand_grid(load_config(path, parse_variables(args.var)))  # also refuses two cells sharing a folder
            print(f"{path}: valid run config ({len(cells)} cell(s))")
            continue
        if not path.is_dir():
            raise UsageError(f"{path} is neither a dataset folder nor a .yaml config")
        status = max(status, _validate_dataset(path, args, report))
    if args.json:
        from ..utils.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    return status


def _validate_dataset(path: Path, args: argparse.Namespace, report: dict) -> int:
    from ..data.contract import load_dataset, write_card

    # --write-card first: it replaces a damaged card, which would otherwise stop the load.
    if args.write_card:
        write_card(path)
    ds = load_dataset(path, check_images=not args.no_image_check, quiet=True)
    print(ds.summary())
    for e in ds.exclusions:
        print(f"  excluded: {e}")
    report[str(path)] = {"counts": ds.counts(), "fingerprint": ds.fingerprint, "warnings": ds.warnings,
                         "exclusions": [e.as_dict() for e in ds.exclusions]}
    if args.write_card:
        print(f"  wrote {path / 'dataset.json'}")
    if args.strict and ds.exclusions:
        print(f"  strict: {len(ds.exclusions)} row(s) would be excluded")
        return 1
    return 0
