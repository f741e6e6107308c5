"""The probe on real HAM10000 images: ImageNet EfficientNet-Lite0 + logistic regression against the
handcrafted baseline and the same network with random weights.

The 99 fixture images (45 malignant: mel/bcc/akiec) become a small contract folder with a
lesion-grouped split, stratified by diagnosis (so every diagnosis is in every split), 50/25/25.
All three backbones get the identical protocol: the same split, the logistic-regression grid
chosen on validation, class weighting, and power normalisation of the features
(``feature_transform="power"``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

MALIGNANT_DX = {"mel", "bcc", "akiec"}


def build_ham_contract(raw: Path, out: Path, seed: int = 0, fractions=(0.5, 0.25, 0.25)) -> Path:
    """Contract folder from the fixture images: lesion-grouped, diagnosis-stratified split."""
    md = pd.read_csv(raw / "ham10000" / "HAM10000_metadata.csv")
    images = raw / "ham10000" / "images"
    have = {p.stem: p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")}
    md = md[md.image_id.isin(have)].copy()
    md["benign_malignant"] = np.where(md.dx.isin(MALIGNANT_DX), "malignant", "benign")
    lesions = md.groupby("lesion_id")["dx"].first()
    rng = np.random.default_rng(seed)
    split_of: dict[str, str] = {}
    for dx in sorted(lesions.unique()):
        ids = np.sort(lesions[lesions == dx].index.to_numpy())
        ids = ids[rng.permutation(len(ids))]
        n_train = int(round(fractions[0] * len(ids)))
        n_val = int(round(fractions[1] * len(ids)))
        for i, lesion in enumerate(ids):
            split_of[lesion] = "train" if i < n_train else "validation" if i < n_train + n_val else "test"
    (out / "images").mkdir(parents=True, exist_ok=True)
    for img_id in md.image_id:
        shutil.copyfile(have[img_id], out / "images" / have[img_id].name)
    md["split"] = md.lesion_id.map(split_of)
    for split in ("train", "validation", "test"):
        part = md[md.split == split].sort_values("image_id")
        pd.DataFrame({"img_id": part.image_id, "benign_malignant": part.benign_malignant,
                      "lesion_id": part.lesion_id, "diagnosis": part.dx}).to_csv(out / f"{split}_metadata.csv", index=False)
    return out


def run_three(dataset: Path, runs: Path, feature_transform: str = "power") -> dict[str, float]:
    from dermbench.paradigms.probe.settings import ProbeSettings
    from dermbench.runner.cell import execute_cell
    from dermbench.runs.cell import CellSpec
    from dermbench.runs.record import read_metrics

    results = {}
    for label, backbone, weights in (("lite0_imagenet", "efficientnet_lite0_imagenet", None),
                                     ("handcrafted", "handcrafted", None),
                                     ("lite0_random", "efficientnet_lite0_imagenet", "random")):
        # the grid chosen on validation as the docstring says, also on this 25-image validation split
        # (by default a split this small hands the choice to cross-validation on train + validation)
        settings = ProbeSettings(head="logreg", weights=weights or "default", feature_transform=feature_transform,
                                 head_options={"cv_min_validation_images": 0, "cv_min_validation_positives": 0})
        spec = CellSpec("ham", "probe", model=backbone, dataset=str(dataset), seed=0,
                        settings=settings.model_dump(mode="json"), n_boot=200, quiet=True, device="cpu")
        result = execute_cell(spec, runs)
        assert result.status == "done", (result.path / "error.txt").read_text() if result.status == "failed" else ""
        results[label] = read_metrics(result.path)["splits"]["test"]["metrics"]["auroc"]["value"]
    return results


@pytest.mark.slow
def test_imagenet_lite0_beats_handcrafted_and_random_init_on_ham10000(fixtures_raw, tmp_path):
    if not (fixtures_raw / "ham10000" / "images").is_dir():
        pytest.skip("HAM10000 fixture images not found")
    dataset = build_ham_contract(fixtures_raw, tmp_path / "ham10000_fixture")
    auroc = run_three(dataset, tmp_path / "runs")
    print("test AUROC", auroc)
    assert auroc["lite0_imagenet"] > auroc["handcrafted"], auroc
    assert auroc["lite0_imagenet"] > auroc["lite0_random"], auroc
