"""Checkpoints: orbax train-state checkpoints (`train_state`), foreign formats later."""
