"""The report's figures (matplotlib, Agg backend; PNG files in the report folder).

Every function takes frames or records and a target path, draws one figure and returns the path
(or None when there is nothing to draw). Colours encode the paradigm so the three paradigms can be
told apart on every chart.

What is not drawn, and why:

* a **reliability diagram** needs at least :data:`RELIABILITY_MIN_IMAGES` test images, and a bin
  at least :data:`RELIABILITY_MIN_BIN` (fewer is a point drawn from a handful of images);
* a **subgroup bar** needs the subgroup minimum of the run record (``subgroups.min_n``, 30 by
  default) and both classes; an attribute with fewer than two such values (one modality only)
  is not plotted. What was left out is written under the figure.

Labels are model names that can differ anywhere (``+weights-random`` against ``+weights-pypi`` in
the middle of a long name): :func:`plot_labels` wraps them over lines instead of cutting them, and
keeps every label of one figure distinct.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .collect import CellRecord
from .tables import full_data, higher_is_better, rank

PARADIGM_COLOURS = {"finetune": "#1f77b4", "probe": "#2ca02c", "zeroshot": "#d62728"}
_LINESTYLES = {"finetune": "-", "probe": "--", "zeroshot": ":"}
_STYLE_NAMES = {"-": "solid", "--": "dashed", ":": "dotted", "-.": "dash-dot"}
_OTHER_COLOURS = ["#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def colour(paradigm: str) -> str:
    if paradigm in PARADIGM_COLOURS:
        return PARADIGM_COLOURS[paradigm]
    return _OTHER_COLOURS[sum(map(ord, paradigm)) % len(_OTHER_COLOURS)]


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    _plt().close(fig)
    return path


#: fewest test images a reliability diagram is drawn from, and fewest images a bin is drawn from
RELIABILITY_MIN_IMAGES = 50
RELIABILITY_MIN_BIN = 5
#: the subgroup minimum when a record does not state its own (runs.evaluate's default)
SUBGROUP_MIN_N = 30


def _short(text: str, n: int = 48) -> str:
    """Shorten in the middle (for titles; figure labels go through :func:`plot_labels`)."""
    if len(text) <= n:
        return text
    head = (n - 1) // 2
    return text[:head] + "…" + text[len(text) - (n - 1 - head):]


def _wrap(text: str, width: int) -> list[str]:
    """``text`` over lines of at most ``width`` characters, broken after ``+ / : _ -`` where possible."""
    lines: list[str] = []
    rest = text
    while len(rest) > width:
        cut = max(rest.rfind(sep, 0, width) for sep in "+/:_-")
        cut = cut + 1 if cut >= width // 3 else width
        lines.append(rest[:cut])
        rest = rest[cut:]
    return lines + [rest] if rest else lines


def plot_labels(names: list[str], width: int = 40, max_lines: int = 3) -> list[str]:
    """Figure labels for ``names``: each wrapped over at most ``max_lines`` lines of ``width``
    characters; a name longer than that loses characters in the middle of its longest line only if
    the labels stay distinct, else it keeps every character (a long label beats two equal ones)."""
    def label(name: str, lines: int) -> str:
        parts = _wrap(name, width)
        if len(parts) > lines:
            joined = "".join(parts)
            parts = _wrap(_short(joined, width * lines), width)
        return "\n".join(parts)

    out = [label(str(n), max_lines) for n in names]
    if len(set(out)) < len(out):
        seen: dict[str, int] = {}
        for k, text in enumerate(out):
            seen[text] = seen.get(text, 0) + 1
        out = [label(str(n), 99) if seen[text] > 1 else text for n, text in zip(names, out)]
    return out


def bars_with_ci(board: pd.DataFrame, metric: str, title: str, path: Path, max_rows: int = 30) -> Path | None:
    """Horizontal bars of a ranked leaderboard with CI whiskers (best at the top)."""
    board = board[board["value"].notna()].head(max_rows)
    if board.empty:
        return None
    plt = _plt()
    labels = plot_labels(list(board["entry"]))
    lines = max(t.count("\n") + 1 for t in labels)
    fig, ax = plt.subplots(figsize=(9, (0.3 + 0.16 * lines) * len(board) + 1.4))
    y = np.arange(len(board))[::-1]
    values = board["value"].to_numpy(float)
    low = np.where(board["ci_low"].notna(), values - board["ci_low"].to_numpy(float), 0)
    high = np.where(board["ci_high"].notna(), board["ci_high"].to_numpy(float) - values, 0)
    colours = [colour(p) for p in board["paradigm"]]
    ax.barh(y, values, color=colours, alpha=0.85)
    # a value of 0 (or near it) has no visible bar: a marker and the number say it is there
    ax.scatter(values, y, marker="|", s=120, c=colours, zorder=3)
    ax.errorbar(values, y, xerr=[np.clip(low, 0, None), np.clip(high, 0, None)], fmt="none", ecolor="black",
                capsize=3, lw=1)
    for yy, v, hi in zip(y, values, board["ci_high"].to_numpy(float)):
        end = v if np.isnan(hi) else max(v, hi)
        ax.text(end + 0.01, yy, f"{v:.3f}", va="center", fontsize=7)
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlabel(f"{metric} (test, 95% CI)" + ("" if higher_is_better(metric) else " — lower is better"))
    ax.set_title(title, fontsize=10)
    if metric not in ("brier", "ece"):
        ax.set_xlim(0, 1.1)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=colour(p), label=p) for p in dict.fromkeys(board["paradigm"])],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return _save(fig, path)


def heatmap(matrix: pd.DataFrame, metric: str, path: Path, max_cols: int = 60) -> Path | None:
    """Model × dataset heatmap of a metric (rows: entries, columns: datasets)."""
    if matrix.empty:
        return None
    data = matrix.T.iloc[:max_cols]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.2 * data.shape[1] + 4, 0.32 * data.shape[0] + 1.8))
    cmap = "viridis" if higher_is_better(metric) else "viridis_r"
    im = ax.imshow(data.to_numpy(float), aspect="auto", cmap=cmap, vmin=np.nanmin(data.to_numpy(float)),
                   vmax=np.nanmax(data.to_numpy(float)))
    ax.set_xticks(range(data.shape[1]), [_short(str(c), 20) for c in data.columns], rotation=30, ha="right",
                  fontsize=8)
    ax.set_yticks(range(data.shape[0]), plot_labels([str(i) for i in data.index]), fontsize=7)
    for (i, j), v in np.ndenumerate(data.to_numpy(float)):
        if not math.isnan(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if (v - np.nanmin(data.to_numpy(float))) <
                    0.5 * (np.nanmax(data.to_numpy(float)) - np.nanmin(data.to_numpy(float))) else "black")
    fig.colorbar(im, ax=ax, label=f"{metric} (test)")
    ax.set_title(f"{metric} (test, mean over seeds): models × datasets", fontsize=10)
    return _save(fig, path)


def roc_curves(cells: list[CellRecord], title: str, path: Path) -> Path | None:
    """ROC curves of the given cells on their test split, AUROC in the legend."""
    from ..metrics import roc_points, threshold_free

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5.2))
    drawn = []
    labels = plot_labels([c.entry for c in cells], width=60, max_lines=2)
    for c, name in zip(cells, labels):
        pred = c.predictions("test")
        if pred is None or pred["label"].nunique() < 2:
            continue
        y, p = pred["label"].to_numpy(), pred["p_malignant"].to_numpy()
        pts = roc_points(y, p)
        auc = threshold_free(y, p)["auroc"]
        run = f"seed {c.seed}" if c.split_seed is None else f"split {c.split_seed}, seed {c.seed}"
        ax.plot(pts["fpr"], pts["tpr"], lw=1.5, label=f"{name} (AUROC {auc:.3f}, {run})",
                ls=_LINESTYLES.get(c.paradigm, "-."))
        drawn.append(c.paradigm)
    if not drawn:
        plt.close(fig)
        return None
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set_xlabel("1 − specificity (false-positive rate)")
    ax.set_ylabel("sensitivity (true-positive rate)")
    ax.set_title(title, fontsize=10)
    styles = ", ".join(f"{p} {_STYLE_NAMES.get(_LINESTYLES.get(p, '-.'), 'dash-dot')}" for p in dict.fromkeys(drawn))
    # below the axes: a legend inside would cover the curves it names
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.13), title=f"line: {styles}",
              title_fontsize=7, frameon=False)
    return _save(fig, path)


def reliability(cells: list[CellRecord], title: str, path: Path, bins: int = 10,
                min_images: int = RELIABILITY_MIN_IMAGES, min_bin: int = RELIABILITY_MIN_BIN) -> Path | None:
    """Reliability diagrams: observed malignant fraction per p_malignant bin, bin counts as n.

    Cells with fewer than ``min_images`` test images are left out (None when none is left), and so
    is every bin holding fewer than ``min_bin`` images: an observed fraction of 2 images is noise."""
    frames = [(c, c.predictions("test")) for c in cells]
    frames = [(c, f) for c, f in frames if f is not None and len(f) >= min_images]
    if not frames:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(frames), figsize=(3.4 * len(frames) + 0.5, 4.0), squeeze=False)
    titles = plot_labels([c.entry for c, _ in frames], width=34, max_lines=3)
    for ax, (c, f), name in zip(axes[0], frames, titles):
        p, y = f["p_malignant"].to_numpy(float), f["label"].to_numpy(int)
        # the same bins as the ECE in dermbench.metrics: [k/B, (k+1)/B), p = 1 in the last
        idx = np.minimum(np.floor(p * bins).astype(int), bins - 1)
        centres, observed, counts, left_out = [], [], [], 0
        for b in range(bins):
            mask = idx == b
            if mask.sum() >= min_bin:
                centres.append(p[mask].mean())
                observed.append(y[mask].mean())
                counts.append(int(mask.sum()))
            else:
                left_out += int(mask.sum())
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
        ax.plot(centres, observed, marker="o", color=colour(c.paradigm))
        for x, o, n in zip(centres, observed, counts):
            ax.annotate(f"n={n}", (x, o), fontsize=6, xytext=(2, 3), textcoords="offset points")
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(name, fontsize=7)
        ax.set_xlabel("mean p_malignant in bin" + (f"\n({left_out} images in bins of < {min_bin} not drawn)"
                                                   if left_out else ""), fontsize=8)
    axes[0][0].set_ylabel("observed malignant fraction", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def subgroup_values(frames: list[tuple[CellRecord, pd.DataFrame]], attribute: str,
                    min_n: int | None = None) -> tuple[list[str], list[str]]:
    """The values of ``attribute`` drawn as bars — a subgroup of at least ``min_n`` test images
    (the record's own ``subgroups.min_n`` by default) with both classes, in some cell — and a
    description of each value left out (``V-VI (n=6)``)."""
    drawn: dict[str, None] = {}
    left: dict[str, str] = {}
    for c, sub in frames:
        minimum = min_n if min_n is not None else int((c.metrics.get("subgroups") or {}).get("min_n") or SUBGROUP_MIN_N)
        s = _attribute_rows(sub, attribute)
        for _, row in s.iterrows():
            value = str(row["value"])
            big = int(row["n"]) >= minimum and int(row.get("n_malignant", 1)) > 0 and int(row.get("n_benign", 1)) > 0
            if big:
                drawn[value] = None
                left.pop(value, None)
            elif value not in drawn:
                why = f"n={int(row['n'])}" if int(row["n"]) < minimum else "one class"
                left[value] = f"{value} ({why})"
    return list(drawn), list(left.values())


def _attribute_rows(sub: pd.DataFrame, attribute: str) -> pd.DataFrame:
    if "split" in sub.columns:
        return sub[(sub["attribute"] == attribute) & (sub["split"] == "test")]
    return sub[sub["attribute"] == attribute]


def subgroup_plot(frames: list[tuple[CellRecord, pd.DataFrame]], attribute: str, title: str, path: Path,
                  metric: str = "auroc", min_n: int | None = None) -> Path | None:
    """Grouped bars of a subgroup metric per subgroup value, one bar per entry, n on each bar.

    Only subgroups of at least the minimum size with both classes get a bar
    (:func:`subgroup_values`); the others are listed under the figure. None when fewer than two
    values remain (a single modality, or every subgroup too small): one bar per model compares
    nothing the leaderboard does not already show."""
    values, left = subgroup_values(frames, attribute, min_n)
    parts = [(c, _attribute_rows(sub, attribute)) for c, sub in frames]
    parts = [(c, s) for c, s in parts if not s.empty]
    if len(values) < 2 or not parts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(values) * max(1, len(parts)) * 0.5 + 2), 4.0))
    width = 0.8 / len(parts)
    names = plot_labels([c.entry for c, _ in parts], width=44, max_lines=2)
    for k, ((c, s), name) in enumerate(zip(parts, names)):
        s = s.set_index(s["value"].astype(str))
        heights = [_float(s[metric].get(v)) if v in s.index else math.nan for v in values]
        xs = np.arange(len(values)) + k * width
        bars = ax.bar(xs, np.nan_to_num(heights), width, label=name, alpha=0.85)
        for bar, v, h in zip(bars, values, heights):
            if v in s.index:
                label = f"n={int(s['n'].get(v))}" + ("" if not math.isnan(h) else " (undef.)")
                if not math.isnan(h):  # a height of 0 is a value too: mark the bar's top
                    ax.plot([bar.get_x(), bar.get_x() + bar.get_width()], [h, h], color=bar.get_facecolor(), lw=2)
                ax.text(bar.get_x() + bar.get_width() / 2, (0 if math.isnan(h) else h) + 0.01, label,
                        ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_xticks(np.arange(len(values)) + 0.4 - width / 2, values, fontsize=8)
    ax.set_ylim(0, 1.25)
    ax.set_ylabel(f"{metric} (test)")
    ax.set_title(title, fontsize=9)
    if left:
        ax.set_xlabel("not drawn (too few images or one class): " + ", ".join(left), fontsize=7)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def _float(v) -> float:
    try:
        return float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def parse_failures(rows: pd.DataFrame, path: Path) -> Path | None:
    """VLM parse-failure and request-failure rates per entry × dataset (zeroshot ``extra``)."""
    if rows.empty:
        return None
    plt = _plt()
    labels = [f"{e} | {d}" for e, d in zip(plot_labels(list(rows["entry"]), width=40, max_lines=2), rows["dataset"])]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.5))
    y = np.arange(len(rows))[::-1]
    ax.barh(y + 0.2, rows["unparsed_rate"].fillna(0), 0.4, label="unparsed answers", color="#ff7f0e")
    ax.barh(y - 0.2, rows["failed_rate"].fillna(0), 0.4, label="failed requests", color="#7f7f7f")
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlim(0, max(0.05, float(np.nanmax(rows[["unparsed_rate", "failed_rate"]].to_numpy(float))) * 1.15))
    ax.set_xlabel("fraction of test images (scored as wrong, never dropped)")
    ax.set_title("Zeroshot answers that could not be parsed or were not obtained", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


_CURVE_AXES = {"label_fraction": "fraction of training labels used (log scale)",
               "k_shot": "training images per class (log scale)"}


def curves(points: pd.DataFrame, axis: str, metric: str, title: str, path: Path) -> Path | None:
    """Test metric along a curve axis (label fraction or k-shot), one line per configuration
    (mean over seeds at each point). A configuration with a single point draws no line."""
    points = points[points["axis"] == axis]
    counts = points.groupby("curve")["x"].nunique()
    points = points[points["curve"].isin(counts[counts >= 2].index)]
    if points.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    curve_names = sorted(points["curve"].astype(str).unique())
    label_of = dict(zip(curve_names, plot_labels(curve_names, width=40, max_lines=2)))
    for curve, part in points.groupby("curve", sort=True):
        part = part.groupby("x", as_index=False)["value"].mean().sort_values("x")
        ax.plot(part["x"], part["value"], marker="o", label=label_of[curve])
    ax.set_xscale("log")
    ticks = sorted(points["x"].unique())
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel(_CURVE_AXES.get(axis, axis))
    ax.set_ylabel(f"{metric} (test)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def top_cells(cells: list[CellRecord], summary: pd.DataFrame, dataset: str, metric: str, k: int) -> list[CellRecord]:
    """The first run (lowest split seed, then lowest seed) of each of the ``k`` best configurations
    of a dataset."""
    sub = full_data(summary[(summary["dataset"] == dataset) & (summary["split"] == "test")
                            & (summary["metric"] == metric)])
    order = list(rank(sub, metric)["entry"][: k])
    by_entry: dict[str, CellRecord] = {}
    for c in sorted(cells, key=lambda c: (-1 if c.split_seed is None else c.split_seed, c.seed)):
        if c.dataset == dataset and c.entry not in by_entry:
            by_entry[c.entry] = c
    return [by_entry[e] for e in order if e in by_entry]
