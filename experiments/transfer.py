r"""Transfer: pre-train on Fashion-MNIST, fine-tune on 1% / 10% of MNIST's labels.

  ./launch.sh python -m experiments.transfer [--seeds=2] [--smoke] [--workdir-root=DIR]

The paper's central claim in miniature: a ViT pre-trained on a larger dataset and
fine-tuned on few labels beats the same ViT trained from scratch on those labels. Here
"larger" is Fashion-MNIST's 60,000 labelled clothes images, and the target task is MNIST
digits with the first 1% (600) or 10% (6,000) of its training labels
(`dataset.train_split=train[:1%]`). Every fine-tuning run and its from-scratch twin use the
same model, recipe, steps and seed; the fine-tuning runs start from the pre-trained
checkpoint (`--config.init_from=WORKDIR/checkpoints/STEP`; the head has the same 10
classes and is kept, the optimiser state is fresh).
"""

from experiments import common

NAME = 'transfer'
FRACTIONS = ('1%', '10%')
PRETRAIN_STEPS = 800
FINETUNE_STEPS = 200


def runs(args, root):
  pre_steps = common.SMOKE['total_steps'] if args.smoke else PRETRAIN_STEPS
  pre = common.Run('pretrain_fashion_mnist', 'configs/fashion_mnist.py',
                   common.base({'total_steps': pre_steps, 'optimizer.warmup_steps':
                                max(1, pre_steps // 10)}, args.smoke),
                   dict(stage='pre-train', labels='Fashion-MNIST 100%', init='scratch', seed=0))
  checkpoint = root / NAME / pre.name / 'checkpoints' / str(pre_steps)
  out = [pre]
  steps = common.SMOKE['total_steps'] if args.smoke else FINETUNE_STEPS
  for frac in FRACTIONS[:1] if args.smoke else FRACTIONS:  # smoke: 1% only
    for init in ('fashion_mnist', 'scratch'):
      for s in range(args.seeds):
        over = {'dataset.train_split': f'train[:{frac}]', 'total_steps': steps,
                'optimizer.warmup_steps': max(1, steps // 10), 'seed': s}
        if init != 'scratch':
          over['init_from'] = common.display_path(checkpoint)
        out.append(common.Run(f'mnist_{frac.rstrip("%")}pct_{init}_s{s}', 'configs/mnist.py',
                              common.base(over, args.smoke),
                              dict(stage='MNIST', labels=f'MNIST {frac}',
                                   init='pre-trained on Fashion-MNIST' if init != 'scratch'
                                   else 'scratch', seed=s)))
  return out


SPEC = dict(
    title='Transfer: Fashion-MNIST pre-training, MNIST with 1% and 10% of the labels',
    text='Pre-training on one dataset, then fine-tuning with few labels of another, against '
         'training from scratch on the same few labels (same model, recipe, steps, seeds). '
         'The first row is the pre-training run itself (its accuracy is on Fashion-MNIST).',
    script='./launch.sh python -m experiments.transfer',
    notes='All runs are short (pre-training 800 steps, about 1.7 epochs of Fashion-MNIST; '
          'fine-tuning 200 steps), with the AdamW recipe of the ablations for both the '
          'fine-tuned and the from-scratch runs. The first 1% / 10% of the training split '
          'are taken as they come (tfds slicing), not class-balanced.',
    columns=['stage', 'labels', 'init', 'seed'],
    plots=[dict(kind='bar', x='labels', series='init', y='accuracy', file='accuracy.png',
                title='MNIST test accuracy: pre-trained vs scratch', where=dict(stage='MNIST'))])


def main(argv=None):
  args = common.parse_args(__doc__, argv, seeds=2)
  rs = runs(args, args.workdir_root)
  common.sweep(NAME, rs, args, SPEC)


if __name__ == '__main__':
  main()
