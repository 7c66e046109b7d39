r"""From-scratch ViT on MNIST within 10 minutes of training on 2 CPU cores (issue #8).

  ./launch.sh configs/mnist.py --workdir=workdirs/mnist_headline
  ./launch.sh python -m experiments.headline     # this and configs/fashion_mnist.py, recorded

A 6-block width-64 ViT on 7x7 patches (16 tokens + class token, 311k parameters), AdamW
with warmup + cosine, label smoothing 0.1, random crops of >= 80% of the area, 2,800 steps
of 128 (6 epochs). Measured with the second command on the 2-core AMD EPYC machine this
repo is developed on, while other jobs shared the CPU (2026-11-21; deterministic, so the
accuracy repeats; the time depends on the load): 98.11% test accuracy in 512 s of training
(~740 images/s). The issue's target, 99.0% in <= 10 minutes, is NOT met: the earlier
versions in experiments/results/headline/results.md (no augmentation: 98.02% in 442 s;
4x4 patches: 97.07% in 556 s) did no better. The model fits the training set before it
generalises to 99%; more epochs (a faster or less loaded CPU) is what it lacks.
"""

from configs import common, datasets


def get_config():
  c = datasets.apply(common.get_config(), 'mnist')
  # Light augmentation: random crops of >= 80% of the area, resized back (no flips: digits).
  c.dataset.update(train_crop='inception', crop_min_scale=0.8, flip=False)
  # 7x7 patches: 16 tokens + class token; 6 blocks of width 64.
  c.model.update(variant='mu/7', width=64, depth=6, mlp_dim=256, num_heads=4,
                 classifier='token', posemb='learn')
  c.batch_size = 128
  c.total_steps = 2_800
  c.optimizer.update(name='adamw', learning_rate=1e-3, warmup_steps=200, decay='cosine',
                     weight_decay=0.05, grad_clip_norm=1.0)
  c.label_smoothing = 0.1
  c.log_every = 100
  c.eval_every = 700
  c.checkpoint_every = 700
  return c
