"""HDF5 export of a prepared dataset and import back (the study's embedding-pipeline layout)."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from dermbench.data.contract import load_dataset
from dermbench.data.hdf5_io import HDF5LayoutError, export_hdf5, import_hdf5
from dermbench.data.sources.prepare import prepare


@pytest.fixture()
def pad_dataset(fixtures_raw, tmp_path):
    out = tmp_path / "pad"
    prepare("pad-ufes-20", fixtures_raw / "pad_ufes_20", out, quiet=True, options={"metadata": "metadata_head114.csv"})
    return out


def test_round_trip(pad_dataset, tmp_path):
    h5 = tmp_path / "pad.h5"
    export_hdf5(pad_dataset, h5)
    original = load_dataset(pad_dataset, quiet=True)
    with h5py.File(h5, "r") as f:
        assert set(f.keys()) == {"train", "validation", "test"}
        train = f["train"]
        assert list(train["img_id"].asstr()[()]) == original.splits["train"]["img_id"].tolist()
        assert set(train["benign_malignant"].asstr()[()]) <= {"benign", "malignant"}
        assert "diagnosis" in train["columns"]
    back = tmp_path / "back"
    card = import_hdf5(h5, back, quiet=True)
    restored = load_dataset(back, quiet=True)
    assert restored.manifest == original.manifest  # byte-identical images (RGBA PNGs included)
    for split in ("train", "validation", "test"):
        a = original.splits[split].drop(columns=["path"])
        b = restored.splits[split].drop(columns=["path"])
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b[a.columns].reset_index(drop=True),
                                      check_dtype=False)
    assert card["source"] == "pad-ufes-20" and card["premalignant_policy"] == "paper"


def test_study_layout_without_images(pad_dataset, tmp_path):
    """The old layout: img_id + benign_malignant per partition ('val'), images in a folder."""
    original = load_dataset(pad_dataset, quiet=True)
    h5 = tmp_path / "old.h5"
    with h5py.File(h5, "w") as f:
        for split, group in (("train", "train"), ("validation", "val"), ("test", "test")):
            df = original.splits[split]
            g = f.create_group(group)
            stems = [i.rsplit(".", 1)[0] for i in df["img_id"]]
            g.create_dataset("img_id", data=np.asarray(stems, dtype=object), dtype=h5py.string_dtype())
            g.create_dataset("benign_malignant", data=np.asarray(df["benign_malignant"], dtype=object),
                             dtype=h5py.string_dtype())
    with pytest.raises(HDF5LayoutError, match="--images"):
        import_hdf5(h5, tmp_path / "x", quiet=True)
    import_hdf5(h5, tmp_path / "y", images=pad_dataset / "images", quiet=True)
    restored = load_dataset(tmp_path / "y", quiet=True)
    assert restored.counts() == original.counts()


def test_cli_export_import(pad_dataset, tmp_path):
    from dermbench.cli.main import main

    assert main(["export-hdf5", str(pad_dataset), "--out", str(tmp_path / "p.h5"), "--group-names", "train,val,test"]) == 0
    with h5py.File(tmp_path / "p.h5", "r") as f:
        assert "val" in f
    assert main(["import-hdf5", str(tmp_path / "p.h5"), "--out", str(tmp_path / "back")]) == 0
    assert load_dataset(tmp_path / "back", quiet=True).counts() == load_dataset(pad_dataset, quiet=True).counts()


def test_import_refuses_img_id_that_escapes_images(tmp_path):
    """An img_id like ``../../evil.png`` in a foreign HDF5 file was written outside the new
    dataset folder before the fix."""
    import io

    from PIL import Image

    from dermbench.errors import SourceFormatError

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, format="PNG")
    h5 = tmp_path / "evil.h5"
    with h5py.File(h5, "w") as f:
        g = f.create_group("train")
        g.create_dataset("img_id", data=np.asarray(["../../evil.png"], dtype=object), dtype=h5py.string_dtype())
        g.create_dataset("benign_malignant", data=np.asarray(["benign"], dtype=object), dtype=h5py.string_dtype())
        images = g.create_dataset("image", (1,), dtype=h5py.vlen_dtype(np.uint8))
        images[0] = np.frombuffer(buf.getvalue(), dtype=np.uint8)
    with pytest.raises(SourceFormatError, match="escape images/"):
        import_hdf5(h5, tmp_path / "sub" / "out", quiet=True)
    assert not (tmp_path / "evil.png").exists() and not (tmp_path / "sub" / "evil.png").exists()
    assert not (tmp_path / "sub" / "out").exists()
