r"""From-scratch ViT on Fashion-MNIST within 10 minutes of training on 2 CPU cores (issue #8).

  ./launch.sh configs/fashion_mnist.py --workdir=workdirs/fashion_mnist_headline
  ./launch.sh python -m experiments.headline     # this and configs/mnist.py, recorded

The configs/mnist.py recipe plus left-right flips: a 6-block width-64 ViT on 7x7 patches,
AdamW at 2e-3 with warmup + cosine, no clipping, no label smoothing, 4,800 steps of 128
(10 epochs). Measured with the second command on the 2-core AMD EPYC machine this repo is
developed on, nothing else running (2026-11-21; deterministic): 88.89% test accuracy in
538 s of training. The issue's target, 92.0% in <= 10 minutes, is NOT met (earlier
versions: experiments/results/headline/results.md; fashion_mnist_v1, the previous recipe,
reached 85.81%). The ablations in experiments/ keep the previous recipe (pinned in
experiments/common.py), which their committed results were run with.
"""

from configs import datasets, mnist


def get_config():
  c = datasets.apply(mnist.get_config(), 'fashion_mnist')  # the MNIST recipe, other data
  # Clothes: left-right flips, no translations (centred garments; measured with 2-pixel
  # pad_crop the model underfits: 87.67% against 88.89% without, same run length).
  c.dataset.update(flip=True, train_crop='resize')
  return c
