"""Where examples come from: in-memory arrays, image folders and tfds datasets.

Random-access sources (`ArraySource`, `FileSource`) let the pipeline compute any
batch from (seed, step) alone. Large tfds datasets cannot be indexed, so they
stream (`TfdsStream`) and are handled separately in `pipeline.py`.
"""
import dataclasses
import functools
import os
import sys
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from vit_jax.data.tf_cpu import tf

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp')
# tfds datasets whose prepared size is at most this are read into memory once.
IN_MEMORY_MAX_BYTES = 1 << 30


def decode_image_bytes(data):
  """Encoded JPEG/PNG/BMP/GIF/WebP bytes -> uint8 (H, W, 3).

  Gray, gray+alpha, palette and RGBA become RGB (alpha dropped); CMYK JPEGs are
  converted to RGB; 16-bit PNGs are scaled to 8 bits (65535 -> 255, 32768 -> 128),
  not truncated; an animated GIF/WebP gives its first frame. TF refuses channels=3
  for a WebP with alpha, so WebP is decoded with its own channels and cut to RGB."""
  head = tf.strings.substr(data + b'\0' * 12, 0, 12)  # padded: substr fails past the end
  is_webp = tf.logical_and(tf.strings.substr(head, 0, 4) == b'RIFF',
                           tf.strings.substr(head, 8, 4) == b'WEBP')
  image = tf.cond(
      is_webp,
      lambda: tf.io.decode_image(data, channels=0, expand_animations=False)[..., :3],
      lambda: tf.io.decode_image(data, channels=3, expand_animations=False))
  image.set_shape([None, None, 3])
  return image


def decode_image_file(path):
  """Reads and decodes one image file. Folder sources only hold files that
  `_decodable` checked with this same function, so it does not fail mid-training."""
  return decode_image_bytes(tf.io.read_file(path))


def _decodable(paths):
  """Boolean mask: which of `paths` decode_image_file turns into a non-empty (H, W, 3)
  image. Decodes every file once with the pipeline's own decoder (in parallel, ~1 ms per
  224px JPEG per core), so what passes here cannot fail inside training; a cheaper
  header check would miss e.g. a JPEG with corrupt entropy data but an intact end."""
  ok = np.zeros(len(paths), bool)
  if not paths:
    return ok
  ds = tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), np.asarray(paths, object)))
  ds = ds.map(lambda i, path: (i, tf.shape(decode_image_file(path))),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=False).ignore_errors()
  for i, shape in ds.as_numpy_iterator():
    ok[i] = shape.shape == (3,) and shape[2] == 3 and shape[0] > 0 and shape[1] > 0
  return ok


def _why_unreadable(path):
  """A few words on why a file that failed `_decodable` is not a usable image."""
  fmt = None
  try:
    if os.path.getsize(path) == 0:
      return 'empty file'
    with Image.open(path) as image:
      fmt, mode = image.format, image.mode
      image.load()
  except Image.UnidentifiedImageError:
    return 'not an image'
  except Exception as e:  # pylint: disable=broad-except  (PIL raises many kinds)
    if fmt is None:
      return f'unreadable: {e}'
    return f'truncated {fmt}' if 'truncated' in str(e).lower() else f'corrupt {fmt}: {e}'
  return f'{fmt} ({mode}) that TensorFlow cannot decode; convert it to PNG or JPEG'


class ArraySource:
  """Examples held in memory: uint8 images (N, H, W[, C]) and int labels (N,)."""

  def __init__(self, images, labels):
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8:
      raise ValueError(f'images have dtype {images.dtype}; expected uint8 in 0..255. '
                       'Scale and cast them, e.g. (x * 255).round().astype(np.uint8).')
    if images.ndim == 3:
      images = images[..., None]
    if images.ndim != 4 or len(images) != len(labels):
      raise ValueError(f'images {images.shape} and labels {labels.shape} do not match; '
                       'expected (N, H, W[, C]) images and (N,) labels.')
    self.images, self.labels = images, labels.astype(np.int32)
    self.element_spec = tf.TensorSpec(images.shape[1:], tf.uint8)

  def __len__(self):
    return len(self.labels)

  def take(self, indices):
    return self.images[indices]

  def decode(self, x):
    return x


class FileSource:
  """Image files on disk with their labels; decoded inside tf.data."""
  element_spec = tf.TensorSpec((), tf.string)

  def __init__(self, paths, labels):
    self.paths = np.asarray([str(p).encode() for p in paths], dtype=object)
    self.labels = np.asarray(labels, np.int32)

  def __len__(self):
    return len(self.labels)

  def take(self, indices):
    return self.paths[indices]

  def decode(self, path):
    return decode_image_file(path)


@dataclasses.dataclass(frozen=True)
class TfdsStream:
  """A tfds split too big for memory: read sequentially, per process."""
  builder: tfds.core.DatasetBuilder
  split: str

  def __len__(self):
    return self.builder.info.splits[self.split].num_examples


def _get(cfg, name):
  try:
    return cfg[name]
  except (KeyError, AttributeError):
    raise ValueError(f'config.dataset has no field {name!r}, which source={cfg["source"]!r} '
                   'needs; add it to the dataset config.') from None


# ---------------------------------------------------------------- arrays
_ARRAY_DATASETS = {}  # source name -> (cached loader of {split: ArraySource}, class names)


def register_arrays(name, load_splits, class_names):
  """Makes in-memory arrays usable as config.dataset.source=name.

  load_splits() returns {split_name: ArraySource}; it runs once, on first use."""
  _ARRAY_DATASETS[name] = (functools.lru_cache(maxsize=1)(load_splits), tuple(class_names))


def _digits():
  """sklearn's 8x8 digits, split 80/20 stratified with a fixed seed."""
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split
  d = load_digits()
  images = np.round(d.images * (255 / 16)).astype(np.uint8)  # 0..16 -> 0..255
  train, test = train_test_split(np.arange(len(d.target)), test_size=0.2,
                                 random_state=0, stratify=d.target)
  return {'train': ArraySource(images[train], d.target[train]),
          'test': ArraySource(images[test], d.target[test])}


register_arrays('digits', _digits, [str(i) for i in range(10)])


def _array_split(source, split):
  splits = _ARRAY_DATASETS[source][0]()
  if split not in splits:
    raise ValueError(f'split {split!r} is not a {source} split; expected one of {list(splits)}.')
  return splits[split]


# ---------------------------------------------------------------- folders
# How many unusable files the log line and errors name.
MAX_EXAMPLES = 5


def _list_class(folder):
  """(files named like images, [(other file, reason)]) of one class folder."""
  images, others = [], []
  for f in sorted(folder.iterdir()):
    if not f.is_file():
      continue
    if f.name.startswith('.'):  # e.g. .DS_Store, macOS '._x.jpg' metadata
      others.append((f, 'hidden file'))
    elif f.suffix.lower() not in IMAGE_EXTENSIONS:
      others.append((f, 'not an image file name'))
    else:
      images.append(f)
  return images, others


def _examples(bad, folder):
  """'cls/a.jpg (truncated JPEG), ...' for the first few (path, reason or None)."""
  shown = [f'{f.relative_to(folder)} ({why or _why_unreadable(f)})'
           for f, why in bad[:MAX_EXAMPLES]]
  return ', '.join(shown) + (', ...' if len(bad) > MAX_EXAMPLES else '')


@functools.lru_cache(maxsize=8)
def _folder_classes(path, train_split):
  """Class names = sorted subfolders of path/train_split; their order gives the ids."""
  root = Path(path)
  if not root.is_dir():
    raise FileNotFoundError(
        f'config.dataset.path={path!r} is not a directory; expected an image folder root '
        f'laid out as {path}/{train_split}/<class>/*.jpg. Fix the path.')
  return _class_folders(root, train_split)


def _class_folders(root, split):
  folder = root / split
  if not folder.is_dir():
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    raise FileNotFoundError(
        f'image folder {str(root)!r} has no {split!r} subfolder (it has {found}); expected '
        f'{root}/{split}/<class>/<images>. Fix config.dataset.path or set the split to '
        'the subfolder name.')
  classes = tuple(sorted(p.name for p in folder.iterdir()
                         if p.is_dir() and not p.name.startswith('.')))
  if not classes:
    raise FileNotFoundError(f'{folder} has no class subfolders; expected '
                            f'{folder}/<class>/<images>.')
  return classes


@functools.lru_cache(maxsize=8)
def _folder_split(path, split, class_names):
  """Lists and validates the split's files once per process (cached): every file is
  decoded once; unusable ones are dropped and counted in one line on stderr."""
  root = Path(path)
  folder = root / split
  classes = _class_folders(root, split)
  unknown = sorted(set(classes) - set(class_names))
  if unknown:
    raise ValueError(f'{folder} has class folders {unknown} that the train split lacks; '
                     f'every {split} class must also be a train class.')
  listed = {name: _list_class(folder / name) for name in classes}
  candidates = [f for name in classes for f in listed[name][0]]
  ok = iter(_decodable([str(f) for f in candidates]))
  paths, labels, undecodable, others, total = [], [], [], [], 0
  for name in classes:
    images, other = listed[name]
    flags = [next(ok) for _ in images]
    good = [f for f, k in zip(images, flags) if k]
    bad = [(f, None) for f, k in zip(images, flags) if not k]
    total += len(images) + len(other)
    if not good and (bad or any(why != 'hidden file' for _, why in other)):
      raise ValueError(
          f'class folder {folder / name} has no readable image: all {len(images) + len(other)} '
          f'of its files are unusable: {_examples(bad + other, folder)}. Replace or remove '
          'the broken files (or the class folder).')
    paths += map(str, good)
    labels += [class_names.index(name)] * len(good)
    undecodable += bad
    others += other
  if not paths:
    raise FileNotFoundError(f'no image files ({", ".join(IMAGE_EXTENSIONS)}) in any class '
                            f'folder of {folder}.')
  skipped = undecodable + others  # broken images first: they are the surprising ones
  if skipped:
    print(f'{root.name}/{split}: {len(skipped)} of {total} files skipped (unreadable or not '
          f'an image): {_examples(skipped, folder)}', file=sys.stderr, flush=True)
  return FileSource(paths, labels)


# ---------------------------------------------------------------- tfds
@functools.lru_cache(maxsize=8)
def _tfds_builder(name, data_dir, download):
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(f'config.dataset.name={name!r} is not a tfds dataset name; see '
                     'https://www.tensorflow.org/datasets/catalog for the names.') from None
  if not builder.is_prepared():
    if not download:
      raise FileNotFoundError(
          f'tfds dataset {name!r} is not prepared under data_dir={data_dir!r} (looked for '
          f'{builder.data_dir}) and config.dataset.download=False. Fix: point '
          f'config.dataset.data_dir at the folder holding {name}/<version>/, or set '
          'config.dataset.download=True to download and prepare it there.')
    builder.download_and_prepare()
  if builder.info.supervised_keys is None:
    raise ValueError(f'tfds dataset {name!r} has no (image, label) supervised keys; '
                     'only image classification datasets are supported.')
  return builder


def _tfds_num_examples(builder, split):
  try:
    return builder.info.splits[split].num_examples
  except (KeyError, ValueError) as e:
    raise ValueError(f'split {split!r} is not valid for tfds dataset {builder.name!r} '
                     f'(splits: {list(builder.info.splits)}); slicing like "train[:90%]" '
                     f'is allowed. ({e})') from None


@functools.lru_cache(maxsize=4)
def _tfds_arrays(name, data_dir, split):
  builder = _tfds_builder(name, data_dir, False)
  images, labels = tfds.as_numpy(builder.as_dataset(split, batch_size=-1, as_supervised=True))
  return ArraySource(images, labels)


def _tfds_split(cfg, split):
  name, data_dir = _get(cfg, 'name'), _get(cfg, 'data_dir')
  builder = _tfds_builder(name, data_dir, bool(_get(cfg, 'download')))
  _tfds_num_examples(builder, split)
  image_key = builder.info.supervised_keys[0]
  fixed_shape = None not in builder.info.features[image_key].shape
  if fixed_shape and int(builder.info.dataset_size) <= IN_MEMORY_MAX_BYTES:
    return _tfds_arrays(name, data_dir, split)
  return TfdsStream(builder, split)


# ---------------------------------------------------------------- dispatch
def _unknown_source(source):
  return ValueError(f'config.dataset.source={source!r}; expected "tfds", "folder" or one of '
                    f'the registered array datasets {list(_ARRAY_DATASETS)}.')


def class_names(cfg):
  """Class names of the configured dataset, in label order."""
  source = cfg['source']
  if source in _ARRAY_DATASETS:
    return _ARRAY_DATASETS[source][1]
  if source == 'folder':
    return _folder_classes(str(_get(cfg, 'path')), _get(cfg, 'train_split'))
  if source == 'tfds':
    builder = _tfds_builder(_get(cfg, 'name'), _get(cfg, 'data_dir'), bool(_get(cfg, 'download')))
    label = builder.info.features[builder.info.supervised_keys[1]]
    if not isinstance(label, tfds.features.ClassLabel):
      raise ValueError(f'tfds dataset {builder.name!r} label feature is {type(label).__name__}, '
                       'expected a ClassLabel.')
    return tuple(label.names)
  raise _unknown_source(source)


def num_examples(cfg, split):
  """Size of a split without reading it (for tfds: from the dataset's metadata)."""
  if cfg['source'] == 'tfds':
    builder = _tfds_builder(_get(cfg, 'name'), _get(cfg, 'data_dir'), bool(_get(cfg, 'download')))
    return _tfds_num_examples(builder, split)
  return len(open_split(cfg, split))


def open_split(cfg, split):
  """The source for one split: ArraySource, FileSource or TfdsStream."""
  source = cfg['source']
  if source in _ARRAY_DATASETS:
    return _array_split(source, split)
  if source == 'folder':
    path = str(_get(cfg, 'path'))
    return _folder_split(path, split, _folder_classes(path, _get(cfg, 'train_split')))
  if source == 'tfds':
    return _tfds_split(cfg, split)
  raise _unknown_source(source)
