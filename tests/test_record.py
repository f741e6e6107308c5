"""Run records: atomic files, completion marker last, strict predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from dermbench.runs.record import COMPLETE, RunRecorder, cell_dir, is_complete, validate_predictions
from dermbench.utils.atomic import atomic_write_text


def test_cell_dir_is_safe_and_stable(tmp_path: Path) -> None:
    p = cell_dir(tmp_path, "exp", "zeroshot", "hf-hub:microsoft/BiomedCLIP", "ham10000", 3)
    assert p == tmp_path / "exp" / "zeroshot" / "hf-hub_microsoft_BiomedCLIP" / "ham10000" / "seed3"


def test_marker_written_last_and_begin_clears_partial_outputs(tmp_path: Path) -> None:
    rec = RunRecorder(tmp_path / "cell")
    rec.begin({"model": "m", "seed": 1})
    (rec.work / "checkpoint.pt").write_bytes(b"keep me")
    rec.save_predictions("test", pd.DataFrame({"img_id": ["a", "b"], "label": [0, 1],
                                               "p_malignant": [0.2, 0.9], "pred": [0, 1]}))
    assert not is_complete(rec.path)
    rec.finish({"auroc": 1.0})
    assert is_complete(rec.path)
    listed = json.loads((rec.path / COMPLETE).read_text())["files"]
    assert {"config.yaml", "predictions_test.csv", "metrics.json"} <= set(listed)
    # a listed file that disappears makes the cell incomplete again
    (rec.path / "metrics.json").unlink()
    assert not is_complete(rec.path)
    # restarting clears old outputs and the marker but keeps work/
    rec2 = RunRecorder(tmp_path / "cell")
    rec2.begin({"model": "m", "seed": 1})
    assert not (rec2.path / COMPLETE).exists() and not (rec2.path / "predictions_test.csv").exists()
    assert (rec2.work / "checkpoint.pt").read_bytes() == b"keep me"


def test_failed_cell_has_error_and_no_marker(tmp_path: Path) -> None:
    rec = RunRecorder(tmp_path / "cell")
    rec.begin({})
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        rec.fail(exc)
    assert "RuntimeError: boom" in (rec.path / "error.txt").read_text()
    assert not is_complete(rec.path)


@pytest.mark.parametrize("bad,match", [
    ({"img_id": ["a", "a"], "label": [0, 1], "p_malignant": [0.1, 0.2], "pred": [0, 0]}, "duplicate img_id"),
    ({"img_id": ["a", "b"], "label": [0, 1], "p_malignant": [0.1, None], "pred": [0, 0]}, "missing or not numbers"),
    ({"img_id": ["a", "b"], "label": [0, 1], "p_malignant": [0.1, 1.5], "pred": [0, 0]}, r"in \[0, 1\]"),
    ({"img_id": ["a", "b"], "label": [0, 2], "p_malignant": [0.1, 0.5], "pred": [0, 0]}, "'label' must be 0"),
    ({"img_id": ["a"], "p_malignant": [0.1], "pred": [0]}, "lacks column"),
])
def test_predictions_are_validated(bad: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        validate_predictions(pd.DataFrame(bad))


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")
    from dermbench.utils.atomic import atomic_path

    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_provenance_always_names_the_required_fields() -> None:
    from dermbench.runs.provenance import NOT_RECORDED, REQUIRED_FIELDS, collect_provenance

    full = collect_provenance(device="cpu", dtype="float32", batch_size=8, weights="random init",
                              dataset_fingerprint="abc")
    assert {k: full[k] for k in REQUIRED_FIELDS} == {"device": "cpu", "dtype": "float32", "batch_size": 8,
                                                     "weights": "random init", "dataset_fingerprint": "abc"}
    assert full["git_commit"] and "numpy" in full["packages"] and full["python"]
    bare = collect_provenance(dataset_fingerprint="abc", weights=None)
    assert all(bare[k] == NOT_RECORDED for k in ("device", "dtype", "batch_size", "weights"))
