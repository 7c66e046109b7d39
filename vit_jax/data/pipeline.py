"""Training and evaluation batches, as jax.Arrays sharded over the mesh's 'data' axis.

Training order is a pure function of (seed, step), so a run resumed at step s sees
exactly the batches an uninterrupted run sees from s on:
- Random-access sources (arrays, folders, small tfds): epoch e visits the examples in
  the order np.random.default_rng((seed, e)).permutation(N). Epochs are concatenated
  into one stream and global batch b is stream positions [b*B, (b+1)*B): batches cross
  epoch boundaries and nothing is dropped. The example at position g is augmented with
  the stateless seed (seed, g). Process p of P builds only rows [p*B/P, (p+1)*B/P) of
  each global batch, so the global batch is the same for any number of processes.
  In-memory images already at the model's size, augmented by flips and pad_crop
  translations at most, skip tf.data: batches are made in numpy, with the example at
  position g augmented by a hash of (seed, g).
- Streaming tfds: each process reads its own shard (tfds.split_for_jax_process),
  shuffled per epoch with a seed from (seed, epoch); resuming skips the already-seen
  examples without decoding them. Deterministic for a fixed process count.
"""
import dataclasses
import itertools
import queue
import os
import threading

import jax
import numpy as np
import tensorflow_datasets as tfds
from jax.sharding import NamedSharding, PartitionSpec

from vit_jax.data import preprocess, randaugment, sources
from vit_jax.data.tf_cpu import tf

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  num_classes: int
  num_train: int
  num_eval: int
  class_names: tuple[str, ...]


def _describe(cfg):
  source = cfg['source']
  return {'tfds': lambda: f'tfds dataset {cfg.get("name")!r}', 'digits': lambda: 'digits',
          'folder': lambda: f'image folder {cfg.get("path")!r}'}.get(source, lambda: source)()


def _train_options(cfg):
  """Validated keyword arguments for preprocess.train_image."""
  crop, scale = cfg['train_crop'], float(cfg['crop_min_scale'])
  if crop not in preprocess.CROPS:
    raise ValueError(f'config.dataset.train_crop={crop!r}; expected one of {preprocess.CROPS}.')
  if not 0 < scale <= 1:
    raise ValueError(f'config.dataset.crop_min_scale={scale}; expected a fraction in (0, 1], '
                     'e.g. 0.08 for ImageNet-like photos or 0.5 for MNIST-sized images.')
  padding = cfg['crop_padding']
  if not isinstance(padding, int) or padding < 0:
    raise ValueError(f'config.dataset.crop_padding={padding!r}; expected pixels >= 0 (the '
                     "largest shift of train_crop='pad_crop', e.g. 2 for 28x28 digits).")
  return dict(image_size=_image_size(cfg), crop=crop, crop_min_scale=scale,
              crop_padding=padding, flip=bool(cfg['flip']),
              randaugment=randaugment.parse(cfg['randaugment']))


def _eval_options(cfg):
  ratio = float(cfg['eval_crop_ratio'])
  if not 0 < ratio <= 1:
    raise ValueError(f'config.dataset.eval_crop_ratio={ratio}; expected (0, 1]: 1.0 is a plain '
                     'resize, 0.875 resizes to image_size/0.875 and crops the centre.')
  return dict(image_size=_image_size(cfg), crop_ratio=ratio)


def _image_size(cfg):
  size = cfg['image_size']
  if not isinstance(size, int) or size < 1:
    raise ValueError(f'config.dataset.image_size={size!r}; expected a positive int.')
  return size


def get_info(cfg) -> DatasetInfo:
  """Class names and split sizes without reading the data; validates the config."""
  names = sources.class_names(cfg)
  if cfg['num_classes'] != len(names):
    raise ValueError(f'config.dataset.num_classes={cfg["num_classes"]} but {_describe(cfg)} has '
                     f'{len(names)} classes ({", ".join(names[:5])}, ...); set '
                     f'num_classes={len(names)}.')
  _train_options(cfg), _eval_options(cfg)
  return DatasetInfo(num_classes=len(names),
                     num_train=sources.num_examples(cfg, cfg['train_split']),
                     num_eval=sources.num_examples(cfg, cfg['eval_split']),
                     class_names=names)


def _local_rows(global_batch_size, process_index, process_count):
  if global_batch_size % process_count:
    raise ValueError(f'global_batch_size={global_batch_size} is not divisible by the '
                     f'{process_count} processes; use a multiple of {process_count}.')
  local = global_batch_size // process_count
  return np.arange(process_index * local, (process_index + 1) * local)


class _EpochOrder:
  """Maps stream positions to example indices; epoch e is a permutation from (seed, e)."""

  def __init__(self, n, seed):
    self.n, self.seed, self._perms = n, seed, {}

  def __call__(self, positions):
    epochs, offsets = np.divmod(positions, self.n)
    indices = np.empty_like(positions)
    for e in np.unique(epochs):
      if e not in self._perms:
        if len(self._perms) >= 2:  # a batch touches at most two epochs (if B <= N)
          self._perms.pop(min(self._perms))
        self._perms[e] = np.random.default_rng((self.seed, int(e))).permutation(self.n)
      indices[epochs == e] = self._perms[e][offsets[epochs == e]]
    return indices


def _from_indices(source, batches):
  """tf.data of single examples from (positions, indices, mask) per local batch.

  Python only picks indices (cheap); decoding and augmentation run in tf.data's
  parallel map."""
  def gen():
    for positions, indices, mask in batches:
      yield {'x': source.take(indices), 'label': source.labels[indices],
             'pos': positions, 'mask': mask}
  spec = source.element_spec
  signature = {'x': tf.TensorSpec((None, *spec.shape), spec.dtype),
               'label': tf.TensorSpec((None,), tf.int32),
               'pos': tf.TensorSpec((None,), tf.int64),
               'mask': tf.TensorSpec((None,), tf.float32)}
  return tf.data.Dataset.from_generator(gen, output_signature=signature).unbatch()


def _is_plain_array(source, image_size, *, crop='resize', randaugment=None, crop_ratio=1.0):
  """Whether batches of `source` need no per-example tf.data work: in-memory images already
  at image_size, augmented by flips and translations (pad_crop) at most. MNIST-sized steps
  are a few ms, and a per-example tf.data map on the same 2 cores cost up to half of them."""
  return (isinstance(source, sources.ArraySource) and crop in ('resize', 'pad_crop')
          and not randaugment and crop_ratio == 1.0
          and source.images.shape[1:3] == (image_size, image_size))


def _hash(seed, positions, salt):
  """Per-example uint64 random bits, a pure function of (seed, stream position, salt)."""
  z = (np.full(np.shape(positions), seed, np.uint64) * np.uint64(0x9E3779B97F4A7C15)
       + np.asarray(positions, np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
       + np.uint64(salt * 0xD1B54A32D192ED03 % 2**64))
  z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)  # splitmix64 finaliser
  z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return z ^ (z >> np.uint64(31))


# uint8 -> [-1, 1] as a table: the same float32 values as x / 127.5 - 1, one gather.
_UNIT_SCALE = np.arange(256, dtype=np.float32) / np.float32(127.5) - np.float32(1)


def _array_batches(source, batches, *, seed=None, flip=False, crop_padding=0,
                   with_mask=False):
  """Vectorised numpy batches (what preprocess does per example, minus the identity resize):
  gather, random translation (pad_crop) and flip drawn from (seed, position), scale to
  [-1, 1], gray -> RGB. Gray images stay one channel until the last copy and flips are in
  place on the gathered copy: 0.24 against 0.89 ms per Fashion-MNIST batch of 64 (Zen 5),
  host time taken from the ~22 ms step on the same 2 cores."""
  for positions, indices, mask in batches:
    x = source.images[indices]  # fancy indexing: a copy, safe to modify in place
    gray = x.shape[-1] in (1, 2)
    x = x[..., :1] if gray else x[..., :3]
    if crop_padding:
      p, (n, h, w, _) = crop_padding, x.shape
      shifts = [(_hash(seed, positions, salt) >> np.uint64(32)) % np.uint64(2 * p + 1)
                for salt in (1, 2)]
      rows, cols = (s.astype(np.int64)[:, None] + np.arange(size) for s, size in
                    zip(shifts, (h, w)))
      padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
      x = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    if flip:
      bits = (_hash(seed, positions, 0) >> np.uint64(63)).astype(bool)
      x[bits] = x[bits, :, ::-1]
    image = _UNIT_SCALE[x]
    if gray:
      image = np.repeat(image, 3, axis=-1)
    batch = {'image': image, 'label': source.labels[indices]}
    if with_mask:
      batch['mask'] = mask
    yield batch


def _tfds_reader(stream, split, **kwargs):
  """Reads a tfds split with images left encoded, so skipping and shuffling stay cheap."""
  builder = stream.builder
  image_key = builder.info.supervised_keys[0]
  encoded = isinstance(builder.info.features[image_key], tfds.features.Image)
  decoders = {image_key: tfds.decode.SkipDecoding()} if encoded else None
  ds = builder.as_dataset(split, decoders=decoders, as_supervised=True, **kwargs)
  return ds, (sources.decode_image_bytes if encoded else (lambda x: x))


def _with_threads(ds):
  """Caps tf.data's threads at half the host's cores (at least 1) with no intra-op
  parallelism: on small hosts an uncapped pool fights XLA's compute threads for the
  cores (measured on 2 cores: input + step 145 ms/step uncapped vs ~50 ms capped)."""
  options = tf.data.Options()
  options.threading.private_threadpool_size = max(1, (os.cpu_count() or 2) // 2)
  options.threading.max_intra_op_parallelism = 1
  return ds.with_options(options)


def local_train_batches(cfg, *, global_batch_size, seed, start_step=0,
                        process_index=0, process_count=1):
  """This process's rows of every training batch from `start_step` on, as numpy dicts.

  train_iterator() shards these into jax.Arrays; tests compare them directly."""
  if seed < 0 or start_step < 0:
    raise ValueError(f'seed={seed} and start_step={start_step} must be >= 0.')
  rows, opts = _local_rows(global_batch_size, process_index, process_count), _train_options(cfg)
  source, seed64 = sources.open_split(cfg, cfg['train_split']), tf.constant(seed, tf.int64)
  if isinstance(source, sources.TfdsStream):
    split = tfds.split_for_jax_process(source.split, process_index=process_index,
                                       process_count=process_count)
    n = source.builder.info.splits[split].num_examples
    files, decode = _tfds_reader(source, split, shuffle_files=True, read_config=tfds.ReadConfig(
        shuffle_seed=seed, shuffle_reshuffle_each_iteration=False))
    buffer = int(cfg['shuffle_buffer'])

    def epoch(e):
      epoch_seed = tf.random.stateless_uniform(
          [], tf.stack([seed64, e]), minval=None, maxval=None, dtype=tf.int64)
      return files.shuffle(buffer, seed=epoch_seed).enumerate(start=e * n)

    first_epoch, offset = divmod(start_step * len(rows), n)
    ds = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch).skip(offset)
    ds = ds.map(lambda pos, ex: {
        'image': preprocess.train_image(decode(ex[0]), tf.random.experimental.stateless_fold_in(
            tf.stack([seed64, pos]), process_index), **opts),
        'label': tf.cast(ex[1], tf.int32)}, num_parallel_calls=AUTOTUNE, deterministic=True)
  else:
    order = _EpochOrder(len(source), seed)
    positions = (step * global_batch_size + rows for step in itertools.count(start_step))
    batches = ((p, order(p), np.ones(len(p), np.float32)) for p in positions)
    if _is_plain_array(source, opts['image_size'], crop=opts['crop'],
                       randaugment=opts['randaugment']):
      return _array_batches(source, batches, seed=seed, flip=opts['flip'],
                            crop_padding=opts['crop_padding'] if opts['crop'] == 'pad_crop' else 0)
    ds = _from_indices(source, batches)
    ds = ds.map(lambda ex: {
        'image': preprocess.train_image(source.decode(ex['x']), tf.stack([seed64, ex['pos']]),
                                        **opts),
        'label': ex['label']}, num_parallel_calls=AUTOTUNE, deterministic=True)
  return _with_threads(ds.batch(len(rows), drop_remainder=True).prefetch(AUTOTUNE)
                       ).as_numpy_iterator()


def local_eval_batches(cfg, *, global_batch_size, process_index=0, process_count=1):
  """This process's rows of every eval batch, padded, with 'mask' 1 for real examples."""
  rows, opts = _local_rows(global_batch_size, process_index, process_count), _eval_options(cfg)
  source = sources.open_split(cfg, cfg['eval_split'])
  if isinstance(source, sources.TfdsStream):
    return _stream_eval(source, opts, len(rows), process_index, process_count)
  n = len(source)
  batches = []
  for b in range(-(-n // global_batch_size)):
    positions = b * global_batch_size + rows
    valid = positions < n
    batches.append((positions, np.where(valid, positions, 0), valid.astype(np.float32)))
  if _is_plain_array(source, opts['image_size'], crop_ratio=opts['crop_ratio']):
    return _array_batches(source, batches, with_mask=True)
  ds = _from_indices(source, batches).map(lambda ex: {
      'image': preprocess.eval_image(source.decode(ex['x']), **opts),
      'label': ex['label'], 'mask': ex['mask']}, num_parallel_calls=AUTOTUNE, deterministic=True)
  return ds.batch(len(rows)).prefetch(AUTOTUNE).as_numpy_iterator()


def _stream_eval(stream, opts, local_batch, process_index, process_count):
  """Each process reads its shard; all yield the same number of zero-padded batches."""
  splits = [tfds.split_for_jax_process(stream.split, process_index=p, process_count=process_count)
            for p in range(process_count)]
  counts = [stream.builder.info.splits[s].num_examples for s in splits]
  ds, decode = _tfds_reader(stream, splits[process_index], shuffle_files=False)
  ds = ds.map(lambda image, label: {
      'image': preprocess.eval_image(decode(image), **opts), 'label': tf.cast(label, tf.int32)},
      num_parallel_calls=AUTOTUNE, deterministic=True)
  batches = ds.batch(local_batch).prefetch(AUTOTUNE).as_numpy_iterator()
  size = opts['image_size']
  for _ in range(max(-(-c // local_batch) for c in counts)):
    batch = next(batches, None)
    k = 0 if batch is None else len(batch['label'])
    padded = {'image': np.zeros((local_batch, size, size, 3), np.float32),
              'label': np.zeros(local_batch, np.int32), 'mask': np.zeros(local_batch, np.float32)}
    if k:
      for key in ('image', 'label'):
        padded[key][:k] = batch[key]
      padded['mask'][:k] = 1
    yield padded


def _sharding(mesh, global_batch_size):
  if 'data' not in mesh.axis_names:
    raise ValueError(f'mesh axes {mesh.axis_names} have no "data" axis, which the input '
                     'pipeline shards batches over.')
  if global_batch_size % mesh.shape['data']:
    raise ValueError(f'global_batch_size={global_batch_size} is not divisible by the mesh '
                     f'"data" axis size {mesh.shape["data"]}; use a multiple of '
                     f'{mesh.shape["data"]}.')
  return NamedSharding(mesh, PartitionSpec('data'))


def _prefetch(batches, size=2):
  """Runs `batches` in a background thread, `size` ahead, so host preprocessing overlaps
  device compute. Exceptions surface in the consumer; closing the generator stops it."""
  q, stop, end = queue.Queue(maxsize=max(1, size)), threading.Event(), object()

  def put(item):
    while not stop.is_set():
      try:
        return q.put(item, timeout=0.1)
      except queue.Full:
        pass

  def produce():
    try:
      for item in batches:
        put(item)
        if stop.is_set():
          return
      put(end)
    except BaseException as e:  # pylint: disable=broad-except
      put(e)

  thread = threading.Thread(target=produce, daemon=True, name='vit_jax.data prefetch')
  thread.start()
  try:
    while (item := q.get()) is not end:
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    # Join the producer: a thread still inside tf.data when the interpreter exits aborts it.
    stop.set()
    thread.join(timeout=30)


def _global(local_batches, sharding, global_batch_size):
  for batch in local_batches:
    yield {k: jax.make_array_from_process_local_data(
        sharding, v, (global_batch_size, *v.shape[1:])) for k, v in batch.items()}


def train_iterator(cfg, *, global_batch_size, mesh, seed, start_step=0, prefetch=2):
  """Infinite {'image': (B, S, S, 3) f32 in [-1, 1], 'label': (B,) int32} sharded over 'data',
  with `prefetch` batches prepared ahead in a background thread."""
  sharding = _sharding(mesh, global_batch_size)
  local = local_train_batches(cfg, global_batch_size=global_batch_size, seed=seed,
                              start_step=start_step, process_index=jax.process_index(),
                              process_count=jax.process_count())
  return _prefetch(_global(local, sharding, global_batch_size), prefetch)


def eval_iterator(cfg, *, global_batch_size, mesh, prefetch=2):
  """One pass over the eval split: every example once, the last batch padded; 'mask'
  (B,) float32 is 1 for real examples and 0 for padding."""
  sharding = _sharding(mesh, global_batch_size)
  local = local_eval_batches(cfg, global_batch_size=global_batch_size,
                             process_index=jax.process_index(), process_count=jax.process_count())
  return _prefetch(_global(local, sharding, global_batch_size), prefetch)
