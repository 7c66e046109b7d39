r"""From-scratch ViT on Fashion-MNIST within 10 minutes of training on 2 CPU cores (issue #8).

  ./launch.sh configs/fashion_mnist.py --workdir=workdirs/fashion_mnist_headline
  ./launch.sh python -m experiments.headline     # this and configs/mnist.py, recorded

The configs/mnist.py recipe with left-right flips instead of translations: a 6-block
width-64 ViT on 7x7 patches, AdamW at 2e-3 with warmup + cosine, no clipping, no label
smoothing, 5,400 steps of 128 (11.5 epochs). It stops near 89% (the headline's
fashion_mnist row), short of the issue's 92.0%. Also tried at this budget, one run each
(commands in the issue #8 notes): 2-pixel translations 87.67%; width 128 x 4 blocks,
4,000 steps, 88.78% in 576 s. Earlier versions are in the attempts table of
experiments/results/headline/results.md. The ablations in experiments/ keep an earlier
recipe (pinned in experiments/common.py), which their committed results were run with.

  ./launch.sh configs/fashion_mnist.py:hybrid    # the paper's hybrid (ResNet stem)

The 'hybrid' preset is the one that meets the target: the headline's fashion_mnist_hybrid
row, with its time and CPU. Its earlier versions, each run once by the same command, are
in the attempts table: 4 blocks, batch 128 x 4,000 (v1); 2 blocks, batch 64 x 15,000,
label smoothing 0.1, weight decay 0.5 (v2) and 0.3 (v3); 16,000 steps (v4); batch 48 x
20,000 (v5); 16,000 steps predicting from each test image and its mirror (mean logits,
config.eval_flip_average; the model is trained with flips), 92.36% but 611 s on the Zen 4
(family 25 model 17) the target was set on (v6). Hence 15,000 steps.

One run each, not in the table: 2-pixel translations (pad_crop) on this preset, 91.60%
(underfits, like the pure ViT with them); at 16,000 steps on a Zen 3 (family 25 model 1,
no AVX-512, where 16,000 steps take 800-980 s): seeds 0-2 gave 92.06 / 92.36 / 92.36%
flip-averaged (92.26 +- 0.17), weight decay 0.15 92.36% (within a seed's noise of 0.3),
and 11,000 steps 92.19 / 92.18 / 91.88% (92.08 +- 0.18, one seed under 92.0). At 15,000
steps on a Zen 5 (family 26 model 2, 2026-12-02): 92.31 / 92.41 / 92.16% for seeds 0-2,
92.29 +- 0.13, in 386-400 s.
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
