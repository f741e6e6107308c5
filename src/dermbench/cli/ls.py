"""``dermbench ls``: list what is registered (models, heads, sources, prompt sets, ...)."""

from __future__ import annotations

import argparse

from ..plugins import REGISTRIES, get_registry


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("ls", help="list registered models, backbones, heads, dataset sources, prompt sets",
                       description="List the plugins dermbench knows, without importing any backend.")
    p.add_argument("kind", nargs="?", choices=list(REGISTRIES), help="list only this registry")
    p.add_argument("--verbose", "-v", action="store_true", help="show the target and metadata of each entry")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    kinds = [args.kind] if args.kind else list(REGISTRIES)
    for kind in kinds:
        reg = get_registry(kind)
        print(f"{kind} ({len(reg)})")
        for entry in reg:
            desc = f"  {entry.description}" if entry.description else ""
            print(f"  {entry.name:<32}{desc}")
            if args.verbose:
                print(f"  {'':<32}  -> {entry.target}")
                for k, v in entry.meta.items():
                    print(f"  {'':<32}  {k}: {v}")
        print()
    return 0
