"""``dermbench audit --html DIR``: the audit as a page a reviewer looks through.

Every pair the audit found (likely same-lesion images by embedding similarity, near duplicates,
exact duplicates) is shown as two thumbnails side by side with where each image sits, so a person
decides whether two photographs show one lesion. Self-contained like the report: thumbnails are
files beside the page, every value is escaped by the template.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..utils.atomic import atomic_write_text
from .error_pages import thumbnail
from .html import render

#: pairs shown per section (the JSON report has all of them)
MAX_PAIRS = 200


def _tile(end: dict[str, Any], thumbs: Path) -> dict[str, Any]:
    name = thumbnail(end["path"], thumbs) if end.get("path") else None
    return {"src": f"thumbs/{name}" if name else None, "where": f"{end['dataset']} / {end['split']}",
            "img_id": end["img_id"]}


def _pairs(items: list[dict[str, Any]], thumbs: Path, describe) -> list[dict[str, Any]]:
    return [{"a": _tile(d["a"], thumbs), "b": _tile(d["b"], thumbs), "what": describe(d),
             "leak": bool(d.get("across_splits"))} for d in items[:MAX_PAIRS]]


def audit_page(report: Any, out: Path) -> str:
    """The page's HTML; thumbnails are written under ``out/thumbs``."""
    thumbs = out / "thumbs"
    similar = [d for d in report.similar_pairs if d["across_splits"]]
    sections = [
        {"title": "Likely same-lesion images in two splits (embedding similarity, for review)",
         "note": "" if report.similarity.get("ran") else
         f"The similarity search did not run ({report.similarity.get('reason', 'not requested')}).",
         "pairs": _pairs(similar, thumbs, lambda d: f"cosine {d['similarity']:.3f}"
                         + (f"; also an {d['also_found_as']}" if d["also_found_as"] else "")),
         "total": len(similar)},
        {"title": "Near duplicates (perceptual hash and colour layout)", "note": "",
         "pairs": _pairs(report.near_duplicates, thumbs,
                         lambda d: f"pHash distance {d['distance']}, colour difference {d['colour_difference']}"),
         "total": len(report.near_duplicates)},
    ]
    datasets = [{"name": d["name"], "n_images": d["n_images"], "group_check": d["group_check"]["status"],
                 "note": d["group_check"]["note"]} for d in report.datasets]
    from ..data.audit import result_line

    return render("audit.html", title="dermbench audit", result=result_line(report), status=report.status,
                  datasets=datasets, similarity=report.similarity, sections=sections, max_pairs=MAX_PAIRS,
                  groups=report.group_overlap[:MAX_PAIRS], exact=report.exact_duplicates[:MAX_PAIRS])


def write_audit_page(report: Any, out: str | Path) -> Path:
    """Write ``out/audit.html`` (and its thumbnails); returns its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    page = out / "audit.html"
    atomic_write_text(page, audit_page(report, out))
    return page
