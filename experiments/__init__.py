"""Experiments answering the ViT paper's questions at laptop scale (see README.md here)."""
