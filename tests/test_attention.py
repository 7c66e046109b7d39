"""Attention rollout maths on hand-made cases, and the attention / embedding figure CLI."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from conftest import REPO, SHARED
from vit_jax import visualize
from vit_jax.checkpoints import vit_npz
from vit_jax.models import get_model

T = 3
I3 = np.eye(T)


def to_token(j):
  """Every token attends only to token j (rows all e_j)."""
  a = np.zeros((T, T))
  a[:, j] = 1
  return a


def layers(*per_layer_heads):
  """[[head (T, T), ...] per layer] -> (depth, B=1, K, T, T)."""
  return np.stack([np.stack(heads)[None] for heads in per_layer_heads])


def test_rollout_identity_and_uniform_closed_forms():
  # Self-attention only: (A + I)/2 = I in every layer, nothing mixes.
  np.testing.assert_allclose(visualize.attention_rollout(layers([I3], [I3]))[0], I3)
  # Uniform attention U (U @ U = U): two layers give ((U + I)/2)^2 = (3U + I)/4.
  u = np.full((T, T), 1 / T)
  np.testing.assert_allclose(visualize.attention_rollout(layers([u], [u]))[0],
                             (3 * u + I3) / 4, atol=1e-12)


def test_rollout_fuses_heads_then_adds_the_residual():
  # Heads: self / everything -> token 0. Mean 0.5 I + 0.5 E0; with the residual and
  # renormalised: 0.75 I + 0.25 E0. Squared (E0 @ E0 = E0): 0.5625 I + 0.4375 E0.
  att = layers([I3, to_token(0)], [I3, to_token(0)])
  r = visualize.attention_rollout(att)[0]
  np.testing.assert_allclose(r[0], [1, 0, 0], atol=1e-12)
  np.testing.assert_allclose(r[1], [0.4375, 0.5625, 0], atol=1e-12)
  np.testing.assert_allclose(r[2], [0.4375, 0, 0.5625], atol=1e-12)
  one = visualize.attention_rollout(att[:1])[0]
  np.testing.assert_allclose(one[1], [0.25, 0.75, 0], atol=1e-12)
  # max over heads: I + E0 -> rows (1+1 at j=0 for row 0), then + I, renormalised.
  mx = visualize.attention_rollout(att[:1], head_fusion='max')[0]
  np.testing.assert_allclose(mx[0], [1, 0, 0], atol=1e-12)
  np.testing.assert_allclose(mx[1], [1 / 3, 2 / 3, 0], atol=1e-12)


def test_rollout_multiplies_later_layers_on_the_left():
  # Layer 1: all -> token 0, layer 2: all -> token 1. Without the residual the output
  # draws on token 0 only (E1 @ E0 = E0); the reverse order would give token 1.
  att = layers([to_token(0)], [to_token(1)])
  np.testing.assert_allclose(visualize.attention_rollout(att, residual=False)[0], to_token(0))
  # With it: (E1 + I)/2 @ (E0 + I)/2 = (2 E0 + E1 + I) / 4.
  r = visualize.attention_rollout(att)[0]
  np.testing.assert_allclose(r, (2 * to_token(0) + to_token(1) + I3) / 4, atol=1e-12)
  np.testing.assert_allclose(r[2], [0.5, 0.25, 0.25], atol=1e-12)


def test_rollout_rejects_wrong_shapes():
  with pytest.raises(ValueError, match='depth, B, K, T, T'):
    visualize.attention_rollout(np.zeros((2, 3, 3)))
  with pytest.raises(ValueError, match='head_fusion'):
    visualize.attention_rollout(layers([I3]), head_fusion='sum')


def test_token_map_class_token_row_and_mean_patch_row():
  w = np.arange(25, dtype=float).reshape(5, 5)          # 1 class token + 2x2 patches
  np.testing.assert_array_equal(visualize.token_map(w, (2, 2), 1), [[1, 2], [3, 4]])
  w4 = np.arange(16, dtype=float).reshape(4, 4)         # gap: no class token
  np.testing.assert_array_equal(visualize.token_map(w4, (2, 2), 0),
                                w4.mean(0).reshape(2, 2))
  with pytest.raises(ValueError, match='3x3 patch grid'):
    visualize.token_map(w, (3, 3), 1)


def test_rollout_of_a_real_model_is_a_distribution():
  model = get_model('mu/4', depth=3, num_heads=2, num_classes=5)
  x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3), minval=-1, maxval=1)
  params = model.init(jax.random.key(0), x)['params']
  _, aux = model.apply({'params': params}, x, return_attention=True)
  att = np.asarray(aux['attention'])
  assert att.shape == (3, 2, 2, 17, 17)
  r = visualize.attention_rollout(att)
  assert r.shape == (2, 17, 17) and (r >= 0).all()
  np.testing.assert_allclose(r.sum(-1), 1, atol=1e-6)
  # The same rollout, written out with jnp for one image: A_3 A_2 A_1 of (mean + I)/2.
  a = att[:, 0].mean(1) / 2 + np.eye(17) / 2
  np.testing.assert_allclose(r[0], a[2] @ a[1] @ a[0], atol=1e-6)
  m = visualize.token_map(r, (4, 4), 1)
  assert m.shape == (2, 4, 4)


def test_embedding_maths():
  # Orthogonal position embeddings: each similar only to itself; the class slot dropped.
  pe = np.concatenate([np.full((1, 1, 9), 5.0), np.eye(9)[None] * 3], axis=1)
  sim = visualize.posemb_similarity(pe, (3, 3), 1)
  assert sim.shape == (3, 3, 3, 3)
  np.testing.assert_allclose(sim.reshape(9, 9), np.eye(9), atol=1e-12)
  # Filters that vary along one direction u: the first principal component is +-u.
  rng = np.random.default_rng(0)
  u = rng.normal(size=(2, 2, 3))
  u /= np.linalg.norm(u)
  kernel = (u[..., None] * rng.normal(size=64) * 10 + rng.normal(size=(2, 2, 3, 64)) * 0.01)
  pcs = visualize.patch_embedding_pcs(kernel, num=5)
  assert pcs.shape == (5, 2, 2, 3) and pcs.min() >= 0 and pcs.max() <= 1
  first = visualize.patch_embedding_pcs(kernel, num=1)[0]  # scaled to [0, 1]: compare shape
  centred = first - first.mean()
  cos = abs((centred * (u - u.mean())).sum()) / (np.linalg.norm(centred) *
                                                np.linalg.norm(u - u.mean()))
  assert cos > 0.99


@pytest.fixture(scope='module')
def tiny_npz(tmp_path_factory):
  """A random-init micro ViT (32px, 8px patches, 2 heads) saved as a vit_jax .npz."""
  path = tmp_path_factory.mktemp('ckpt') / 'tiny.npz'
  model = get_model('mu/8', depth=2, num_heads=2, num_classes=10)
  params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))['params']
  vit_npz.write(str(path), params)
  return path


def test_attention_cli_writes_pngs_of_the_expected_size(tiny_npz, tmp_path):
  photos = sorted((SHARED / 'data' / 'imagenette_subset' / 'val').glob('*/*.JPEG'))[::100]
  assert len(photos) == 5
  bad = tmp_path / 'in' / 'bad.jpg'
  bad.parent.mkdir()
  bad.write_bytes(photos[0].read_bytes()[:300])       # a truncated JPEG
  out = tmp_path / 'out'
  r = subprocess.run(
      [sys.executable, '-m', 'vit_jax.attention', f'--checkpoint={tiny_npz}', '--embeddings',
       f'--out={out}', '--batch_size=4', str(bad), *map(str, photos)],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr
  records = [json.loads(line) for line in r.stdout.splitlines()]
  figures = {rec['figure']: rec['png'] for rec in records if 'figure' in rec}
  images = [rec for rec in records if 'path' in rec]
  assert [rec['path'] for rec in images] == [str(bad), *map(str, photos)]
  assert 'error' in images[0] and f'skipped {bad}' in r.stderr
  side = 2 * visualize.PANEL_PX
  for name in ('patch_embedding_pcs', 'position_embedding_similarity'):
    with Image.open(figures[name]) as im:
      assert im.format == 'PNG' and im.size == (side, side)
  ncols, nrows = visualize.attention_layout(2)
  assert (ncols, nrows) == (3, 2)
  for rec, photo in zip(images[1:], photos):
    assert rec['png'] == str(out / f'{photo.stem}.attention.png')
    assert 0 <= rec['label'] < 10 and 0 < rec['prob'] <= 1
    with Image.open(rec['png']) as im:
      assert im.format == 'PNG' and im.size == (3 * visualize.PANEL_PX, 2 * visualize.PANEL_PX)
      pixels = np.asarray(im.convert('RGB'), float)
    assert pixels.std() > 10                            # drawn, not blank
  assert sorted(p.name for p in out.iterdir()) == sorted(
      [f'{p.stem}.attention.png' for p in photos] +
      ['patch_embedding_pcs.png', 'position_embedding_similarity.png'])


def test_attention_figure_panels_for_many_heads():
  assert visualize.attention_layout(12) == (6, 3)
  fig = visualize.attention_figure(np.zeros((32, 32, 3)), np.random.rand(12, 2, 2),
                                   np.random.rand(2, 2))
  w, h = fig.get_size_inches() * fig.dpi
  assert (round(w), round(h)) == (6 * visualize.PANEL_PX, 3 * visualize.PANEL_PX)
