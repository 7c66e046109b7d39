r"""Where the time of one whole compiled step goes, op by op, from a jax.profiler trace.

  ./launch.sh python -m experiments.step_profile [--variant=Ti/16] [--batch=32] [--mode=train]

Compiles the benchmark's step (vit_jax.benchmark: the trainer's own train step, or the
forward pass), runs it, traces --steps steps with jax.profiler and sums the trace's XLA
op durations by kind (the op's name without its number: `dot`, `wrapped_reduce-window`,
`transpose_copy_fusion`, ...), each with the output shapes that take most of its time
(read from the compiled HLO). Writes a markdown table to stdout;
experiments/results/benchmarks/step_profile.md (and xeon_amx/step_profile.md, from a Xeon;
zen5/step_profile_bfloat16.md, --dtype=bfloat16 on a Zen 5)
is its committed output. step_components times the parts of a block alone; this shows what
the compiled whole spends its time on.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp

from vit_jax import benchmark, cpu_tuning, optim, sharding, steps
from vit_jax.models import get_model

# Trace events that are not XLA ops: the runtime's own spans around them.
_NOT_OPS = ('$', 'ThunkExecutor', 'PjitFunction', 'end:', 'CommonPjRt', 'ParseArguments')


def compiled_step(variant: str, batch: int, image_size: int, mode: str,
                  dtype: str = 'float32'):
  """(run: a function that runs one step, blocking, the compiled step's HLO text)."""
  model = get_model(variant, num_classes=1000, dtype=jnp.dtype(dtype))
  x = jax.random.uniform(jax.random.key(1), (batch, image_size, image_size, 3),
                         minval=-1.0, maxval=1.0)
  params = jax.jit(model.init)(jax.random.key(0), x)['params']
  options = cpu_tuning.compiler_options(dtype)
  if mode == 'infer':
    fn = jax.jit(lambda p, x: model.apply({'params': p}, x)[0])
    compiled = fn.lower(params, x).compile(compiler_options=options)
    return lambda: jax.block_until_ready(compiled(params, x)), compiled.as_text()
  config = benchmark._train_config(batch)  # pylint: disable=protected-access
  tx, schedule = optim.make_optimizer(config.optimizer, 10)
  step = steps.make_train_step(model, tx, schedule, config, 1000, sharding.make_mesh())
  box = [dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))]
  data = dict(image=x, label=jnp.zeros((batch,), jnp.int32))
  compiled = jax.jit(step, donate_argnums=(0,)).lower(box[0], data).compile(
      compiler_options=options)

  def run():
    box[0], metrics = compiled(box[0], data)
    jax.block_until_ready(metrics)
  return run, compiled.as_text()


def op_times(trace_dir: str, steps: int) -> dict[str, float]:
  """{op name: milliseconds per step} from the trace written under trace_dir."""
  path, = glob.glob(os.path.join(trace_dir, 'plugins', 'profile', '*', '*.trace.json.gz'))
  with gzip.open(path) as f:
    events = json.load(f)['traceEvents']
  times = collections.defaultdict(float)
  for e in events:
    if e.get('ph') == 'X' and not e['name'].startswith(_NOT_OPS):
      times[e['name']] += e['dur'] / 1e3 / steps
  return dict(times)


def output_shapes(hlo: str) -> dict[str, str]:
  """{instruction name: its output shape} for the compiled module's instructions."""
  return {m.group(1): m.group(2)
          for m in re.finditer(r'^\s*(?:ROOT )?%([\w.\-]+) = (\([^)]*\)|\S+) ', hlo, re.M)}


def by_kind(times: dict[str, float], shapes: dict[str, str]):
  """Rows (kind, ms per step, ops per step, top shapes) sorted by time."""
  kinds = collections.defaultdict(lambda: [0.0, 0, collections.Counter()])
  for name, ms in times.items():
    kind = re.sub(r'\.\d+$', '', name)
    k = kinds[kind]
    k[0] += ms
    k[1] += 1
    k[2][re.sub(r'\{[^}]*\}', '', shapes.get(name, '?'))] += ms
  return sorted(((kind, ms, n, shp) for kind, (ms, n, shp) in kinds.items()),
                key=lambda r: -r[1])


def _restore_tensorflow_traceme():
  """jaxlib 0.6's profiler session sets TensorFlow's `trace.enabled`, a function, to a bool
  (XLA's Python hooks), after which every tf.data call in this process fails with
  "'bool' object is not callable". Puts the function back."""
  trace = sys.modules.get('tensorflow.python.profiler.trace')
  if trace is not None and not callable(trace.enabled):
    from tensorflow.python.profiler.internal import _pywrap_traceme
    trace.enabled = _pywrap_traceme.traceme_enabled


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--variant', default='Ti/16')
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--image-size', type=int, default=224)
  parser.add_argument('--mode', choices=('train', 'infer'), default='train')
  parser.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32',
                      help='compute dtype (parameters stay float32)')
  parser.add_argument('--steps', type=int, default=3, help='traced steps')
  parser.add_argument('--rows', type=int, default=12, help='op kinds listed')
  args = parser.parse_args(argv)

  run, hlo = compiled_step(args.variant, args.batch, args.image_size, args.mode, args.dtype)
  for _ in range(2):
    run()
  walls = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    run()
    walls.append(1e3 * (time.perf_counter() - t0))
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    for _ in range(args.steps):
      run()
    jax.profiler.stop_trace()
    _restore_tensorflow_traceme()
    times = op_times(trace_dir, args.steps)
  shapes = output_shapes(hlo)
  if not set(times) & set(shapes):
    print(f'step_profile: the trace names none of the step\'s XLA ops: this jaxlib '
          f'({jax.lib.__version__}) records no per-op events on {jax.default_backend()} '
          '(jaxlib 0.10 does on the CPU; Python 3.11+ gets it)', file=sys.stderr)
    return 1
  rows = by_kind(times, shapes)
  total = sum(ms for _, ms, _, _ in rows)
  print(f'| op kind ({args.variant} {args.mode}, {args.dtype}, batch {args.batch}) '
        '| ms per step | share | ops per step | output shapes taking most of its time (ms) |')
  print('|---|---|---|---|---|')
  for kind, ms, n, top in rows[:args.rows]:
    shapes = ', '.join(f'`{s}` {t:.0f}' for s, t in top.most_common(3))
    print(f'| {kind} | {ms:.1f} | {100 * ms / total:.0f}% | {n} | {shapes} |')
  if len(rows) > args.rows:
    rest = sum(ms for _, ms, _, _ in rows[args.rows:])
    print(f'| {len(rows) - args.rows} other kinds | {rest:.1f} | {100 * rest / total:.0f}% '
          '| | |')
  print(f'\nOps sum to {total:.0f} ms per step; the step takes {statistics.median(walls):.0f} '
        f'ms (median of {args.steps}, untraced). The trace gives the Eigen matmuls of XLA:CPU '
        '(`dot`) only their dispatch, not their run time, which is in the difference, with '
        'the time between ops.')
  return 0


if __name__ == '__main__':
  sys.exit(main())
