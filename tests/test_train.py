"""Training: real-data runs, checkpoint resume, sharded equality, accumulation, validation."""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from configs import default as default_config
from configs import finetune, pretrain
from vit_jax import optim, sharding, steps, train
from vit_jax.validate import ConfigError, check_config

from conftest import REPO, SHARED, tiny_mnist_cli


def tiny_mnist_config(**overrides):
  """A micro ViT on real MNIST (../shared/tfds) at 16x16: seconds per run."""
  c = finetune.get_config('mu/8,mnist')
  c.dataset.update(image_size=16, data_dir=str(SHARED / 'tfds'))
  c.model.update(width=32, depth=2, mlp_dim=64, num_heads=2)
  c.batch_size = 32
  c.total_steps = 40
  c.optimizer.update(name='adamw', learning_rate=5e-3, warmup_steps=2)
  c.log_every, c.eval_every, c.checkpoint_every = 1, 40, 20
  c.dataset.eval_split = 'test[:256]'
  for k, v in overrides.items():
    target = c
    *path, last = k.split('.')
    for p in path:
      target = target[p]
    target[last] = v
  return c


def read_metrics(workdir, split='train'):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [r for r in map(json.loads, f) if r['split'] == split]


def test_trains_on_real_mnist_evaluates_checkpoints_and_resumes(tmp_path, capsys):
  workdir = str(tmp_path / 'run')
  result = train.train_and_evaluate(tiny_mnist_config(), workdir)
  progress = [l for l in capsys.readouterr().err.splitlines() if l.startswith('step ')]
  assert progress[0].endswith('steps/s ? | ETA ?')  # step 1: the compile, no rate yet
  rates = [float(l.split(' | ')[-2].split()[0]) for l in progress[1:]]
  assert len(rates) == 39 and min(rates) > 0  # each line: its interval's measured rate
  losses = [r['loss'] for r in read_metrics(workdir)]
  assert len(losses) == 40 and np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.3
  assert result['eval_examples'] == 256 and result['eval_accuracy'] > 0.3  # chance is 0.1
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['20', '40']
  assert os.listdir(os.path.join(workdir, 'tensorboard'))
  # A second run with more steps resumes from step 40, not from scratch.
  more = train.train_and_evaluate(tiny_mnist_config(total_steps=43), workdir)
  steps = [r['step'] for r in read_metrics(workdir)]
  assert steps == list(range(1, 44)) and more['step'] == 43


def test_resumed_run_ends_with_the_same_params_as_an_uninterrupted_one(tmp_path):
  cfg = tiny_mnist_config(total_steps=8, checkpoint_every=4, eval_every=0,
                          **{'model.dropout': 0.1, 'dataset.train_crop': 'inception'})
  train.train_and_evaluate(cfg, str(tmp_path / 'full'))
  # A run killed after its step-4 save: same workdir without the later checkpoint.
  shutil.copytree(tmp_path / 'full', tmp_path / 'cut')
  shutil.rmtree(tmp_path / 'cut' / 'checkpoints' / '8')
  result = train.train_and_evaluate(cfg, str(tmp_path / 'cut'))
  assert result['step'] == 8
  restore = lambda d: ocp.StandardCheckpointer().restore(  # noqa: E731
      (tmp_path / d / 'checkpoints' / '8' / 'state').resolve())
  full, cut = restore('full'), restore('cut')
  jax.tree.map(np.testing.assert_array_equal, full['params'], cut['params'])
  jax.tree.map(np.testing.assert_array_equal, full['opt_state'], cut['opt_state'])


def losses_on_devices(tmp_path, n_devices, extra=()):
  """Runs vit_jax.main in a fresh process with n simulated CPU devices; returns losses."""
  workdir = tmp_path / f'dev{n_devices}_{"_".join(e.split("=")[0][9:] for e in extra)}'
  # All 60,000 training images: the 6-step loss drop asserted below is seen on their stream.
  cmd = tiny_mnist_cli(workdir, **{'model.dropout': 0.1, 'optimizer.learning_rate': 0.1,
                                    'dataset.train_split': 'train'}) + list(extra)
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={n_devices}',
             PYTHONPATH=str(REPO))
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f'mesh: {n_devices} devices' in proc.stderr
  return np.array([r['loss'] for r in read_metrics(workdir)])


def test_data_parallel_and_fsdp_on_8_devices_match_1_device(tmp_path):
  one = losses_on_devices(tmp_path, 1)
  dp = losses_on_devices(tmp_path, 8)
  fsdp = losses_on_devices(tmp_path, 8, ['--config.sharding=fsdp'])
  assert len(one) == 6 and one[-1] < one[0]
  np.testing.assert_allclose(dp, one, rtol=2e-4, atol=2e-5)
  np.testing.assert_allclose(fsdp, one, rtol=2e-4, atol=2e-5)


def test_fsdp_rule_shards_the_largest_divisible_dimension():
  assert sharding.fsdp_spec((768, 3072), 8) == jax.sharding.PartitionSpec(None, 'data')
  assert sharding.fsdp_spec((3, 768, 12, 64), 8) == jax.sharding.PartitionSpec(None, 'data')
  assert sharding.fsdp_spec((768,), 8) == jax.sharding.PartitionSpec()  # small: replicated
  assert sharding.fsdp_spec((1001, 1001, 7), 8) == jax.sharding.PartitionSpec()  # indivisible
  assert sharding.fsdp_spec((768, 3072), 1) == jax.sharding.PartitionSpec()


def test_gradient_accumulation_gives_the_same_update_as_one_full_batch():
  mesh = sharding.make_mesh()
  c = tiny_mnist_config()
  # SGD: the update is linear in the gradient (Adam's first step is sign(g), which would
  # amplify float noise in near-zero gradients).
  c.optimizer.update(name='sgd', grad_clip_norm=1.0, learning_rate=0.1, warmup_steps=0)
  model = train.build_model(c.model, 10)
  tx, schedule = optim.make_optimizer(c.optimizer, c.total_steps)
  params = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))['params']
  head = params['head']['kernel']  # zero at init, which would stop all other gradients
  params['head']['kernel'] = jax.random.normal(jax.random.key(1), head.shape) * 0.1
  state = dict(step=jnp.array(0, jnp.int32), params=params, opt_state=tx.init(params))
  rng = np.random.default_rng(0)
  batch = dict(image=jnp.asarray(rng.uniform(-1, 1, (32, 16, 16, 3)), jnp.float32),
               label=jnp.asarray(rng.integers(0, 10, 32), jnp.int32))
  out = {}
  for k in (1, 4):
    c.grad_accum_steps = k
    step = jax.jit(steps.make_train_step(model, tx, schedule, c, 10, mesh))
    out[k] = step(state, batch)
  (s1, m1), (s4, m4) = out[1], out[4]
  np.testing.assert_allclose(m1['loss'], m4['loss'], rtol=1e-5)
  np.testing.assert_allclose(m1['grad_norm'], m4['grad_norm'], rtol=1e-4)
  np.testing.assert_allclose(m1['accuracy'], m4['accuracy'])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               s1['params'], s4['params'])
  assert not np.allclose(s1['params']['embedding']['kernel'], params['embedding']['kernel'])


def test_a_dropped_update_keeps_params_and_moments_but_the_schedule_moves_on():
  mesh = sharding.make_mesh()
  c = tiny_mnist_config(nonfinite='skip')
  c.optimizer.update(name='adamw', learning_rate=1.0, warmup_steps=4)
  model = train.build_model(c.model, 10)
  tx, schedule = optim.make_optimizer(c.optimizer, c.total_steps)
  params = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))['params']
  state = dict(step=jnp.array(0, jnp.int32), params=params, opt_state=tx.init(params))
  rng = np.random.default_rng(0)
  good = dict(image=jnp.asarray(rng.uniform(-1, 1, (32, 16, 16, 3)), jnp.float32),
              label=jnp.asarray(rng.integers(0, 10, 32), jnp.int32))
  bad = dict(good, image=good['image'].at[0, 0, 0, 0].set(jnp.nan))
  step = jax.jit(steps.make_train_step(model, tx, schedule, c, 10, mesh))
  counts = lambda s: [int(x) for p, x in jax.tree_util.tree_flatten_with_path(  # noqa: E731
      s['opt_state'])[0] if jax.tree_util.keystr(p).endswith('.count')]
  s1, m1 = step(state, bad)
  assert m1['nonfinite'] == 1 and counts(s1) == [1, 1] and int(s1['step']) == 1
  for name in ('params', 'opt_state'):  # all but the counts: as before the step
    same = jax.tree_util.tree_map_with_path(
        lambda p, a, b: jax.tree_util.keystr(p).endswith('.count') or bool(jnp.all(a == b)),
        s1[name], state[name])
    assert all(jax.tree.leaves(same)), name
  s2, m2 = step(s1, good)
  assert m2['nonfinite'] == 0 and counts(s2) == [2, 2]
  assert float(m2['learning_rate']) == float(schedule(1)) == 0.25  # the rate applied
  # An update that is not finite though the loss and gradient are (an optimiser state
  # that overflows) is dropped too.
  broken = optax.chain(tx, optax.scale(float('nan')))
  state_b = dict(state, opt_state=broken.init(params))
  s3, m3 = jax.jit(steps.make_train_step(model, broken, schedule, c, 10, mesh))(state_b, good)
  assert m3['nonfinite'] == 1 and np.isfinite(float(m3['loss']))
  assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.all(a == b)),
                                          s3['params'], params)))


def test_schedule_warms_up_linearly_then_decays():
  c = tiny_mnist_config()
  c.optimizer.update(learning_rate=1.0, warmup_steps=10, decay='cosine')
  s = optim.make_schedule(c.optimizer, 110)
  np.testing.assert_allclose([s(0), s(5), s(10), s(60), s(110)], [0, 0.5, 1, 0.5, 0],
                             atol=1e-6)
  c.optimizer.decay = 'linear'
  s = optim.make_schedule(c.optimizer, 110)
  np.testing.assert_allclose([s(10), s(60), s(110)], [1, 0.5, 0], atol=1e-6)


def test_random_erasing_replaces_one_rectangle_of_2_to_33_percent_per_erased_image():
  images = jnp.full((256, 28, 28, 3), 5.0)  # outside [-1, 1]: erased pixels stand out
  out = np.asarray(steps.random_erasing(jax.random.key(0), images, 0.5))
  erased = out[..., 0] != 5.0
  counts = erased.sum((1, 2))
  assert 0.35 < np.mean(counts > 0) < 0.65  # about half the images
  for e, n in zip(erased, counts):
    if n:  # a filled axis-aligned rectangle: its bounding box has exactly n pixels
      rows, cols = np.flatnonzero(e.any(1)), np.flatnonzero(e.any(0))
      assert (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1) == n
      assert 0.01 * 28 * 28 <= n <= 0.4 * 28 * 28
  assert np.all(np.abs(out[erased]) <= 1.0)  # noise in the images' range
  np.testing.assert_array_equal(steps.random_erasing(jax.random.key(0), images, 0.0), images)
  np.testing.assert_array_equal(out, steps.random_erasing(jax.random.key(0), images, 0.5))


def test_flip_averaged_eval_is_mirror_invariant_and_logs_the_single_view_figures():
  c = tiny_mnist_config(eval_flip_average=True)
  c.dataset.eval_split = 'test[:64]'
  model = train.build_model(c.model, 10)
  params = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))['params']
  params['head']['kernel'] = jax.random.normal(jax.random.key(1), params['head']['kernel'].shape)
  batch = next(iter(train.data.eval_iterator(c.dataset, global_batch_size=64,
                                             mesh=sharding.make_mesh())))
  mirrored = dict(batch, image=batch['image'][:, :, ::-1])
  tta = jax.jit(steps.make_eval_step(model, c, 10))
  a, b = jax.device_get(tta(params, batch)), jax.device_get(tta(params, mirrored))
  # The averaged prediction cannot tell an image from its mirror; one view can.
  np.testing.assert_allclose(a['loss'], b['loss'], rtol=1e-5)
  assert a['correct'] == b['correct']
  assert abs(a['loss_single_view'] - b['loss_single_view']) > 1e-3 * a['loss_single_view']
  c.eval_flip_average = False
  plain = jax.device_get(jax.jit(steps.make_eval_step(model, c, 10))(params, batch))
  assert set(plain) == {'correct', 'loss', 'count'} and plain['count'] == 64
  np.testing.assert_allclose(plain['loss'], a['loss_single_view'], rtol=1e-5)
  assert plain['correct'] == a['correct_single_view']


@pytest.mark.parametrize('change,message', [
    (dict(batch_size=30), r'batch_size=30 must be divisible by device count \(1\) x '
                          r'grad_accum_steps \(4\) = 4: use --config.batch_size=28'),
    ({'dataset.image_size': 20}, r'image_size=20 is not divisible by the patch size 8 of mu/8'),
    ({'dataset.name': 'cifar10'}, r'cifar10'),
    ({'dataset.num_classes': 7}, r'num_classes=7 but .* has 10 classes'),
    ({'model.variant': 'Q/16'}, r"unknown ViT variant 'Q/16'"),
    ({'optimizer.name': 'adam'}, r"optimizer.name='adam'; expected one of \('adamw', 'sgd'\)"),
    ({'random_erasing': 1.5}, r'random_erasing=1.5; expected a probability in \[0, 1\]'),
    ({'model.classifier': 'cls'}, r"model.classifier='cls'"),
    ({'model.resnet_layers': (1, 1), 'model.variant': 'mu/3'},
     r'image_size=16 gives a 2x2 ResNet feature map, not divisible by the patch size 3: '
     r'use --config.dataset.image_size=24'),
    ({'model.num_heads': 5}, r'model.width=32 is not divisible by model.num_heads=5: .* use '
                             r'--config.model.num_heads=4'),
    ({'model.depth': 0}, r'model.depth=0; expected a positive integer'),
    ({'model.param_dtype': 'float16'}, r"model.param_dtype='float16': parameters and "
                                       r'optimiser state in float16 under- and overflow'),
    (dict(keep_checkpoints=-1), r'keep_checkpoints=-1; expected >= 1 .*or 0 to keep every'),
    (dict(checkpoint_every=-5), r'checkpoint_every=-5; expected a number of steps >= 0'),
    ({'optimizer.grad_clip_norm': -1.0}, r'grad_clip_norm=-1.0; expected a global norm > 0'),
    ({'optimizer.name': 'sgd', 'optimizer.momentum': 0.0, 'optimizer.nesterov': True},
     r'nesterov=True needs momentum > 0'),
    (dict(prefetch=0), r'prefetch=0; expected >= 1'),
    ({'dataset.source': 'digits'}, r"dataset.name='mnist' is only read with dataset.source="
                                   r"'tfds', but source='digits'"),
    ({'dataset.path': '/x'}, r"dataset.path='/x' is only read with dataset.source='folder'"),
])
def test_invalid_configs_fail_before_anything_compiles(tmp_path, monkeypatch, change, message):
  c = tiny_mnist_config(grad_accum_steps=4, **change)
  monkeypatch.setattr(train.jax, 'jit', lambda *a, **k: pytest.fail('compiled before check'))
  with pytest.raises(ConfigError, match=message):
    train.train_and_evaluate(c, str(tmp_path / 'bad'))
  assert not (tmp_path / 'bad' / 'checkpoints').exists()


def test_prefetch_reaches_both_input_iterators(tmp_path, monkeypatch):
  seen = {}

  def spy(name):
    real = getattr(train.data, name)

    def record(*args, **kwargs):
      seen[name] = kwargs.get('prefetch')
      return real(*args, **kwargs)
    return record
  for name in ('train_iterator', 'eval_iterator'):
    monkeypatch.setattr(train.data, name, spy(name))
  train.train_and_evaluate(tiny_mnist_config(total_steps=2, eval_every=0, checkpoint_every=0,
                                             prefetch=5, **{'optimizer.warmup_steps': 1}), str(tmp_path / 'run'))
  assert seen == {'train_iterator': 5, 'eval_iterator': 5}


def test_unknown_key_in_a_config_file_is_reported():
  c = tiny_mnist_config()
  c.unlock()
  c.batchsize = 64
  with pytest.raises(ConfigError, match=r"unknown key 'batchsize' \(did you mean \['batch_size'\]"):
    check_config(c)


def test_main_cli_rejects_unknown_override_and_all_configs_load():
  proc = subprocess.run([sys.executable, '-m', 'vit_jax.main', '--config=configs/default.py',
                         '--workdir=/nonexistent', '--config.batchsize=3'], cwd=REPO,
                        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  assert ("error: --config.batchsize=3: the config has no key 'batchsize'. Did you mean "
          '"batch_size" instead of "batchsize"? Valid keys are listed in configs/common.py.'
          ) in proc.stderr
  for cfg in (default_config.get_config(), finetune.get_config('B/16,mnist'),
              pretrain.get_config('S/16,imagenette,medium2')):
    assert check_config(cfg).num_classes == 10
  assert finetune.get_config('B/16,mnist').optimizer.name == 'sgd'
  assert pretrain.get_config('S/16,imagenette,medium2').mixup_alpha == 0.5


def test_trains_on_an_image_folder_of_real_photos(tmp_path):
  c = finetune.get_config('mu/8,imagenette')
  c.dataset.update(image_size=32, path=str(SHARED / 'data' / 'imagenette_subset'))
  c.model.update(width=32, depth=1, mlp_dim=64, num_heads=2)
  c.batch_size, c.total_steps = 16, 3
  c.optimizer.warmup_steps = 1
  c.log_every, c.eval_every, c.checkpoint_every = 1, 0, 0
  result = train.train_and_evaluate(c, str(tmp_path / 'nette'))
  assert result['step'] == 3 and result['eval_examples'] == 500  # the whole val/ split
  assert 0 <= result['eval_accuracy'] <= 1 and np.isfinite(result['eval_loss'])


def test_scratch_config_presets_validate():
  from configs import scratch
  for arg in ('mnist', 'fashion_mnist', 'imagenette,S/16'):
    c = scratch.get_config(arg)
    c.dataset.data_dir = str(SHARED / 'tfds') if c.dataset.source == 'tfds' else None
    assert check_config(c).num_classes == 10
  with pytest.raises(ValueError, match="not 'cifar10'"):
    scratch.get_config('cifar10')


def test_fine_tunes_from_a_checkpoint_at_a_higher_resolution(tmp_path, capsys):
  from vit_jax.checkpoints import load, vit_npz
  pre = tmp_path / 'pre'
  train.train_and_evaluate(tiny_mnist_config(total_steps=3, eval_every=0,
                                             **{'optimizer.warmup_steps': 1}), str(pre))
  npz = tmp_path / 'pre.npz'
  vit_npz.write(str(npz), load.read(str(pre / 'checkpoints' / '3'))[1])
  for source, variant in ((str(pre / 'checkpoints' / '3'), ''), (str(npz), 'mu/8')):
    c = tiny_mnist_config(total_steps=2, eval_every=0, **{'optimizer.warmup_steps': 1,
                                                          'dataset.image_size': 24})
    c.model.variant, c.init_from = variant, source
    if not variant:  # read off the checkpoint instead
      c.model.update(width=None, depth=None, mlp_dim=None, num_heads=None)
    result = train.train_and_evaluate(c, str(tmp_path / f'ft_{bool(variant)}'))
    err = capsys.readouterr().err
    assert result['step'] == 2 and np.isfinite(result['eval_loss'])
    assert f'load_pretrained: ' in err and source in err
    assert ('model from' in err) == (not variant)
  # A file that does not exist is a config error, before anything compiles.
  c = tiny_mnist_config()
  c.init_from = str(tmp_path / 'nope.npz')
  with pytest.raises(ConfigError, match=r"init_from=.*nope.npz' does not exist"):
    check_config(c)
  # One that does not fit the model, or cannot be read, is one error, not a traceback.
  from vit_jax.checkpoints.train_state import CheckpointError
  (tmp_path / 'cut.npz').write_bytes(npz.read_bytes()[:npz.stat().st_size // 2])
  for source, change, message in (
      (npz, {'model.width': 48}, r'mis-shaped parameter.*encoder_norm/bias: \(32,\) vs '
                                  r'\(48,\)'),
      (tmp_path / 'cut.npz', {}, r'cut.npz is not a readable .npz checkpoint'),
      (tmp_path / 'cut.npz', {'model.variant': ''}, r'cut.npz is not a readable .npz')):
    c = tiny_mnist_config(total_steps=3, eval_every=0, init_from=str(source), **change)
    with pytest.raises(CheckpointError, match=rf'(?s)--config.init_from=\S+: .*{message}'):
      train.train_and_evaluate(c, str(tmp_path / 'bad_init'))


def test_hybrid_checkpoint_fine_tunes_at_a_higher_resolution_with_its_stem(tmp_path, capsys):
  from vit_jax.checkpoints import vit_npz
  from vit_jax.models import get_model
  pre = get_model('mu/1', width=32, depth=2, mlp_dim=64, num_heads=2, num_classes=10,
                  resnet_layers=(1, 1), resnet_width_factor=0.5)
  params = pre.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))['params']  # 2x2 tokens
  npz = tmp_path / 'hybrid.npz'
  vit_npz.write(str(npz), params)
  c = tiny_mnist_config(total_steps=2, eval_every=0, **{'optimizer.warmup_steps': 1,
                                                        'dataset.image_size': 24})
  c.model.update(variant='', width=None, depth=None, mlp_dim=None, num_heads=None)
  c.init_from = str(npz)
  result = train.train_and_evaluate(c, str(tmp_path / 'ft'))
  err = capsys.readouterr().err
  assert result['step'] == 2 and np.isfinite(result['eval_loss'])
  assert (c.model.variant, c.model.resnet_layers, c.model.resnet_width_factor) == (
      'mu/1', (1, 1), 0.5)
  assert 'resized position embeddings (1, 5, 32) -> (1, 10, 32)' in err  # 2x2 -> 3x3 tokens
