"""Dataset presets: source, splits, classes, resolution, crops and fine-tuning steps.

`apply(config, 'mnist')` fills `config.dataset` (and the preset's step count). The two
MNISTs read the prepared tfds copies in ../shared/tfds next to the repository (override
with --config.dataset.data_dir=DIR); the paper's transfer datasets use the tfds default
directory and need `--config.dataset.download=True` the first time.
"""

from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / 'shared'

_SMALL_GRAY = dict(source='tfds', train_split='train', eval_split='test', num_classes=10,
                   image_size=28, train_crop='resize', flip=False, eval_crop_ratio=1.0)

PRESETS = {
    # 1,797 8x8 scikit-learn digits, in memory: the embedded default, no files needed.
    'digits': dict(source='digits', train_split='train', eval_split='test', num_classes=10,
                   image_size=8, train_crop='resize', flip=False, eval_crop_ratio=1.0),
    'mnist': dict(_SMALL_GRAY, name='mnist', data_dir=str(SHARED / 'tfds')),
    'fashion_mnist': dict(_SMALL_GRAY, name='fashion_mnist', data_dir=str(SHARED / 'tfds')),
    # Real photos in class folders: train/<class>/*.JPEG, val/<class>/*.JPEG.
    'imagenette': dict(source='folder', path=str(SHARED / 'data' / 'imagenette_subset'),
                       train_split='train', eval_split='val', num_classes=10,
                       image_size=224, train_crop='inception', flip=True),
    # The paper's transfer datasets (tfds names); steps are the paper's fine-tuning steps.
    'cifar10': dict(source='tfds', name='cifar10', train_split='train', eval_split='test',
                    num_classes=10, image_size=384, total_steps=10_000),
    'cifar100': dict(source='tfds', name='cifar100', train_split='train', eval_split='test',
                     num_classes=100, image_size=384, total_steps=10_000),
    'oxford_iiit_pet': dict(source='tfds', name='oxford_iiit_pet', train_split='train',
                            eval_split='test', num_classes=37, image_size=384,
                            total_steps=500),
    'oxford_flowers102': dict(source='tfds', name='oxford_flowers102', train_split='train',
                              eval_split='test', num_classes=102, image_size=384,
                              total_steps=500),
    'imagenet2012': dict(source='tfds', name='imagenet2012', train_split='train',
                         eval_split='validation', num_classes=1000, image_size=384,
                         total_steps=20_000),
}


def apply(config, name: str):
  """Fills config.dataset from preset `name`; returns the config."""
  if name not in PRESETS:
    raise ValueError(f'unknown dataset preset {name!r}; presets: {", ".join(PRESETS)}. '
                     'For your own images use imagenette as a template with '
                     '--config.dataset.path=DIR.')
  preset = dict(PRESETS[name])
  steps = preset.pop('total_steps', None)
  config.dataset.update(preset)
  if steps is not None:
    config.total_steps = steps
  return config
