"""Runs survive preemption, broken checkpoints, non-finite losses and the wrong workdir."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from vit_jax import train
from vit_jax.checkpoints.train_state import CheckpointError

from conftest import REPO, tiny_mnist_cli
from test_train import tiny_mnist_config


def test_sigterm_saves_at_the_current_step_and_the_rerun_resumes(tmp_path):
  workdir = tmp_path / 'run'
  cmd = tiny_mnist_cli(workdir, **{'model.depth': 1, 'batch_size': 16,
                                    'total_steps': 100000})
  env = dict(os.environ, PYTHONPATH=str(REPO))
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True)
  for line in proc.stderr:  # wait until training is under way
    if line.startswith('step 20/'):
      break
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-2000:]
  step = json.loads(out)['step']
  assert 20 <= step < 100000 and f'preempted at step {step}' in err
  assert os.listdir(workdir / 'checkpoints') == [str(step)]
  # The same command resumes there (with a finite end this time, to finish quickly).
  cmd[cmd.index('--config.total_steps=100000')] = f'--config.total_steps={step + 2}'
  rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  assert f'resumed from {workdir / "checkpoints"}/{step} (step {step})' in rerun.stderr
  assert json.loads(rerun.stdout)['step'] == step + 2


def _flat_finite(params):
  return all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(params))


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  c = tiny_mnist_config(total_steps=6, checkpoint_every=1, eval_every=0)
  c.optimizer.update(name='sgd', learning_rate=1e20, warmup_steps=0, grad_clip_norm=0.0)
  with pytest.raises(train.NonFiniteLossError, match=r'step (\d+): the loss, gradient or update '
                     r'is not finite.*--config.nonfinite=skip'):
    train.train_and_evaluate(c, str(tmp_path / 'stop'))
  saved = sorted(int(s) for s in os.listdir(tmp_path / 'stop' / 'checkpoints'))
  assert saved and saved[-1] < 6
  last = ocp.StandardCheckpointer().restore(
      (tmp_path / 'stop' / 'checkpoints' / str(saved[-1]) / 'state').resolve())
  assert _flat_finite(last['params'])
  # With nonfinite=skip the run completes, every bad update dropped.
  c.nonfinite = 'skip'
  result = train.train_and_evaluate(c, str(tmp_path / 'skip'))
  assert result['step'] == 6
  final = ocp.StandardCheckpointer().restore(
      (tmp_path / 'skip' / 'checkpoints' / '6' / 'state').resolve())
  assert _flat_finite(final['params'])


def test_workdir_of_a_different_model_or_optimiser_is_a_clear_error_and_untouched(tmp_path):
  workdir = str(tmp_path / 'run')
  made_it = dict(total_steps=2, eval_every=0, **{'optimizer.warmup_steps': 1})
  train.train_and_evaluate(tiny_mnist_config(**made_it), workdir)
  before = {p: os.path.getmtime(os.path.join(workdir, p)) for p in ('config.json', 'checkpoints')}
  other = tiny_mnist_config(total_steps=4, eval_every=0, **{'model.width': 48})
  with pytest.raises(CheckpointError, match=r"(?s)holds a checkpoint \(step 2\) of a different "
                     r"model:\n.*  params/Transformer/encoder_norm/bias: \(32,\) in the "
                     r"checkpoint, \(48,\) in this config.*Nothing was moved or overwritten"):
    train.train_and_evaluate(other, workdir)
  # Another optimiser's state is a config change too, not damage: nothing is moved aside.
  sgd = tiny_mnist_config(**{**made_it, 'total_steps': 4, 'optimizer.name': 'sgd'})
  with pytest.raises(CheckpointError, match=r"(?s)step 2\) of a different optimiser \(the "
                     r"parameters match.*\n  opt_state/[0-9/]*/mu/.*missing in this config.*"
                     r"vit_jax.convert WORKDIR FILE.npz"):
    train.train_and_evaluate(sgd, workdir)
  after = {p: os.path.getmtime(os.path.join(workdir, p)) for p in before}
  assert before == after and os.listdir(os.path.join(workdir, 'checkpoints')) == ['2']
  result = train.train_and_evaluate(tiny_mnist_config(**{**made_it, 'total_steps': 3}), workdir)
  assert result['step'] == 3 and sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == [
      '2', '3']


def test_keep_checkpoints_0_keeps_every_checkpoint(tmp_path):
  workdir = tmp_path / 'run'
  train.train_and_evaluate(tiny_mnist_config(total_steps=4, checkpoint_every=1, eval_every=0,
                                             keep_checkpoints=0), str(workdir))
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['1', '2', '3', '4']


def test_unreadable_checkpoint_is_moved_aside_and_the_previous_one_used(tmp_path, capsys):
  workdir = tmp_path / 'run'
  train.train_and_evaluate(tiny_mnist_config(total_steps=4, checkpoint_every=2, eval_every=0),
                           str(workdir))
  for root, _, files in os.walk(workdir / 'checkpoints' / '4' / 'state'):
    for f in files:  # truncate every file of the newest checkpoint
      with open(os.path.join(root, f), 'r+b') as fh:
        fh.truncate(max(os.path.getsize(os.path.join(root, f)) // 3, 1))
  result = train.train_and_evaluate(
      tiny_mnist_config(total_steps=6, checkpoint_every=2, eval_every=0), str(workdir))
  err = capsys.readouterr().err
  assert 'checkpoints/4 is unreadable' in err and 'resumed from' in err and '(step 2)' in err
  assert result['step'] == 6
  names = os.listdir(workdir / 'checkpoints')
  assert {'2', '4', '6'} <= set(names) and any(n.startswith('4.unreadable-') for n in names)


def test_an_unreadable_checkpoint_that_cannot_be_moved_aside_stops_the_run(tmp_path,
                                                                          monkeypatch):
  from etils import epath
  workdir = tmp_path / 'run'
  train.train_and_evaluate(tiny_mnist_config(total_steps=4, checkpoint_every=2, eval_every=0),
                           str(workdir))
  for f in (workdir / 'checkpoints' / '4' / 'state').rglob('*'):
    if f.is_file():
      f.write_bytes(f.read_bytes()[:max(f.stat().st_size // 3, 1)])
  def no_rename(self, target):  # an object store without directory renames
    raise OSError('rename is not supported for directories here')
  monkeypatch.setattr(type(epath.Path(str(tmp_path))), 'rename', no_rename)
  with pytest.raises(CheckpointError, match=r'checkpoints/4 is unreadable \(.*\) and could '
                     r'not be moved aside \(OSError: rename is not supported.*\)\. Move or '
                     r'delete it, then rerun'):
    train.train_and_evaluate(tiny_mnist_config(total_steps=6, checkpoint_every=2,
                                               eval_every=0), str(workdir))
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '4']  # nothing lost or hidden


def test_a_read_that_fails_once_is_retried_not_moved_aside(tmp_path, monkeypatch, capsys):
  workdir = tmp_path / 'run'
  train.train_and_evaluate(tiny_mnist_config(total_steps=4, checkpoint_every=2, eval_every=0),
                           str(workdir))
  real, calls = ocp.CheckpointManager.restore, []
  def flaky(self, step, *args, **kwargs):  # a storage error that passes (gs://, NFS)
    calls.append(step)
    if len(calls) == 1:
      raise OSError('Connection reset by peer')
    return real(self, step, *args, **kwargs)
  monkeypatch.setattr(ocp.CheckpointManager, 'restore', flaky)
  result = train.train_and_evaluate(
      tiny_mnist_config(total_steps=6, checkpoint_every=2, eval_every=0), str(workdir))
  assert calls == [4, 4] and result['step'] == 6
  assert 'resumed from' in capsys.readouterr().err
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '4', '6']  # nothing moved


def launch(*args):
  return subprocess.run(['bash', str(REPO / 'launch.sh'), *args], cwd=REPO,
                        capture_output=True, text=True)


def test_launch_tpu_dry_run_prints_the_exact_commands():
  out = launch('--tpu=pod', '--zone=us-central2-b', '--project=p1', '--dry-run',
               'configs/pretrain.py:B/16,imagenet2012,medium1', '--workdir=gs://b/run',
               '--config.dataset.randaugment=2, 15')
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  assert len(lines) == 4 and lines[0].startswith('tar czf ')
  assert lines[1].startswith('gcloud compute tpus tpu-vm scp ') and '--worker=all' in lines[1]
  for line in lines[2:]:
    assert line.startswith('gcloud compute tpus tpu-vm ssh pod --worker=all '
                           '--zone=us-central2-b --project=p1 --command=')
  assert "pip install -U '\\''jax[tpu]'\\''" in lines[2]
  assert ('./launch.sh configs/pretrain.py:B/16,imagenet2012,medium1 --workdir=gs://b/run '
          "'\\''--config.dataset.randaugment=2, 15'\\'' --distributed" in lines[3])
  # The remote command, unquoted by a shell, is the same job with --distributed.
  remote = subprocess.run(['bash', '-c', f'printf "%s\\n" {lines[3].split("--command=")[1]}'],
                          capture_output=True, text=True).stdout
  assert "'--config.dataset.randaugment=2, 15' --distributed > run.log" in remote


@pytest.mark.parametrize('args,message', [
    (['--tpu=pod', 'configs/default.py'], '--tpu=pod needs --zone=ZONE'),
    (['--tpu=pod', '--zone=z', 'configs/default.py'], 'needs --workdir=gs://'),
    (['--tpu=pod', '--zone=z', 'test'], '--tpu needs a config'),
    (['--zone=z', 'configs/default.py'], 'only go with --tpu=NAME'),
])
def test_launch_remote_usage_errors(args, message):
  out = launch(*args)
  assert out.returncode == 2 and message in out.stderr


def test_half_written_checkpoint_of_a_killed_save_is_never_picked_up(tmp_path, capsys):
  """A SIGKILL mid-save leaves orbax's temporary directory; resuming ignores it."""
  workdir = tmp_path / 'run'
  train.train_and_evaluate(tiny_mnist_config(total_steps=4, checkpoint_every=2, eval_every=0),
                           str(workdir))
  ckpts = workdir / 'checkpoints'
  shutil.copytree(ckpts / '4', ckpts / '6.orbax-checkpoint-tmp-1234')  # as a killed save
  for root, _, files in os.walk(ckpts / '6.orbax-checkpoint-tmp-1234'):
    for f in files:
      os.truncate(os.path.join(root, f), 0)
  result = train.train_and_evaluate(
      tiny_mnist_config(total_steps=6, checkpoint_every=2, eval_every=0), str(workdir))
  assert '(step 4)' in capsys.readouterr().err and result['step'] == 6


def test_wrong_type_on_the_command_line_fails_before_training(tmp_path):
  out = subprocess.run([sys.executable, '-m', 'vit_jax.main', '--config=configs/default.py',
                        f'--workdir={tmp_path / "w"}', '--config.batch_size=many'], cwd=REPO,
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
  assert out.returncode != 0 and 'batch_size' in out.stderr and 'many' in out.stderr
  assert not (tmp_path / 'w').exists()


def test_all_checkpoints_unreadable_is_an_error_naming_them(tmp_path):
  workdir = tmp_path / 'run'
  train.train_and_evaluate(tiny_mnist_config(total_steps=2, eval_every=0, checkpoint_every=0,
                                             **{'optimizer.warmup_steps': 1}), str(workdir))
  for root, _, files in os.walk(workdir / 'checkpoints' / '2'):
    for f in files:
      os.truncate(os.path.join(root, f), 0)
  with pytest.raises(CheckpointError, match=r'no readable checkpoint in .*2\.unreadable-'):
    train.train_and_evaluate(tiny_mnist_config(total_steps=4, eval_every=0), str(workdir))


def test_sigkill_at_any_moment_leaves_a_resumable_workdir(tmp_path):
  """Killed hard while saving every step: the rerun resumes from a complete checkpoint."""
  workdir = tmp_path / 'run'
  cmd = tiny_mnist_cli(workdir, **{'model.width': 64, 'model.mlp_dim': 128, 'batch_size': 16,
                                    'total_steps': 100000, 'checkpoint_every': 1,
                                    'keep_checkpoints': 2})
  env = dict(os.environ, PYTHONPATH=str(REPO))
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE,
                          stdout=subprocess.DEVNULL, text=True)
  for line in proc.stderr:
    if line.startswith('step 15/'):
      break
  proc.kill()  # SIGKILL: no handler runs, saves may be half-written
  proc.wait()
  cmd[cmd.index('--config.total_steps=100000')] = '--config.total_steps=30'
  rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  assert 'resumed from' in rerun.stderr and 'unreadable' not in rerun.stderr
  assert json.loads(rerun.stdout)['step'] == 30
