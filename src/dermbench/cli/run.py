"""``dermbench run CONFIG.yaml``: expand the grid and run every cell that is not complete."""

from __future__ import annotations

import argparse
import fnmatch
import sys
from pathlib import Path

from .cells import check_cell_folders, positive_int


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "run", help="run a grid of cells (datasets x models x seeds) from a YAML config",
        description="Expand a YAML run config into cells (paradigm x model x variant x dataset x seed) and "
                    "run each one that is not complete yet. Complete cells are skipped, failed or partial "
                    "ones are redone (so are complete ones recorded with other settings, threshold policy or "
                    "n_boot); a failing cell is recorded (error.txt), the grid goes on, and the exit status "
                    "is 1. "
                    "Packaged configs: demo, paper (e.g. `dermbench run configs/paper.yaml --dry-run`).")
    p.add_argument("config", help="run config YAML (or the name of a packaged config: demo, paper)")
    p.add_argument("--runs", help="runs folder (default: the config's runs_root)")
    p.add_argument("--data-root", help="folder that relative dataset paths are taken from "
                                       "(default: the config's data_root, else the working directory)")
    p.add_argument("--executor", choices=("local", "ray"), help="where cells run (default: the config's)")
    p.add_argument("--workers", type=positive_int, help="local worker processes (1 = in this process)")
    p.add_argument("--address", help="Ray address: auto, ray://HOST:10001, or local (start one here)")
    p.add_argument("--force", action="store_true", help="redo complete cells too")
    p.add_argument("--dry-run", action="store_true", help="list the cells and their state; run nothing")
    add_var_argument(p)
    p.add_argument("--only", action="append", default=[], metavar="GLOB",
                   help="run only cells whose key paradigm/label/dataset/seedK matches (repeatable), "
                        "e.g. 'finetune/resnet18+*/*/*' (labels as in --dry-run's path column)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..runner.config import load_config
    from ..utils.console import is_quiet

    config = load_config(args.config, parse_variables(args.var))  # ConfigError: one message naming every problem
    return run_config(config, runs=args.runs, data_root=args.data_root, executor=args.executor,
                      workers=args.workers, address=args.address, force=args.force, dry_run=args.dry_run,
                      only=args.only, quiet=is_quiet())


def add_var_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                   help="set a variable the config declares under `variables:` (repeatable), e.g. "
                        "--var study_repo=~/derm-bench for configs/paper.yaml")


def parse_variables(items: list[str]) -> dict[str, str]:
    """``--var NAME=VALUE`` items as a mapping; a malformed or repeated item is a UsageError."""
    from ..errors import UsageError

    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--var expects NAME=VALUE (e.g. --var study_repo=~/derm-bench), got {item!r}")
        if name.strip() in out:
            raise UsageError(f"--var gives {name.strip()!r} twice")
        out[name.strip()] = value
    return out


def run_config(config, *, runs: str | None = None, data_root: str | None = None, executor: str | None = None,
               workers: int | None = None, address: str | None = None, force: bool = False,
               dry_run: bool = False, only: list[str] | None = None, quiet: bool = False) -> int:
    """Run (or list) a validated config; returns the exit status (1 when a cell failed)."""
    from ..runner.executors import run_cells
    from ..runner.grid import expand_grid
    from ..errors import UsageError

    runs_root = Path(runs or config.runs_root).absolute()
    cells = expand_grid(config, data_root=data_root, quiet=quiet)
    if only:
        cells = [c for c in cells if any(fnmatch.fnmatch(c.key, pat) for pat in only)]
        if not cells:
            raise UsageError(f"--only {only} matches no cell of the grid")
    paths = config.dataset_paths(data_root)
    kind = executor or config.executor.kind
    n_workers = workers or config.executor.workers

    if dry_run:
        from ..runner.executors import _local_gpus
        from ..runner.placement import place_cells

        gpus = _local_gpus(cells)  # under Ray the cluster's GPUs decide at run time; this machine's stand in
        place_cells(cells, executor=kind, workers=n_workers, gpus=len(gpus))
        print_plan(config, cells, runs_root, paths)
        print(f"placement ({kind}{f', {n_workers} workers' if kind == 'local' and n_workers > 1 else ''}): "
              f"{len(gpus)} CUDA GPU(s) {'on this machine' if kind == 'local' else 'here (the Ray cluster decides)'}; "
              f"device = what each cell runs on, cpus/gpus = what it asks for")
        return 0

    check_cell_folders(runs_root, [c.spec for c in cells])
    needed = {c.spec.dataset_name for c in cells}
    needed |= {Path(t).name for c in cells for t in c.spec.eval_datasets}  # transfer targets
    prepare_datasets(config, paths, needed=needed, quiet=quiet)
    where = kind if kind == "ray" else (f"local, {n_workers} worker processes" if n_workers > 1 else "local, in process")
    print(f"experiment {config.experiment!r}: {len(cells)} cell(s) -> {runs_root} ({where})", flush=True)

    done = [0]

    def progress(result) -> None:
        done[0] += 1
        key = result.spec.key
        extra = f" ({result.seconds:.1f}s)" if result.status != "skipped" else ""
        line = f"[{done[0]}/{len(cells)}] {result.status:<7} {key}{extra}"
        if result.status == "failed":
            line += f": {result.error.splitlines()[0] if result.error else ''}"
        print(line, flush=True)

    summary = run_cells(cells, runs_root, executor=kind, workers=n_workers,
                        address=address or config.executor.address, force=force, imports=config.imports,
                        on_result=progress)
    print(summary.format(), flush=True)
    print(f"next: dermbench report {runs_root} --out report", flush=True)
    return 1 if summary.failed else 0


def print_plan(config, cells, runs_root: Path, paths: dict[str, Path]) -> None:
    from collections import Counter

    from ..runner.grid import grid_table
    from ..runs.transfer import transfer_dir, transfer_status, transfer_targets

    rows = grid_table(cells, runs_root)
    print(f"experiment {config.experiment!r}: {len(rows)} cell(s); runs folder {runs_root}")
    header = ("paradigm", "model", "variant", "dataset", "seed", "device", "cpus", "gpus", "state")
    widths = [max([len(h)] + [len(str(r[k])) for r in rows]) for h, k in
              zip(header, ("paradigm", "model", "variant", "dataset", "seed", "device", "num_cpus", "num_gpus",
                           "state"))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        values = (r["paradigm"], r["model"], r["variant"] or "-", r["dataset"], r["seed"], r["device"],
                  f"{r['num_cpus']:g}", f"{r['num_gpus']:g}", r["state"])
        print("  ".join(str(v).ljust(w) for v, w in zip(values, widths)))
    by_paradigm = Counter(r["paradigm"] for r in rows)
    by_state = Counter(r["state"] for r in rows)
    print("cells per paradigm: " + ", ".join(f"{k} {v}" for k, v in by_paradigm.items()))
    print("state: " + ", ".join(f"{k} {v}" for k, v in sorted(by_state.items())))
    statuses = [(transfer_dir(c.spec.path(runs_root), t), *transfer_status(c.spec.path(runs_root), t))
                for c in cells for t in transfer_targets(c.spec)]
    transfers = Counter(state for _, state, _ in statuses)
    if transfers:
        print(f"transfer evaluations (eval_datasets): {sum(transfers.values())}; "
              + ", ".join(f"{k} {v}" for k, v in sorted(transfers.items())))
    redone = [(r["path"], "; ".join(r["why"])) for r in rows if r["why"]]
    redone += [(folder, why) for folder, state, why in statuses if state in ("stale", "corrupt")]
    if redone:
        print("redone on run:")
        for path, why in redone:
            print(f"  {path}: {why}")
    missing = [f"{name} ({p})" for name, p in paths.items() if not p.is_dir()]
    if missing:
        synth = {d.name for d in config.datasets if d.synth}
        notes = [m + (" - created from its synth spec on run" if m.split(" ")[0] in synth else "") for m in missing]
        print("dataset folders not found yet (prepare them with `dermbench prepare` or pass --data-root):\n  "
              + "\n  ".join(notes))


def prepare_datasets(config, paths: dict[str, Path], needed: set[str], quiet: bool = False) -> None:
    """Create synthetic datasets that have a ``synth`` spec; refuse to start when others are missing."""
    from ..errors import UsageError

    missing = []
    for spec in config.datasets:
        if spec.name not in needed:
            continue
        folder = paths[spec.name]
        if folder.is_dir() and any(folder.glob("*_metadata.csv")):
            continue
        if spec.synth is not None:
            from ..data.synth import make_synthetic_dataset

            print(f"creating synthetic dataset {folder} (n={spec.synth.n}, {spec.synth.size}px)", flush=True)
            make_synthetic_dataset(folder, n=spec.synth.n, size=spec.synth.size, seed=spec.synth.seed,
                                   malignant_fraction=spec.synth.malignant_fraction, modality=spec.synth.modality,
                                   progress=not quiet)
        else:
            missing.append(f"{spec.name}: {folder}")
    if missing:
        raise UsageError("dataset folder(s) not found:\n  " + "\n  ".join(missing)
                       + "\nprepare them (`dermbench prepare SOURCE --out DIR`), or point --data-root at the "
                         "folder that holds them")
    sys.stdout.flush()
