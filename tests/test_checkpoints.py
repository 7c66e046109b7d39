"""Checkpoint formats: vit_jax .npz, big_vision .npz, orbax; loading for fine-tuning; CLI."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import convert
from vit_jax.checkpoints import big_vision_npz, load, names, train_state, vit_npz
from vit_jax.models import count_params, get_model, scan_params, unscan_params

from conftest import REPO

# A micro ViT with every code path: 2 blocks, 2 heads, 2x2 patches of 8x8 at 16 px.
TINY = dict(width=32, depth=2, mlp_dim=64, num_heads=2, num_classes=5)


def tiny(**kw):
  return get_model('mu/8', **{**TINY, **kw})


def images(size=16, n=2, seed=0):
  return jax.random.uniform(jax.random.key(seed), (n, size, size, 3), minval=-1, maxval=1)


def random_params(model, size=16, seed=0):
  """Real-looking weights everywhere, including the zero-initialised head and cls."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), images(size))['params']
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: (0.3 * rng.standard_normal(s.shape)).astype(np.float32), shapes)


def zeros_like_model(model, size=16):
  """Test helper: a flat dict of zeros with the model's names and shapes (small models)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), images(size))['params']
  return {k: np.zeros(v.shape, v.dtype) for k, v in names.flatten(shapes).items()}


def logits(model, params, size=16):
  return np.asarray(model.apply({'params': params}, images(size))[0])


def assert_trees_equal(a, b):
  fa, fb = names.flatten(a), names.flatten(b)
  assert sorted(fa) == sorted(fb)
  for k in fa:
    np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=k)


def quiet(_):
  pass


# ---- The name vocabulary is the model's. ----

@pytest.mark.parametrize('kw', [dict(), dict(classifier='map', scan=True),
                                dict(classifier='gap', representation_size=16),
                                dict(posemb='sincos2d', num_classes=None)])
def test_canonical_shapes_are_the_models(kw):
  model = tiny(**kw)
  got = {k: tuple(v.shape) for k, v in zeros_like_model(model, 24).items()}
  want = names.canonical_shapes(
      width=32, depth=2, mlp_dim=64, num_heads=2, patch_size=8, grid=(3, 3),
      **{'num_classes': 5, **{k: v for k, v in kw.items()}})
  assert got == want


def test_host_scan_helpers_agree_with_the_models():
  params = random_params(tiny())
  scanned = names.to_scanned(names.flatten(params))
  assert_trees_equal(names.unflatten(scanned), scan_params(params))
  assert_trees_equal(names.unflatten(names.to_per_block(scanned)),
                     unscan_params(scan_params(params)))


# ---- vit_jax .npz. ----

@pytest.mark.parametrize('kw', [dict(), dict(classifier='gap', representation_size=16),
                                dict(scan=True)])
def test_vit_npz_round_trip_gives_identical_logits(tmp_path, kw):
  model = tiny(**kw)
  params = random_params(model)
  path = tmp_path / 'model.npz'
  vit_npz.write(path, params)
  stored = np.load(path)
  assert 'Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel' in stored.files  # per-block
  if 'cls' in names.flatten(params):
    assert stored['Transformer/posembed_input/pos_embedding'].shape == (1, 5, 32)
  loaded = load.load_pretrained(str(path), params, log=quiet)
  assert_trees_equal(loaded, params)
  np.testing.assert_array_equal(logits(model, loaded), logits(model, params))


def published_vit_npz(rep=None, classes=5, linen_numbering=False):
  """A file written by hand in the published vit_jax layout (ViT-B_16.npz, AugReg):
  every key spelled out, width 32, 2 heads, MLP 64, 2 blocks, patch 8, 2x2 grid + cls."""
  rng = np.random.default_rng(1)
  r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
  attn, ln2, mlp = (('MultiHeadDotProductAttention_0', 'LayerNorm_1', 'MlpBlock_0')
                    if linen_numbering else
                    ('MultiHeadDotProductAttention_1', 'LayerNorm_2', 'MlpBlock_3'))
  f = {'embedding/kernel': r(8, 8, 3, 32), 'embedding/bias': r(32), 'cls': r(1, 1, 32),
       'Transformer/posembed_input/pos_embedding': r(1, 5, 32),
       'Transformer/encoder_norm/scale': r(32), 'Transformer/encoder_norm/bias': r(32),
       'head/kernel': r(rep or 32, classes), 'head/bias': r(classes)}
  if rep:
    f.update({'pre_logits/kernel': r(32, rep), 'pre_logits/bias': r(rep)})
  for i in range(2):
    b = f'Transformer/encoderblock_{i}/'
    for ln in ('LayerNorm_0', ln2):
      f.update({f'{b}{ln}/scale': r(32), f'{b}{ln}/bias': r(32)})
    for proj in ('query', 'key', 'value'):
      f.update({f'{b}{attn}/{proj}/kernel': r(32, 2, 16), f'{b}{attn}/{proj}/bias': r(2, 16)})
    f.update({f'{b}{attn}/out/kernel': r(2, 16, 32), f'{b}{attn}/out/bias': r(32),
              f'{b}{mlp}/Dense_0/kernel': r(32, 64), f'{b}{mlp}/Dense_0/bias': r(64),
              f'{b}{mlp}/Dense_1/kernel': r(64, 32), f'{b}{mlp}/Dense_1/bias': r(32)})
  return f


@pytest.mark.parametrize('linen_numbering', [False, True])
def test_hand_written_published_file_loads_into_get_model(tmp_path, linen_numbering):
  f = published_vit_npz(rep=16, linen_numbering=linen_numbering)
  path = tmp_path / 'ViT-mu_8.npz'
  np.savez(path, **f)
  model = tiny(representation_size=16)
  init = model.init(jax.random.key(0), images())['params']
  loaded = names.flatten(load.load_pretrained(str(path), init, log=quiet))
  for key, value in f.items():
    ours = key
    if linen_numbering:
      ours = ours.replace('MultiHeadDotProductAttention_0', 'MultiHeadDotProductAttention_1'
                          ).replace('LayerNorm_1', 'LayerNorm_2').replace('MlpBlock_0',
                                                                           'MlpBlock_3')
    np.testing.assert_array_equal(loaded[ours], value, err_msg=key)
  assert len(loaded) == len(f)
  assert np.isfinite(logits(model, names.unflatten(loaded))).all()

  # The reference's fine-tuning rule: a model without representation_size drops pre_logits
  # and gets a fresh head (the old one was trained on the pre_logits features).
  model = tiny()
  plain = names.flatten(load.load_pretrained(
      str(path), model.init(jax.random.key(0), images())['params'], log=quiet))
  assert 'pre_logits/kernel' not in plain
  np.testing.assert_array_equal(plain['head/kernel'], 0.0)
  np.testing.assert_array_equal(plain['embedding/kernel'], f['embedding/kernel'])


def test_keep_pre_logits_flag(tmp_path):
  f = published_vit_npz(rep=16)
  path = str(tmp_path / 'ViT-mu_8.npz')
  np.savez(path, **f)
  model = tiny(representation_size=16)
  init = model.init(jax.random.key(0), images())['params']
  kept = names.flatten(load.load_pretrained(path, init, log=quiet))  # default: model has it
  np.testing.assert_array_equal(kept['pre_logits/kernel'], f['pre_logits/kernel'])
  np.testing.assert_array_equal(kept['head/kernel'], f['head/kernel'])
  fresh = names.flatten(load.load_pretrained(path, init, keep_pre_logits=False, log=quiet))
  np.testing.assert_array_equal(fresh['pre_logits/kernel'], init['pre_logits']['kernel'])
  np.testing.assert_array_equal(fresh['head/kernel'], 0.0)
  with pytest.raises(ValueError, match='keep_pre_logits=True'):
    load.load_pretrained(path, jax.eval_shape(lambda: init), keep_pre_logits=False,
                         log=quiet)


# ---- big_vision .npz. ----

@pytest.mark.parametrize('classifier,write_scan,model_scan', [
    ('token', False, False), ('token', True, False), ('map', True, True),
    ('gap', False, True)])
def test_big_vision_round_trip_gives_identical_logits(tmp_path, classifier, write_scan,
                                                      model_scan):
  model = tiny(classifier=classifier, scan=model_scan)
  params = random_params(model)
  path = tmp_path / 'bv.npz'
  big_vision_npz.write(path, params, scan=write_scan, prefix='params')
  stored = np.load(path)
  block = ('params/Transformer/encoderblock/' if write_scan
           else 'params/Transformer/encoderblock_0/')
  assert block + 'MultiHeadDotProductAttention_0/query/kernel' in stored.files
  assert block + 'LayerNorm_1/scale' in stored.files
  assert stored['params/pos_embedding'].shape == (1, 4, 32)  # no class slot
  if write_scan:
    assert stored[block + 'MlpBlock_0/Dense_0/kernel'].shape == (2, 32, 64)
  if classifier == 'map':
    assert stored['params/MAPHead_0/probe'].shape == (1, 1, 32)
    assert 'params/MAPHead_0/MultiHeadDotProductAttention_0/out/kernel' in stored.files
  loaded = load.load_pretrained(str(path), params, log=quiet)
  np.testing.assert_allclose(logits(model, loaded), logits(model, params), rtol=1e-5,
                             atol=1e-6)
  if classifier == 'token':  # cls absorbed its position embedding; the slot is now zero
    pe = names.flatten(loaded)[names.POSEMB]
    np.testing.assert_array_equal(pe[:, 0], 0.0)
  else:
    assert_trees_equal(loaded, params)


def test_big_vision_token_model_gets_a_zero_class_slot():
  """big_vision adds posemb to the patches, then prepends cls: cls has no posemb."""
  rng = np.random.default_rng(0)
  flat = {k: rng.standard_normal(v.shape).astype(np.float32)
          for k, v in big_vision_npz.from_canonical(zeros_like_model(tiny())).items()}
  ours = big_vision_npz.to_canonical(flat)
  np.testing.assert_array_equal(ours[names.POSEMB][:, 0], 0.0)
  np.testing.assert_array_equal(ours[names.POSEMB][:, 1:], flat['pos_embedding'])
  np.testing.assert_array_equal(ours['cls'], flat['cls'])


# ---- Fitting a checkpoint to a different model. ----

@pytest.mark.parametrize('classifier', ['token', 'gap'])
def test_resolution_change_interpolates_the_position_grid(tmp_path, classifier):
  src = tiny(classifier=classifier)
  params = names.flatten(random_params(src))
  prefix = int(classifier == 'token')
  path = tmp_path / 'src.npz'
  vit_npz.write(path, params)
  target = tiny(classifier=classifier)
  init = jax.eval_shape(target.init, jax.random.key(0), images(24))['params']  # 3x3 grid
  new = names.flatten(load.load_pretrained(str(path), init, log=quiet))[names.POSEMB]
  old = params[names.POSEMB]
  assert new.shape == (1, prefix + 9, 32)
  np.testing.assert_array_equal(new[:, :prefix], old[:, :prefix])  # class slot unchanged
  g_old, g_new = old[0, prefix:].reshape(2, 2, 32), new[0, prefix:].reshape(3, 3, 32)
  for (i, j), (a, b) in {(0, 0): (0, 0), (0, 2): (0, 1), (2, 0): (1, 0),
                         (2, 2): (1, 1)}.items():
    np.testing.assert_allclose(g_new[i, j], g_old[a, b], rtol=1e-6)  # corners kept
  np.testing.assert_allclose(g_new[1, 1], g_old.mean((0, 1)), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(g_new[0, 1], (g_old[0, 0] + g_old[0, 1]) / 2, rtol=1e-5,
                             atol=1e-6)
  assert logits(target, names.unflatten(
      names.flatten(load.load_pretrained(str(path), init, log=quiet))), 24).shape == (2, 5)

  # A constant grid stays constant.
  const = dict(params)
  const[names.POSEMB] = np.full_like(old, 0.25)
  vit_npz.write(path, const)
  new = names.flatten(load.load_pretrained(str(path), init, log=quiet))[names.POSEMB]
  np.testing.assert_allclose(new, 0.25, rtol=1e-6)


def test_grid_resize_matches_the_references_scipy_zoom():
  ndimage = pytest.importorskip('scipy.ndimage')
  grid = np.random.default_rng(0).standard_normal((7, 7, 4)).astype(np.float32)
  for new in (12, 5):
    np.testing.assert_allclose(load.resize_grid(grid, (new, new)),
                               ndimage.zoom(grid, (new / 7, new / 7, 1), order=1),
                               rtol=1e-5, atol=1e-6)


def test_head_with_a_different_class_count_is_replaced_by_zeros(tmp_path):
  params = random_params(tiny())
  path = tmp_path / 'src.npz'
  vit_npz.write(path, params)
  target = tiny(num_classes=7)
  for init in (target.init(jax.random.key(0), images())['params'],
               jax.eval_shape(target.init, jax.random.key(0), images())['params']):
    loaded = names.flatten(load.load_pretrained(str(path), init, log=quiet))
    assert loaded['head/kernel'].shape == (32, 7)
    np.testing.assert_array_equal(loaded['head/kernel'], 0.0)
    np.testing.assert_array_equal(loaded['head/bias'], 0.0)
    np.testing.assert_array_equal(loaded['embedding/kernel'],
                                  names.flatten(params)['embedding/kernel'])
  # A model with head_bias_init: concrete params and shapes only give the same new head.
  target = tiny(num_classes=7, head_bias_init=-5.0)
  init = target.init(jax.random.key(0), images())['params']
  for given in (init, jax.eval_shape(lambda: init)):
    loaded = names.flatten(load.load_pretrained(str(path), given, log=quiet,
                                                head_bias_init=-5.0))
    np.testing.assert_array_equal(loaded['head/bias'], np.full(7, -5.0))
    np.testing.assert_array_equal(loaded['head/kernel'], 0.0)
  # Same class count: the checkpoint's head is kept, unless reset_head asks for a new one.
  same = names.flatten(load.load_pretrained(str(path), params, log=quiet))
  np.testing.assert_array_equal(same['head/kernel'], names.flatten(params)['head/kernel'])
  fresh = tiny().init(jax.random.key(0), images())['params']
  reset = names.flatten(load.load_pretrained(str(path), fresh, reset_head=True, log=quiet))
  np.testing.assert_array_equal(reset['head/kernel'], 0.0)
  np.testing.assert_array_equal(reset['embedding/kernel'],
                                names.flatten(params)['embedding/kernel'])


def test_strict_check_names_every_bad_parameter_in_one_error(tmp_path):
  src = tiny(representation_size=16)
  path = tmp_path / 'src.npz'
  vit_npz.write(path, random_params(src))
  target = tiny(depth=3, mlp_dim=48)  # one block more, a narrower MLP, no pre_logits
  init = jax.eval_shape(target.init, jax.random.key(0), images())['params']
  with pytest.raises(ValueError) as err:
    load.load_pretrained(str(path), init, keep_pre_logits=True, log=quiet)
  msg = str(err.value)
  assert str(path) in msg and 'Fix:' in msg and 'mlp_dim 48 (checkpoint: 64)' in msg
  missing = [k for k in names.flatten(init) if k.startswith('Transformer/encoderblock_2/')]
  misshaped = [f'Transformer/encoderblock_{i}/MlpBlock_3/Dense_{j}/{w}'
               for i in range(2) for j in range(2) for w in ('kernel', 'bias')
               if not (j == 1 and w == 'bias')]
  unexpected = ['pre_logits/kernel', 'pre_logits/bias']
  assert len(missing) == 16
  for name in missing + misshaped + unexpected:
    assert name in msg, name
  assert (f'{len(missing)} missing, {len(unexpected)} unexpected, {len(misshaped)} '
          'mis-shaped') in msg


def test_missing_file_and_unknown_format_are_clear_errors(tmp_path):
  init = zeros_like_model(tiny())
  with pytest.raises(FileNotFoundError, match='does not exist'):
    load.load_pretrained(str(tmp_path / 'nope.npz'), init, log=quiet)
  np.savez(tmp_path / 'other.npz', **{'conv1/weight': np.zeros(3)})
  with pytest.raises(ValueError, match='unknown checkpoint format.*conv1/weight'):
    load.load_pretrained(str(tmp_path / 'other.npz'), init, log=quiet)


# ---- What a checkpoint is. ----

def test_infer_variant_recognises_b16_from_shapes_only():
  shapes = jax.eval_shape(get_model('B/16', num_classes=1000).init, jax.random.key(0),
                          jnp.zeros((1, 224, 224, 3)))['params']
  info = load.infer_variant(shapes)
  assert info == dict(
      variant='B/16', width=768, depth=12, mlp_dim=3072, num_heads=12, patch_size=16,
      channels=3, classifier='token', posemb='learn', representation_size=None,
      num_classes=1000, grid=(14, 14), image_size=224, scan=False, num_params=86_567_656,
      resnet_layers=None, resnet_width_factor=None)
  l32 = load.infer_variant(jax.eval_shape(
      get_model('L/32', num_classes=None, classifier='map', scan=True).init,
      jax.random.key(0), jnp.zeros((1, 384, 384, 3)))['params'])
  assert (l32['variant'], l32['classifier'], l32['num_classes'], l32['image_size'],
          l32['scan']) == ('L/32', 'map', None, 384, True)


def test_hybrid_round_trips_through_the_published_layout_and_is_recognised(tmp_path):
  model = get_model('mu/1', **TINY, resnet_layers=(1, 1), resnet_width_factor=0.5)
  params = random_params(model, size=32)  # 32 px -> 4x4 feature map -> 16 tokens + cls
  path = tmp_path / 'R-mu.npz'
  vit_npz.write(path, params)
  stored = np.load(path)
  assert {'conv_root/kernel', 'gn_root/scale', 'block2/unit1/conv_proj/kernel',
          'block1/unit1/gn3/bias'} <= set(stored.files)  # the R50+ViT-B_16.npz names
  loaded_model, loaded, info = load.load_model(str(path))
  assert (info['resnet_layers'], info['resnet_width_factor'], info['channels'],
          info['grid'], info['image_size'], info['variant']) == ((1, 1), 0.5, 3, (4, 4), 32,
                                                                 None)
  np.testing.assert_array_equal(logits(loaded_model, loaded, 32), logits(model, params, 32))
  assert 'resnet_layers=(1, 1), resnet_width_factor=0.5' in convert.format_table(
      convert.inspect(str(path)))
  r50 = load.infer_variant(jax.eval_shape(get_model('R50+B/16').init, jax.random.key(0),
                                          jnp.zeros((1, 384, 384, 3)))['params'])
  assert (r50['variant'], r50['resnet_layers'], r50['patch_size'], r50['image_size']) == (
      'R50+B/16', (3, 4, 9), 1, 384)


def test_infer_variant_reads_big_vision_layout():
  model = tiny(representation_size=16)
  bv = big_vision_npz.from_canonical(zeros_like_model(model), scan=True, prefix='params')
  info = load.infer_variant(bv)
  assert {k: info[k] for k in ('width', 'depth', 'mlp_dim', 'num_heads', 'patch_size',
                               'classifier', 'representation_size', 'num_classes',
                               'image_size')} == dict(
      width=32, depth=2, mlp_dim=64, num_heads=2, patch_size=8, classifier='token',
      representation_size=16, num_classes=5, image_size=16)
  assert info['num_params'] == count_params(model, 16)


# ---- The CLI. ----

def run_cli(*args):
  return subprocess.run([sys.executable, '-m', 'vit_jax.convert', *map(str, args)],
                        cwd=REPO, capture_output=True, text=True)


def test_cli_inspect_json(tmp_path):
  model = tiny()
  path = tmp_path / 'model.npz'
  vit_npz.write(path, random_params(model))
  out = run_cli('--inspect', path, '--json')
  assert out.returncode == 0, out.stderr
  info = json.loads(out.stdout)
  assert info['format'] == 'vit_npz' and info['num_params'] == count_params(model, 16)
  assert info['variant']['width'] == 32 and info['variant']['image_size'] == 16
  names_ = {a['name']: a['shape'] for a in info['arrays']}
  assert names_['Transformer/posembed_input/pos_embedding'] == [1, 5, 32]
  assert convert.main(['--inspect', str(path)]) == 0  # the human table


def test_cli_convert_round_trip_and_errors(tmp_path, capsys):
  model = tiny(classifier='map')
  params = random_params(model)
  src = tmp_path / 'model.npz'
  vit_npz.write(src, params)
  out = run_cli(src, tmp_path / 'model.bv.npz', '--scan')
  assert out.returncode == 0, out.stderr
  result = json.loads(out.stdout)
  assert result['dst_format'] == 'big_vision_npz' and result['src_format'] == 'vit_npz'
  assert 'Transformer/encoderblock/LayerNorm_1/scale' in np.load(tmp_path / 'model.bv.npz')
  assert convert.main([str(tmp_path / 'model.bv.npz'), str(tmp_path / 'back.npz')]) == 0
  back = load.load_pretrained(str(tmp_path / 'back.npz'), params, log=quiet)
  assert_trees_equal(back, params)
  assert convert.main([str(tmp_path / 'missing.npz'), str(tmp_path / 'x.npz')]) == 1
  assert convert.main([str(src), str(tmp_path / 'x.onnx')]) == 1
  err = capsys.readouterr().err
  assert 'does not exist' in err and 'cannot tell the output format' in err


def test_convert_from_an_orbax_train_state(tmp_path):
  model = tiny()
  params = random_params(model)
  state = dict(step=jnp.asarray(3, jnp.int32), params=params, opt_state=())
  mgr = train_state.manager(str(tmp_path / 'work'), keep=1)
  train_state.save(mgr, 3, state, {'seed': 0})
  mgr.wait_until_finished()
  mgr.close()
  dst = tmp_path / 'exported.npz'
  assert convert.main([str(tmp_path / 'work' / 'checkpoints' / '3'), str(dst)]) == 0
  assert_trees_equal(load.load_pretrained(str(dst), params, log=quiet), params)
  fmt, flat = load.read(str(tmp_path / 'work'))  # a workdir: the latest step
  assert fmt == 'orbax' and sorted(flat) == sorted(names.flatten(params))


def test_a_workdir_with_a_damaged_newest_step_is_read_from_the_one_before(tmp_path):
  model = tiny()
  mgr = train_state.manager(str(tmp_path / 'work'), keep=2)
  for step, seed in ((3, 0), (5, 1)):
    train_state.save(mgr, step, dict(step=jnp.asarray(step, jnp.int32),
                                     params=random_params(model, seed=seed), opt_state=()),
                     {'seed': 0})
  mgr.wait_until_finished()
  mgr.close()
  for f in (tmp_path / 'work' / 'checkpoints' / '5' / 'state').rglob('*'):
    if f.is_file():  # a disk that filled up mid-save: every file cut short
      f.write_bytes(f.read_bytes()[:max(f.stat().st_size // 3, 1)])
  notes = []
  fmt, flat = load.read_with_meta(str(tmp_path / 'work'))[:2]  # as predict and convert do
  assert fmt == 'orbax'
  assert_trees_equal(names.unflatten(flat), random_params(model, seed=0))
  with pytest.raises(train_state.CheckpointError, match=r'no readable checkpoint: .*/5 '):
    load.read(str(tmp_path / 'work' / 'checkpoints' / '5'))  # named: no silent fallback
  state_dir, _ = load.read_orbax(str(tmp_path / 'work'), log=notes.append)
  assert state_dir.endswith('/3/state') and 'checkpoints/5 is unreadable' in notes[0]
  assert convert.main([str(tmp_path / 'work'), str(tmp_path / 'out.npz')]) == 0
  assert issubclass(train_state.CheckpointError, ValueError)  # the CLIs' one-line errors


def test_damaged_npz_files_are_clear_errors(tmp_path, capsys):
  model = tiny()
  good = tmp_path / 'good.npz'
  vit_npz.write(good, random_params(model))
  (tmp_path / 'cut.npz').write_bytes(good.read_bytes()[:good.stat().st_size // 2])
  (tmp_path / 'page.npz').write_text('<html>Not Found</html>')
  np.save(tmp_path / 'one.npy', np.zeros(3))
  (tmp_path / 'one.npy').rename(tmp_path / 'one.npz')
  for name, reason in (('cut', 'not a zip archive'), ('page', 'not a zip archive'),
                       ('one', 'a single .npy array')):
    with pytest.raises(ValueError, match=rf'{name}.npz is not a readable .npz checkpoint '
                       rf'\({reason}.*download it again'):
      load.load_model(str(tmp_path / f'{name}.npz'))
  assert convert.main(['--inspect', str(tmp_path / 'cut.npz')]) == 1
  assert 'is not a readable .npz checkpoint' in capsys.readouterr().err
  # One array edited to another shape: named in one error, not a failure inside apply.
  flat = dict(np.load(good))
  flat['Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel'] = np.zeros((32, 10))
  np.savez(tmp_path / 'edited.npz', **flat)
  with pytest.raises(ValueError, match=r'(?s)1 mis-shaped.*encoderblock_1/MlpBlock_3/'
                     r'Dense_0/kernel: \(32, 10\) vs \(32, 64\)'):
    load.load_model(str(tmp_path / 'edited.npz'))


@pytest.mark.parametrize('name,fmt', [
    ('model.npz', 'vit_npz'), ('model.bv.npz', 'big_vision_npz'),
    ('out_timm/', 'timm_vit'), ('out_timm', 'timm_vit'), ('vit.timm.safetensors', 'timm_vit'),
    ('served_hf/', 'hf_vit'), ('model.safetensors', 'hf_vit')])
def test_output_format_from_the_name_with_or_without_a_trailing_slash(tmp_path, name, fmt):
  assert convert.dst_format(str(tmp_path / 'exports') + '/' + name) == fmt
