"""One cell of the benchmark: what it runs (:class:`CellSpec`) and what it is called (:class:`CellIdentity`).

A cell is a paradigm run with one model and its settings on one dataset and seed. Its identity —
the folder its run record goes to and the row it becomes in the report — is given by ONE function,
:func:`cell_identity`, from the paradigm, the model and the settings alone. Every command
(``dermbench finetune``/``probe``/``zeroshot``) and the grid build a :class:`CellSpec` and read
its identity from there, so the same settings give the same folder wherever a cell is started.

The identity has three parts:

* ``model``: the canonical model name (``dermbench.models.resolve``: ``resnet10t`` and
  ``timm:resnet10t`` are one model);
* ``variant``: the settings that make a distinct configuration, as the paradigm declares them in
  its grid block (:meth:`dermbench.runs.block.GridBlock.variant_parts`): a finetune balancing mode,
  a probe head and its training-set treatment, a zeroshot prompt set; other weights than the
  model's own (``random``, a local file, a package) are always part of it;
* ``curve``: a point on a curve (a label fraction below 1, or k images per class). Curve points of
  one configuration share its ``config_label`` (one report row, drawn as a curve) and differ in
  ``label`` (one folder each).

Every run record carries the identity (``identity:`` in ``config.yaml``, ``cell.identity`` in
``metrics.json``), so the report groups by configuration without parsing folder names.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

#: The settings that place a cell on a curve, and how its label names the point.
CURVE_AXES = ("label_fraction", "k_shot")


@dataclass(frozen=True)
class CellIdentity:
    """What a cell is called. ``config_label`` names the configuration (one report row);
    ``label`` names the cell (its folder), which adds the curve point when there is one."""

    model: str
    variant: str = ""
    curve_axis: str | None = None      # "label_fraction" | "k_shot" | None
    curve_value: float | int | None = None

    @property
    def curve(self) -> dict[str, Any] | None:
        """``{"axis": ..., "value": ...}`` for a curve point, else None."""
        return None if self.curve_axis is None else {"axis": self.curve_axis, "value": self.curve_value}

    @property
    def point(self) -> str:
        """The curve point as a label part: ``frac0.1``, ``5shot``, or ``""``."""
        if self.curve_axis == "label_fraction":
            return f"frac{self.curve_value:g}"
        if self.curve_axis == "k_shot":
            return f"{self.curve_value}shot"
        return ""

    @property
    def config_label(self) -> str:
        return "+".join(p for p in (self.model, self.variant) if p)

    @property
    def label(self) -> str:
        return "+".join(p for p in (self.config_label, self.point) if p)

    def as_record(self) -> dict[str, Any]:
        """The ``identity`` mapping every run record carries."""
        return {"model": self.model, "variant": self.variant, "config_label": self.config_label,
                "label": self.label, "curve_axis": self.curve_axis, "curve_value": self.curve_value}


def cell_identity(paradigm: str, model: Any, settings: dict[str, Any] | None = None) -> CellIdentity:
    """The identity of a cell of ``paradigm`` running ``model`` (a name or a resolved model spec)
    with ``settings`` (the paradigm's settings; missing keys take the settings model's defaults).

    The paradigm's grid block declares which model kind names are resolved as and which settings
    make the variant (:class:`dermbench.runs.block.GridBlock`); a paradigm without a block of its own
    (a plugin) uses the base rules: the model name as written, ``settings["variant"]`` and the
    weights.
    """
    name = model if isinstance(model, str) else model.name
    return _identity(paradigm, name, json.dumps(settings or {}, sort_keys=True, default=str))


@lru_cache(maxsize=4096)
def _identity(paradigm: str, model: str, settings_json: str) -> CellIdentity:
    from .block import block_class

    block = block_class(paradigm)
    spec = block.resolve_model(model)
    settings = block.validate_settings(json.loads(settings_json))
    axis, value = block.curve_point(settings)
    parts = block.variant_parts(settings, spec)
    return CellIdentity(model=spec.name if spec is not None else model, variant="+".join(p for p in parts if p),
                        curve_axis=axis, curve_value=value)


@dataclass
class CellSpec:
    """Everything a paradigm needs to run one cell. ``settings`` is the paradigm's validated
    settings (a plain dict of its pydantic settings model, ``paradigms/<p>/settings.py``); the
    cell's name and folder follow from ``paradigm``, ``model`` and ``settings`` (:attr:`identity`).

    CPU float results depend on how reductions are split across threads, so a grid fixes the
    thread count per cell (``threads``, from its ``resources.num_cpus``): then the same config and
    seed give identical metrics in process, in a worker pool and on Ray.
    """

    # The defaults below are the defaults of the commands' and the run config's cell options.
    experiment: str
    paradigm: str
    model: str                # canonical model name (finetune classifier, probe backbone, zeroshot model)
    dataset: str              # path of a contract dataset folder
    seed: int = 42
    settings: dict[str, Any] = field(default_factory=dict)
    threshold_policy: str = "fixed:0.5"
    n_boot: int = 1000
    device: str = "auto"
    strict: bool = False
    quiet: bool = False
    threads: int = 0          # torch intra-op CPU threads for this cell; 0 = the library default
    # dataset folders the trained cell is also evaluated on, no retraining (dermbench.runs.transfer);
    # not part of the identity: each evaluation is a record inside the cell, <cell>/transfer/<dataset>/
    eval_datasets: list[str] = field(default_factory=list)
    # re-split the dataset with this seed, same policy (dermbench.data.resplit); None = the folder's
    # own split. Part of the cell's folder (<dataset>+split<k>) but not of its configuration: the
    # report pools split seeds like training seeds (mean ± sd over splits)
    split_seed: int | None = None

    @property
    def identity(self) -> CellIdentity:
        return cell_identity(self.paradigm, self.model, self.settings)

    @property
    def label(self) -> str:
        """The cell's name under its paradigm: model, variant and curve point (``resnet18+balanced_aug``)."""
        return self.identity.label

    @property
    def dataset_name(self) -> str:
        return Path(self.dataset).name

    @property
    def dataset_part(self) -> str:
        """The dataset's part of the cell's folder and key: its name, ``+split<k>`` when re-split."""
        return self.dataset_name if self.split_seed is None else f"{self.dataset_name}+split{int(self.split_seed)}"

    @property
    def key(self) -> str:
        """``paradigm/label/dataset/seedK``: how progress lines, summaries and ``--only`` name a cell."""
        return f"{self.paradigm}/{self.label}/{self.dataset_part}/seed{self.seed}"

    def path(self, runs_root: str | Path) -> Path:
        from .record import cell_dir  # pandas: not needed to build the command line

        return cell_dir(runs_root, self.experiment, self.paradigm, self.label, self.dataset_part, self.seed)

    def to_dict(self) -> dict[str, Any]:
        """The cell as recorded (``config.yaml``, ``metrics.json`` ``cell``): its fields and its identity."""
        return {**asdict(self), "identity": self.identity.as_record()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CellSpec":
        """The inverse of :meth:`to_dict` (the identity is derived again, not read)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
