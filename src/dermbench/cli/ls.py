"""``dermbench ls``: list what dermbench knows (models by kind, heads, sources, prompt sets, ...)."""

from __future__ import annotations

import argparse

from ..plugins import LISTINGS, MODEL_LISTINGS, get_registry


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("ls", help="list models (finetune, backbones, zeroshot), heads, dataset sources, prompt sets",
                       description="List the models and plugins dermbench knows, without importing any backend. "
                                   "[paper] marks what the MICCAI 2026 study used.")
    p.add_argument("kind", nargs="?", choices=list(LISTINGS), help="list only this kind")
    p.add_argument("--verbose", "-v", action="store_true", help="show where each entry comes from and its metadata")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    for kind in [args.kind] if args.kind else list(LISTINGS):
        if kind in MODEL_LISTINGS:
            _list_models(kind, MODEL_LISTINGS[kind], args.verbose)
        else:
            _list_registry(kind, args.verbose)
        print()
    return 0


def _list_models(listing: str, kinds: tuple[str, ...], verbose: bool) -> None:
    from ..models import catalog, prefixes

    specs = [spec for spec in catalog().values() if any(k in spec.kinds for k in kinds)]
    print(f"{listing} ({len(specs)} named; more by prefix)")
    width = max([len(s.name) for s in specs] + [24]) + 2
    for spec in sorted(specs, key=lambda s: s.name):
        used = [k for k in kinds if k in spec.kinds]
        flag = "[paper]" if any(k in spec.study_kinds for k in used) else ""
        kind_tag = f"({'dual' if 'dual_encoder' in used else 'generative'}) " if len(kinds) > 1 else ""
        print(f"  {spec.name:<{width}}{flag:<8}{kind_tag}{spec.description}")
        if verbose:
            details = {"kinds": ", ".join(spec.kinds), "framework": spec.framework, "model_id": spec.model_id,
                       "weights": spec.default_weights if spec.default_weights != "default" else None,
                       "source": spec.source, "licence": spec.licence, "extra": spec.extra,
                       "options": spec.options or None, "note": spec.note or None}
            for key, value in details.items():
                if value is not None:
                    print(f"  {'':<{width}}  {key}: {value}")
    kind = "zeroshot" if len(kinds) > 1 else kinds[0]
    print("  by prefix:")
    for prefix in prefixes(kind):
        print(f"  {prefix.prefix + ':<model>':<{width}}{'':<8}{prefix.description} (e.g. {prefix.example})")


def _list_registry(kind: str, verbose: bool) -> None:
    reg = get_registry(kind)
    print(f"{kind} ({len(reg)})")
    for entry in reg:
        desc = f"  {entry.description}" if entry.description else ""
        print(f"  {entry.name:<32}{desc}")
        if verbose:
            print(f"  {'':<32}  -> {entry.target}")
            for k, v in entry.meta.items():
                print(f"  {'':<32}  {k}: {v}")
