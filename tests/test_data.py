"""Input pipeline tests on the real data in ../shared (no downloads)."""
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh
from PIL import Image

from vit_jax import data
from vit_jax.data import pipeline, randaugment, sources
from vit_jax.data.tf_cpu import tf

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'
FOLDER = SHARED / 'data' / 'imagenette_subset'


def make_cfg(**overrides):
  cfg = dict(source='digits', name='', data_dir=None, download=False, path='',
             train_split='train', eval_split='test', num_classes=10, image_size=16,
             train_crop='inception', crop_min_scale=0.5, crop_padding=2, flip=True,
             randaugment='2,10', eval_crop_ratio=1.0, shuffle_buffer=1000)
  cfg.update(overrides)
  return ml_collections.ConfigDict(cfg)


MNIST = dict(source='tfds', name='mnist', data_dir=str(SHARED / 'tfds'))
IMAGENETTE = dict(source='folder', path=str(FOLDER), eval_split='val', image_size=32,
                  eval_crop_ratio=0.875)


def one_device_mesh():
  return Mesh(np.array(jax.devices()[:1]), ('data',))


def take(iterator, n):
  return [jax.tree.map(np.asarray, next(iterator)) for _ in range(n)]


def assert_valid_batch(batch, batch_size, image_size, num_classes=10):
  image, label = np.asarray(batch['image']), np.asarray(batch['label'])
  assert image.shape == (batch_size, image_size, image_size, 3) and image.dtype == np.float32
  assert label.shape == (batch_size,) and label.dtype == np.int32
  assert -1 <= image.min() < image.max() <= 1
  assert 0 <= label.min() and label.max() < num_classes


@pytest.mark.parametrize('overrides', [{}, MNIST, IMAGENETTE], ids=['digits', 'mnist', 'folder'])
def test_train_and_eval_batches(overrides):
  cfg = make_cfg(**overrides)
  it = data.train_iterator(cfg, global_batch_size=8, mesh=one_device_mesh(), seed=0)
  for batch in take(it, 2):
    assert_valid_batch(batch, 8, cfg.image_size)
  batch = next(data.eval_iterator(cfg, global_batch_size=8, mesh=one_device_mesh()))
  assert_valid_batch(batch, 8, cfg.image_size)
  assert batch['mask'].dtype == np.float32


def test_tfds_mnist_from_local_data_dir():
  info = data.get_info(make_cfg(**MNIST))
  assert (info.num_classes, info.num_train, info.num_eval) == (10, 60000, 10000)
  assert info.class_names == tuple(str(i) for i in range(10))
  assert data.get_info(make_cfg(**MNIST, train_split='train[:90%]')).num_train == 54000


def test_folder_classes_counts_and_grayscale():
  info = data.get_info(make_cfg(**IMAGENETTE))
  assert (info.num_classes, info.num_train, info.num_eval) == (10, 1000, 500)
  assert info.class_names == tuple(sorted(p.name for p in (FOLDER / 'train').iterdir()))
  gray = next(p for p in sorted((FOLDER / 'val').glob('*/*')) if Image.open(p).mode == 'L')
  image = sources.decode_image_file(str(gray)).numpy()
  assert image.shape == (224, 224, 3) and (image[..., 0] == image[..., 2]).all()
  out = data.preprocess_eval_image(np.asarray(Image.open(gray)), 24, 0.875)  # (H, W) input
  assert out.shape == (24, 24, 3) and out.dtype == np.float32 and -1 <= out.min() <= out.max() <= 1


def test_folder_skips_non_images_and_explains_bad_layouts(tmp_path):
  for name in ('a', 'b'):
    (tmp_path / 'train' / name).mkdir(parents=True)
  Image.new('RGBA', (5, 7), (10, 20, 30, 40)).save(tmp_path / 'train' / 'a' / 'x.png')
  Image.new('L', (6, 4), 99).save(tmp_path / 'train' / 'a' / 'y.JPG', format='JPEG')
  Image.new('RGB', (3, 3), (1, 2, 3)).save(tmp_path / 'train' / 'b' / 'z.jpeg')
  (tmp_path / 'train' / 'a' / 'notes.txt').write_text('not an image')
  cfg = make_cfg(source='folder', path=str(tmp_path), eval_split='train', num_classes=2)
  info = data.get_info(cfg)
  assert (info.class_names, info.num_train) == (('a', 'b'), 3)
  batch = next(data.local_eval_batches(cfg, global_batch_size=4))
  assert batch['image'].shape == (4, 16, 16, 3) and batch['mask'].tolist() == [1, 1, 1, 0]
  with pytest.raises(ValueError, match=r'num_classes=5 .* has 2 classes.*num_classes=2'):
    data.get_info(make_cfg(source='folder', path=str(tmp_path), num_classes=5))
  with pytest.raises(FileNotFoundError, match=r"has no 'val' subfolder"):
    data.get_info(make_cfg(source='folder', path=str(tmp_path), num_classes=2, eval_split='val'))
  with pytest.raises(FileNotFoundError, match='is not a directory'):
    data.get_info(make_cfg(source='folder', path=str(tmp_path / 'nope')))
  (tmp_path / 'empty' / 'train' / 'c').mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match='no image files'):
    data.get_info(make_cfg(source='folder', path=str(tmp_path / 'empty'), num_classes=1,
                           eval_split='train'))


def test_missing_tfds_dataset_error(tmp_path):
  cfg = make_cfg(source='tfds', name='cifar10', data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match=r"'cifar10'.*data_dir=.*download=True"):
    data.get_info(cfg)
  with pytest.raises(ValueError, match='not a tfds dataset name'):
    data.get_info(make_cfg(source='tfds', name='no_such_dataset', data_dir=str(tmp_path)))
  with pytest.raises(ValueError, match="source='nope'"):
    data.get_info(make_cfg(source='nope'))


def test_config_value_errors():
  with pytest.raises(ValueError, match='randaugment'):
    data.get_info(make_cfg(randaugment='2'))
  with pytest.raises(ValueError, match='train_crop'):
    data.get_info(make_cfg(train_crop='center'))
  with pytest.raises(ValueError, match='divisible by the 3 processes'):
    data.local_train_batches(make_cfg(), global_batch_size=8, seed=0, process_count=3)


def test_eval_covers_every_example_once():
  source = sources.open_split(make_cfg(), 'test')  # 360 digits
  for process_count in (1, 4):
    per_process = [list(data.local_eval_batches(make_cfg(), global_batch_size=64,
                                                process_index=p, process_count=process_count))
                   for p in range(process_count)]
    assert len({len(b) for b in per_process}) == 1  # every process yields as many batches
    batches = [{k: np.concatenate([b[i][k] for b in per_process]) for k in per_process[0][0]}
               for i in range(len(per_process[0]))]
    assert len(batches) == 6 and batches[-1]['mask'].sum() == 360 - 5 * 64
    mask = np.concatenate([b['mask'] for b in batches])
    labels = np.concatenate([b['label'] for b in batches])
    np.testing.assert_array_equal(labels[mask == 1], source.labels)  # each example, in order
    assert mask.sum() == data.get_info(make_cfg()).num_eval


def test_in_memory_fast_path_matches_tf_data(monkeypatch):
  # MNIST at its own size with no crop: numpy batches, the same pixels tf.data makes.
  cfg = make_cfg(**MNIST, image_size=28, train_crop='resize', randaugment='', flip=True)
  kw = dict(global_batch_size=64, seed=3)
  fast, fast_eval = take(data.local_train_batches(cfg, **kw), 4), list(
      data.local_eval_batches(cfg, global_batch_size=4096))
  assert isinstance(data.local_train_batches(cfg, **kw), type(x for x in ()))  # no tf.data
  np.testing.assert_array_equal(take(data.local_train_batches(cfg, start_step=2, **kw), 1)[0]
                                ['image'], fast[2]['image'])
  monkeypatch.setattr(pipeline, '_is_plain_array', lambda *a, **k: False)
  slow, slow_eval = take(data.local_train_batches(cfg, **kw), 4), list(
      data.local_eval_batches(cfg, global_batch_size=4096))
  for a, b in zip(fast_eval, slow_eval):
    for key in ('image', 'label', 'mask'):
      np.testing.assert_array_equal(a[key], b[key])
  flipped = []
  for a, b in zip(fast, slow):
    np.testing.assert_array_equal(a['label'], b['label'])
    same = (a['image'] == b['image']).all(axis=(1, 2, 3))
    mirrored = (a['image'] == b['image'][:, :, ::-1]).all(axis=(1, 2, 3))
    assert (same | mirrored).all()
    flipped.append(mirrored & ~same)
  assert 0.3 < np.mean(flipped) < 0.7  # a fair coin per example


def test_pad_crop_is_a_random_translation_in_both_paths(monkeypatch):
  cfg = make_cfg(**MNIST, image_size=28, train_crop='pad_crop', crop_padding=2,
                 randaugment='', flip=False)
  source = sources.open_split(cfg, 'train')
  originals = source.images[pipeline._EpochOrder(len(source), 3)(np.arange(32))][..., 0]
  padded = np.pad(originals.astype(np.float32) / 127.5 - 1, ((0, 0), (2, 2), (2, 2)),
                  constant_values=-1)

  def shifts(batch):  # the (dy, dx) offset into the padded original each image shows
    return [next((dy, dx) for dy in range(5) for dx in range(5)
                 if np.array_equal(p[dy:dy + 28, dx:dx + 28], image[..., 0]))
            for p, image in zip(padded, batch['image'])]

  fast = take(data.local_train_batches(cfg, global_batch_size=32, seed=3), 1)[0]
  monkeypatch.setattr(pipeline, '_is_plain_array', lambda *a, **k: False)
  slow = take(data.local_train_batches(cfg, global_batch_size=32, seed=3), 1)[0]
  for batch in (fast, slow):  # StopIteration above = an image that is no such shift
    assert len(set(shifts(batch))) > 8  # random per example, not one shift per batch


def test_train_stream_is_a_function_of_seed_and_step():
  # 1437 digits, batch 256: steps 4..6 cross the epoch boundary at position 1437.
  cfg, kw = make_cfg(), dict(global_batch_size=256, seed=7)
  full = take(data.local_train_batches(cfg, **kw), 7)
  resumed = take(data.local_train_batches(cfg, start_step=4, **kw), 3)
  for a, b in zip(full[4:], resumed):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  other = take(data.local_train_batches(cfg, global_batch_size=256, seed=8), 1)[0]
  assert not np.array_equal(other['label'], full[0]['label'])
  # One epoch = each example exactly once (label histogram of the first 1437 positions).
  labels = np.concatenate([b['label'] for b in full])[:1437]
  np.testing.assert_array_equal(np.bincount(labels),
                                np.bincount(sources.open_split(cfg, 'train').labels))


def test_folder_train_resume_and_process_split():
  cfg, kw = make_cfg(**IMAGENETTE), dict(global_batch_size=8, seed=1)
  full = take(data.local_train_batches(cfg, **kw), 3)
  resumed = take(data.local_train_batches(cfg, start_step=2, **kw), 1)[0]
  np.testing.assert_array_equal(full[2]['image'], resumed['image'])
  # Two processes each build half of every global batch; together they equal one process.
  halves = [take(data.local_train_batches(cfg, process_index=p, process_count=2, start_step=1,
                                          **kw), 1)[0] for p in range(2)]
  np.testing.assert_array_equal(np.concatenate([h['image'] for h in halves]), full[1]['image'])


def test_streaming_tfds_resume(monkeypatch):
  monkeypatch.setattr(sources, 'IN_MEMORY_MAX_BYTES', 0)  # stream MNIST as if it were large
  cfg = make_cfg(**MNIST)
  assert isinstance(sources.open_split(cfg, 'train'), sources.TfdsStream)
  full = take(data.local_train_batches(cfg, global_batch_size=8, seed=3), 4)
  resumed = take(data.local_train_batches(cfg, global_batch_size=8, seed=3, start_step=2), 2)
  for a, b in zip(full[2:], resumed):
    np.testing.assert_array_equal(a['image'], b['image'])
  assert_valid_batch(full[0], 8, 16)
  eval_batches = list(data.local_eval_batches(cfg, global_batch_size=4096, process_index=1,
                                              process_count=2))
  assert len(eval_batches) == 3 and sum(b['mask'].sum() for b in eval_batches) == 5000


def test_randaugment_valid_deterministic_and_changes_images():
  image = tf.constant(np.asarray(Image.open(sorted((FOLDER / 'train').glob('*/*'))[0])))
  for op in randaugment.OPS:
    out = op(image, 1.0, tf.constant(-1.))
    assert out.dtype == tf.uint8 and out.shape == image.shape
  outs = [randaugment.randaugment(image, tf.constant([0, s], tf.int64), 2, 10.).numpy()
          for s in (0, 0, 1, 2, 3)]
  np.testing.assert_array_equal(outs[0], outs[1])
  assert sum(not np.array_equal(o, image.numpy()) for o in outs[2:]) >= 2


MULTI_DEVICE = textwrap.dedent('''
    import json, jax, numpy as np
    from jax.sharding import Mesh
    from tests.test_data import make_cfg
    from vit_jax import data
    cfg, devices, result = make_cfg(), jax.devices(), {}
    def batches(n, start_step=0):
      mesh = Mesh(np.array(devices[:n]), ('data',))
      it = data.train_iterator(cfg, global_batch_size=16, mesh=mesh, seed=5, start_step=start_step)
      out = [next(it) for _ in range(2)]
      result[f'shards{n}'] = len(out[0]['image'].addressable_shards)
      return [{k: np.asarray(v) for k, v in b.items()} for b in out]
    one = batches(1)
    result['equal'] = all(np.array_equal(a[k], b[k])
                          for n in (2, 8) for a, b in zip(one, batches(n)) for k in a)
    try:
      mesh = Mesh(np.array(devices), ('data',))
      data.train_iterator(cfg, global_batch_size=12, mesh=mesh, seed=0)
    except ValueError as e:
      result['error'] = str(e)
    print(json.dumps(result))
''')


def test_global_batch_is_independent_of_device_count():
  pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')]))
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu', PYTHONPATH=pythonpath)
  proc = subprocess.run([sys.executable, '-c', MULTI_DEVICE], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result['equal'] and (result['shards1'], result['shards2'], result['shards8']) == (1, 2, 8)
  assert 'global_batch_size=12 is not divisible by the mesh "data" axis size 8' in result['error']


def _jpeg(image, **kwargs):
  buffer = io.BytesIO()
  image.save(buffer, 'JPEG', **kwargs)
  return buffer.getvalue()


def write_hostile_folder(root):
  """train/{a,b}/: convertible images of uniform colour (name -> expected RGB) and
  hostile files (name -> reason shown in the log); one of each kind from the issue."""
  a, b = root / 'train' / 'a', root / 'train' / 'b'
  a.mkdir(parents=True), b.mkdir(parents=True)
  noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8))
  photo = _jpeg(noise)
  good = {  # file -> RGB it must decode to (JPEGs within a few levels)
      'a/cmyk.jpg': (0, 255, 255), 'a/gray16.png': (255, 255, 255),
      'a/gray16_half.png': (128, 128, 128), 'a/rgb16.png': (255, 128, 0),
      'a/palette.png': (200, 10, 10), 'a/rgba.png': (10, 20, 30), 'a/la.png': (99, 99, 99),
      'a/rgba.webp': (40, 50, 60), 'b/rgb.jpg': (250, 120, 5), 'b/gray.jpeg': (77, 77, 77)}
  Image.new('CMYK', (8, 8), (255, 0, 0, 0)).save(a / 'cmyk.jpg')  # pure cyan ink
  Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(a / 'gray16.png')  # mode I;16
  Image.fromarray(np.full((8, 8), 32768, np.uint16)).save(a / 'gray16_half.png')
  rgb16 = np.broadcast_to(np.array([65535, 32768, 0], np.uint16), (8, 8, 3))
  (a / 'rgb16.png').write_bytes(tf.io.encode_png(tf.constant(rgb16)).numpy())  # PIL can't
  palette = Image.new('P', (8, 8), 0)
  palette.putpalette([200, 10, 10] * 256)
  palette.save(a / 'palette.png')
  Image.new('RGBA', (8, 8), (10, 20, 30, 40)).save(a / 'rgba.png')
  Image.new('LA', (8, 8), (99, 50)).save(a / 'la.png')
  Image.new('RGBA', (8, 8), (40, 50, 60, 128)).save(a / 'rgba.webp', lossless=True)
  (b / 'rgb.jpg').write_bytes(_jpeg(Image.new('RGB', (8, 8), good['b/rgb.jpg']), quality=95))
  Image.new('L', (8, 8), 77).save(b / 'gray.jpeg')
  bad = {'a/truncated.jpg': 'truncated JPEG', 'a/empty.jpg': 'empty file',
         'a/text.jpg': 'not an image', 'b/garbage.jpg': 'not an image',
         'b/corrupt_middle.jpg': 'corrupt JPEG', 'b/header_only.png': 'not an image',
         'a/notes.txt': 'not an image file name', 'b/.DS_Store': 'hidden file'}
  (a / 'truncated.jpg').write_bytes(photo[:len(photo) // 2])
  (a / 'empty.jpg').write_bytes(b'')
  (a / 'text.jpg').write_text('this is not a JPEG\n')
  (b / 'garbage.jpg').write_bytes(np.random.default_rng(1).bytes(3000))
  half = len(photo) // 2  # intact header and end marker, broken entropy data
  (b / 'corrupt_middle.jpg').write_bytes(photo[:half] + b'\xff\x3f' * 8 + photo[half + 16:])
  (b / 'header_only.png').write_bytes((a / 'la.png').read_bytes()[:40])
  (a / 'notes.txt').write_text('not an image')
  (b / '.DS_Store').write_bytes(b'\x00\x00\x00\x01Bud1' + bytes(100))
  return good, bad


def test_folder_hostile_files_are_converted_or_skipped_and_logged(tmp_path, capsys):
  good, bad = write_hostile_folder(tmp_path)
  cfg = make_cfg(source='folder', path=str(tmp_path), eval_split='train', num_classes=2,
                 image_size=8, randaugment='')
  info = data.get_info(cfg)
  assert (info.num_train, info.num_eval) == (len(good), len(good))
  log = capsys.readouterr().err
  assert log.count('files skipped') == 1  # validated once per folder, cached after
  line = next(l for l in log.splitlines() if 'files skipped' in l)
  assert f'{tmp_path.name}/train: {len(bad)} of {len(good) + len(bad)} files skipped' in line
  for name in ('a/truncated.jpg (truncated JPEG)', 'a/empty.jpg (empty file)',
               'a/text.jpg (not an image)', 'b/garbage.jpg (not an image)',
               'b/corrupt_middle.jpg (corrupt JPEG'):
    assert name in line, line
  # Eval: every convertible file exactly once, in sorted order, with the right colours.
  batches = list(data.local_eval_batches(cfg, global_batch_size=4))
  mask = np.concatenate([b['mask'] for b in batches])
  images = np.concatenate([b['image'] for b in batches])[mask == 1]
  labels = np.concatenate([b['label'] for b in batches])[mask == 1]
  assert mask.sum() == len(good) and -1 <= images.min() and images.max() <= 1
  names = sorted(good)
  np.testing.assert_array_equal(labels, [n.startswith('b/') for n in names])
  rgb = (images.mean(axis=(1, 2)) + 1) * 127.5
  for name, got in zip(names, rgb):
    tolerance = 6 if name.endswith(('.jpg', '.jpeg')) else 0.5
    np.testing.assert_allclose(got, good[name], atol=tolerance, err_msg=name)
  # Training runs through more than an epoch of the survivors without error.
  for batch in take(data.local_train_batches(cfg, global_batch_size=4, seed=0), 4):
    assert_valid_batch(batch, 4, 8, num_classes=2)
  assert 'files skipped' not in capsys.readouterr().err


def test_sixteen_bit_png_is_scaled_not_truncated(tmp_path):
  values = np.array([[0, 256, 32768, 65535]], np.uint16)
  Image.fromarray(values).save(tmp_path / 'g.png')
  assert Image.open(tmp_path / 'g.png').mode == 'I;16'
  decoded = sources.decode_image_file(str(tmp_path / 'g.png')).numpy()
  np.testing.assert_array_equal(decoded[0, :, 0], [0, 1, 128, 255])
  assert decoded.dtype == np.uint8 and (decoded[..., 0] == decoded[..., 2]).all()


def test_folder_whose_files_are_all_broken_names_it(tmp_path):
  good, _ = write_hostile_folder(tmp_path)
  for name in good:  # class b keeps only its broken files (and a .DS_Store)
    if name.startswith('b/'):
      (tmp_path / 'train' / name).unlink()
  cfg = make_cfg(source='folder', path=str(tmp_path), eval_split='train', num_classes=2)
  with pytest.raises(ValueError, match=r"class folder .*train/b has no readable image.*"
                                       r"corrupt_middle\.jpg \(corrupt JPEG"):
    data.get_info(cfg)
  (tmp_path / 'all_bad' / 'train' / 'x').mkdir(parents=True)
  (tmp_path / 'all_bad' / 'train' / 'x' / 'a.jpg').write_bytes(b'')
  (tmp_path / 'all_bad' / 'train' / 'x' / 'b.png').write_text('no')
  with pytest.raises(ValueError, match=r'all_bad/train/x has no readable image: all 2 '):
    data.get_info(make_cfg(source='folder', path=str(tmp_path / 'all_bad'), num_classes=1,
                           eval_split='train'))


def test_tensorflow_is_imported_without_keras_and_tf_keras_still_works():
  """vit_jax's TF import skips the eager Keras import (2 s per run), leaves the environment
  as it was, and tf.keras still loads Keras 3 on first use."""
  code = textwrap.dedent('''
      import os, sys
      from vit_jax.data.tf_cpu import tf
      import tensorflow_datasets
      print('keras' in sys.modules, 'sklearn' in sys.modules, 'TF_USE_LEGACY_KERAS' in os.environ)
      print(tuple(tf.keras.layers.Dense(3)(tf.zeros((1, 2))).shape), 'keras' in sys.modules)
  ''')
  env = {k: v for k, v in os.environ.items() if k != 'TF_USE_LEGACY_KERAS'}
  proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.split('\n')[:2] == ['False False False', '(1, 3) True']
