r"""Patch size / sequence length vs accuracy and training cost.

  ./launch.sh python -m experiments.patch_size [--seeds=3] [--smoke] [--workdir-root=DIR]

Fashion-MNIST at 28x28, the ablation base model of experiments/common.py with the
configs/fashion_mnist.py recipe and the same number of steps; the patch is 14, 7 or 4
pixels, i.e. 4, 16 or 49 patch tokens. Cost is measured (images/s of training on this
machine) and counted (analytic forward FLOPs per image, experiments/flops.py).
"""

from experiments import common

NAME = 'patch_size'
PATCHES = (14, 7, 4)


def runs(args):
  return [common.Run(f'p{p}_s{s}', 'configs/fashion_mnist.py',
                     common.base({'model.variant': f'mu/{p}', 'seed': s}, args.smoke),
                     dict(patch=p, tokens=(28 // p) ** 2, seed=s))
          for s in range(args.seeds) for p in PATCHES]  # seed-major


SPEC = dict(
    title='Patch size / sequence length vs accuracy and cost (Fashion-MNIST, 28x28)',
    text='Smaller patches mean longer sequences: more compute per image, and (in the paper) '
         'better accuracy for the same model. Same model width/depth, recipe and steps; '
         'only the patch size (`model.variant=mu/P`) and the seed change.',
    script='./launch.sh python -m experiments.patch_size',
    notes='Same number of steps for every patch size, so smaller patches get more compute '
          '(and wall-clock time) for the same data; the short runs (300 steps) compare '
          'early learning, not converged accuracy: in this regime the longer sequences learn '
          'more slowly per step (as the 4x4-patch attempt of the MNIST headline did), while '
          'the paper, training to convergence, finds smaller patches better.',
    columns=['patch', 'tokens', 'seed'],
    metrics=['accuracy', 'train_seconds', 'images_per_sec', 'gflops'],
    plots=[dict(kind='line', x='tokens', y='accuracy', xlabel='patch tokens (28/P)^2',
                file='accuracy_vs_tokens.png', title='Accuracy vs sequence length'),
           dict(kind='line', x='tokens', y='images_per_sec', xlabel='patch tokens (28/P)^2',
                file='throughput_vs_tokens.png', title='Training throughput vs sequence length'),
           dict(kind='line', x='tokens', y='gflops', xlabel='patch tokens (28/P)^2',
                file='flops_vs_tokens.png', title='Forward FLOPs per image')])


def main(argv=None):
  args = common.parse_args(__doc__, argv, seeds=3)
  rs = runs(args)
  common.sweep(NAME, rs, args, SPEC)


if __name__ == '__main__':
  main()
