"""Saving a probe cell's fitted head, and loading it back without executing arbitrary code.

A probe cell writes its chosen head next to its run record so a transfer evaluation and
``dermbench predict`` score new images with exactly that head. Two formats, neither a pickle:

* scikit-learn heads (``logreg``, ``svm``, ``rf``, ``knn``, ``hgb``, ``xgboost``: a
  :class:`~.head_models.SklearnHead`) go to ``head.skops`` with ``skops.io``, which rebuilds only
  the types it is told to trust. Loading trusts skops' defaults plus the few scikit-learn /
  XGBoost internals in :data:`TRUSTED_TYPES` and refuses a file that needs any other type;
* the MLP head (:class:`~.head_models.MLPHead`) goes to ``head.pt``: its layer sizes, the
  standardisation and the state dict as plain tensors, read with ``torch.load(weights_only=True)``.

Either way the file's sha256 goes into the run record (``metrics.json`` ``extra.head_file``) and
is checked before the file is opened: a head that is not the one the cell recorded is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import CacheError
from ...utils.filestamp import sha256_file

#: Types outside skops' default trust that the registered heads contain (checked on load).
TRUSTED_TYPES = frozenset({
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "xgboost.core.Booster",
    "xgboost.sklearn.XGBClassifier",
})
SKOPS_FILE = "head.skops"
TORCH_FILE = "head.pt"


def head_bytes(model: Any) -> tuple[str, bytes, dict[str, Any]]:
    """``(file name, bytes, record)`` of a fitted head: what the cell writes with
    ``RunRecorder.save_bytes`` and the record for ``extra.head_file`` (``file``, ``format``,
    ``kind``, ``versions``, ``sha256``)."""
    import hashlib
    import io

    from .head_models import MLPHead, SklearnHead

    if isinstance(model, SklearnHead):
        import sklearn
        import skops
        import skops.io as sio

        name, data = SKOPS_FILE, sio.dumps(model.model)
        record = {"file": name, "format": "skops", "kind": "sklearn",
                  "versions": {"scikit-learn": sklearn.__version__, "skops": skops.__version__}}
    elif isinstance(model, MLPHead):
        import torch

        state = {"state_dict": {k: v.detach().cpu().clone() for k, v in model.net.state_dict().items()},
                 "mean": torch.as_tensor(np.asarray(model.mean)),    # the fitted dtype: the same arithmetic
                 "scale": torch.as_tensor(np.asarray(model.scale)),
                 "hidden": [int(h) for h in model.hidden], "dropout": float(model.dropout)}
        buf = io.BytesIO()
        torch.save(state, buf)
        name, data = TORCH_FILE, buf.getvalue()
        record = {"file": name, "format": "torch-weights-only", "kind": "mlp",
                  "versions": {"torch": torch.__version__}}
    elif hasattr(model, "head_state"):  # the study's MLP heads (study_heads.py): plain tensors and numbers
        import torch

        state = model.head_state()
        buf = io.BytesIO()
        torch.save(state, buf)
        name, data = TORCH_FILE, buf.getvalue()
        record = {"file": name, "format": "torch-weights-only", "kind": state["kind"],
                  "versions": {"torch": torch.__version__}}
    else:
        raise TypeError(f"cannot save a probe head of type {type(model).__name__}; head_store knows "
                        f"SklearnHead, MLPHead and the study's MLP heads")
    return name, data, {**record, "sha256": hashlib.sha256(data).hexdigest()}


def load_head(folder: str | Path, record: dict[str, Any]) -> Any:
    """The head a cell saved (:func:`head_bytes`' ``record``, from its run record), after checking
    the file's sha256; a :class:`~dermbench.errors.CacheError` says what is wrong."""
    from .head_models import MLPHead, SklearnHead

    folder = Path(folder)
    if not record or "file" not in record:
        raise CacheError(f"the run record in {folder} names no saved head (extra.head_file); re-run the cell "
                         f"with this version of dermbench to save one")
    path = folder / str(record["file"])
    if path.parent != folder or not path.is_file():
        raise CacheError(f"the saved head {path} is missing; re-run the cell (dermbench probe ... --force)")
    digest = sha256_file(path)
    if digest != record.get("sha256"):
        raise CacheError(f"{path} has sha256 {digest[:16]}..., but the run record says "
                         f"{str(record.get('sha256'))[:16]}...: the file is not the head this cell saved; "
                         f"refusing to load it (re-run the cell to write a new one)")
    if record.get("format") == "skops":
        import skops.io as sio

        needed = set(sio.get_untrusted_types(file=path))
        unknown = sorted(needed - TRUSTED_TYPES)
        if unknown:
            raise CacheError(f"{path} needs types dermbench does not trust ({', '.join(unknown)}); refusing to "
                             f"load it")
        head = SklearnHead.__new__(SklearnHead)  # the wrapper only; its estimator comes from the file
        head.model = sio.load(path, trusted=sorted(needed))
        head.sample_weight = False
        head.info = {}
        return head
    if record.get("format") == "torch-weights-only":
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
        if record.get("kind") in ("study_mlp", "dynamic_mlp"):
            from .study_heads import head_from_state

            return head_from_state(state)
        mean = state["mean"].numpy()
        head = MLPHead({"lr": 0.0}, class_weight="none", seed=0,
                       options={"mlp_hidden": tuple(state["hidden"]), "mlp_dropout": state["dropout"]})
        head.net = head._net(int(mean.shape[-1]))
        head.net.load_state_dict(state["state_dict"])
        head.mean = mean
        head.scale = state["scale"].numpy()
        return head
    raise CacheError(f"{path}: unknown saved-head format {record.get('format')!r}")
