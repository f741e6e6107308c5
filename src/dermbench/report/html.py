"""HTML pages of the report: ``index.html`` and one error-analysis page per cell.

The pages are self-contained within the report folder: figures and thumbnails are files beside
them, referenced by relative links, with inline CSS and no script or network resource. Every
string that comes from the data (model, dataset, file and error names, ids) goes through
:func:`html.escape`.
"""

from __future__ import annotations

import hashlib
import html
import math
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1300px;
color:#222;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px} h2{margin-top:36px;border-bottom:2px solid #ddd;padding-bottom:4px}
h3{margin-top:22px} table{border-collapse:collapse;font-size:13px;margin:8px 0}
table{display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top} th{background:#f3f3f3}
tr:nth-child(even) td{background:#fafafa} .num{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#555;font-size:13px} .warn{color:#a40000} img.plot{max-width:100%;border:1px solid #eee;margin:6px 0}
.grid{display:flex;flex-wrap:wrap;gap:10px} .thumb{width:132px;font-size:11px;text-align:center}
.thumb img{width:128px;height:128px;object-fit:cover;border:1px solid #ccc}
.nowrap{white-space:nowrap} nav a{margin-right:12px} code{background:#f4f4f4;padding:1px 4px}
.tag{display:inline-block;padding:0 6px;border-radius:8px;color:#fff;font-size:11px}
"""

e = html.escape


def page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{e(title)}</title><style>{CSS}</style></head><body>\n{body}\n</body></html>\n")


def fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def table(df: pd.DataFrame, columns: Iterable[str] | None = None, headers: dict[str, str] | None = None,
          cell: Callable[[str, Any, pd.Series], str] | None = None, numeric: Iterable[str] = ()) -> str:
    """An escaped HTML table. ``cell(col, value, row)`` may return ready HTML for a column
    (it must escape what it inserts); other values are formatted and escaped here."""
    columns = list(columns or df.columns)
    headers = headers or {}
    numeric = set(numeric)
    out = ["<table><tr>" + "".join(f"<th>{e(headers.get(c, c))}</th>" for c in columns) + "</tr>"]
    for _, row in df.iterrows():
        tds = []
        for c in columns:
            v = row.get(c)
            custom = cell(c, v, row) if cell else None
            content = custom if custom is not None else e(fmt(v.item() if hasattr(v, "item") else v))
            classes = (["num"] if c in numeric or isinstance(v, float) else []) + (["nowrap"] if "CI" in c else [])
            cls = f' class="{" ".join(classes)}"' if classes else ""
            tds.append(f"<td{cls}>{content}</td>")
        out.append("<tr>" + "".join(tds) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def img(rel: str | None, alt: str) -> str:
    if not rel:
        return ""
    return f'<img class="plot" src="{e(rel)}" alt="{e(alt)}">'


# ---------------------------------------------------------------------------------------------
# error analysis
# ---------------------------------------------------------------------------------------------
def thumbnail(image_path: str | Path, thumbs_dir: Path, size: int = 128) -> str | None:
    """A JPEG thumbnail of an image (read with :func:`open_rgb`), written once; its file name."""
    from ..data.images import ImageReadError, open_rgb

    name = hashlib.sha1(str(Path(image_path).absolute()).encode()).hexdigest()[:16] + ".jpg"
    target = thumbs_dir / name
    if target.is_file():
        return name
    try:
        image = open_rgb(image_path, draft_size=(size * 2, size * 2))
    except (ImageReadError, OSError):
        return None
    image.thumbnail((size, size))
    thumbs_dir.mkdir(parents=True, exist_ok=True)
    from ..utils.atomic import atomic_path

    with atomic_path(target) as tmp:
        image.save(tmp, format="JPEG", quality=82)
    return name


def error_examples(pred: pd.DataFrame, max_per_kind: int) -> dict[str, pd.DataFrame]:
    """False-benign (malignant scored benign; lowest p first) and false-malignant (benign scored
    malignant; highest p first) test images, the most confident mistakes first."""
    false_benign = pred[(pred["label"] == 1) & (pred["pred"] == 0)].sort_values(["p_malignant", "img_id"])
    false_malignant = pred[(pred["label"] == 0) & (pred["pred"] == 1)].sort_values(
        ["p_malignant", "img_id"], ascending=[False, True])
    return {"false_benign": false_benign.head(max_per_kind), "false_malignant": false_malignant.head(max_per_kind),
            "counts": pd.DataFrame([{"false_benign": len(false_benign), "false_malignant": len(false_malignant),
                                     "n": len(pred)}])}


def error_page(cell, pred: pd.DataFrame, image_paths: dict[str, str] | None, thumbs_dir: Path,
               thumbs_rel: str, index_rel: str, max_per_kind: int = 24) -> tuple[str, dict[str, int]]:
    """The error-analysis page of one cell and its counts."""
    ex = error_examples(pred, max_per_kind)
    counts = ex["counts"].iloc[0].to_dict()
    threshold = (cell.metrics.get("threshold") or {}).get("value")
    parts = [f'<p><a href="{e(index_rel)}">&larr; report</a></p>',
             f"<h1>Errors of {e(cell.entry)} on {e(cell.dataset)} (seed {e(str(cell.seed))})</h1>",
             f"<p class=note>Test split, operating threshold {e(fmt(threshold))} "
             f"(pred = malignant when p_malignant &ge; threshold). {int(counts['false_benign'])} false-benign "
             f"and {int(counts['false_malignant'])} false-malignant of {int(counts['n'])} test images; "
             f"up to {max_per_kind} of each kind are shown, the most confident mistakes first. Run record: "
             f"<code>{e(str(cell.path))}</code></p>"]
    if image_paths is None:
        parts.append("<p class=warn>The dataset folder of this run is not available here, so no thumbnails; "
                     "the ids and scores are listed.</p>")
    for kind, title in (("false_benign", "False benign (malignant lesions scored benign — missed cancers)"),
                        ("false_malignant", "False malignant (benign lesions scored malignant)")):
        frame = ex[kind]
        parts.append(f"<h2>{e(title)}</h2>")
        if frame.empty:
            parts.append("<p class=note>none</p>")
            continue
        tiles = []
        for _, row in frame.iterrows():
            src = None
            if image_paths is not None and row["img_id"] in image_paths:
                src = thumbnail(image_paths[row["img_id"]], thumbs_dir)
            extras = [f"{c}={row[c]}" for c in ("diagnosis", "fitzpatrick", "site") if c in row and pd.notna(row[c])]
            picture = (f'<img src="{e(thumbs_rel + "/" + src)}" alt="{e(str(row["img_id"]))}">' if src
                       else "<div class=note>(no image)</div>")
            tiles.append(f'<div class="thumb">{picture}<br>{e(str(row["img_id"]))}<br>'
                         f'p_malignant={e(fmt(float(row["p_malignant"])))}'
                         + (f"<br>{e(', '.join(extras))}" if extras else "") + "</div>")
        parts.append('<div class="grid">' + "".join(tiles) + "</div>")
    return page(f"errors: {cell.entry} / {cell.dataset}", "\n".join(parts)), {k: int(v) for k, v in counts.items()}
