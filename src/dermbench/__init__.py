"""dermbench: a benchmark suite for binary skin-lesion malignancy classification.

Importing this package is cheap on purpose: it imports no deep-learning framework. Heavy
backends (torch, timm, transformers, open_clip, TensorFlow, HTTP clients) are imported lazily
by the plugin that needs them.
"""

__version__ = "0.1.0"

MALIGNANT = "malignant"
BENIGN = "benign"
LABELS = (BENIGN, MALIGNANT)
SPLITS = ("train", "validation", "test")
