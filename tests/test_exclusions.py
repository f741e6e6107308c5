"""One exclusion record (data.exclusions.Exclusion) from the contract loader, the image cache,
a paradigm's unreadable images and ``prepare``, written once to a run's exclusions.csv."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dermbench.data.contract import load_dataset
from dermbench.data.exclusions import Exclusion, exclusion_frame, read_exclusions, summarise_by_reason
from dermbench.runs.evaluate import finalize_cell, without_unreadable
from dermbench.runs.record import RunRecorder

from test_contract import make_clean


def test_record_round_trips_through_a_csv(tmp_path):
    records = [Exclusion(split="train", img_id="a.jpg", reason="missing_label", row=3),
               Exclusion(split="test", img_id="b.jpg", reason="truncated_image", detail="image cache: cut"),
               Exclusion(split="", img_id="c.jpg", reason="excluded_class", detail="classes: x, y")]
    exclusion_frame(records).to_csv(tmp_path / "exclusions.csv", index=False)
    back = read_exclusions(pd.read_csv(tmp_path / "exclusions.csv", keep_default_na=False, na_values=[""]))
    assert back == records
    assert summarise_by_reason(records)[2] == {"reason": "excluded_class", "count": 1, "detail": "classes: x, y",
                                               "examples": ["c.jpg"]}


def test_load_and_paradigm_exclusions_land_in_one_exclusions_csv(tmp_path: Path):
    root = make_clean(tmp_path / "d", n=8)
    test_csv = root / "test_metadata.csv"
    rows = pd.read_csv(test_csv)
    rows.loc[len(rows)] = {"img_id": "ghost.jpg", "benign_malignant": "benign", "patient_id": "px",
                           "fitzpatrick": "III"}
    rows.to_csv(test_csv, index=False)
    ds = load_dataset(root, quiet=True)
    (loaded,) = ds.exclusions
    assert (loaded.split, loaded.img_id, loaded.reason, loaded.row) == ("test", "ghost.jpg", "missing_image", 10)

    victim = ds.split("validation")["img_id"].iloc[0]
    failed = Exclusion(split="validation", img_id=victim, reason="truncated_image", detail="cut at byte 100", row=2)
    kept, excluded = without_unreadable(ds, [failed])
    scores = {s: pd.DataFrame({"img_id": kept.split(s)["img_id"], "p_malignant": kept.split(s)["label"] * 0.6 + 0.2})
              for s in ("validation", "test")}
    rec = RunRecorder(tmp_path / "cell")
    rec.begin({"paradigm": "unit"})
    metrics = finalize_cell(rec, kept, scores, n_boot=0, excluded_images=excluded)

    written = read_exclusions(pd.read_csv(rec.path / "exclusions.csv", keep_default_na=False, na_values=[""]))
    assert written == [loaded, Exclusion(split="validation", img_id=victim, reason="truncated_image",
                                         detail="image cache: cut at byte 100", row=2)]
    assert metrics["exclusions"]["count"] == 2
    assert metrics["exclusions"]["by_reason"] == {"missing_image": 1, "truncated_image": 1}
    assert victim not in set(pd.read_csv(rec.path / "predictions_validation.csv")["img_id"])


def test_prepare_writes_its_dropped_rows_as_exclusion_records(tmp_path: Path):
    """prepare's excluded.csv has the exclusions.csv columns; the card summarises it by reason."""
    import json

    import numpy as np
    from PIL import Image

    from dermbench.data.sources.prepare import prepare

    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    rows = []
    for i in range(24):
        Image.fromarray(np.full((16, 16, 3), i * 9, np.uint8)).save(raw / "images" / f"im{i}.jpg")
        rows.append({"image": f"im{i}", "diagnosis": ("nevus", "melanoma", "wart")[i % 3]})
    rows.append({"image": "absent", "diagnosis": "nevus"})
    pd.DataFrame(rows).to_csv(raw / "meta.csv", index=False)
    (raw / "mapping.yaml").write_text("columns: {img_id: image}\n"
                                      "labels: {nevus: benign, melanoma: malignant, wart: exclude}\n")
    card = prepare("csv", raw, tmp_path / "out", quiet=True,
                   options={"metadata": str(raw / "meta.csv"), "mapping": str(raw / "mapping.yaml")})
    excluded = read_exclusions(pd.read_csv(tmp_path / "out" / "excluded.csv", keep_default_na=False,
                                           na_values=[""]))
    assert {(e.img_id, e.reason) for e in excluded} == {("absent", "missing_image")} | {
        (f"im{i}", "excluded_class") for i in range(2, 24, 3)}
    written_card = json.loads((tmp_path / "out" / "dataset.json").read_text())
    by_reason = {e["reason"]: e["count"] for e in written_card["excluded"]}
    assert by_reason == {"excluded_class": 8, "missing_image": 1} == {e["reason"]: e["count"] for e in card["excluded"]}
