"""Shared defaults: the complete set of keys every vit_jax config has.

Each config file starts from `get_config()` here and changes values; the trainer checks
that a config has no key this template lacks (a typo fails before anything compiles).
"""

import ml_collections
from ml_collections import config_dict


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0

  # Model: a named variant plus any VisionTransformer field (see vit_jax/models/vit.py).
  c.model = ml_collections.ConfigDict(dict(
      variant='B/16',
      # None = the variant's value; set to change one dimension for an ablation.
      width=config_dict.placeholder(int),
      depth=config_dict.placeholder(int),
      mlp_dim=config_dict.placeholder(int),
      num_heads=config_dict.placeholder(int),
      classifier='token',            # token | gap | map
      posemb='learn',                # learn | sincos2d | none
      representation_size=config_dict.placeholder(int),  # pre_logits width, None = no layer
      dropout=0.0,
      attention_dropout=0.0,
      stochastic_depth=0.0,
      head_bias_init=0.0,
      approximate_gelu=True,
      # Hybrid (ViT paper section 3.1): units per stage of a ResNet stem, e.g. (3, 4, 9) for
      # R50+ViT; () = the root block alone; None = a pure ViT. patch_size then counts
      # feature-map positions (stride 4 x 2 per stage after the first).
      resnet_layers=config_dict.placeholder(tuple),
      resnet_width_factor=1.0,
      remat=False,
      scan=False,
      dtype='float32',               # compute dtype: float32 | bfloat16 | float16
      param_dtype='float32',
  ))

  # Dataset: filled from a preset of configs/datasets.py.
  c.dataset = ml_collections.ConfigDict(dict(
      source='tfds',                 # tfds | folder | digits (the keys below are per source)
      name='',                       # tfds name
      data_dir=config_dict.placeholder(str),  # tfds data_dir; None = tfds default
      download=False,                # tfds: download and prepare if missing
      path='',                       # image folder root with train/ and val/
      train_split='train',
      eval_split='test',
      num_classes=0,
      image_size=224,
      train_crop='inception',        # inception (random resized crop) | resize | pad_crop
      crop_min_scale=0.08,           # inception: smallest crop area
      crop_padding=4,                # pad_crop: zero padding, i.e. the largest shift (pixels)
      flip=True,
      randaugment='',                # '' = off, or 'LAYERS,MAGNITUDE' e.g. '2,15'
      eval_crop_ratio=0.875,         # eval: resize to size/ratio, central crop to size
      shuffle_buffer=50_000,         # streaming tfds only
  ))

  # Optimisation. Gradient accumulation is explicit: batch_size is the global batch,
  # split into grad_accum_steps microbatches inside one jit step.
  c.batch_size = 512
  c.grad_accum_steps = 1
  c.total_steps = 10_000
  c.optimizer = ml_collections.ConfigDict(dict(
      name='adamw',                  # adamw | sgd
      learning_rate=1e-3,
      warmup_steps=1_000,
      decay='cosine',                # cosine | linear | constant (after linear warmup)
      end_learning_rate=0.0,
      momentum=0.9,                  # sgd
      nesterov=False,                # sgd
      b1=0.9,                        # adamw
      b2=0.999,                      # adamw
      # Kernels only. adamw: decoupled (scaled by the learning rate); sgd: L2, added to
      # the gradient before momentum.
      weight_decay=0.0,
      grad_clip_norm=1.0,            # global-norm clipping; 0 = off
  ))
  c.loss = 'softmax_xent'            # softmax_xent | sigmoid_xent
  c.label_smoothing = 0.0
  c.mixup_alpha = 0.0                # 0 = off
  c.random_erasing = 0.0             # probability per example of erasing a rectangle; 0 = off
  c.nonfinite = 'stop'               # non-finite loss: stop (keep last checkpoint) | skip

  # Parameters and optimiser state: replicated, or FSDP-sharded over the data axis.
  c.sharding = 'replicate'           # replicate | fsdp
  # Fine-tune from a checkpoint: a vit_jax or big_vision .npz, or WORKDIR/checkpoints/STEP.
  # Position embeddings are resized to the new resolution, a head with another class count
  # is replaced; with model.variant='' the model is read off the checkpoint.
  c.init_from = ''
  c.reset_head = False               # init_from: a new head even for the same class count

  # Logging, evaluation and checkpoints (all in steps; 0 = only at the end).
  c.log_every = 50
  c.eval_every = 1_000
  # Test-time augmentation: predict from the mean logits of each image and its left-right
  # mirror (for models trained with dataset.flip); the single-view accuracy is logged too.
  c.eval_flip_average = False
  c.checkpoint_every = 1_000
  c.keep_checkpoints = 3             # the newest ones kept; 0 = keep every checkpoint
  c.prefetch = 2                     # batches prepared ahead in a background thread
  return c
