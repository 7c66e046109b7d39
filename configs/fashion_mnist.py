r"""From-scratch ViT on Fashion-MNIST within 10 minutes of training on 2 CPU cores (issue #8).

  ./launch.sh configs/fashion_mnist.py --workdir=workdirs/fashion_mnist_headline
  ./launch.sh python -m experiments.headline     # this and configs/mnist.py, recorded

The configs/mnist.py recipe plus left-right flips: a 6-block width-64 ViT on 7x7 patches,
AdamW with warmup + cosine, label smoothing 0.1, random crops of >= 80% of the area, 2,800
steps of 128 (6 epochs). Also the recipe of the Fashion-MNIST ablations in experiments/
(which shrink the model and the steps). Measured with the second command on the 2-core
AMD EPYC machine this repo is developed on, while other jobs shared the CPU (2026-11-21;
deterministic): 85.81% test accuracy in 515 s of training (~710 images/s). The issue's
target, 92.0% in <= 10 minutes, is NOT met (see experiments/results/headline/results.md).
"""

from configs import datasets, mnist


def get_config():
  c = datasets.apply(mnist.get_config(), 'fashion_mnist')  # the MNIST recipe, other data
  c.dataset.update(train_crop='inception', crop_min_scale=0.8, flip=True)  # clothes: flips
  return c
