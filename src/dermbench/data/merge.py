"""Merging prepared datasets into one (``dermbench merge``), as the study did [paper]:
``merged_clinic`` = HC + PAD-UFES-20 + DDI + SD-198, ``merged_dermatoscopic`` = ISIC 2018 +
ISIC 2024, ``merged`` = all six (HAM10000 is left out: ISIC 2018's training set *is* HAM10000).

Rules: partitions carry over (a part's train rows stay train); a ``source`` column records each
row's origin (kept from a part that is itself a merge); columns are the union of the parts';
file names that collide between parts (case-insensitively, so the result works on macOS and
Windows too) are renamed deterministically to ``<part>__<name>`` in *every* part that has them,
so a name never depends on the order of the parts, and the original is kept in
``original_img_id``. Parts with different premalignant policies (akiec/ACK counted malignant in
one, benign in another) are refused unless ``allow_mixed_premalignant``: the merged label would
mean different things per row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from .. import SPLITS
from ..errors import MergeError
from ..utils.console import get_logger
from .contract import load_dataset
from .dataset import LesionDataset
from .exclusions import count_by_reason
from .writer import CONTRACT_ORDER, absolute, check_out_dir, counts_table, write_dataset

SHIPPED_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "merge_paper.yaml"
_log = get_logger("merge")


@dataclass
class MergeSpec:
    name: str
    parts: list[str]
    out: str | None = None


@dataclass
class MergeConfig:
    merges: list[MergeSpec]
    datasets_root: str = "datasets"
    out_root: str | None = None
    link: str = "copy"
    allow_mixed_premalignant: bool = False
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def load_merge_config(path: str | Path) -> MergeConfig:
    """Read a merge YAML (see ``configs/merge_paper.yaml``); unknown keys are errors."""
    import yaml

    from ..utils.yamlio import load_yaml

    path = Path(path)
    try:
        data = load_yaml(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise MergeError(f"merge config {path}: {exc}") from exc
    allowed = {"datasets_root", "out_root", "link", "allow_mixed_premalignant", "merges"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise MergeError(f"merge config {path}: unknown key(s) {unknown}; allowed: {', '.join(sorted(allowed))}")
    merges = data.get("merges")
    if not isinstance(merges, dict) or not merges:
        raise MergeError(f"merge config {path}: needs 'merges:' mapping NAME -> {{parts: [DATASET, ...]}}")
    specs = []
    for name, body in merges.items():
        if isinstance(body, list):
            body = {"parts": body}
        if not isinstance(body, dict) or not isinstance(body.get("parts"), list) or len(body["parts"]) < 2:
            raise MergeError(f"merge config {path}: merge {name!r} needs 'parts:' with at least two datasets")
        bad = sorted(set(body) - {"parts", "out"})
        if bad:
            raise MergeError(f"merge config {path}: merge {name!r} has unknown key(s) {bad}; allowed: parts, out")
        specs.append(MergeSpec(str(name), [str(p) for p in body["parts"]], body.get("out")))
    link = str(data.get("link", "copy"))
    return MergeConfig(merges=specs, datasets_root=str(data.get("datasets_root", "datasets")),
                       out_root=data.get("out_root"), link=link,
                       allow_mixed_premalignant=bool(data.get("allow_mixed_premalignant", False)), path=path)


def _rename_collisions(names_by_part: dict[str, list[str]]) -> dict[tuple[str, str], str]:
    """(part, relative name) -> new name, for names used by more than one part."""
    from ..utils.paths import safe_name

    owners: dict[str, set[str]] = {}
    for part, names in names_by_part.items():
        for n in names:
            owners.setdefault(n.lower(), set()).add(part)
    renamed = {}
    for part, names in names_by_part.items():
        for n in names:
            if len(owners[n.lower()]) > 1:
                renamed[(part, n)] = f"{safe_name(part)}__{n}"
    return renamed


def _cross_split_duplicates(loaded: Sequence[LesionDataset]) -> list[list[tuple[str, str, str]]]:
    """Byte-identical images (by manifest sha256) that different parts put in different splits."""
    by_sha: dict[str, list[tuple[str, str, str]]] = {}
    for ds in loaded:
        images_dir = ds.root / "images"
        for split, df in ds.splits.items():
            for img_id, path in zip(df["img_id"], df["path"]):
                sha = ds.manifest.get(Path(path).relative_to(images_dir).as_posix())
                if sha:
                    by_sha.setdefault(sha, []).append((ds.name, split, str(img_id)))
    return [m for _, m in sorted(by_sha.items())
            if len({n for n, _, _ in m}) > 1 and len({sp for _, sp, _ in m}) > 1]


def merge_datasets(
    parts: Sequence[str | Path],
    out: str | Path,
    *,
    link: str = "copy",
    overwrite: bool = False,
    allow_mixed_premalignant: bool = False,
    allow_cross_split_duplicates: bool = False,
    quiet: bool = False,
    card_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge dataset folders into ``out``; returns the written card.

    Partitions carry over, so one image in two parts under different splits would leak into the
    merged test set: that is refused unless ``allow_cross_split_duplicates``."""
    out = absolute(out)
    check_out_dir(out, overwrite)
    loaded = _load_parts(parts, out)
    policy = _premalignant_policy(loaded, allow_mixed_premalignant)
    definition = _label_definition(loaded)
    if not allow_cross_split_duplicates:
        _refuse_cross_split_duplicates(loaded)
    splits, renamed = _merged_splits(loaded)
    card = _merge_card(loaded, out, policy, renamed, link, {**definition, **(card_extra or {})})
    written = write_dataset(out, splits, link=link, overwrite=overwrite, card=card)
    if not quiet:
        _log.info(f"merged {', '.join(ds.name for ds in loaded)} -> {out} (premalignant policy {policy}; "
                  f"{len(renamed)} colliding file name(s) renamed)\n{counts_table(splits)}")
    return written


def _load_parts(parts: Sequence[str | Path], out: Path) -> list[LesionDataset]:
    """Load every part (no decode check: the merged folder is checked when its card is written)."""
    if len(parts) < 2:
        raise MergeError("merge needs at least two datasets")
    loaded = []
    for p in parts:
        if not Path(p).is_dir():
            raise MergeError(f"merge part {p} does not exist; prepare it first (`dermbench prepare ...`)")
        loaded.append(load_dataset(absolute(p), check_images=False, quiet=True))
    for ds in loaded:
        if out.resolve() == ds.root.resolve() or out.resolve() in ds.root.resolve().parents:
            raise MergeError(f"the output {out} would replace the part {ds.root}; merge into another folder")
    names = [ds.name for ds in loaded]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise MergeError(f"parts with the same name {dupes}: rename a folder or its dataset.json 'name'")
    return loaded


def _premalignant_policy(loaded: Sequence[LesionDataset], allow_mixed: bool) -> str:
    """The parts' common premalignant policy ("mixed" / "unknown" otherwise); mixed is refused
    unless ``allow_mixed``."""
    policies = {ds.name: ds.card.get("premalignant_policy") for ds in loaded}
    known = {p for p in policies.values() if p}
    if len(known) > 1 and not allow_mixed:
        listing = ", ".join(f"{n}: {p or 'unknown'}" for n, p in policies.items())
        raise MergeError(f"the parts use different premalignant policies ({listing}); re-prepare them with the "
                         f"same --premalignant, or pass --allow-mixed-premalignant to merge anyway")
    return known.pop() if len(known) == 1 else ("mixed" if known else "unknown")


def _label_definition(loaded: Sequence[LesionDataset]) -> dict[str, Any]:
    """The merged card's ``label_definition`` (the parts' common one, each part's in
    ``label_definitions``; parts prepared under different ``--labels`` are refused: one label would
    mean two things) and ``split_grouping`` (``ungrouped`` when any part's split is the study's
    leaky one, which the merged set inherits)."""
    definitions = {ds.name: ds.card.get("label_definition") for ds in loaded}
    known = {d for d in definitions.values() if d}
    if len(known) > 1:
        listing = ", ".join(f"{n}: {d or 'not recorded'}" for n, d in definitions.items())
        raise MergeError(f"the parts were prepared under different label definitions ({listing}); re-prepare them "
                         f"with the same --labels")
    groupings = {ds.card.get("split_grouping") for ds in loaded}
    grouping = "ungrouped" if "ungrouped" in groupings else (groupings.pop() if len(groupings) == 1 else "mixed")
    return {"label_definition": known.pop() if known else None, "label_definitions": definitions,
            "split_grouping": grouping, "split_groupings": {ds.name: ds.card.get("split_grouping") for ds in loaded}}


def _refuse_cross_split_duplicates(loaded: Sequence[LesionDataset]) -> None:
    leaks = _cross_split_duplicates(loaded)
    if leaks:
        listing = "; ".join(" = ".join(f"{n}/{sp}/{i}" for n, sp, i in members) for members in leaks[:5])
        raise MergeError(f"{len(leaks)} image(s) appear in two parts in different splits (same sha256), e.g. "
                         f"{listing}. The merged set would test on training images (is one part a subset of "
                         f"another, like ISIC 2018 training = HAM10000?). Drop a part, or pass "
                         f"--allow-cross-split-duplicates and check `dermbench audit`")


def _part_rows(ds: LesionDataset) -> pd.DataFrame:
    """Every row of a part with its split, origin (``source``) and file name under images/."""
    # Not resolve(): a part prepared with --link symlink has images/ entries pointing outside
    # images/, and ds.root and the paths are both absolute without symlinks resolved.
    images_dir = ds.root / "images"
    frames = []
    for split in SPLITS:
        df = ds.splits[split].copy()
        df["_rel"] = [Path(p).relative_to(images_dir).as_posix() for p in df["path"]]
        df["_part"] = ds.name
        df["split"] = split
        df["source"] = df["source"].fillna(ds.name) if "source" in df.columns else ds.name
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _merged_splits(loaded: Sequence[LesionDataset]) -> tuple[dict[str, pd.DataFrame], dict[tuple[str, str], str]]:
    """The merged rows per split (``src`` = the part's file, ``img_id`` = its name in the merged
    images/) and the renamed colliding names."""
    merged = pd.concat([_part_rows(ds) for ds in loaded], ignore_index=True)
    names_by_part: dict[str, list[str]] = {ds.name: [] for ds in loaded}
    for part, rel in zip(merged["_part"], merged["_rel"]):
        names_by_part[part].append(rel)
    renamed = _rename_collisions(names_by_part)
    merged["src"] = merged["path"]
    if renamed:
        merged["original_img_id"] = merged["img_id"]
    merged["img_id"] = [renamed.get((p, r), r) for p, r in zip(merged["_part"], merged["_rel"])]
    merged = merged.drop(columns=["path", "label", "_rel", "_part"])
    cols = [c for c in CONTRACT_ORDER if c in merged.columns] + ["source"]
    cols += [c for c in merged.columns if c not in cols]
    merged = merged[cols]
    return {s: merged[merged["split"] == s].reset_index(drop=True) for s in SPLITS}, renamed


def _merge_card(loaded: Sequence[LesionDataset], out: Path, policy: str, renamed: dict[tuple[str, str], str],
                link: str, card_extra: dict[str, Any]) -> dict[str, Any]:
    part_info = [{"name": ds.name, "root": str(ds.root.resolve()), "fingerprint": ds.fingerprint,
                  "source": ds.card.get("source"), "premalignant_policy": ds.card.get("premalignant_policy"),
                  "split_policy": ds.card.get("split_policy"), "counts": ds.counts(),
                  "load_exclusions": len(ds.exclusions)} for ds in loaded]
    excluded = [{"reason": f"{ds.name}: {reason}", "count": n}
                for ds in loaded for reason, n in count_by_reason(ds.exclusions).items()]
    return {
        "name": out.name,
        "source": "merge",
        "licence": "; ".join(f"{ds.name}: {ds.card.get('licence', 'unknown')}" for ds in loaded),
        "parts": part_info,
        "label_mapping": {ds.name: ds.card.get("label_mapping") for ds in loaded},
        "premalignant_policy": policy,
        "premalignant_policies": {ds.name: ds.card.get("premalignant_policy") for ds in loaded},
        "split_policy": "partitions carried over from the parts (train stays train)",
        "renamed_files": {"count": len(renamed), "rule": "<part>__<name> for names used by more than one part",
                          "examples": [f"{p}/{n} -> {v}" for (p, n), v in list(renamed.items())[:10]]},
        "excluded": excluded,
        "image_link": link,
        **card_extra,
    }


def run_merge_config(config: MergeConfig, *, only: Sequence[str] = (), skip_missing: bool = False,
                     datasets_root: str | None = None, out_root: str | None = None, overwrite: bool = False,
                     link: str | None = None, allow_mixed_premalignant: bool | None = None,
                     allow_cross_split_duplicates: bool = False, quiet: bool = False) -> list[dict[str, Any]]:
    """Build every merge of a config (or those named in ``only``)."""
    root = Path(datasets_root or config.datasets_root).expanduser()
    out_base = Path(out_root or config.out_root or root).expanduser()
    wanted = list(only) or [m.name for m in config.merges]
    unknown = sorted(set(wanted) - {m.name for m in config.merges})
    if unknown:
        raise MergeError(f"merge(s) {unknown} not in the config; it defines {', '.join(m.name for m in config.merges)}")
    cards = []
    for spec in config.merges:
        if spec.name not in wanted:
            continue
        part_paths = [Path(p).expanduser() if Path(p).is_absolute() else root / p for p in spec.parts]
        missing = [str(p) for p in part_paths if not (p / "train_metadata.csv").exists()]
        if missing and not skip_missing:
            raise MergeError(f"merge {spec.name!r}: part(s) {missing} not found; prepare them (`dermbench prepare`, "
                             f"or `dermbench prepare csv` for a private set) or pass --skip-missing")
        present = [p for p in part_paths if str(p) not in missing]
        if missing and not quiet:
            _log.warning(f"merge {spec.name}: skipping missing part(s) {', '.join(missing)}")
        if len(present) < 2:
            raise MergeError(f"merge {spec.name!r}: fewer than two parts available ({[str(p) for p in present]})")
        out = Path(spec.out) if spec.out else out_base / spec.name
        card = merge_datasets(present, out, link=link or config.link, overwrite=overwrite,
                              allow_mixed_premalignant=config.allow_mixed_premalignant
                              if allow_mixed_premalignant is None else allow_mixed_premalignant,
                              allow_cross_split_duplicates=allow_cross_split_duplicates, quiet=quiet,
                              card_extra={"skipped_parts": missing} if missing else None)
        cards.append(card)
    return cards
