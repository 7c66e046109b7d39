"""Config validation: every mistake is reported before anything compiles.

`check_config` collects all problems it finds into one ConfigError, each naming the key,
the bad value, what was expected and the fix.
"""

import os

import jax

from configs import common
from vit_jax import data, optim, sharding
from vit_jax.models import resnet, variant_kwargs, vit

DTYPES = ('float32', 'bfloat16', 'float16')
LOSSES = ('softmax_xent', 'sigmoid_xent')


class ConfigError(ValueError):
  pass


def _unknown_keys(config, template, prefix=''):
  """Keys of `config` that the shared template (configs/common.py) does not have."""
  out = []
  for key, value in config.items():
    name = f'{prefix}{key}'
    if key not in template:
      near = [k for k in template if k.lower()[:3] == key.lower()[:3]]
      out.append(f'unknown key {name!r}' + (f' (did you mean {near}?)' if near else '') +
                 '; valid keys are listed in configs/common.py.')
    elif hasattr(value, 'items') and hasattr(template[key], 'items'):
      out.extend(_unknown_keys(value, template[key], prefix=f'{name}.'))
  return out


# The keys that choose which data a source reads. Set for another source they are ignored,
# and the run trains on data the user did not name (e.g. dataset.name='mnist' on the
# digits: both have 10 classes, so nothing else notices).
_SOURCE_KEYS = {'tfds': ('name', 'data_dir', 'download'), 'folder': ('path',)}


def _keys_of_another_source(d, defaults) -> list[str]:
  errors = []
  for source, keys in _SOURCE_KEYS.items():
    for key in keys:
      if d.source != source and d[key] != defaults[key]:
        errors.append(f'dataset.{key}={d[key]!r} is only read with dataset.source={source!r}, '
                      f'but source={d.source!r}: set --config.dataset.source={source}, or '
                      f'--config.dataset.{key}={defaults[key]!r} to drop it.')
  return errors


def check_config(config) -> 'data.DatasetInfo':
  """Raises ConfigError listing every problem; returns the dataset's info when all is well."""
  template = common.get_config()
  errors = _unknown_keys(config, template)
  m, d, o = config.model, config.dataset, config.optimizer
  patch, layers = None, None
  try:
    v = variant_kwargs(m.variant)
    patch, layers = v['patch_size'], v.get('resnet_layers')
  except ValueError as e:
    errors.append(f'model.variant: {e}')
  else:
    dims = {k: m[k] if m.get(k) is not None else v[k]
            for k in ('width', 'depth', 'mlp_dim', 'num_heads')}
    bad = [k for k, n in dims.items() if n < 1]
    for k in bad:
      errors.append(f'model.{k}={dims[k]}; expected a positive integer (unset: the value of '
                    f'{m.variant}).')
    if not bad and dims['width'] % dims['num_heads']:
      heads = [k for k in range(1, dims['width'] + 1) if dims['width'] % k == 0]
      near = min(heads, key=lambda k: (abs(k - dims['num_heads']), k))
      errors.append(f'model.width={dims["width"]} is not divisible by model.num_heads='
                    f'{dims["num_heads"]}: each head takes width / num_heads channels; use '
                    f'--config.model.num_heads={near} (or a width divisible by '
                    f'{dims["num_heads"]}).')
  layers = m.get('resnet_layers') if m.get('resnet_layers') is not None else layers
  if m.classifier not in vit.CLASSIFIERS:
    errors.append(f'model.classifier={m.classifier!r}; expected one of {vit.CLASSIFIERS}.')
  if m.posemb not in vit.POSEMBS:
    errors.append(f'model.posemb={m.posemb!r}; expected one of {vit.POSEMBS}.')
  for key in ('dtype', 'param_dtype'):
    if m[key] not in DTYPES:
      errors.append(f'model.{key}={m[key]!r}; expected one of {DTYPES}.')
  if m.param_dtype == 'float16':
    errors.append("model.param_dtype='float16': parameters and optimiser state in float16 "
                  "under- and overflow (AdamW's eps 1e-8 is 0 there: 0/0 on the first step); "
                  'keep float32 parameters and compute in 16 bits with model.dtype.')
  for key in ('dropout', 'attention_dropout', 'stochastic_depth'):
    if not 0 <= m[key] < 1:
      errors.append(f'model.{key}={m[key]}; expected a rate in [0, 1).')
  fit = patch and vit.fitting_image_size(d.image_size, patch, layers)
  if patch and fit != d.image_size and layers is not None:
    side = resnet.feature_size(d.image_size, layers)
    errors.append(f'dataset.image_size={d.image_size} gives a {side}x{side} ResNet feature '
                  f'map, not divisible by the patch size {patch}: use --config.dataset.'
                  f'image_size={fit} (stem stride {resnet.stem_stride(layers)} x patch '
                  f'{patch}).')
  elif patch and fit != d.image_size:
    errors.append(f'dataset.image_size={d.image_size} is not divisible by the patch size '
                  f'{patch} of {m.variant}: use --config.dataset.image_size={fit} or a '
                  'variant with a patch that divides it.')
  if o.name not in optim.OPTIMIZERS:
    errors.append(f'optimizer.name={o.name!r}; expected one of {optim.OPTIMIZERS}.')
  if o.decay not in optim.DECAYS:
    errors.append(f'optimizer.decay={o.decay!r}; expected one of {optim.DECAYS}.')
  if o.learning_rate <= 0:
    errors.append(f'optimizer.learning_rate={o.learning_rate}; expected > 0.')
  if o.grad_clip_norm < 0:  # optax would scale every gradient to -|norm|: gradient ascent
    errors.append(f'optimizer.grad_clip_norm={o.grad_clip_norm}; expected a global norm > 0, '
                  'or 0 for no clipping.')
  if o.name == 'sgd' and o.nesterov and not o.momentum:
    errors.append('optimizer.nesterov=True needs momentum > 0 (with momentum=0 there is no '
                  'Nesterov step): set --config.optimizer.momentum=0.9, or nesterov=False.')
  if config.total_steps <= 0:
    errors.append(f'total_steps={config.total_steps}; expected > 0.')
  elif not 0 <= o.warmup_steps < config.total_steps:
    errors.append(f'optimizer.warmup_steps={o.warmup_steps} must be in [0, total_steps='
                  f'{config.total_steps}); lower it or raise total_steps.')
  if config.loss not in LOSSES:
    errors.append(f'loss={config.loss!r}; expected one of {LOSSES}.')
  if not 0 <= config.label_smoothing < 1:
    errors.append(f'label_smoothing={config.label_smoothing}; expected [0, 1).')
  if config.mixup_alpha < 0:
    errors.append(f'mixup_alpha={config.mixup_alpha}; expected >= 0 (0 = off).')
  if not 0 <= config.random_erasing <= 1:
    errors.append(f'random_erasing={config.random_erasing}; expected a probability in [0, 1] '
                  '(0 = off).')
  if config.nonfinite not in ('stop', 'skip'):
    errors.append(f"nonfinite={config.nonfinite!r}; expected 'stop' or 'skip'.")
  if config.sharding not in sharding.STRATEGIES:
    errors.append(f'sharding={config.sharding!r}; expected one of {sharding.STRATEGIES}.')
  if config.grad_accum_steps < 1:
    errors.append(f'grad_accum_steps={config.grad_accum_steps}; expected >= 1.')
  else:
    unit = jax.device_count() * config.grad_accum_steps
    if config.batch_size <= 0 or config.batch_size % unit:
      fix = max(config.batch_size // unit, 1) * unit
      errors.append(
          f'batch_size={config.batch_size} must be divisible by device count '
          f'({jax.device_count()}) x grad_accum_steps ({config.grad_accum_steps}) = {unit}: '
          f'use --config.batch_size={fix}.')
  for key in ('log_every', 'eval_every', 'checkpoint_every'):
    if config[key] < 0:
      errors.append(f'{key}={config[key]}; expected a number of steps >= 0 (0 = only at the '
                    'end).')
  if config.keep_checkpoints < 0:
    errors.append(f'keep_checkpoints={config.keep_checkpoints}; expected >= 1 (the newest '
                  'ones kept), or 0 to keep every checkpoint.')
  if config.prefetch < 1:
    errors.append(f'prefetch={config.prefetch}; expected >= 1 batches prepared ahead.')
  errors += _keys_of_another_source(d, template.dataset)
  if config.init_from and not os.path.exists(config.init_from):
    errors.append(f'init_from={config.init_from!r} does not exist: give the path of a .npz '
                  '(vit_jax or big_vision) or of a WORKDIR/checkpoints/STEP directory.')
  info = None
  try:
    info = data.get_info(d)  # also checks num_classes, crops and RandAugment settings
  except (ValueError, FileNotFoundError) as e:
    errors.append(f'dataset: {e}')
  if errors:
    raise ConfigError('invalid config:\n  - ' + '\n  - '.join(errors))
  return info
