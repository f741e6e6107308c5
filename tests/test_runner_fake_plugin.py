"""A fake paradigm for the runner, report and executor tests (no model, no torch).

Imported as a plugin (``imports: [test_runner_fake_plugin]`` in a run config), so spawned worker
processes, Ray tasks and a killed-and-restarted ``dermbench run`` subprocess all see it. Its
scores are a seeded function of the label, the model's ``skill`` and the seed, so two runs of the
same cell give identical records. Settings it understands: ``skill`` (separation of the classes),
``sleep`` (seconds per cell), ``fail`` (raise; ``"weights"``: a WeightsNotFoundError), ``crash`` (the process kills itself), ``label_fraction`` and ``unparsed_rate`` (echoed
into ``extra`` like the probe and zeroshot paradigms do).
"""

from __future__ import annotations

import os
import signal
import time
import zlib

import numpy as np
import pandas as pd

from dermbench.paradigms import PARADIGMS

if "fake" not in PARADIGMS:
    PARADIGMS.add("fake", "test_runner_fake_plugin:run_cell", "test-only paradigm: seeded fake scores")


def run_cell(spec, recorder) -> dict:
    from dermbench.runs.datasets import load_cell_dataset
    from dermbench.runs.evaluate import finalize_cell

    settings = spec.settings
    if settings.get("sleep"):
        time.sleep(float(settings["sleep"]))
    if settings.get("crash"):  # the worker process dies (as if killed or out of memory)
        os.kill(os.getpid(), signal.SIGKILL)
    if settings.get("fail") == "weights":
        from dermbench.errors import WeightsNotFoundError

        raise WeightsNotFoundError(f"the fake model {spec.model!r}: not in the local cache (offline)")
    if settings.get("fail"):
        raise RuntimeError(f"fake failure of {spec.label}")
    dataset = load_cell_dataset(spec, quiet=True)
    skill = float(settings.get("skill", 1.0))
    rng = np.random.default_rng(zlib.crc32(f"{spec.label}|{spec.seed}|{dataset.name}".encode()))
    scores = {}
    for split in ("validation", "test"):
        frame = dataset.split(split)
        z = skill * (2 * frame["label"].to_numpy() - 1) + rng.normal(0, 1, len(frame))
        scores[split] = pd.DataFrame({"img_id": frame["img_id"], "p_malignant": 1 / (1 + np.exp(-z))})
    extra = {k: settings[k] for k in ("label_fraction", "unparsed_rate", "failed_rate") if k in settings}
    return finalize_cell(recorder, dataset, scores, threshold_policy=spec.threshold_policy, n_boot=spec.n_boot,
                         seed=spec.seed, cell=spec.to_dict(), extra=extra,
                         provenance={"weights": "none (fake)"}, timing={"train_s": 0.0})
