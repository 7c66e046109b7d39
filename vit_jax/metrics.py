"""Metrics to TensorBoard event files, a JSON-lines file and a console progress line.

Only process 0 writes. Every logged value lands in WORKDIR/metrics.jsonl, one JSON object
per line: {"step": ..., "split": "train"|"eval", "name": value, ...}.
"""

import json
import os
import sys
from typing import Optional


def _fmt_seconds(s: float) -> str:
  s = int(s)
  return f'{s // 3600}h{s % 3600 // 60:02d}m' if s >= 3600 else f'{s // 60}m{s % 60:02d}s'


class MetricWriter:

  def __init__(self, workdir: str, total_steps: int, enabled: bool = True):
    self.total_steps, self.enabled = total_steps, enabled
    self.jsonl_path = os.path.join(workdir, 'metrics.jsonl')
    self._tb = None
    if enabled:
      from vit_jax.data.tf_cpu import tf  # gfile: local paths and gs:// alike
      self._tf = tf
      tf.io.gfile.makedirs(workdir)
      self._tb = tf.summary.create_file_writer(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, split: str, values: dict):
    if not self.enabled:
      return
    values = {k: float(v) for k, v in values.items()}
    line = json.dumps({'step': int(step), 'split': split, **values}) + '\n'
    if '://' not in self.jsonl_path:
      with open(self.jsonl_path, 'a') as f:
        f.write(line)
    else:  # object stores (gs://) cannot append: rewrite the file with the new line
      gfile = self._tf.io.gfile
      old = gfile.GFile(self.jsonl_path).read() if gfile.exists(self.jsonl_path) else ''
      with gfile.GFile(self.jsonl_path, 'w') as f:
        f.write(old + line)
    with self._tb.as_default(step=int(step)):
      for k, v in values.items():
        self._tf.summary.scalar(f'{split}/{k}', v)
    self._tb.flush()

  def progress(self, step: int, values: dict, steps_per_sec: Optional[float] = None):
    """One human-readable line on stderr: step, metrics, steps/s and ETA (from the rate
    the caller measured since its last line; none yet for a line right after compiling)."""
    if not self.enabled:
      return
    shown = ' | '.join(f'{k} {v:.4g}' for k, v in values.items())
    if steps_per_sec:
      speed = (f'{steps_per_sec:.2f} steps/s | ETA '
               f'{_fmt_seconds((self.total_steps - step) / steps_per_sec)}')
    else:
      speed = 'steps/s ? | ETA ?'
    print(f'step {step}/{self.total_steps} | {shown} | {speed}', file=sys.stderr, flush=True)

  def close(self):
    if self._tb is not None:
      self._tb.close()
