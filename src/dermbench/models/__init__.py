"""Model plugins: finetune classifiers, probe backbones and zeroshot backends (lazy registries)."""
