"""Entry point: python -m vit_jax.main --config=configs/FILE.py[:ARG] --workdir=DIR [--config.K=V]

Trains, evaluates and checkpoints; rerunning the same command resumes from the workdir's
latest checkpoint. Progress goes to stderr; the final result is one JSON line on stdout.
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
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}; overrides look like '
                         '--config.batch_size=64')
  logging.set_verbosity(logging.WARNING)  # orbax logs every save step at INFO
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


if __name__ == '__main__':
  app.run(main)
