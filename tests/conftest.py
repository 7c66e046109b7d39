"""Shared test settings: quiet TensorFlow, paths to the real data in ../shared."""

import os
from pathlib import Path

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'


def tiny_mnist_cli(workdir, **overrides):
  """`python -m vit_jax.main` for a micro ViT on real MNIST at 16x16; overrides are config
  keys (dots as in --config.KEY) with their values, replacing the defaults below."""
  import sys
  keys = {'dataset.image_size': 16, 'dataset.data_dir': SHARED / 'tfds',
          'dataset.eval_split': 'test[:64]', 'model.width': 32, 'model.depth': 2,
          'model.mlp_dim': 64, 'model.num_heads': 2, 'batch_size': 32, 'total_steps': 6,
          'optimizer.warmup_steps': 1, 'log_every': 1, 'eval_every': 0, 'checkpoint_every': 0,
          **overrides}
  return [sys.executable, '-m', 'vit_jax.main', '--config=configs/finetune.py:mu/8,mnist',
          f'--workdir={workdir}'] + [f'--config.{k}={v}' for k, v in keys.items()]
