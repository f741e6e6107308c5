"""The three paradigms. Each exposes ``run_cell(cell, recorder)`` in its ``cell`` module."""

from ..registry import Registry

PARADIGMS = Registry("paradigm")
PARADIGMS.add("finetune", "dermbench.paradigms.finetune.cell:run_cell",
              "train an image classifier end to end (or frozen backbone + head)")
PARADIGMS.add("probe", "dermbench.paradigms.probe.cell:run_cell",
              "frozen backbone -> cached embeddings -> classical or MLP head")
PARADIGMS.add("zeroshot", "dermbench.paradigms.zeroshot.cell:run_cell",
              "no training: dual encoders score prompts; generative VLMs answer a prompt")
