r"""Pre-training recipe of "How to train your ViT?" (Steiner et al. 2022) / the ViT paper.

Adam (b1=0.9, b2=0.999) with decoupled weight decay, linear warmup (10k steps) then cosine
decay, batch 4096, sigmoid cross-entropy, global-norm clipping at 1.0, and the AugReg
knobs: mixup and RandAugment by name, dropout and stochastic depth as overrides. The argument is
VARIANT,DATASET[,AUGREG] with AUGREG one of none | light1 | light2 | medium1 | medium2 |
strong1 | strong2 (the paper's names):

  ./launch.sh configs/pretrain.py:B/16,imagenet2012,medium1 --workdir=workdirs/b16_i1k
  ./launch.sh configs/pretrain.py:S/16,imagenette,light1 --workdir=workdirs/s16_nette \
      --config.batch_size=64 --config.total_steps=2000 --config.optimizer.warmup_steps=200

The paper's ImageNet-1k 300-epoch B/16 medium1 run reaches 79.4% top-1 at 224px (TPUv3-32).
On this repo's CPU machines use the small presets (see experiments/ and the README).
"""

from configs import common, datasets

# Augmentation name -> (RandAugment 'layers,magnitude', mixup alpha), Steiner et al.
# Regularisation is separate, as in their checkpoint names (...-do_0.1-sd_0.1):
# --config.model.dropout=0.1 --config.model.stochastic_depth=0.1.
AUGREG = {
    'none': ('', 0.0),
    'light1': ('2,0', 0.0),
    'light2': ('2,10', 0.2),
    'medium1': ('2,15', 0.2),
    'medium2': ('2,15', 0.5),
    'strong1': ('2,20', 0.5),
    'strong2': ('2,20', 0.8),
}


def get_config(arg='B/16,imagenet2012,medium1'):
  parts = arg.split(',')
  variant, dataset = parts[0], parts[1] if len(parts) > 1 else 'imagenet2012'
  augreg = parts[2] if len(parts) > 2 else 'medium1'
  if augreg not in AUGREG:
    raise ValueError(f'unknown AugReg setting {augreg!r}; choose from {", ".join(AUGREG)}.')
  randaug, mixup = AUGREG[augreg]
  c = datasets.apply(common.get_config(), dataset)
  c.model.update(variant=variant, classifier='token', posemb='learn', dropout=0.0,
                 stochastic_depth=0.0)
  c.dataset.update(randaugment=randaug, train_crop='inception', flip=True)
  if dataset in ('imagenet2012', 'cifar10', 'cifar100'):
    c.dataset.image_size = 224
  c.mixup_alpha = mixup
  c.batch_size = 4096
  c.total_steps = 93_000             # 300 epochs of ImageNet-1k at batch 4096
  c.optimizer.update(name='adamw', learning_rate=1e-3, b1=0.9, b2=0.999, weight_decay=0.1,
                     warmup_steps=10_000, decay='cosine', grad_clip_norm=1.0)
  c.loss = 'sigmoid_xent'
  c.label_smoothing = 0.0
  c.eval_every = 5_000
  c.checkpoint_every = 1_000
  return c
