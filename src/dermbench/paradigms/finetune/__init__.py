"""Finetune paradigm: one training loop for every image classifier."""
