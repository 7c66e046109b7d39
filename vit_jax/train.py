"""The training loop: one function, its sections in order.

config checks -> mesh -> model and optimiser -> sharding -> checkpoint restore -> input ->
update step -> evaluator -> loop; the steps themselves are built in steps.py. The same code
runs on 1 CPU or every device of every host: arrays are global `jax.Array`s on a 1-D
'data' mesh and every step is one `jax.jit`.
"""

import contextlib
import json
import os
import signal
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from vit_jax import cpu_tuning, data, metrics, optim, sharding, validate
from vit_jax.checkpoints import load
from vit_jax.data.tf_cpu import tf  # gfile: local paths and gs:// alike
from vit_jax.checkpoints import train_state as ckpt
from vit_jax.models import get_model
from vit_jax.steps import make_eval_step, make_train_step


def log(msg: str):
  if jax.process_index() == 0:
    print(msg, file=sys.stderr, flush=True)


def build_model(model_cfg, num_classes: int):
  kw = {k: v for k, v in model_cfg.to_dict().items() if v is not None}
  variant = kw.pop('variant')
  kw['dtype'], kw['param_dtype'] = jnp.dtype(kw['dtype']), jnp.dtype(kw['param_dtype'])
  return get_model(variant, num_classes=num_classes, **kw)


def evaluate(eval_step, params, config, mesh) -> dict:
  """Accuracy and mean loss over the whole eval split (and their single-view versions
  when the prediction is flip-averaged)."""
  totals = dict(correct=0.0, loss=0.0, count=0.0)  # also the result of an empty split
  for batch in data.eval_iterator(config.dataset, global_batch_size=config.batch_size,
                                  mesh=mesh, prefetch=config.prefetch):
    for k, v in jax.device_get(eval_step(params, batch)).items():
      totals[k] = totals.get(k, 0.0) + float(v)
  count = totals.pop('count')
  return dict(examples=count, **{k.replace('correct', 'accuracy'): v / max(count, 1.0)
                                 for k, v in totals.items()})


class NonFiniteLossError(FloatingPointError):
  pass


def check_finite(step: int, flag, config, log):
  """Stops the run at a non-finite loss/gradient/update (state and checkpoints stay good), or
  logs and carries on when config.nonfinite == 'skip'."""
  if float(jax.device_get(flag)) == 0:
    return
  if config.nonfinite == 'skip':
    log(f'step {step}: non-finite loss, gradient or update; update skipped '
        '(config.nonfinite=skip)')
    return
  raise NonFiniteLossError(
      f'step {step}: the loss, gradient or update is not finite; the update was dropped and '
      'the run stopped. No checkpoint is saved after a bad step: those in the workdir, if '
      'any, are intact. Lower the learning rate, check the data, or set '
      '--config.nonfinite=skip to skip such steps.')


@contextlib.contextmanager
def preemption_guard():
  """While active, SIGTERM / SIGINT ask the loop to save and stop instead of killing it.

  Yields a function returning True once a stop was requested (agreed across processes, so
  every host saves the same step). A second SIGINT interrupts at once.
  """
  requested = threading.Event()
  def handler(signum, frame):
    del frame
    if signum == signal.SIGINT and requested.is_set():
      raise KeyboardInterrupt
    requested.set()
  installed = threading.current_thread() is threading.main_thread()
  previous = {}
  if installed:
    for sig in (signal.SIGTERM, signal.SIGINT):
      previous[sig] = signal.signal(sig, handler)
  def stop_requested() -> bool:
    if jax.process_count() == 1:
      return requested.is_set()
    flags = multihost_utils.process_allgather(np.array(requested.is_set()))
    return bool(np.any(flags))
  try:
    yield stop_requested
  finally:
    for sig, h in previous.items():
      signal.signal(sig, h)


@contextlib.contextmanager
def init_from_errors(config):
  """A checkpoint given as config.init_from that cannot be read or does not fit the model
  is a CheckpointError (one error line from main, exit status 2), not a traceback."""
  try:
    yield
  except ckpt.CheckpointError:  # already one (it is a ValueError too)
    raise
  except (ValueError, FileNotFoundError) as e:
    raise ckpt.CheckpointError(f'--config.init_from={config.init_from}: {e}') from e


def model_from_checkpoint(config):
  """Fills config.model from the shapes in config.init_from (when no variant is given)."""
  with init_from_errors(config):
    _, flat, meta = load.read_with_meta(config.init_from)
    inferred = load.infer_variant(flat)
  if inferred['variant']:
    config.model.variant = inferred['variant']
  else:  # not a named size: the nearest name for the patch, with explicit dimensions
    config.model.variant = f'mu/{inferred["patch_size"]}'
    config.model.update({k: inferred[k] for k in ('width', 'depth', 'mlp_dim', 'num_heads')})
    if inferred['resnet_layers'] is not None:  # a hybrid's stem, as the checkpoint has it
      config.model.update({k: inferred[k] for k in ('resnet_layers', 'resnet_width_factor')})
  config.model.classifier = inferred['classifier']
  config.model.representation_size = inferred['representation_size']
  if inferred['posemb'] == 'learn':
    config.model.posemb = 'learn'
  if meta['approximate_gelu'] is not None:  # PyTorch configs say which GELU they ran
    config.model.approximate_gelu = meta['approximate_gelu']
  log(f'model from {config.init_from}: variant {config.model.variant}, classifier '
      f'{inferred["classifier"]}, width {inferred["width"]}, depth {inferred["depth"]}')


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains, evaluates and checkpoints in `workdir`; resumes from its latest checkpoint.

  Returns the final metrics: step, eval accuracy and loss, training wall time.
  """
  # ---- Config checks: every error before anything compiles. ----
  if config.init_from and not config.model.variant:
    model_from_checkpoint(config)
  info = validate.check_config(config)
  config_json = json.loads(config.to_json_best_effort())

  # ---- Mesh. ----
  mesh = sharding.make_mesh()
  log(f'mesh: {jax.device_count()} devices ({jax.devices()[0].platform}) over '
      f'{jax.process_count()} process(es); dataset {info.num_train} train / '
      f'{info.num_eval} eval examples, {info.num_classes} classes')

  # ---- Model and optimiser. ----
  model = build_model(config.model, info.num_classes)
  tx, schedule = optim.make_optimizer(config.optimizer, config.total_steps)
  size = config.dataset.image_size

  def init_state(rng):
    params = model.init(rng, jnp.zeros((1, size, size, 3), jnp.float32))['params']
    return dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  # ---- Sharding: shapes from eval_shape, state created directly sharded. ----
  abstract = jax.eval_shape(init_state, jax.random.key(0))
  state_sharding = sharding.tree_shardings(abstract, mesh, config.sharding)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract['params']))
  log(f'model {config.model.variant}: {num_params:,} parameters; sharding '
      f'{config.sharding}')

  # ---- Checkpoint restore (or fresh init). ----
  mgr = ckpt.manager(workdir, keep=config.keep_checkpoints)
  abstract_sharded = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sharding)
  state, latest = ckpt.restore_latest(mgr, abstract_sharded, log=log)
  if state is not None:
    log(f'resumed from {mgr.directory}/{latest} (step {latest})')
  else:
    init_rng = jax.random.fold_in(jax.random.key(config.seed), 2 ** 31 - 1)
    state = jax.jit(init_state, out_shardings=state_sharding)(init_rng)
    if config.init_from:  # fine-tuning: pre-trained weights, fresh optimiser state
      # A state spread over hosts is not fetchable, so there shapes stand in for it (and
      # head_bias_init for a replaced head's initial bias).
      init = (jax.device_get(state['params']) if jax.process_count() == 1
              else abstract['params'])
      with init_from_errors(config):
        params = load.load_pretrained(config.init_from, init, log=log,
                                      head_bias_init=config.model.head_bias_init,
                                      reset_head=config.reset_head)
      params = jax.device_put(params, state_sharding['params'])
      state = jax.jit(lambda p: dict(step=jnp.zeros((), jnp.int32), params=p,
                                     opt_state=tx.init(p)), out_shardings=state_sharding)(params)
  start_step = int(jax.device_get(state['step']))
  if jax.process_index() == 0:  # only now: a workdir of another model is left untouched
    with tf.io.gfile.GFile(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(json.dumps(config_json, indent=2))

  # ---- Input: a pure function of (seed, step), so resuming needs only the step. ----
  train_iter = data.train_iterator(config.dataset, global_batch_size=config.batch_size,
                                   mesh=mesh, seed=config.seed, start_step=start_step,
                                   prefetch=config.prefetch)

  # ---- Update step: one jit, batch over 'data', state donated. ----
  step_fn = make_train_step(model, tx, schedule, config, info.num_classes, mesh)
  repl = sharding.replicated(mesh)
  fast = cpu_tuning.compiler_options(config.model.dtype)  # {} off the CPU backend
  train_step = jax.jit(step_fn, donate_argnums=(0,), out_shardings=(state_sharding, repl),
                       compiler_options=fast)

  # ---- Evaluator. ----
  eval_step = jax.jit(make_eval_step(model, config, info.num_classes), out_shardings=repl,
                      compiler_options=fast)

  # ---- Loop. ----
  writer = metrics.MetricWriter(workdir, config.total_steps, jax.process_index() == 0)
  every = lambda n, step: n and step % n == 0  # noqa: E731
  result = dict(step=start_step, preempted=False)
  t_start, t_log, step_log = time.time(), time.time(), start_step
  pending = None  # (step, its non-finite flag): read one step late, keeping one in flight
  try:
    with preemption_guard() as stop_requested:
      for step in range(start_step + 1, config.total_steps + 1):
        batch = next(train_iter)
        state, train_metrics = train_step(state, batch)
        if step == start_step + 1:
          jax.block_until_ready(train_metrics)
          log(f'first step compiled and ran in {time.time() - t_start:.1f}s')
          t_log, step_log = time.time(), step
        if pending is not None:
          check_finite(*pending, config, log)
        pending = (step, train_metrics['nonfinite'])
        if every(config.log_every, step) or step == config.total_steps:
          values = jax.device_get(train_metrics)
          dt = time.time() - t_log
          if step > step_log:
            values['images_per_sec'] = (step - step_log) * config.batch_size / max(dt, 1e-9)
          t_log, step_log = time.time(), step
          writer.write(step, 'train', values)
          writer.progress(step, {k: values[k] for k in ('loss', 'accuracy', 'learning_rate')},
                          values.get('images_per_sec', 0) / config.batch_size)
        if every(config.eval_every, step) or step == config.total_steps:
          ev = evaluate(eval_step, state['params'], config, mesh)
          writer.write(step, 'eval', ev)
          single = ('' if 'accuracy_single_view' not in ev else
                    f' (flip-averaged; single view {ev["accuracy_single_view"]:.4f})')
          log(f'eval at step {step}: accuracy {ev["accuracy"]:.4f}{single}, loss '
              f'{ev["loss"]:.4f} ({int(ev["examples"])} examples)')
          result.update({f'eval_{k}': v for k, v in ev.items()})
        result['step'] = step
        preempted = stop_requested()
        if every(config.checkpoint_every, step) or step == config.total_steps or preempted:
          check_finite(*pending, config, log)  # never save after an unnoticed bad step
          ckpt.save(mgr, step, state, config_json)
        if preempted:
          log(f'stop requested (signal): saved a checkpoint at step {step}; rerun the same '
              'command to resume from it')
          result['preempted'] = True
          break
  finally:  # also on errors: stop the input thread, finish pending saves
    train_iter.close()
    mgr.wait_until_finished()

  if start_step >= config.total_steps:  # already finished: report the final evaluation
    ev = evaluate(eval_step, state['params'], config, mesh)
    result.update({f'eval_{k}': v for k, v in ev.items()})
    log(f'workdir already at step {start_step} = total_steps; eval accuracy '
        f'{ev["accuracy"]:.4f}')
  mgr.wait_until_finished()
  mgr.close()
  writer.close()
  result.update(train_seconds=time.time() - t_start, checkpoint_dir=str(mgr.directory),
                metrics_file=writer.jsonl_path)
  return result
