"""The three paradigms. Each exposes ``run_cell(spec: CellSpec, recorder: RunRecorder) -> dict`` in its
``cell`` module and declares its grid block (keys, variants, cell-naming rules) in its ``block`` module."""

from ..registry import Registry

PARADIGMS = Registry("paradigm")
PARADIGMS.add("finetune", "dermbench.paradigms.finetune.cell:run_cell",
              "train an image classifier end to end (or frozen backbone + head)",
              block="dermbench.paradigms.finetune.block:FinetuneBlock")
PARADIGMS.add("probe", "dermbench.paradigms.probe.cell:run_cell",
              "frozen backbone -> cached embeddings -> classical or MLP head",
              block="dermbench.paradigms.probe.block:ProbeBlock")
PARADIGMS.add("zeroshot", "dermbench.paradigms.zeroshot.cell:run_cell",
              "no training: dual encoders score prompts; generative VLMs answer a prompt",
              block="dermbench.paradigms.zeroshot.block:ZeroshotBlock")
