r"""Fine-tuning recipe of the ViT paper (Dosovitskiy et al. 2021, Section 4.1 / Appendix B.1.1).

SGD with momentum 0.9, global-norm gradient clipping at 1.0, batch 512, no weight decay,
linear warmup (500 steps) then cosine decay to 0; the pre-trained head is replaced by a
zero-initialised one (reset_head, even when the class count matches), and evaluation
resizes the whole image (eval_crop_ratio=1.0, no central crop).
The argument picks the model and the dataset preset (configs/datasets.py):

  ./launch.sh configs/finetune.py:B/16,cifar10 --workdir=workdirs/b16_cifar10 \
      --config.init_from=ViT-B_16.npz
  ./launch.sh configs/finetune.py:Ti/16,imagenette --workdir=workdirs/ti16_imagenette \
      --config.batch_size=64 --config.dataset.image_size=224

Steps per dataset are the paper's (ImageNet 20k, CIFAR 10k, Pets/Flowers 500). The paper
reports e.g. B/16 (ImageNet-21k pre-trained) at 384px: CIFAR-10 98.13%, Pets 93.81% on
TPUv3. Without --config.init_from this recipe trains from scratch, and its results are
those of a from-scratch run.
"""

from configs import common, datasets


def get_config(arg='B/16,cifar10'):
  variant, _, dataset = arg.partition(',')
  c = common.get_config()
  c.model.variant = variant
  datasets.apply(c, dataset or 'cifar10')
  # Fine-tune at >= 224 px (small images are upsampled), a multiple of the patch size.
  patch = variant.partition('/')[2] or '16'
  if not patch.isdigit() or int(patch) < 1:
    raise ValueError(f'configs/finetune.py:{arg}: variant {variant!r} has no patch size; '
                     'expected VARIANT,DATASET with VARIANT like B/16 or R50+B/16, e.g. '
                     'configs/finetune.py:B/16,cifar10.')
  patch = int(patch)
  c.dataset.image_size = -(-max(c.dataset.image_size, 224) // patch) * patch
  c.batch_size = 512
  c.optimizer.update(name='sgd', momentum=0.9, learning_rate=0.03, warmup_steps=500,
                     decay='cosine', weight_decay=0.0, grad_clip_norm=1.0)
  c.loss = 'softmax_xent'
  c.reset_head = True
  c.dataset.eval_crop_ratio = 1.0
  c.eval_every = 1_000
  c.checkpoint_every = 1_000
  return c
