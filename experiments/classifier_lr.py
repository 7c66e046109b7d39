r"""Classifier: class token vs global average pooling, across learning rates (paper Fig. 9).

  ./launch.sh python -m experiments.classifier_lr [--seeds=3] [--smoke] [--workdir-root=DIR]

Fashion-MNIST, the ablation base model of experiments/common.py with the
configs/fashion_mnist.py recipe; model.classifier, optimizer.learning_rate and the seed
change. The paper finds that both heads work, but need different learning rates.
"""

from experiments import common

NAME = 'classifier_lr'
CLASSIFIERS = ('token', 'gap')
LEARNING_RATES = (3e-4, 1e-3, 3e-3)


def runs(args):
  lrs = LEARNING_RATES[-1:] if args.smoke else LEARNING_RATES  # smoke: one LR, 2 runs
  return [common.Run(f'{c}_lr{lr:g}_s{s}', 'configs/fashion_mnist.py',
                     common.base({'model.classifier': c, 'optimizer.learning_rate': lr,
                                  'seed': s}, args.smoke),
                     dict(classifier=c, lr=lr, seed=s))
          for s in range(args.seeds) for c in CLASSIFIERS for lr in lrs]  # seed-major


SPEC = dict(
    title='Class token vs global average pooling, across learning rates (Fashion-MNIST)',
    text='Paper Figure 9: a class-token head and a global-average-pooling head reach '
         'similar accuracy, each at its own learning rate. AdamW, warmup + cosine; only '
         '`model.classifier`, `optimizer.learning_rate` and the seed change.',
    script='./launch.sh python -m experiments.classifier_lr',
    notes='Short runs (300 steps of 128 = 0.64 epochs): the table compares early learning '
          'at each learning rate, not converged accuracy as in the paper.',
    columns=['classifier', 'lr', 'seed'],
    plots=[dict(kind='line', x='lr', series='classifier', y='accuracy', xscale='log',
                xlabel='peak learning rate', file='accuracy_vs_lr.png',
                title='Fashion-MNIST: token vs GAP head')])


def main(argv=None):
  args = common.parse_args(__doc__, argv, seeds=3)
  rs = runs(args)
  common.sweep(NAME, rs, args, SPEC)


if __name__ == '__main__':
  main()
