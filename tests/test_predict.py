"""The prediction CLI: top-k JSON schema, agreement with the trainer's evaluation, class
names (dataset, labels file, built-in ImageNet), and files that are not images."""

import json
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from conftest import REPO, SHARED, tiny_mnist_cli
from vit_jax import data, predict
from vit_jax.checkpoints import load, vit_npz
from vit_jax.models import get_model

PHOTOS = SHARED / 'data' / 'imagenette_subset' / 'val'


def run_cli(*args, timeout=120):
  return subprocess.run([sys.executable, '-m', 'vit_jax.predict', *map(str, args)], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope='module')
def mnist_run(tmp_path_factory):
  """A micro ViT trained a few steps on real MNIST (orbax workdir), and a folder of the
  first 8 MNIST test digits as PNGs with 3 files that are not images mixed in."""
  root = tmp_path_factory.mktemp('mnist')
  cli = tiny_mnist_cli(root / 'wd', total_steps=2, **{'dataset.eval_split': 'test[:8]'})
  r = subprocess.run(cli, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr
  images, labels = tfds.as_numpy(tfds.builder('mnist', data_dir=SHARED / 'tfds').as_dataset(
      'test[:8]', batch_size=-1, as_supervised=True))
  folder = root / 'digits'
  folder.mkdir()
  for i, image in enumerate(images):
    Image.fromarray(image[..., 0]).save(folder / f'{i}_label{labels[i]}.png')
  (folder / '8_empty.png').write_bytes(b'')
  (folder / '9_truncated.png').write_bytes((folder / f'0_label{labels[0]}.png').read_bytes()[:60])
  (folder / 'notes.txt').write_text('not an image')
  return root / 'wd', folder, labels


def test_json_matches_the_trainers_evaluation_and_reports_bad_files(mnist_run, tmp_path):
  workdir, folder, labels = mnist_run
  garbage = tmp_path / 'data.jpg'               # named directly: its contents decide
  garbage.write_bytes(b'GIF89a but not really' * 10)
  r = run_cli(f'--checkpoint={workdir}', '--json', '--top_k=10', '--batch_size=3', folder,
              garbage)
  assert r.returncode == 0, r.stderr
  lines = [json.loads(line) for line in r.stdout.splitlines()]
  assert [line['path'] for line in lines] == [
      *(str(folder / f'{i}_label{labels[i]}.png') for i in range(8)),
      str(folder / '8_empty.png'), str(folder / '9_truncated.png'), str(folder / 'notes.txt'),
      str(garbage)]
  good, bad = lines[:8], lines[8:]
  assert [b['error'] for b in bad] == ['empty file', bad[1]['error'], 'not an image file name',
                                       'not an image']
  assert 'truncated' in bad[1]['error'].lower() or 'unreadable' in bad[1]['error']
  for b in bad:
    assert set(b) == {'path', 'error'} and f'skipped {b["path"]}' in r.stderr
  assert 'classified 8 image(s), skipped 4' in r.stderr

  # The trainer's own evaluation pipeline on the same 8 digits gives the same probabilities.
  model, params, info = load.load_model(str(workdir))
  cfg = dict(info['config']['dataset'], eval_split='test[:8]')
  batch = next(data.local_eval_batches(cfg, global_batch_size=8))
  np.testing.assert_array_equal(batch['label'], labels)
  probs = np.asarray(jax.nn.softmax(model.apply({'params': params}, batch['image'])[0]))
  for p, line in zip(probs, good):
    assert set(line) == {'path', 'predictions'}
    preds = line['predictions']
    assert len(preds) == 10
    assert all(set(q) == {'label', 'name', 'prob'} for q in preds)
    assert [q['prob'] for q in preds] == sorted((q['prob'] for q in preds), reverse=True)
    assert sorted(q['label'] for q in preds) == list(range(10))
    assert all(q['name'] == str(q['label']) for q in preds)      # tfds mnist class names
    np.testing.assert_allclose([q['prob'] for q in preds], p[[q['label'] for q in preds]],
                               rtol=1e-4, atol=1e-6)


def test_human_output_with_a_labels_file(mnist_run, tmp_path):
  workdir, folder, labels = mnist_run
  names = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine']
  labels_file = tmp_path / 'labels.txt'
  labels_file.write_text('\n'.join(names) + '\n')
  first = folder / f'0_label{labels[0]}.png'
  r = run_cli(f'--checkpoint={workdir}', f'--labels={labels_file}', '--top_k=2', first,
              folder / 'notes.txt')
  assert r.returncode == 0, r.stderr
  out = r.stdout.splitlines()
  assert len(out) == 2
  m = re.fullmatch(rf'{re.escape(str(first))}: (\w+) \(([\d.]+)%\), (\w+) \(([\d.]+)%\)', out[0])
  assert m, out[0]
  assert m[1] in names and m[3] in names and m[1] != m[3]
  assert float(m[2]) >= float(m[4])
  assert out[1] == f'{folder / "notes.txt"}: skipped (not an image)'  # named: tried
  assert f'labels file {labels_file}' in r.stderr
  with pytest.raises(ValueError, match='has 9 lines but the model has 10 classes'):
    labels_file.write_text('\n'.join(names[:9]) + '\n')
    predict.class_names_for(10, labels=str(labels_file))


@pytest.fixture(scope='module')
def imagenet_npz(tmp_path_factory):
  """A micro ViT with a 1000-class head whose bias favours classes 999 > 207 > 0."""
  path = tmp_path_factory.mktemp('npz') / 'in1k.npz'
  model = get_model('mu/16', num_heads=2, num_classes=1000)
  params = jax.device_get(model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))['params'])
  params['head']['bias'] = np.zeros(1000, np.float32)
  params['head']['bias'][[0, 207, 999]] = [5., 6., 7.]
  vit_npz.write(str(path), params)
  return path


def test_npz_with_an_imagenet_head_gets_the_builtin_names(imagenet_npz):
  names = predict.read_labels(predict.IMAGENET_LABELS)
  assert len(names) == 1000 and names[0] == 'tench' and names[-1] == 'toilet tissue'
  assert all(names)
  clf = predict.load_classifier(str(imagenet_npz))
  assert clf.image_size == 32 and clf.crop_ratio == 1.0 and clf.info['format'] == 'vit_npz'
  photos = sorted(PHOTOS.glob('*/*.JPEG'))[:2]
  results = list(clf.predict_files(photos, top_k=3))
  for res in results:
    assert [(p['label'], p['name']) for p in res['predictions']] == [
        (999, 'toilet tissue'), (207, 'golden retriever'), (0, 'tench')]
    assert res['predictions'][0]['prob'] > res['predictions'][1]['prob'] > 0.1


def test_imagenet21k_head_gets_wordnet_ids():
  names, where = predict.builtin_class_names(21843)
  assert len(names) == 21843 and 'ImageNet-21k' in where
  wnids = [n.split()[0] for n in names]
  assert len(set(wnids)) == 21843 and all(re.fullmatch(r'n\d{8}', w) for w in wnids)
  assert predict.builtin_class_names(37)[0] is None
  assert predict.class_names_for(3, log=lambda _: None)[0] == ('class 0', 'class 1', 'class 2')


def test_image_size_must_be_given_without_position_embeddings(tmp_path):
  path = tmp_path / 'gap.npz'
  model = get_model('mu/8', num_heads=2, num_classes=4, classifier='gap', posemb='none')
  vit_npz.write(str(path), model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))['params'])
  with pytest.raises(ValueError, match='--image_size=N'):
    predict.load_classifier(str(path))
  with pytest.raises(ValueError, match='does not divide into the 8-pixel patches of .*'
                     '--image_size=16'):
    predict.load_classifier(str(path), image_size=20)
  clf = predict.load_classifier(str(path), image_size=24, crop_ratio=0.875)
  res = list(clf.predict_files([sorted(PHOTOS.glob('*/*.JPEG'))[0]], top_k=4))
  assert [p['name'] for p in res[0]['predictions']] and abs(
      sum(p['prob'] for p in res[0]['predictions']) - 1) < 1e-5


def test_hybrid_runs_at_the_size_it_was_trained_at_though_its_stem_rounds_up(tmp_path):
  # configs/fashion_mnist.py:hybrid: 28 px through a stride-8 stem ('SAME' rounds 3.5 up to
  # 4), 1x1 patches. Its position embeddings (4x4) fit 25-32 px; 28 is what it was trained at.
  path = tmp_path / 'hybrid.npz'
  model = get_model('mu/1', width=32, depth=1, mlp_dim=64, num_heads=2, num_classes=10,
                    resnet_layers=(1, 1), resnet_width_factor=0.5)
  vit_npz.write(str(path), model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 3)))['params'])
  assert predict.load_classifier(str(path)).image_size == 32  # nothing says 28: the grid's
  clf = predict.load_classifier(str(path), config={'dataset': {
      'image_size': 28, 'eval_crop_ratio': 1.0, 'name': '', 'source': 'tfds'}})
  assert clf.image_size == 28
  assert predict.load_classifier(str(path), image_size=28).image_size == 28
  res = list(clf.predict_files([sorted(PHOTOS.glob('*/*.JPEG'))[0]], top_k=2))
  assert len(res[0]['predictions']) == 2
  with pytest.raises(ValueError, match=r'image size 24 gives a 3x3 patch grid, but the '
                     r'position embeddings .* are for 4x4 \(32px\)'):
    predict.load_classifier(str(path), image_size=24)


def test_no_readable_image_exits_1_naming_them(imagenet_npz, tmp_path):
  empty = tmp_path / 'a.png'
  empty.write_bytes(b'')
  r = run_cli(f'--checkpoint={imagenet_npz}', '--json', empty, tmp_path / 'missing.jpg')
  assert r.returncode == 1
  assert f'skipped {empty}: empty file' in r.stderr
  assert f'skipped {tmp_path / "missing.jpg"}: no such file or directory' in r.stderr
  assert 'no readable image' in r.stderr
  assert [json.loads(line)['error'] for line in r.stdout.splitlines()] == [
      'empty file', 'no such file or directory']


@pytest.mark.parametrize('to', ['hf_vit', 'timm_vit'])
def test_pytorch_exports_predict_like_the_workdir(mnist_run, tmp_path, to):
  """The same model as a Hugging Face or timm directory gives the same top-3 classes and
  probabilities (within float32 rounding) as its orbax workdir."""
  workdir, folder, _ = mnist_run
  exported = tmp_path / to
  conv = subprocess.run([sys.executable, '-m', 'vit_jax.convert', str(workdir), str(exported),
                         f'--to={to}'], cwd=REPO, capture_output=True, text=True)
  assert conv.returncode == 0, conv.stderr
  digits = sorted(folder.glob('*_label*.png'))
  runs = [run_cli(f'--checkpoint={ckpt}', '--json', '--top_k=3', '--image_size=16', *digits)
          for ckpt in (workdir, exported)]
  assert all(r.returncode == 0 for r in runs), runs[1].stderr
  ours, theirs = ([json.loads(l) for l in r.stdout.splitlines()] for r in runs)
  assert len(ours) == len(theirs) == 8
  for a, b in zip(ours, theirs):
    assert [q['label'] for q in a['predictions']] == [q['label'] for q in b['predictions']]
    np.testing.assert_allclose([q['prob'] for q in a['predictions']],
                               [q['prob'] for q in b['predictions']], atol=1e-5)
