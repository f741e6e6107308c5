"""A test-only paradigm (imported as a plugin by spawned workers) that records where it ran: the
process id, ``CUDA_VISIBLE_DEVICES`` and the cell's device, in ``placement.txt`` of its folder. It
then fails on purpose (no record is needed for these tests)."""

from __future__ import annotations

import os
import time

from dermbench.paradigms import PARADIGMS



def register() -> None:
    if "gpuenv" not in PARADIGMS:
        PARADIGMS.add("gpuenv", "placement_plugin:run_cell", "test-only paradigm: records its GPU placement")


register()


def run_cell(spec, recorder) -> dict:
    (recorder.path / "placement.txt").write_text(
        f"{os.getpid()} {os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')} {spec.device}\n")
    time.sleep(float(spec.settings.get("sleep", 0.0)))
    raise RuntimeError("placement recorded")
