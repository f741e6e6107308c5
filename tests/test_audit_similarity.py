"""The audit's same-lesion search: a second photograph of a lesion (crop + zoom + colour jitter) in
another split is found by embedding similarity where no hash sees it, group leakage is "cannot
check" (never 0) without ids, a warm audit reads everything from its caches, and ``prepare
--group-similar`` keeps likely same-lesion images in one split."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermbench.data.audit import audit_datasets, format_report
from dermbench.data.similarity import (SimilaritySearch, ViewEmbeddings, group_names, rephotograph, similar_pairs,
                                       similarity_components)

SPLITS = ("train", "validation", "test")


def test_similar_pairs_are_nearest_neighbours_across_labels_above_the_threshold():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(6, 16))
    full = np.concatenate([base, base[:2] + 0.01 * rng.normal(size=(2, 16))])  # images 6, 7 copy 0, 1
    zoom = full + 0.05 * rng.normal(size=full.shape)
    labels = ["train"] * 6 + ["test", "train"]  # the copy of image 1 is in the same split: not across
    emb = ViewEmbeddings([f"i{k}" for k in range(8)], labels, np.stack([full, zoom]), views=(1.0, 0.8))
    pairs = similar_pairs(emb, threshold=0.95, neighbours=2)
    assert [(p.i, p.j) for p in pairs] == [(0, 6)] and pairs[0].similarity > 0.95
    within = similar_pairs(emb, threshold=0.95, neighbours=2, across_only=False)
    assert {(p.i, p.j) for p in within} == {(0, 6), (1, 7)}
    components = similarity_components(8, within)
    assert components[0] == components[6] and components[1] == components[7] and components[0] != components[1]
    names = group_names(components, emb.img_ids)
    assert names[0] == names[6] == "sim-i0" and names[1] == names[7] == "sim-i1" and names[2] is None
    with pytest.raises(ValueError, match="threshold"):
        similar_pairs(emb, threshold=1.5)


def _synthetic_without_ids(root: Path) -> tuple[str, str]:
    """A synthetic dataset without patient or lesion ids, plus a second photograph of a training
    lesion in test; returns (original, copy)."""
    from dermbench.data.synth import make_synthetic_dataset

    make_synthetic_dataset(root, n=40, size=128, seed=3, progress=False)
    frames = {s: pd.read_csv(root / f"{s}_metadata.csv") for s in SPLITS}
    source = frames["train"].iloc[0]
    rephotograph(Image.open(root / "images" / source["img_id"]), np.random.default_rng(0)).save(
        root / "images" / "again.jpg", quality=90)
    frames["test"] = pd.concat([frames["test"], pd.DataFrame([{**source.to_dict(), "img_id": "again.jpg"}])])
    for s, frame in frames.items():
        frame.drop(columns=["patient_id", "lesion_id"]).to_csv(root / f"{s}_metadata.csv", index=False)
    return str(source["img_id"]), "again.jpg"


@pytest.mark.slow
def test_audit_finds_a_rephotographed_lesion_across_splits_and_cannot_check_groups(tmp_path, monkeypatch):
    """Done-when of issue 15: the planted crop/zoom/jitter pair is listed across splits by the
    default backbone (EfficientNet-Lite0 ImageNet, offline), no hash finds it, and group leakage is
    reported as not checkable. The second audit decodes nothing and loads no model."""
    import dermbench.data.audit as audit_module
    from dermbench.cli.main import main
    from dermbench.paradigms.probe import similarity as probe_similarity

    root = tmp_path / "no_ids"
    original, copy = _synthetic_without_ids(root)
    report = audit_datasets([root], similarity=probe_similarity.similarity_search(progress=False))
    pairs = [{d["a"]["img_id"], d["b"]["img_id"]} for d in report.review_pairs]
    assert {original, copy} in pairs, format_report(report)
    assert not report.near_duplicates and not report.exact_duplicates  # no hash sees a zoomed, re-lit copy
    assert report.status == "review" and report.datasets[0]["group_check"]["status"] == "cannot_check"
    assert report.summary()["groups_in_two_splits"] is None  # not 0: nothing was checked
    text = format_report(report)
    assert "cannot check (no patient or lesion ids)" in text and "no leakage found" not in text
    assert "LIKELY LEAKAGE" in text.splitlines()[-1]

    # warm: signatures from the file-stamp memo, vectors from the embedding cache, no backbone built
    monkeypatch.setattr(audit_module, "_stored_signature", lambda path: pytest.fail(f"decoded {path} again"))
    built = []
    real_build = probe_similarity.build_view_embedder
    monkeypatch.setattr(probe_similarity, "build_view_embedder", lambda *a, **k: built.append(a) or real_build(*a, **k))
    warm = audit_datasets([root], similarity=probe_similarity.similarity_search(progress=False))
    assert warm.similarity["cache_hit"] and not built
    assert [d["similarity"] for d in warm.similar_pairs] == [d["similarity"] for d in report.similar_pairs]

    # the command line: ids absent -> the search runs by default, exit 1 (pairs to review), an HTML page
    assert main(["audit", str(root), "--html", str(tmp_path / "page"), "--json", str(tmp_path / "a.json")]) == 1
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["status"] == "review" and data["summary"]["similar_pairs_to_review"] >= 1
    page = (tmp_path / "page" / "audit.html").read_text()
    assert "again.jpg" in page and "cannot check" in page and list((tmp_path / "page" / "thumbs").glob("*.jpg"))


def test_without_ids_and_without_the_search_the_audit_never_says_no_leakage(tmp_path):
    root = tmp_path / "no_ids"
    _synthetic_without_ids(root)
    report = audit_datasets([root])
    assert report.status == "unchecked" and not report.similarity["ran"]
    last = format_report(report).splitlines()[-1]
    assert "COULD NOT BE CHECKED" in last and "similarity search did not run" in last and "no leakage found" not in last


def _fake_search(copies: dict[str, str], dim: int = 8) -> SimilaritySearch:
    """An embedder that gives an image and its planted copies the same vector (ids of the form
    ``<original>`` / ``<copy>``), every other image its own: the grouping, not the backbone, under test."""
    def embed(dataset) -> ViewEmbeddings:
        ids = [str(i) for df in dataset.splits.values() for i in df["img_id"]]
        index = {i: k for k, i in enumerate(sorted({copies.get(i, i) for i in ids}))}
        vectors = np.eye(max(dim, len(index)))[[index[copies.get(i, i)] for i in ids]]
        return ViewEmbeddings(ids, ["all"] * len(ids), np.stack([vectors]), views=(1.0,), backbone="fake")

    return SimilaritySearch(embed=embed, backbone="fake", threshold=0.9, views=(1.0,))


def ddi_like_raw(raw: Path, n: int = 30, missing: int = 4, copies: int = 3) -> dict[str, str]:
    """A DDI-like raw folder: ``ddi_metadata.csv`` with ``n`` images, ``missing`` metadata rows
    whose image file is absent, and ``copies`` second photographs of the first images; returns
    copy -> original file names."""
    from dermbench.data.synth import make_synthetic_dataset

    synth = make_synthetic_dataset(raw.parent / "synth_source", n=n, size=48, seed=7, progress=False)
    frame = pd.concat([pd.read_csv(synth / f"{s}_metadata.csv") for s in SPLITS]).reset_index(drop=True)
    (raw / "images").mkdir(parents=True)
    rows, rng, planted = [], np.random.default_rng(1), {}
    for k, r in frame.iterrows():
        name = f"{k:06d}.png"
        Image.open(synth / "images" / r["img_id"]).save(raw / "images" / name)
        rows.append({"DDI_ID": k, "DDI_file": name, "skin_tone": (12, 34, 56)[k % 3],
                     "malignant": r["benign_malignant"] == "malignant", "disease": r["diagnosis"]})
    for j in range(copies):
        name = f"{500 + j:06d}.png"
        rephotograph(Image.open(raw / "images" / rows[j]["DDI_file"]), rng).save(raw / "images" / name)
        planted[name] = rows[j]["DDI_file"]
        rows.append({**rows[j], "DDI_ID": 500 + j, "DDI_file": name})
    for j in range(missing):
        rows.append({"DDI_ID": 900 + j, "DDI_file": f"{900 + j:06d}.png", "skin_tone": 12, "malignant": False,
                     "disease": "seborrheic keratosis"})
    pd.DataFrame(rows).to_csv(raw / "ddi_metadata.csv")
    return planted


def test_prepare_group_similar_keeps_likely_same_lesion_images_in_one_split(tmp_path):
    from dermbench.data.contract import load_dataset
    from dermbench.data.sources.prepare import prepare

    planted = ddi_like_raw(tmp_path / "raw")
    card = prepare("ddi", tmp_path / "raw", tmp_path / "ddi", quiet=True, group_similar=_fake_search(planted))
    ds = load_dataset(tmp_path / "ddi", quiet=True)
    split_of = {str(i): s for s, df in ds.splits.items() for i in df["img_id"]}
    group_of = {str(i): g for df in ds.splits.values() for i, g in zip(df["img_id"], df["similar_group"])}
    for copy, original in planted.items():
        assert split_of[copy] == split_of[original] and group_of[copy] == group_of[original] == f"sim-{original}"
    recorded = card["group_similar"]
    assert recorded["groups"] == len(planted) and recorded["images_grouped"] == 2 * len(planted)
    assert recorded["backbone"] == "fake" and recorded["members"][f"sim-{next(iter(planted.values()))}"]
    assert "similar_group" in card["split_spec"]["group_by"] and "grouped by similar_group" in card["split_policy"]


def test_group_similar_refuses_the_ungrouped_split(tmp_path):
    from dermbench.data.sources.prepare import prepare
    from dermbench.errors import UsageError

    planted = ddi_like_raw(tmp_path / "raw", n=30, missing=0, copies=1)
    with pytest.raises(UsageError, match="choose one"):
        prepare("ddi", tmp_path / "raw", tmp_path / "out", quiet=True, split="ungrouped",
                group_similar=_fake_search(planted))


@pytest.fixture
def warnings_logged():
    """Warnings logged under ``dermbench`` during the test (its logger does not propagate once the
    console is configured, so caplog alone misses them)."""
    messages: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("dermbench")
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


def test_group_similar_that_leaves_a_split_empty_says_so(tmp_path, warnings_logged):
    """A search that joins every image into one group leaves validation and test empty: prepare
    says so when it makes the split, naming --group-similar, not only the first cell that fails."""
    from dermbench.data.sources.prepare import prepare

    planted = ddi_like_raw(tmp_path / "raw", n=30, missing=0, copies=1)
    one_lesion = {f"{k:06d}.png": "all" for k in range(30)} | {name: "all" for name in planted}
    card = prepare("ddi", tmp_path / "raw", tmp_path / "ddi", quiet=True, group_similar=_fake_search(one_lesion))
    assert sorted(card["split_counts"].values()) == [0, 0, 31]
    assert any("has no images" in w and "--group-similar" in w for w in warnings_logged), warnings_logged


def test_a_split_without_one_class_is_named_when_prepared(tmp_path, warnings_logged):
    from dermbench.data.sources.prepare import prepare

    ddi_like_raw(tmp_path / "raw", n=30, missing=0, copies=0)
    prepare("ddi", tmp_path / "raw", tmp_path / "fine", quiet=True)
    assert not [w for w in warnings_logged if "split made" in w]
    frame = pd.read_csv(tmp_path / "raw" / "ddi_metadata.csv", index_col=0)
    frame.loc[frame["malignant"], "malignant"] = False
    frame.loc[frame.index[0], "malignant"] = True  # one malignant image: some split goes without one
    frame.to_csv(tmp_path / "raw" / "ddi_metadata.csv")
    prepare("ddi", tmp_path / "raw", tmp_path / "rare", quiet=True)
    assert any("has no malignant image" in w and "too rare" in w for w in warnings_logged), warnings_logged
