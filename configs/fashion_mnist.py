r"""From-scratch ViT on Fashion-MNIST within 10 minutes of training on 2 CPU cores (issue #8).

  ./launch.sh configs/fashion_mnist.py --workdir=workdirs/fashion_mnist_headline
  ./launch.sh python -m experiments.headline     # this and configs/mnist.py, recorded

The configs/mnist.py recipe with left-right flips instead of translations: a 6-block
width-64 ViT on 7x7 patches, AdamW at 2e-3 with warmup + cosine, no clipping, no label
smoothing, 5,400 steps of 128 (11.5 epochs). Measured with the second command on the
2-core AMD EPYC machine this repo is developed on (2026-11-21): 89.04% test accuracy in
522 s of training. The issue's target, 92.0% in <= 10 minutes, is NOT met. Also tried
at this budget, one run each (commands in the issue #8 notes): 2-pixel translations
87.67%; width 128 x 4 blocks, 4,000 steps, 88.78% in 576 s. Earlier versions are in
experiments/results/headline/results.md (fashion_mnist_v2, 4,800 steps: 88.89%). The
ablations in experiments/ keep an earlier recipe (pinned in experiments/common.py), which
their committed results were run with.

  ./launch.sh configs/fashion_mnist.py:hybrid    # the paper's hybrid (ResNet stem)

The 'hybrid' preset, same machine and command (2026-11-22): 91.97% in 573 s, 0.03 points
short of 92.0%. Its earlier versions, each run once by the same command, are in the
results' attempts table: 4 blocks, batch 128 x 4,000 (v1) 90.77%; 2 blocks, batch 64 x
15,000, label smoothing 0.1, weight decay 0.5 (v2) 91.63%, 0.3 (v3) 91.87%; batch 48 x
20,000 (v5) 91.62%. Not in the table (its workdir went with that session's machine
before the report recorded it): 2-pixel translations (pad_crop) on this preset, 91.60% in
580 s, another sign that at 17 epochs this model needs more fitting, not more invariance.

Since 2026-11-30 the preset predicts from each test image and its mirror (mean logits,
config.eval_flip_average; the model is trained with flips). Same training, so the same
~573 s on that machine plus one extra forward pass per test image. Run once on a slower
2-core machine (Zen 3, no AVX-512; 983 s there, so its time says nothing about the
target): 92.06% flip-averaged, 91.81% single view; with weight decay 0.15, 92.36% and
91.73% (one run each: the two decays are within a seed's noise, so 0.3 stays). The
preset with --config.seed=1 on the same machine: 92.36% flip-averaged, 91.95% single view
(933 s there); with --config.seed=2 (2026-12-01): 92.36% and 91.98% (801 s there). Seeds
0-2 flip-averaged: 92.26 +- 0.17%. The headline table still holds the 2026-11-22 run
until the headline is rerun on the reference machine.

Fewer steps, to fit 10 minutes on the Zen 3 too, cost accuracy (2026-12-01, that
machine): --config.total_steps=11000 (11.7 epochs; seed 0 took 715 s there, the
machine running ~30% slower than at its best) gave 92.19 / 92.18 / 91.88%
flip-averaged for seeds 0-2, 92.08 +- 0.18%: 0.2 points below 16,000 steps and one
seed under 92.0, so 16,000 stays.
"""

from configs import datasets, mnist


def get_config(preset: str = ''):
  """preset '' (the pure ViT) or 'hybrid' (the paper's ResNet-stem variant, section 3.1)."""
  c = datasets.apply(mnist.get_config(), 'fashion_mnist')  # the MNIST recipe, other data
  # Clothes: left-right flips, no translations (garments are centred; 2-pixel pad_crop
  # made the model underfit: 87.67%, training batches no better than the test set).
  c.dataset.update(flip=True, train_crop='resize')
  if preset == 'hybrid':
    # Tokens from a small ResNet stem: a 7x7/2 root convolution with 32 channels and
    # max-pooling (28 -> 7), two one-unit stages (7 -> 4), 1x1 patches: 16 tokens, then 2
    # ViT blocks of width 64. The stem is where the accuracy comes from; a block costs
    # ~21 ms of a 128-image step. Batch 64 runs faster per image than 128 on 2 cores
    # (~2,000 vs ~1,560 images/s: the working set stays in cache) and gives twice the
    # updates: 15,000 steps is 16 epochs. At that length the model overfits (training
    # batches ~95%), hence label smoothing and a strong decoupled weight decay. 16,000
    # steps gave the same accuracy within a seed's noise but took 573 and 611 s on the
    # Zen 4 the 10-minute target was set on.
    c.model.update(variant='mu/1', resnet_layers=(1, 1), resnet_width_factor=0.5, depth=2)
    c.batch_size = 64
    c.total_steps = 15_000
    c.eval_every = c.checkpoint_every = 7_500
    c.optimizer.update(warmup_steps=400, weight_decay=0.3)
    c.label_smoothing = 0.1
    # Trained with flips, so predict from each test image and its mirror (mean logits):
    # one extra forward pass per test image, no training time.
    c.eval_flip_average = True
  elif preset:
    raise ValueError(f"unknown preset {preset!r} of configs/fashion_mnist.py: '' or 'hybrid'.")
  return c
