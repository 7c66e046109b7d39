"""Multi-host: 2 cooperating processes (jax.distributed, gloo on CPU) equal 1 process."""

import json
import os
import shutil
import socket
import subprocess

import jax
import numpy as np

from conftest import REPO, tiny_mnist_cli
from vit_jax.checkpoints.train_state import restore_on_host


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def run(workdir, processes: int):
  """The same command in `processes` processes over 8 CPU devices in all."""
  args = tiny_mnist_cli(workdir, **{'model.dropout': 0.1, 'total_steps': 4,
                                     'checkpoint_every': 2})
  env = dict(os.environ, PYTHONPATH=str(REPO),
             XLA_FLAGS=f'--xla_force_host_platform_device_count={8 // processes}')
  if processes > 1:
    port = free_port()
    procs = [subprocess.Popen(
        args + [f'--coordinator_address=127.0.0.1:{port}', f'--num_processes={processes}',
                f'--process_id={i}'], cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for i in range(processes)]
  else:
    procs = [subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert f'mesh: 8 devices (cpu) over {processes} process(es)' in outs[0][1]
  return outs[0][1]


def losses(workdir):
  with open(workdir / 'metrics.jsonl') as f:
    return [r['loss'] for r in map(json.loads, f) if r['split'] == 'train']


def final_params(workdir):
  return restore_on_host(str(workdir / 'checkpoints' / '4' / 'state'))['params']


def test_two_processes_equal_one_and_checkpoints_cross_restore(tmp_path):
  one, two = tmp_path / 'one', tmp_path / 'two'
  run(one, 1)
  run(two, 2)
  np.testing.assert_allclose(losses(two), losses(one), rtol=1e-5)
  assert len(losses(one)) == 4
  # A 2-process checkpoint resumes in 1 process and the other way round.
  for src, processes, reference in ((two, 1, one), (one, 2, two)):
    dst = tmp_path / f'{src.name}_resumed_in_{processes}'
    shutil.copytree(src, dst)
    shutil.rmtree(dst / 'checkpoints' / '4')
    err = run(dst, processes)
    assert 'resumed from' in err and '(step 2)' in err
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 final_params(dst), final_params(reference))
