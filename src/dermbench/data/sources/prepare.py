"""``dermbench prepare``: a dataset as published -> a contract folder, the same steps for every source.

read the published files -> attach image files -> label by the source's table (under the label
definition, ``complete`` or ``study``, and the premalignant policy) -> drop rows without an image
-> the paper's subsampling (ISIC 2024, SD-198) -> drop duplicate file names -> (``group_similar``:
likely same-lesion images found by embedding similarity become groups) -> official or grouped
stratified split (or, asked for by name, the study's ungrouped one) -> write atomically with
``dataset.json`` and ``excluded.csv``. Every dropped row is an
:class:`~dermbench.data.exclusions.Exclusion`, listed on the console and in the card.

The console and the card say what was made, not only what was asked for: the split line gives the
images per split as made (a small dataset with many strata can land far from the target ratios),
and the label table counts the rows read and the rows kept for each published value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ... import SPLITS
from ...errors import SourceFormatError, UsageError
from ...utils.console import get_logger
from ..exclusions import Exclusion, count_by_reason, exclusion_frame, exclusions_for, summarise_by_reason
from ..similarity import SimilaritySearch
from ..splits import SPLIT_GROUPINGS, SplitSpec, split_frame
from ..writer import CONTRACT_ORDER, LINK_MODES, absolute, check_out_dir, counts_table, write_dataset
from .base import Source, SourceRows
from .labels import DEFAULT_LABEL_DEFINITION, apply_label_table, format_mapping, normalise_key
from .raw import attach_image_files, with_file_extension

_log = get_logger("prepare")


@dataclass
class _Prepared:
    """The rows of a source on their way to the contract, and what happened to the others."""

    frame: pd.DataFrame
    excluded: list[Exclusion] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)  # image files no metadata row refers to
    n_read: int = 0
    applied: dict[str, str] = field(default_factory=dict)  # label key -> final label
    key_counts: pd.Series | None = None   # published label value -> rows read
    kept_counts: pd.Series | None = None   # published label value -> rows kept (in the dataset written)
    subsample_policy: str = ""
    similar: dict[str, Any] | None = None  # what --group-similar found (the card's group_similar)


def prepare(
    source: str | Source,
    raw: str | Path,
    out: str | Path,
    *,
    seed: int = 42,
    premalignant: str = "paper",
    labels: str = DEFAULT_LABEL_DEFINITION,
    split: str = "grouped",
    link: str = "copy",
    overwrite: bool = False,
    ratios: Sequence[float] | None = None,
    options: dict[str, Any] | None = None,
    quiet: bool = False,
    group_similar: SimilaritySearch | None = None,
) -> dict[str, Any]:
    """Turn a dataset as published into a contract folder; returns the written card.

    ``labels`` names the label definition (``complete``: clinically complete, premalignant per
    ``premalignant``; ``study``: what the MICCAI study evaluated, premalignant fixed by it).
    ``split="ungrouped"`` makes the study's image-level split instead of the grouped one.
    ``quiet`` keeps the label mapping, exclusions and counts off the console (they are in the card).
    ``group_similar`` finds likely same-lesion images (two photographs of one lesion) with the
    embedding-similarity search of ``audit`` and keeps each connected group of them in one split
    (column ``similar_group``, recorded in the card's ``group_similar``).
    """
    src, meta = _source(source, options)
    _select_labels(src, labels, premalignant)
    if split not in SPLIT_GROUPINGS:
        raise UsageError(f"--split {split!r}: choose one of {', '.join(SPLIT_GROUPINGS)}")
    raw = Path(raw).expanduser()
    out = absolute(out)
    _check_paths(raw, out, overwrite, link)
    rows = src.read(raw)
    prepared = _attach_images(rows, src.name)
    _label(prepared, src, premalignant)
    _drop_rows_without_image(prepared)
    _subsample(prepared, src, seed, raw)
    _drop_duplicate_files(prepared)
    if group_similar is not None:
        _group_similar(prepared, src, group_similar, rows, out, split, quiet)
    prepared.kept_counts = _label_key_counts(prepared.frame)
    split_names, split_policy, split_grouping = _split(prepared.frame, src, seed, ratios, split,
                                                       similar=prepared.similar is not None)
    if prepared.subsample_policy:
        split_policy = f"{prepared.subsample_policy}; {split_policy}"
    splits = _contract_splits(prepared.frame, split_names)
    made = split_counts(splits)
    if not quiet:
        _report(src, raw, premalignant, prepared, rows.notes, split_policy, splits, made)
    if split_grouping != "official":
        _warn_unusable_splits(splits, prepared.similar is not None)
    card = _card(src, meta, out, raw, premalignant, split_policy, split_grouping, seed, link, rows, prepared,
                 options or {}, ratios, made)
    excluded_csv = exclusion_frame(prepared.excluded)
    written = write_dataset(out, splits, link=link, overwrite=overwrite, image_bytes=rows.image_bytes, card=card,
                            extra_files={"excluded.csv": excluded_csv} if len(excluded_csv) else None)
    if not quiet:
        _log.info(f"wrote {out} ({written['n_images']} images, fingerprint {written['fingerprint'][:12]})")
    return written


def _source(source: str | Source, options: dict[str, Any] | None) -> tuple[Source, dict[str, Any]]:
    """The source object and its registry entry's metadata (licence, url)."""
    from . import SOURCES

    if not isinstance(source, str):
        return source, {}
    entry = SOURCES.entry(source)
    return entry.load()(dict(options or {})), entry.meta


def _select_labels(src: Source, labels: str, premalignant: str) -> None:
    """Put the source under the label definition; the ``study`` definition fixes the premalignant
    treatment to the study's (``paper``), so another policy contradicts it."""
    src.select_labels(labels)
    if labels == "study" and premalignant != "paper":
        raise UsageError(f"--premalignant {premalignant} does not apply to --labels study: the study's definition "
                         f"fixes what premalignant lesions are ({src.name}: {src.PAPER_PREMALIGNANT}); drop "
                         f"--premalignant, or use --labels complete")


def _check_paths(raw: Path, out: Path, overwrite: bool, link: str) -> None:
    if not raw.exists():
        raise SourceFormatError(f"--raw {raw} does not exist")
    if out.resolve() == raw.resolve() or out.resolve() in raw.resolve().parents:
        raise SourceFormatError(f"--out {out} would replace the raw files in --raw {raw}; write the dataset "
                                f"to another folder")
    check_out_dir(out, overwrite)
    if link not in LINK_MODES:
        raise ValueError(f"--link {link!r}; choose one of {', '.join(LINK_MODES)}")


def _attach_images(rows: SourceRows, source: str) -> _Prepared:
    """Give every row its image file (``src``), looked up in the source's image index if needed."""
    frame = rows.frame.reset_index(drop=True)
    prepared = _Prepared(frame=frame, excluded=list(rows.excluded))
    if "src" not in frame.columns:
        if rows.image_index is None:
            raise TypeError(f"source {source}: read() returned neither a src column nor an image_index")
        lookup = "image_lookup" if "image_lookup" in frame.columns else "img_id"
        frame["src"] = attach_image_files(frame, rows.image_index, lookup)
        prepared.unlisted = rows.image_index.unlisted()
        prepared.frame = frame.drop(columns=[c for c in ("image_lookup",) if c in frame.columns])
    prepared.n_read = len(prepared.frame) + len(prepared.excluded)
    return prepared


def _label_key_counts(frame: pd.DataFrame) -> pd.Series:
    return frame["label_key"].map(lambda v: None if pd.isna(v) else normalise_key(v)).value_counts()


def _label(prepared: _Prepared, src: Source, premalignant: str) -> None:
    frame = prepared.frame
    prepared.key_counts = _label_key_counts(frame)
    per_class = "outside the study's label definition" if src.labels == "study" else None
    prepared.frame, excluded, prepared.applied = apply_label_table(frame, src.label_table(), premalignant,
                                                                   src.PAPER_PREMALIGNANT, src.name,
                                                                   per_class_detail=per_class)
    prepared.excluded += excluded
    if src.modality and "modality" not in prepared.frame.columns:
        prepared.frame["modality"] = src.modality


def _drop_rows_without_image(prepared: _Prepared) -> None:
    frame = prepared.frame
    no_image = frame["src"].isna()
    if no_image.any():
        prepared.excluded += exclusions_for(frame.loc[no_image, "img_id"], "missing_image",
                                            "metadata row whose image file is not in the raw folder")
        frame = frame.loc[~no_image].copy()
    frame["img_id"] = [with_file_extension(str(i), str(p)) for i, p in zip(frame["img_id"], frame["src"])]
    prepared.frame = frame


def _subsample(prepared: _Prepared, src: Source, seed: int, raw: Path) -> None:
    prepared.frame, excluded, prepared.subsample_policy = src.subsample(prepared.frame, np.random.default_rng(seed))
    prepared.excluded += excluded
    if len(prepared.frame) == 0:
        reasons = ", ".join(f"{n} {reason}" for reason, n in count_by_reason(prepared.excluded).items())
        raise SourceFormatError(f"{src.name}: no usable rows in {raw} ({reasons}). Are the images under "
                                f"--raw (or --images)?")


def _drop_duplicate_files(prepared: _Prepared) -> None:
    frame = prepared.frame
    dupes = frame["img_id"].str.lower().duplicated(keep="first")
    if dupes.any():
        prepared.excluded += exclusions_for(frame.loc[dupes, "img_id"], "duplicate_img_id",
                                            "same image file listed twice; first row kept")
        prepared.frame = frame.loc[~dupes]


def _split(frame: pd.DataFrame, src: Source, seed: int, ratios: Sequence[float] | None,
           grouping: str, similar: bool = False) -> tuple[pd.Series, str, str]:
    """The official split when the source has one for every row, else the grouped stratified split
    (or the study's image-level split with ``grouping="ungrouped"``); ``similar``: the frame's
    ``similar_group`` column groups rows too.
    Returns (split names, policy text, the card's ``split_grouping``)."""
    if "split" in frame.columns and frame["split"].notna().all():
        if ratios is not None:
            raise SourceFormatError(f"{src.name} has an official train/validation/test split; --ratios does "
                                    f"not apply to it (drop --ratios to use the official split)")
        if grouping == "ungrouped":
            raise UsageError(f"--split ungrouped: {src.name} has an official train/validation/test split, which "
                             f"is used as published; drop --split ungrouped")
        return frame["split"], src.given_split_policy(), "official"
    spec = split_spec(src, ratios, similar)
    names, policy = split_frame(frame, spec, seed=seed, grouping=grouping)
    return names, policy, grouping


def split_spec(src: Source, ratios: Sequence[float] | None = None, similar: bool = False) -> SplitSpec:
    """The source's split specification, with ``--ratios`` and ``--group-similar`` applied."""
    spec = src.SPLIT or SplitSpec()
    group_by = tuple(spec.group_by) + (("similar_group",) if similar else ())
    return SplitSpec(tuple(ratios) if ratios is not None else spec.ratios, group_by,  # type: ignore[arg-type]
                     spec.stratify_by)


def _warn_unusable_splits(splits: dict[str, pd.DataFrame], similar: bool) -> None:
    """A split made here (not an official one) that has no images, or no image of one class, cannot
    be evaluated: a cell on it fails, and a metric needing both classes is undefined. Said now, not
    when the first cell runs (e.g. --group-similar chaining every image into one group)."""
    problems = []
    for name, frame in splits.items():
        if not len(frame):
            problems.append(f"{name} has no images")
            continue
        missing = [c for c in ("benign", "malignant") if not (frame["benign_malignant"] == c).any()]
        if missing:
            problems.append(f"{name} has no {missing[0]} image")
    if problems:
        hint = ("--group-similar joined so many images into one group that whole groups could not be spread "
                "over the splits; audit the pairs (`dermbench audit --similarity on`) or prepare without it"
                if similar else "the dataset is too small (or one class too rare) for these ratios; use "
                "other --ratios or more images")
        _log.warning(f"split made: {'; '.join(problems)}: {hint}")


def split_counts(splits: dict[str, pd.DataFrame]) -> dict[str, int]:
    """Images per split as made."""
    return {s: int(len(splits.get(s, ()))) for s in SPLITS}


def describe_counts(made: dict[str, int]) -> str:
    """``train 12 / validation 6 / test 6 images (50/25/25%)``: the split as made."""
    total = sum(made.values()) or 1
    return (" / ".join(f"{s} {n}" for s, n in made.items()) + " images ("
            + "/".join(f"{100 * n / total:.3g}" for n in made.values()) + "%)")


def _group_similar(prepared: _Prepared, src: Source, search: SimilaritySearch, rows: SourceRows, out: Path,
                   grouping: str, quiet: bool) -> None:
    """Likely same-lesion images (the audit's embedding-similarity search over every pair, not only
    across splits) joined into connected groups: column ``similar_group``, and ``prepared.similar``
    for the card. The images are embedded from the raw files as the single-split view of
    :func:`dermbench.data.similarity.all_images`, whose fingerprint is their content: the written
    dataset holds the same bytes, so its audit reuses these embeddings."""
    from ...utils.filestamp import FileStampMemo, sha256_file
    from ..dataset import LesionDataset
    from ..similarity import all_images, group_names, similar_pairs, similarity_components

    frame = prepared.frame
    if rows.image_bytes is not None:
        raise UsageError(f"--group-similar: {src.name} writes its images from arrays, not files; prepare it without "
                         f"--group-similar and audit the result (`dermbench audit --similarity on`)")
    if "split" in frame.columns and frame["split"].notna().all():
        raise UsageError(f"--group-similar: {src.name} has an official split, which is used as published; drop "
                         f"--group-similar and audit it instead (`dermbench audit --similarity on`)")
    if grouping == "ungrouped":
        raise UsageError("--group-similar keeps likely same-lesion images in one split, --split ungrouped splits image "
                         "by image: choose one")
    paths = [str(Path(p).resolve()) for p in frame["src"]]
    with FileStampMemo("sha256", str(out)) as memo:
        shas = {str(i): memo.get(p, sha256_file) for i, p in zip(frame["img_id"], paths)}
    view = LesionDataset(root=out, name=out.name, card={}, manifest=shas,
                         splits={"all": pd.DataFrame({"img_id": frame["img_id"].astype(str).to_numpy(), "path": paths,
                                                      "label": (frame["benign_malignant"] == "malignant").astype(int)
                                                      .to_numpy()})})
    view = all_images(view, shas)
    emb = search.embed(view)
    pairs = similar_pairs(emb, threshold=search.threshold, neighbours=search.neighbours, across_only=False)
    components = similarity_components(len(emb), pairs)
    names = dict(zip(emb.img_ids, group_names(components, emb.img_ids)))
    frame = frame.copy()
    frame["similar_group"] = [names.get(str(i)) for i in frame["img_id"]]
    prepared.frame = frame
    groups: dict[str, list[str]] = {}
    for img_id, name in names.items():
        if name:
            groups.setdefault(name, []).append(img_id)
    prepared.similar = {**search.describe(), "pairs": len(pairs), "groups": len(groups),
                        "images_grouped": int(sum(len(v) for v in groups.values())),
                        "unreadable": len(frame) - len(emb),
                        "members": {k: sorted(v) for k, v in sorted(groups.items())},
                        "top_pairs": [{"a": emb.img_ids[p.i], "b": emb.img_ids[p.j],
                                       "similarity": round(p.similarity, 4)} for p in pairs[:200]]}


def _contract_splits(frame: pd.DataFrame, split_names: pd.Series) -> dict[str, pd.DataFrame]:
    cols = [c for c in CONTRACT_ORDER if c in frame.columns]
    cols += [c for c in frame.columns if c not in cols and c not in ("label_key", "split")]
    frame = frame[cols]
    return {s: frame.loc[split_names == s].reset_index(drop=True) for s in SPLITS}


def _report(src: Source, raw: Path, premalignant: str, prepared: _Prepared, notes: list[str], split_policy: str,
            splits: dict[str, pd.DataFrame], made: dict[str, int]) -> None:
    lines = [f"{src.title or src.name}: {prepared.n_read} rows read from {raw}",
             f"label definition {src.labels!r}" + (f": {src.STUDY_NOTE}" if src.labels == "study" and src.STUDY_NOTE
                                                   else ""),
             f"label mapping ({src.label_source} -> label, premalignant policy {premalignant!r}):",
             format_mapping(src.label_table(), prepared.applied, prepared.key_counts, kept=prepared.kept_counts)]
    for group in summarise_by_reason(prepared.excluded):
        lines.append(f"  excluded {group['count']} row(s): {group['reason']}"
                     + (f" ({group['detail']})" if group["detail"] else ""))
    if prepared.unlisted:
        lines.append(f"  {len(prepared.unlisted)} image file(s) have no metadata row (not used), e.g. "
                     f"{prepared.unlisted[0]}")
    lines += [f"  note: {note}" for note in notes]
    if prepared.similar is not None:
        s = prepared.similar
        lines.append(f"  group-similar: {s['pairs']} likely same-lesion pair(s) ({s['backbone']}, cosine >= "
                     f"{s['threshold']:g}) -> {s['groups']} group(s) of {s['images_grouped']} images kept in one split")
    lines += [f"split made: {describe_counts(made)}", f"  policy: {split_policy}", counts_table(splits)]
    _log.info("\n".join(lines))


def _card(src: Source, meta: dict[str, Any], out: Path, raw: Path, premalignant: str, split_policy: str,
          split_grouping: str, seed: int, link: str, rows: SourceRows, prepared: _Prepared,
          options: dict[str, Any], ratios: Sequence[float] | None = None,
          made: dict[str, int] | None = None) -> dict[str, Any]:
    spec = split_spec(src, ratios, prepared.similar is not None)
    return {
        "name": out.name,
        "source": src.name,
        "source_title": src.title,
        "licence": src.licence or meta.get("licence", ""),
        "url": src.url or meta.get("url", ""),
        "raw": str(raw.resolve()),
        "label_definition": src.labels,
        "label_definition_note": src.STUDY_NOTE if src.labels == "study" else "",
        "label_source": src.label_source,
        "label_mapping": prepared.applied,
        "label_table": src.label_table(),
        "premalignant_policy": premalignant,
        "premalignant_paper_default": src.PAPER_PREMALIGNANT,
        "split_policy": split_policy,
        "split_grouping": split_grouping,
        # machine-readable: how to split these rows again (runs with split_seeds re-split by it)
        "split_spec": {"ratios": [float(r) for r in spec.ratios], "group_by": list(spec.group_by),
                       "stratify_by": list(spec.stratify_by), "grouping": split_grouping},
        "split_counts": made or {},
        "seed": seed,
        "rows_read": prepared.n_read,
        "subsampling": prepared.subsample_policy,
        "group_similar": prepared.similar,
        "image_link": link if rows.image_bytes is None else "written",
        "excluded": summarise_by_reason(prepared.excluded),
        "unlisted_images": {"count": len(prepared.unlisted), "examples": prepared.unlisted[:20]},
        "notes": rows.notes,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()
                    if isinstance(v, (str, int, float, bool, Path, type(None), list))},
    }
