"""A finetune cell killed after an epoch resumes from its checkpoint and ends bit-identical to an
uninterrupted run with the same seed (CPU), with weights_only-loadable checkpoints."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from dermbench.paradigms.finetune import train as ft  # noqa: E402
from dermbench.paradigms.finetune.settings import FinetuneSettings  # noqa: E402
from dermbench.runner.cell import execute_cell  # noqa: E402
from dermbench.runs.cell import CellSpec  # noqa: E402
from dermbench.runs.record import is_complete, read_metrics, read_predictions  # noqa: E402


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from dermbench.data.synth import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("ftr") / "synth", n=100, size=48, seed=3, progress=False)


def _spec(root) -> CellSpec:
    settings = FinetuneSettings.from_preset("smoke", image_size=32, epochs=3, patience=5, batch_size=16,
                                            accumulate=2, augment="paper", weights="random")
    return CellSpec("resume", "finetune", "test_resnet", str(root), seed=7,
                    settings=settings.model_dump(mode="json"), n_boot=20, quiet=True)


class _Killed(KeyboardInterrupt):
    """Stands in for a kill: execute_cell re-raises KeyboardInterrupt instead of recording a failure."""


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_run(synth_root, tmp_path, monkeypatch):
    spec = _spec(synth_root)

    # 1. uninterrupted
    full = execute_cell(spec, tmp_path / "full")
    assert full.status == "done", full.error

    # 2. killed right after epoch 1 was checkpointed
    real_fit = ft.fit

    def fit_killed_after_epoch_1(*args, **kwargs):
        def kill(epoch, row):
            if epoch == 1:
                raise _Killed()
        return real_fit(*args, on_epoch_end=kill, **kwargs)

    monkeypatch.setattr(ft, "fit", fit_killed_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        execute_cell(spec, tmp_path / "resumed")
    cell = spec.path(tmp_path / "resumed")
    assert not is_complete(cell)
    state = torch.load(cell / "work" / ft.CHECKPOINT, map_location="cpu", weights_only=True)
    assert state["epoch"] == 1 and not state["finished"]
    assert set(state) >= {"model", "optimizer", "scheduler", "rng", "epoch", "best", "history"}

    # 3. run again: continues from epoch 2
    monkeypatch.setattr(ft, "fit", real_fit)
    resumed = execute_cell(spec, tmp_path / "resumed")
    assert resumed.status == "done", resumed.error

    m_full, m_res = read_metrics(full.path), read_metrics(resumed.path)
    assert m_res["extra"]["training"]["resumed_from_epoch"] == 1
    assert m_full["extra"]["training"]["resumed_from_epoch"] is None
    assert m_res["extra"]["training"]["epochs_run"] == m_full["extra"]["training"]["epochs_run"] == 3
    # identical training curves (losses, AUROC, lr), identical predictions and metrics
    cols = ["epoch", "train_loss", "val_loss", "val_auroc", "lr"]
    pd.testing.assert_frame_equal(pd.read_csv(full.path / "train_log.csv")[cols],
                                  pd.read_csv(resumed.path / "train_log.csv")[cols], check_exact=True)
    for split in ("validation", "test"):
        pd.testing.assert_frame_equal(read_predictions(full.path, split), read_predictions(resumed.path, split),
                                      check_exact=True)
    assert json.dumps(m_full["splits"], sort_keys=True) == json.dumps(m_res["splits"], sort_keys=True)
    best_full = sorted((full.path / "work").glob("best_epoch*.pt"))
    best_res = sorted((resumed.path / "work").glob("best_epoch*.pt"))
    assert [p.name for p in best_full] == [p.name for p in best_res] and len(best_full) == 1
    w_full = torch.load(best_full[0], weights_only=True)["model"]
    w_res = torch.load(best_res[0], weights_only=True)["model"]
    assert all(torch.equal(w_full[k], w_res[k]) for k in w_full)
    # a complete cell drops its resume state (keep_last_checkpoint=False) but keeps the best weights
    assert not (resumed.path / "work" / ft.CHECKPOINT).exists()

    # the record: log, curves, error analysis
    for name in ("train_log.csv", "training_curves.png", "false_benign.csv", "false_malignant.csv"):
        assert (resumed.path / name).is_file(), name
    ea = m_res["extra"]["error_analysis"]
    test = read_predictions(resumed.path, "test")
    assert ea["false_benign"] == int(((test["label"] == 1) & (test["pred"] == 0)).sum())
    assert ea["false_malignant"] == int(((test["label"] == 0) & (test["pred"] == 1)).sum())
    assert m_res["provenance"]["weights"] == "random init"

    # 4. a complete cell is skipped, not retrained
    assert execute_cell(spec, tmp_path / "resumed").status == "skipped"

@pytest.mark.slow
def test_checkpoint_of_other_configuration_is_not_resumed(synth_root, tmp_path):
    from dermbench.data.contract import load_dataset
    from dermbench.models import build_classifier

    ds = load_dataset(synth_root, quiet=True)
    settings = FinetuneSettings.from_preset("smoke", image_size=32, epochs=1, weights="random", augment="none")
    built = build_classifier("test_resnet", weights="random")
    kw = dict(seed=0, work_dir=tmp_path, mean=built.data_config["mean"], std=built.data_config["std"], progress=False)
    ft.fit(built.model, ds, settings, run_key="a", **kw)
    again = ft.fit(built.model, ds, settings, run_key="a", **kw)
    assert again.resumed_from_epoch == 1 and again.epochs_run == 1  # finished: nothing retrained
    other = ft.fit(built.model, ds, settings, run_key="b", **kw)
    assert other.resumed_from_epoch is None and any("another configuration" in n for n in other.notes)
