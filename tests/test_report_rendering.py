"""The report as a reader sees it (issue 15): realistic model names, a model with AUROC 0, one
modality only; the page is rendered in headless Chromium and what can be checked is checked:
tables fit the page, plot labels stay distinct, a zero bar is drawn, legends stay off the axes,
single-valued subgroups are not plotted."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

import test_runner_fake_plugin  # noqa: F401  (registers the "fake" paradigm)
from dermbench.report import plots

#: names as a real grid makes them: two weights variants that differ only in the middle
MODELS = {"timm:efficientnet_lite0+weights-random+balanced_aug+study": 0.4,
          "timm:efficientnet_lite0+weights-imagenet+balanced_aug+study": 2.0,
          "hf:facebook/dinov2-small+logreg+power+undersample-min_class": 1.5,
          "open_clip:hf-hub:timm/ViT-B-16-SigLIP-512+derm_ensemble": 1.0,
          "inverted": -8.0}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    from dermbench.data.synth import make_synthetic_dataset
    from dermbench.report import ReportOptions, build_report
    from dermbench.runner.config import parse_config
    from dermbench.runner.executors import run_cells
    from dermbench.runner.grid import expand_grid

    base = tmp_path_factory.mktemp("render")
    make_synthetic_dataset(base / "data" / "ham10000_study", n=700, size=32, seed=0, progress=False,
                           modality="clinical")
    raw = {"experiment": "real", "data_root": str(base / "data"), "datasets": ["ham10000_study"], "seeds": [1],
           "n_boot": 30, "imports": ["test_runner_fake_plugin"],
           "grid": [{"paradigm": "fake", "models": list(MODELS),
                     "model_settings": {m: {"skill": s} for m, s in MODELS.items()}}]}
    run_cells(expand_grid(parse_config(raw)), base / "runs")
    captured: dict[str, object] = {}
    real_save = plots._save

    def keep(fig, path):  # the figures, to inspect their artists after drawing
        fig.canvas.draw()
        captured[path.name] = {"fig": fig, "texts": [t.get_text() for ax in fig.axes for t in ax.texts],
                               "ticks": [t.get_text() for ax in fig.axes for t in ax.get_yticklabels()],
                               "legend_off_axes": all(_apart(ax) for ax in fig.axes)}
        return real_save(fig, path)

    mp = pytest.MonkeyPatch()
    mp.setattr(plots, "_save", keep)
    try:
        report = build_report(base / "runs", base / "report", ReportOptions(quiet=True, max_thumbs=4, top_k=5))
    finally:
        mp.undo()
    return report, captured


def _apart(ax) -> bool:
    """The axes' legend (if any) does not overlap the plotting area."""
    legend = ax.get_legend()
    if legend is None:
        return True
    return not legend.get_window_extent().overlaps(ax.get_window_extent())


def test_plot_labels_of_two_variants_stay_distinct():
    names = [f"probe/{m}" for m in MODELS]
    labels = plots.plot_labels(names)
    assert len(set(labels)) == len(labels)
    # names longer than any label, differing only in the middle: never truncated to the same text
    long = [f"probe/{'x' * 60}+weights-{w}+{'y' * 60}" for w in ("random", "imagenet")]
    short = plots.plot_labels(long, width=20, max_lines=2)
    assert short[0] != short[1] and "random" in short[0].replace("\n", "") and "imagenet" in short[1].replace("\n", "")


def test_figures_label_zero_and_keep_legends_off_the_axes(rendered):
    report, captured = rendered
    bars = captured["bars__ham10000_study.png"]
    ticks = [t.replace("\n", "") for t in bars["ticks"]]
    assert "fake/inverted" in ticks and len(set(ticks)) == len(MODELS)
    assert any("random" in t for t in ticks) and any("imagenet" in t for t in ticks)
    assert "0.000" in bars["texts"]  # AUROC 0: a number and a marker where no bar can be seen
    roc = captured["roc__ham10000_study.png"]
    assert roc["legend_off_axes"], "the ROC legend covers the curves"
    assert "reliability__ham10000_study.png" in captured  # 700 images: >= 50 test images
    drawn = [name for name in captured if name.startswith("subgroups__")]
    assert drawn and not any("modality" in name for name in drawn)  # one modality: not plotted
    assert all(captured[name]["legend_off_axes"] for name in drawn)
    index = report.index.read_text()
    assert "modality (one value: clinical" in index


@pytest.mark.slow
def test_index_renders_and_its_tables_fit_the_page(rendered, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    report, _captured = rendered
    # a copy of the page that writes what it measured into its title: every table's scroll width
    # against its visible width (tables scroll sideways when they do not fit), and the page's own
    probe = report.out / "measure.html"
    script = ("<script>window.onload=function(){var t=[].slice.call(document.querySelectorAll('table'))"
              ".map(function(x){return [x.scrollWidth,x.clientWidth,(x.previousElementSibling||{}).textContent||'']});"
              "document.title=JSON.stringify({tables:t,page:[document.documentElement.scrollWidth,window.innerWidth]});}"
              "</script></body>")
    probe.write_text(report.index.read_text().replace("</body>", script))
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tempfile.mkdtemp()}",
             "--window-size=1280,4000"]
    dom = subprocess.run(flags + ["--virtual-time-budget=3000", "--dump-dom", probe.as_uri()], capture_output=True,
                         text=True, timeout=120).stdout
    measured = json.loads(dom.split("<title>", 1)[1].split("</title>", 1)[0].replace("&quot;", '"'))
    page_width, window = measured["page"]
    assert page_width <= window, "the page scrolls sideways"
    best = next(t for t in measured["tables"] if t[2].startswith("Best model per dataset"))
    assert best[0] <= best[1] + 1, f"the best-model table overflows: {best}"
    shot = tmp_path / "index.png"
    subprocess.run(flags + [f"--screenshot={shot}", report.index.as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    with Image.open(shot) as im:
        colours = im.convert("RGB").resize((50, 50)).getcolors(5000)
    assert colours is not None and len(colours) > 20  # a rendered page, not a blank one
    Path(report.out / "measure.html").unlink()
