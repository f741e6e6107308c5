"""What the single-paradigm commands (``finetune``, ``probe``, ``zeroshot``) share: the cell
options, ``--set KEY=VALUE``, turning options into validated settings, and running + summarising
cells.

The commands declare no setting defaults: an option left out is not passed on, so the paradigm's
settings model (and its presets) supply every default, exactly as for a grid block. Settings are
validated by the paradigm's grid block (:meth:`dermbench.runs.block.GridBlock.validate_settings`)
and the model name is made canonical by the same resolver the grid uses, so a command and a grid
cell with the same settings are the same cell (:func:`dermbench.runs.cell.cell_identity`).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import ConfigError, UsageError, quote
from ..runs.bounds import N_BOOT_MAX
from ..runs.cell import CellSpec

if TYPE_CHECKING:
    from ..runs.block import GridBlock

_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def seed_arg(text: str) -> int:
    """argparse type: a seed, a whole number in 0..``SEED_MAX`` (``--seed -1`` and ``--seed 1e20`` are refused)."""
    from ..runs.bounds import SEED_MAX, seed_problem

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a seed is a whole number in 0..{SEED_MAX}, got {text[:40]!r}") from None
    problem = seed_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def n_boot_arg(text: str) -> int:
    """argparse type: bootstrap replicates, 0..``N_BOOT_MAX`` (0 = no confidence intervals)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= N_BOOT_MAX:
        raise argparse.ArgumentTypeError(f"bootstrap replicates are a whole number in 0..{N_BOOT_MAX} (0 = no "
                                         f"confidence intervals; {N_BOOT_MAX} is the documented maximum), "
                                         f"got {text[:40]!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (e.g. ``--workers``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_eval_dataset_argument(p: argparse.ArgumentParser) -> None:
    """``--eval-dataset``: the trained cell is also evaluated on other datasets (transfer)."""
    p.add_argument("--eval-dataset", nargs="+", default=[], metavar="FOLDER", dest="eval_datasets",
                   help="also evaluate the trained model on these datasets' test splits, without retraining "
                        "(transfer: the cell's own threshold, images it trained on excluded); records go to "
                        "<cell>/transfer/<dataset>/, and a re-run evaluates only datasets not done yet")


def add_cell_arguments(p: argparse.ArgumentParser, *, experiment: str, force_help: str = "redo complete cells") -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="set_values",
                   help="any setting of the paradigm (repeatable; VALUE is read as YAML: 0.1, true, null, [1, 2]); "
                        "dotted keys reach into mappings, e.g. --set head_options.rf_trees=200")
    p.add_argument("--seeds", type=seed_arg, nargs="+", default=[CellSpec.seed],
                   help=f"one cell per seed (default {CellSpec.seed})")
    p.add_argument("--threshold-policy", default=CellSpec.threshold_policy,
                   help=f"operating threshold: fixed:0.5 (the study's), youden, sensitivity:0.9 ... (chosen on "
                        f"validation; default {CellSpec.threshold_policy})")
    p.add_argument("--n-boot", type=n_boot_arg, default=CellSpec.n_boot,
                   help=f"bootstrap resamples for the CIs (default {CellSpec.n_boot}, at most {N_BOOT_MAX})")
    p.add_argument("--device", default=CellSpec.device, help=f"auto, cpu, cuda, cuda:1 ... (default {CellSpec.device})")
    p.add_argument("--runs", default="runs", help="runs root folder (default ./runs)")
    p.add_argument("--experiment", default=experiment, help="experiment name, the first folder under --runs "
                   "(default %(default)s; give a grid's `experiment` to share its cells)")
    p.add_argument("--force", action="store_true", help=force_help)
    p.add_argument("--strict", action="store_true", help="fail on any dataset row that would be excluded")


def parse_set(items: list[str]) -> dict[str, Any]:
    """``--set`` values as a settings mapping: ``KEY=VALUE`` with VALUE parsed as YAML
    (``0.1`` and ``1e-4`` -> float, ``true`` -> bool, ``null`` -> None, ``[1, 2]`` -> list,
    anything else a string); ``a.b=1`` sets key ``b`` of mapping ``a``."""
    import yaml

    from ..errors import quote
    from ..utils.yamlio import load_yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise UsageError(f"--set expects KEY=VALUE (e.g. --set lr=1e-4), got {quote(item)}")
        try:
            value = load_yaml(text) if text.strip() else ""
        except yaml.constructor.ConstructorError as exc:  # a duplicate key or an alias bomb: not plain text
            raise UsageError(f"--set {quote(key)}: {exc}") from None
        except yaml.YAMLError:
            value = text
        if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        *parents, leaf = key.split(".")
        target = out
        for part in parents:
            node = target.setdefault(part, {})
            if not isinstance(node, dict):
                raise UsageError(f"--set {quote(item)}: {part!r} is set to a value and used as a mapping")
            target = node
        if leaf in target:
            raise UsageError(f"--set gives {key!r} twice")
        target[leaf] = value
    return out


def settings_from(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
    """The settings the user gave: ``options`` (setting -> value of its command-line option; None
    = not given) and the ``--set`` values. A setting given both ways is an error."""
    values = {k: v for k, v in options.items() if v is not None}
    extra = parse_set(getattr(args, "set_values", []) or [])
    both = sorted(set(values) & set(extra))
    if both:
        raise UsageError(f"setting(s) {both} given both as an option and with --set; give each once")
    return {**values, **extra}


def validate(block: type[GridBlock], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` validated as the paradigm's settings (defaults filled in); a UsageError otherwise."""
    try:
        return block.validate_settings(values)
    except ConfigError as exc:
        raise UsageError(f"invalid {exc}") from None


def check_threshold_policy(policy: str) -> None:
    from ..metrics import parse_threshold_policy

    try:
        parse_threshold_policy(policy)
    except ValueError as exc:
        raise UsageError(f"--threshold-policy {policy!r}: {exc}") from None


def cell_specs(args: argparse.Namespace, paradigm: str, model: str, settings: list[dict[str, Any]]) -> list[CellSpec]:
    """One :class:`CellSpec` per settings entry and seed, from the shared cell options."""
    if not Path(args.dataset).is_dir():
        raise UsageError(f"dataset folder {args.dataset} does not exist (create one with `dermbench synth --out "
                         f"{args.dataset}` or `dermbench prepare SOURCE --raw DIR --out {args.dataset}`)")
    check_threshold_policy(args.threshold_policy)
    targets = [str(Path(t).absolute()) for t in getattr(args, "eval_datasets", None) or []]
    unique: dict[str, str] = {}
    for target in targets:  # one folder once, however it is written
        unique.setdefault(str(Path(target).resolve()), target)
    targets = list(unique.values())
    missing = [t for t in targets if not Path(t).is_dir()]
    if missing:
        raise UsageError(f"--eval-dataset folder(s) {missing} do not exist")
    check_eval_dataset_names(str(Path(args.dataset).absolute()), targets)
    return [CellSpec(args.experiment, paradigm, model=model, dataset=str(args.dataset), seed=seed, settings=values,
                     threshold_policy=args.threshold_policy, n_boot=args.n_boot, device=args.device,
                     strict=args.strict, quiet=bool(getattr(args, "quiet", False)), eval_datasets=targets)
            for values in settings for seed in args.seeds]


def check_eval_dataset_names(dataset: str, targets: list[str]) -> None:
    """Each evaluation dataset's record goes to ``<cell>/transfer/<folder name>`` and the report names
    datasets by folder: two targets with one folder name would overwrite each other's record (and
    both be evaluated again on every run), and a target named like the training dataset would read
    as its in-domain result. Refused before anything runs."""
    from ..utils.paths import safe_name

    def same(a: str, b: str) -> bool:
        return Path(a).resolve() == Path(b).resolve()

    seen: dict[str, str] = {safe_name(Path(dataset).name): dataset}
    for target in targets:
        if same(target, dataset):
            continue  # its own dataset: in-domain, not a transfer
        name = safe_name(Path(target).name)
        if name in seen and not same(seen[name], target):
            what = "the training dataset" if seen[name] == dataset else "--eval-dataset"
            raise UsageError(f"--eval-dataset {quote(target)} has the folder name {name!r} of {what} "
                             f"{quote(seen[name])}; datasets are told apart by folder name, so rename one")
        seen[name] = target


def check_cell_folders(runs_root: Path, specs: list[CellSpec]) -> None:
    """Refuse, before any cell runs, a runs folder or cache folder that cannot be written and a file
    where a cell's folder goes (a UsageError naming it: one line, exit 2)."""
    from ..utils.paths import cache_root, file_in_the_way, writable_folder

    writable_folder(runs_root, "runs folder")
    writable_folder(cache_root(), "cache folder (DERMBENCH_CACHE)")
    for spec in specs:
        blocking = file_in_the_way(spec.path(runs_root))
        if blocking is not None:
            raise UsageError(f"{blocking} is a file where the folder of cell {spec.key} goes; move it away")


def run_and_summarise(specs: list[CellSpec], args: argparse.Namespace,
                      details: Callable[[dict, Any], str] = lambda metrics, spec: "") -> int:
    """Run each cell (complete ones are skipped unless --force) and print one line per cell:
    status, test AUROC with its CI, paradigm ``details`` and the record's folder."""
    from ..runner.cell import execute_cell
    from ..runs.record import read_metrics

    check_cell_folders(Path(args.runs).absolute(), specs)
    status = 0
    for spec in specs:
        result = execute_cell(spec, args.runs, force=args.force)
        name = f"{spec.label} seed {spec.seed}"
        if result.status == "failed":
            print(f"{name}: FAILED ({result.error}); details in {result.path / 'error.txt'}")  # a result line, like `run`'s
            status = 1
            continue
        metrics = read_metrics(result.path)
        auc = metrics["splits"]["test"]["metrics"]["auroc"]
        value = "n/a" if auc.get("value") is None else f"{auc['value']:.3f}"
        ci = (f" (95% CI {auc['ci_low']:.3f}-{auc['ci_high']:.3f})"
              if auc.get("ci_low") is not None and auc.get("ci_high") is not None else "")
        extra = details(metrics, spec)
        print(f"{name}: {result.status}  test AUROC {value}{ci}{'  ' + extra if extra else ''}  {result.path}")
        for transfer in getattr(result, "transfers", []):
            if transfer.status == "failed":
                print(f"  on {transfer.target}: FAILED ({transfer.error}); details in {transfer.path / 'error.txt'}")
                status = 1
                continue
            print(f"  on {transfer.target}: {transfer.status}  {transfer_line(read_metrics(transfer.path))}  "
                  f"{transfer.path}")
    return status


def transfer_line(metrics: dict) -> str:
    """Test AUROC with its CI, sensitivity/specificity at the training cell's threshold and at the
    oracle threshold, and how many images were excluded as seen in training."""
    from ..data.exclusions import TRANSFER_REASONS

    test = metrics["splits"]["test"]["metrics"]
    auc = test["auroc"]
    text = "test AUROC n/a" if auc.get("value") is None else f"test AUROC {auc['value']:.3f}"
    if auc.get("ci_low") is not None and auc.get("ci_high") is not None:
        text += f" (95% CI {auc['ci_low']:.3f}-{auc['ci_high']:.3f})"

    def sens_spec(m: dict) -> str:
        return "/".join("n/a" if m[k].get("value") is None else f"{m[k]['value']:.2f}"
                        for k in ("sensitivity", "specificity"))

    oracle = ((metrics.get("extra") or {}).get("transfer") or {}).get("oracle") or {}
    text += f"  sens/spec {sens_spec(test)} at threshold {metrics['threshold']['value']:.3g}"
    if oracle.get("splits"):
        text += (f" (oracle {sens_spec(oracle['splits']['test']['metrics'])} at "
                 f"{oracle['threshold']['value']:.3g})")
    seen = sum(n for r, n in (metrics.get("exclusions") or {}).get("by_reason", {}).items() if r in TRANSFER_REASONS)
    return text + f"  {seen} image(s) seen in training excluded"
