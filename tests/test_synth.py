"""The seeded ABCD-rule synthetic dataset (`dermbench synth`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

from dermbench import SPLITS
from dermbench.data import synth
from dermbench.data.card import read_card
from dermbench.data.contract import load_dataset
from dermbench.data.synth import SynthError, make_synthetic_dataset


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "small"
    return make_synthetic_dataset(out, n=120, size=48, seed=3, progress=False)


def _all_rows(ds) -> pd.DataFrame:
    return pd.concat([df.assign(split=s) for s, df in ds.splits.items()], ignore_index=True)


def test_layout_loads_strictly_with_every_contract_column(small):
    ds = load_dataset(small, strict=True, quiet=True)
    assert ds.exclusions == [] and ds.warnings == []
    rows = _all_rows(ds)
    assert len(rows) == 120 and rows["img_id"].str.endswith(".jpg").all()
    assert sorted(p.name for p in (small / "images").iterdir()) == sorted(rows["img_id"])
    for col in ("patient_id", "lesion_id", "fitzpatrick", "age", "sex", "site", "modality", "diagnosis"):
        assert rows[col].notna().all(), col
    assert set(rows["fitzpatrick"]) <= set(synth.FITZPATRICK_TYPES) and rows["fitzpatrick"].nunique() >= 3
    assert set(rows["modality"]) == {"dermoscopic", "clinical"}
    assert set(rows["sex"]) == {"male", "female"}
    assert rows["site"].nunique() >= 4
    assert rows["age"].astype(int).between(5, 95).all()
    # The fine diagnosis agrees with the binary label.
    assert set(rows.loc[rows.label == 1, "diagnosis"]) <= set(synth.MALIGNANT_DIAGNOSES)
    assert set(rows.loc[rows.label == 0, "diagnosis"]) <= set(synth.BENIGN_DIAGNOSES)
    # Per-patient attributes are constant within a patient, per-lesion labels within a lesion.
    assert (rows.groupby("patient_id")[["fitzpatrick", "sex", "age"]].nunique() == 1).all().all()
    assert (rows.groupby("lesion_id")[["label", "diagnosis", "site", "patient_id"]].nunique() == 1).all().all()
    assert abs(rows["label"].mean() - 0.35) < 0.02
    with Image.open(ds.splits["train"]["path"].iloc[0]) as img:
        assert img.format == "JPEG" and img.mode == "RGB" and img.size == (48, 48)


def test_splits_are_grouped_by_patient_and_stratified(small):
    ds = load_dataset(small, quiet=True)
    patients = {s: set(df["patient_id"]) for s, df in ds.splits.items()}
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not patients[a] & patients[b], (a, b)
    for s, df in ds.splits.items():
        assert set(df["label"]) == {0, 1}, s
    n = {s: len(df) for s, df in ds.splits.items()}
    assert abs(n["train"] / 120 - 0.7) < 0.08 and abs(n["test"] / 120 - 0.15) < 0.06


def test_card_records_source_generator_and_policy(small):
    card = read_card(small)
    assert card["source"] == "synthetic" and card["licence"] == "CC0-1.0 (generated)"
    assert card["name"] == "small"  # not the temporary folder it was written in
    assert card["generator"]["seed"] == 3 and card["generator"]["n"] == 120 and card["generator"]["size"] == 48
    assert card["label_mapping"]["mapping"]["melanoma"] == "malignant"
    assert card["label_mapping"]["mapping"]["nevus"] == "benign"
    assert card["split_policy"]["group"] == "patient_id"
    assert card["premalignant_policy"] == "n/a" and "not a medical result" in card["note"]
    assert card["fingerprint"] == load_dataset(small, quiet=True).fingerprint


def test_same_seed_is_byte_identical_and_another_seed_differs(tmp_path):
    kw = dict(n=40, size=40, progress=False)
    a = make_synthetic_dataset(tmp_path / "a", seed=7, **kw)
    b = make_synthetic_dataset(tmp_path / "b", seed=7, **kw)
    c = make_synthetic_dataset(tmp_path / "c", seed=8, **kw)
    for split in SPLITS:
        name = f"{split}_metadata.csv"
        assert (a / name).read_bytes() == (b / name).read_bytes()
    fa, fb, fc = (load_dataset(p, quiet=True).fingerprint for p in (a, b, c))
    assert fa == fb
    assert fc != fa


def test_overwrite_protection_and_no_half_written_dataset(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    make_synthetic_dataset(out, n=40, size=32, seed=1, progress=False)
    before = load_dataset(out, quiet=True).fingerprint
    with pytest.raises(SynthError, match="overwrite"):
        make_synthetic_dataset(out, n=40, size=32, seed=2, progress=False)
    assert load_dataset(out, quiet=True).fingerprint == before

    # A run that dies half-way leaves the old dataset intact and no folder that looks complete.
    calls = {"n": 0}
    real_save = synth._save_jpeg

    def failing_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 10:
            raise KeyboardInterrupt
        real_save(*args, **kwargs)

    monkeypatch.setattr(synth, "_save_jpeg", failing_save)
    with pytest.raises(KeyboardInterrupt):
        make_synthetic_dataset(out, n=40, size=32, seed=2, overwrite=True, progress=False)
    with pytest.raises(KeyboardInterrupt):
        calls["n"] = 0
        make_synthetic_dataset(tmp_path / "fresh", n=40, size=32, seed=2, progress=False)
    monkeypatch.setattr(synth, "_save_jpeg", real_save)
    assert not (tmp_path / "fresh").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert load_dataset(out, quiet=True).fingerprint == before

    make_synthetic_dataset(out, n=40, size=32, seed=2, overwrite=True, progress=False)
    assert load_dataset(out, quiet=True).fingerprint != before

    stranger = tmp_path / "notes"
    stranger.mkdir()
    (stranger / "todo.txt").write_text("mine")
    with pytest.raises(SynthError, match="does not look like a dataset"):
        make_synthetic_dataset(stranger, n=40, size=32, overwrite=True, progress=False)
    assert (stranger / "todo.txt").read_text() == "mine"


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=10), "at least"),
    (dict(ratios=(0.7, 0.2, 0.2)), "sum to"),
    (dict(ratios=(0.8, 0.2, 0.0)), "positive"),
    (dict(malignant_fraction=1.0), "malignant_fraction"),
    (dict(images_per_patient=(3, 1)), "images_per_patient"),
    (dict(size=8), "size"),
])
def test_bad_arguments_are_refused_before_writing(tmp_path, kwargs, match):
    with pytest.raises(SynthError, match=match):
        make_synthetic_dataset(tmp_path / "x", progress=False, **kwargs)
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------------
# Learnability: handcrafted ABCD features separate the classes well, but not perfectly.
# ------------------------------------------------------------------------------------------------

FEATURES = ("log_area", "border_irregularity", "asymmetry", "n_colours", "variegation")


def _abcd_features(path: str) -> list[float]:
    """Dermoscopy-style handcrafted features: a threshold mask of the central lesion, then
    D (area), B (perimeter^2 / 4 pi area), A (mismatch with its 180-degree rotation), C (how
    many of black / blue-grey / red / white are present, and colour spread)."""
    img = np.asarray(Image.open(path).convert("RGB"), float)
    h, w, _ = img.shape
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((yy + 0.5) / h * 2 - 1, (xx + 0.5) / w * 2 - 1)
    bg = np.median(img[(r > 0.75) & (r < 0.95)], axis=0)
    ratio = img / np.maximum(bg, 1)
    contrast = np.linalg.norm(ratio - 1, axis=-1)
    labelled, k = ndimage.label(ndimage.binary_opening((contrast > 0.2) & (r < 0.98)))
    if k == 0:
        return [np.log(1 / (h * w)), 1.0, 0.0, 0.0, 0.0]
    centre = np.zeros((h, w), bool)
    centre[h // 2, w // 2] = True
    to_centre = ndimage.distance_transform_edt(~centre)
    nearest = min(range(1, k + 1), key=lambda i: to_centre[labelled == i].min())
    mask = ndimage.binary_fill_holes(labelled == nearest)
    area = mask.sum()
    perimeter = (mask & ~ndimage.binary_erosion(mask)).sum()
    points = np.argwhere(mask)
    mirrored = np.rint(2 * points.mean(0) - points).astype(int)
    ok = (mirrored >= 0).all(1) & (mirrored[:, 0] < h) & (mirrored[:, 1] < w)
    asymmetry = 1 - mask[mirrored[ok, 0], mirrored[ok, 1]].sum() / area
    interior = ndimage.binary_erosion(mask)
    px = img[interior] if interior.sum() > 10 else img[mask]
    lum = px.mean(1) / bg.mean()
    shares = [(lum < 0.35).mean(), (px[:, 2] > px[:, 0] + 5).mean(),
              ((px[:, 0] > 1.6 * px[:, 1]) & (px[:, 0] > 110)).mean(), (lum > 0.9).mean()]
    colours = ratio[mask]
    variegation = (np.linalg.norm(colours - np.median(colours, 0), axis=1) > 0.25).mean()
    return [np.log(area / (h * w)), perimeter ** 2 / (4 * np.pi * area), asymmetry,
            float(sum(s > 0.03 for s in shares)), variegation]


def test_labels_are_learnable_but_not_trivially(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # A larger test share than the default keeps the AUROC estimate itself reasonably tight.
    out = make_synthetic_dataset(tmp_path / "learn", n=300, size=64, seed=0, ratios=(0.5, 0.1, 0.4),
                                 progress=False)
    ds = load_dataset(out, quiet=True)
    x = {s: np.array([_abcd_features(p) for p in ds.splits[s]["path"]]) for s in ("train", "test")}
    y = {s: ds.splits[s]["label"].to_numpy() for s in ("train", "test")}
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(x["train"], y["train"])
    auroc = roc_auc_score(y["test"], model.predict_proba(x["test"])[:, 1])
    assert 0.75 <= auroc <= 0.99, auroc
    for j, name in enumerate(FEATURES):
        single = roc_auc_score(y["test"], x["test"][:, j])
        assert max(single, 1 - single) <= 0.95, (name, single)
    # Each ABCD letter carries some signal on its own (D, B, A and C in that order).
    singles = [roc_auc_score(y["test"], x["test"][:, j]) for j in range(4)]
    assert min(singles) >= 0.6, dict(zip(FEATURES, singles))


def test_synth_splits_with_the_package_grouped_stratified_split(tmp_path):
    """One grouped stratified split: the synthetic dataset's patient assignment is exactly
    data.splits.grouped_stratified_split (grouped by patient, stratified by label, stream [seed, 2])."""
    import pandas as pd

    from dermbench.data.splits import grouped_stratified_split

    root = make_synthetic_dataset(tmp_path / "s", n=90, size=32, seed=11, progress=False)
    frames = {s: pd.read_csv(root / f"{s}_metadata.csv") for s in ("train", "validation", "test")}
    rows = pd.concat([f.assign(split=s) for s, f in frames.items()]).sort_values("img_id")
    expected = grouped_stratified_split((rows["benign_malignant"] == "malignant").astype(int).to_numpy(),
                                        rows["patient_id"].to_numpy(), (0.7, 0.15, 0.15), seed=[11, 2])
    assert list(rows["split"]) == list(expected)
    assert not hasattr(synth, "_grouped_stratified_split")
