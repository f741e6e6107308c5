"""A grid cell runs with the torch CPU thread count its resources ask for, in every executor."""

from __future__ import annotations

import torch

from dermbench.paradigms import PARADIGMS
from dermbench.registry import Entry
from dermbench.runner.cell import execute_cell
from dermbench.runs.cell import CellSpec
from dermbench.runner.config import parse_config
from dermbench.runner.grid import expand_grid

SEEN: list[int] = []


def record_threads(spec, recorder):
    SEEN.append(torch.get_num_threads())
    raise RuntimeError("stop here: only the thread count matters")


def test_execute_cell_applies_and_restores_threads(tmp_path, monkeypatch):
    monkeypatch.setitem(PARADIGMS._entries, "threadcheck",
                        Entry("threadcheck", f"{__name__}:record_threads"))
    before = torch.get_num_threads()
    SEEN.clear()
    for threads in (1, 0):
        result = execute_cell(CellSpec("e", "threadcheck", "m", str(tmp_path / "d"), threads=threads), tmp_path)
        assert result.status == "failed" and "stop here" in result.error
    assert SEEN == [1, before]
    assert torch.get_num_threads() == before


def test_grid_cells_take_threads_from_resources(tmp_path):
    (tmp_path / "d").mkdir()
    cfg = parse_config({"experiment": "t", "datasets": [{"path": str(tmp_path / "d")}],
                        "resources": {"num_cpus": 1.5, "num_gpus": 0},
                        "grid": [{"paradigm": "probe", "backbones": ["handcrafted"], "heads": ["logreg"]}]})
    cells = expand_grid(cfg)
    assert [c.spec.threads for c in cells] == [2]
