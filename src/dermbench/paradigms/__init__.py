"""The three paradigms. Each exposes ``run_cell(spec: CellSpec, recorder: RunRecorder) -> dict`` in its
``cell`` module and declares its grid block (keys, variants, cell-naming rules) in its ``block`` module.
A paradigm that trains a model also declares its ``scorer`` (``dermbench.runs.scorer``): how a
complete cell's model scores other datasets (transfer) and image files (``dermbench predict``)."""

from ..registry import Registry

PARADIGMS = Registry("paradigm")
PARADIGMS.add("finetune", "dermbench.paradigms.finetune.cell:run_cell",
              "train an image classifier end to end (or frozen backbone + head)",
              block="dermbench.paradigms.finetune.block:FinetuneBlock",
              scorer="dermbench.paradigms.finetune.scorer:load_scorer")
PARADIGMS.add("probe", "dermbench.paradigms.probe.cell:run_cell",
              "frozen backbone -> cached embeddings -> classical or MLP head",
              block="dermbench.paradigms.probe.block:ProbeBlock",
              scorer="dermbench.paradigms.probe.scorer:load_scorer")
PARADIGMS.add("zeroshot", "dermbench.paradigms.zeroshot.cell:run_cell",
              "no training: dual encoders score prompts; generative VLMs answer a prompt",
              block="dermbench.paradigms.zeroshot.block:ZeroshotBlock")
