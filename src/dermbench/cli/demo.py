"""``dermbench demo``: synthetic data -> finetune, probe, zeroshot -> report, offline, in minutes.

Driven by the packaged ``configs/demo.yaml`` (or ``--config``). Cells whose model weights are not
on this machine (a dual encoder offline) are not failures of the demo: they are listed as skipped,
with what to download to enable them, and left out of the report.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

from .cells import positive_int


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo", help="synthetic dataset -> all three paradigms with small models -> report (offline)",
        description="The embedded default: draw a seeded synthetic lesion dataset, run configs/demo.yaml "
                    "(finetune EfficientNet-Lite0, probe EfficientNet-Lite0 + handcrafted features with a few "
                    "heads, zeroshot where weights are available offline) and build the report. A few "
                    "minutes on a 2-core CPU (about 3), with progress per cell; re-running skips what is "
                    "complete.")
    p.add_argument("--out", default="dermbench-demo", help="folder for datasets/, runs/ and report/ "
                                                            "(default ./dermbench-demo)")
    p.add_argument("--config", default="demo", help="run config to use (default: the packaged demo.yaml)")
    p.add_argument("--workers", type=positive_int, default=1, help="local worker processes (default 1)")
    p.add_argument("--force", action="store_true", help="redo every cell")
    p.set_defaults(func=run)
    return p


def _missing_weights(error: str) -> str:
    """What is missing, from ``WeightsNotFoundError: the Hugging Face model 'org/name': not in ...``."""
    return error.split(":", 1)[-1].split(":", 1)[0].strip() or "see the console"


def run(args: argparse.Namespace) -> int:
    from ..report import ReportOptions, build_report
    from ..runner.config import load_config
    from ..runner.executors import run_cells
    from ..runner.grid import expand_grid
    from ..utils.console import is_quiet
    from .run import prepare_datasets

    quiet = is_quiet()
    t0 = time.perf_counter()
    out = Path(args.out).absolute()
    config = load_config(args.config)
    data_root, runs_root, report_dir = out / "datasets", out / "runs", out / "report"
    config.data_root = str(data_root)

    print(f"[1/3] dataset(s) under {data_root}", flush=True)
    paths = config.dataset_paths()
    prepare_datasets(config, paths, needed=set(paths), quiet=quiet)

    cells = expand_grid(config, quiet=quiet)
    print(f"[2/3] {len(cells)} cell(s) of experiment {config.experiment!r} -> {runs_root}", flush=True)
    counter = [0]

    def progress(result) -> None:
        counter[0] += 1
        key = result.spec.key
        status = result.status
        if status == "failed" and result.missing_weights:
            status = "no weights"
        extra = f" ({result.seconds:.1f}s)" if result.status != "skipped" else " (already complete)"
        print(f"      [{counter[0]}/{len(cells)}] {status:<10} {key}{extra}  "
              f"[{time.perf_counter() - t0:.0f}s elapsed]", flush=True)

    summary = run_cells(cells, runs_root, workers=args.workers, force=args.force, imports=config.imports,
                        on_result=progress)

    skipped = [r for r in summary.failed if r.missing_weights]
    failed = [r for r in summary.failed if not r.missing_weights]
    for r in skipped:  # no results, only the demo's own record of a missing download: keep the report clean
        shutil.rmtree(r.path, ignore_errors=True)

    print(f"[3/3] report -> {report_dir}", flush=True)
    notes = [f"Skipped {r.spec.paradigm}/{r.spec.label}: its weights ({_missing_weights(r.error)}) are not on "
             f"this machine and there is no network. Download them once (see the message `dermbench demo` "
             f"printed) and re-run the demo." for r in skipped]
    report = build_report(runs_root, report_dir, ReportOptions(quiet=quiet, notes=notes))

    print("")
    print(f"demo finished in {time.perf_counter() - t0:.0f}s: {summary.count('done')} cell(s) run, "
          f"{summary.count('skipped')} already complete, {len(skipped)} skipped (weights not available offline), "
          f"{len(failed)} failed")
    if skipped:
        print("skipped - these need model weights that are not on this machine:")
        for r in skipped:
            reason = r.error.split(":", 1)[-1].strip().splitlines()[0]
            print(f"  {r.spec.paradigm}/{r.spec.label}: {reason}")
        print("  to enable them: download the weights once with network access (or point the block's "
              "settings.weights at a local copy in a copy of configs/demo.yaml, passed with --config), "
              f"then re-run `dermbench demo --out {out}`; completed cells are skipped.")
    for r in failed:
        print(f"  FAILED {r.spec.paradigm}/{r.spec.label}: {r.error.splitlines()[0] if r.error else ''} "
              f"(details: {r.path / 'error.txt'})")
    predict_example(summary.results, out / "predict", quiet=quiet)
    print(f"report: {report.index}")
    print(f"open it with: xdg-open {report.index}   (or any browser; it needs no network)")
    return 1 if failed else 0


def predict_example(results: list[Any], folder: Path, *, quiet: bool = False) -> Path | None:
    """``dermbench predict`` on new images: the first complete probe (else finetune) cell, preferably
    one evaluated on another dataset, scores that dataset's test images copied into a folder of
    their own (the way new photos would arrive). Returns the predictions CSV (None without a cell)."""
    import pandas as pd

    from ..runs.predict import predict_images
    from ..utils.atomic import atomic_write_text

    done = [r for r in results if r.status in ("done", "skipped") and r.spec.paradigm in ("probe", "finetune")
            and r.spec.identity.curve_axis is None]
    if not done:
        return None
    done.sort(key=lambda r: (not r.spec.eval_datasets, r.spec.paradigm != "probe"))
    cell = done[0].spec
    source = Path(cell.eval_datasets[0] if cell.eval_datasets else cell.dataset)
    images = folder / f"new_images_{source.name}"
    test = pd.read_csv(source / "test_metadata.csv", dtype={"img_id": str})
    images.mkdir(parents=True, exist_ok=True)
    for img_id in test["img_id"]:
        target = images / Path(img_id).name
        if not target.exists():
            shutil.copyfile(source / "images" / img_id, target)
    path = done[0].path
    result = predict_images(path, [str(images)], progress=not quiet)
    csv = folder / "predictions.csv"
    atomic_write_text(csv, result.frame.to_csv(index=False, lineterminator="\n"))
    counts = result.frame["decision"].value_counts()
    print(f"predict: {len(result.frame)} new image(s) ({source.name} test photos) scored by "
          f"{cell.paradigm}/{cell.label} trained on {cell.dataset_name}: {int(counts.get('malignant', 0))} malignant, "
          f"{int(counts.get('benign', 0))} benign at its operating threshold {result.threshold:.3g} -> {csv}"
          + (f"; {len(result.unreadable)} unreadable" if len(result.unreadable) else ""))
    print(f"  the same from the command line: dermbench predict {path} {images} --out {csv}")
    return csv
