r"""From-scratch ViT on MNIST within 10 minutes of training on 2 CPU cores (issue #8).

  ./launch.sh configs/mnist.py --workdir=workdirs/mnist_headline
  ./launch.sh python -m experiments.headline     # this and configs/fashion_mnist.py, recorded

A 6-block width-64 ViT on 7x7 patches (16 tokens + class token, 311k parameters), AdamW
at 2e-3 with warmup + cosine, no gradient clipping, no label smoothing, random
translations of up to 2 pixels, 5,400 steps of 128 (11.5 epochs). It meets the issue's
target (99.0% in <= 10 minutes): 99.16% in 551 s on the Zen 4 it was set on (2026-11-21)
and in 409 s there on 2026-12-01; experiments/results/headline/results.md has the latest
run, its CPU and the earlier versions (mnist_v4, without translations, 4,800 steps:
98.41%, with training batches at 100%).
"""

from configs import common, datasets


def get_config():
  c = datasets.apply(common.get_config(), 'mnist')
  # Random translations of up to 2 pixels: without them the model fits the training set
  # (100% batch accuracy) at 98.4% test accuracy. Inception crops distort digits; pad_crop
  # also keeps the input on the fast in-memory path (no per-example tf.data work).
  c.dataset.update(train_crop='pad_crop', crop_padding=2, flip=False)
  # 7x7 patches: 16 tokens + class token; 6 blocks of width 64.
  c.model.update(variant='mu/7', width=64, depth=6, mlp_dim=256, num_heads=4,
                 classifier='token', posemb='learn')
  c.batch_size = 128
  c.total_steps = 5_400
  # No gradient clipping: at norm 1.0 it clipped every step (norms 1.5-2), a hidden lower lr.
  c.optimizer.update(name='adamw', learning_rate=2e-3, warmup_steps=300, decay='cosine',
                     weight_decay=0.05, grad_clip_norm=0.0)
  c.label_smoothing = 0.0
  c.log_every = 100
  c.eval_every = 1_800
  c.checkpoint_every = 1_800
  return c
