"""Entry point: python -m vit_jax.main --config=configs/FILE.py[:ARG] --workdir=DIR [--config.K=V]

Trains, evaluates and checkpoints; rerunning the same command resumes from the workdir's
latest checkpoint. Progress goes to stderr; the final result is one JSON line on stdout.

Multi-host: run the same command in every process. The processes find each other through
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I` (or the environment
variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID); on a Cloud TPU pod
or under SLURM with several tasks, `jax.distributed.initialize()` finds them by itself.
"""

import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file, e.g. '
                                          'configs/finetune.py:B/16,mnist.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'HOST:PORT of process 0, for multi-process runs.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process, 0..num_processes-1.')
_DISTRIBUTED = flags.DEFINE_bool('distributed', False, 'Join a multi-host run found by '
                                 'jax.distributed.initialize() itself (TPU pods, SLURM).')
flags.mark_flags_as_required(['config', 'workdir'])


def initialize_distributed():
  """Joins the other processes of a multi-host run, if this is one."""
  import jax  # pylint: disable=g-import-not-at-top
  env = os.environ
  address = _COORDINATOR.value or env.get('JAX_COORDINATOR_ADDRESS')
  auto = (_DISTRIBUTED.value or int(env.get('SLURM_NTASKS', '1')) > 1 or
          ',' in env.get('TPU_WORKER_HOSTNAMES', ''))  # TPU pod slice with several hosts
  if not address and not auto:
    return
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # CPU-only runs
  if address:
    num = _NUM_PROCESSES.value or int(env.get('JAX_NUM_PROCESSES', '0'))
    pid = _PROCESS_ID.value if _PROCESS_ID.value is not None else int(
        env.get('JAX_PROCESS_ID', '-1'))
    if num < 1 or not 0 <= pid < num:
      raise app.UsageError(f'--coordinator_address={address} needs --num_processes >= 1 and '
                           f'0 <= --process_id < num_processes (got {num}, {pid}).')
    jax.distributed.initialize(address, num_processes=num, process_id=pid)
  else:
    jax.distributed.initialize()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}; overrides look like '
                         '--config.batch_size=64')
  logging.set_verbosity(logging.WARNING)  # orbax logs every save step at INFO
  initialize_distributed()
  from vit_jax import train  # after flag parsing: keeps --help fast
  try:
    result = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (train.validate.ConfigError, train.ckpt.CheckpointError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except train.NonFiniteLossError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(3)
  if train.jax.process_index() == 0:
    acc = result.get('eval_accuracy')
    if result['preempted']:
      print(f'preempted at step {result["step"]}: checkpoint saved; rerun the same command '
            'to resume', file=sys.stderr)
    else:
      print(f'done: step {result["step"]}' + (f', eval accuracy {acc:.4f}' if acc is not None
                                              else ''), file=sys.stderr)
    print(f'checkpoints: {result["checkpoint_dir"]}\nmetrics: {result["metrics_file"]} '
          f'(TensorBoard: {os.path.join(_WORKDIR.value, "tensorboard")})', file=sys.stderr)
    print(json.dumps(result))


def parse_flags(argv):
  """absl's flag parsing, with an override of a key the config lacks as one error line
  (ml_collections raises AttributeError or KeyError from inside the parse for it)."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as e:
    reason = e
    while isinstance(reason, BaseException) and reason.args:  # KeyError inside AttributeError
      reason = reason.args[0]
    key, _, hint = ' '.join(str(reason).replace("'", '').split()).partition(' ')
    named = [a for a in argv[1:] if a.startswith('--config.') and
             key in a[len('--config.'):].partition('=')[0].split('.')]
    print(f'error: {" ".join(named) or "a --config override"}: the config has no key '
          f'{key!r}. {hint + " " if hint else ""}Valid keys are listed in configs/common.py.',
          file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
