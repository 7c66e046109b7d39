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
"""

from configs import datasets, mnist


def get_config():
  c = datasets.apply(mnist.get_config(), 'fashion_mnist')  # the MNIST recipe, other data
  # Clothes: left-right flips, no translations (garments are centred; 2-pixel pad_crop
  # made the model underfit: 87.67%, training batches no better than the test set).
  c.dataset.update(flip=True, train_crop='resize')
  return c
