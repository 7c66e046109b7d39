"""Optimiser and learning-rate schedule from the config (optax)."""

import jax
import optax

OPTIMIZERS = ('adamw', 'sgd')
DECAYS = ('cosine', 'linear', 'constant')


def make_schedule(opt_cfg, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to the peak, then cosine / linear decay to end_learning_rate."""
  peak, end, warmup = opt_cfg.learning_rate, opt_cfg.end_learning_rate, opt_cfg.warmup_steps
  decay_steps = max(total_steps - warmup, 1)
  if opt_cfg.decay == 'cosine':
    decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=end / peak if peak else 0.0)
  elif opt_cfg.decay == 'linear':
    decay = optax.linear_schedule(peak, end, decay_steps)
  else:
    decay = optax.constant_schedule(peak)
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def _kernels_only(params):
  """Weight decay applies to the `kernel`s (the patch embedding's too, as in big_vision),
  not to biases, norms, the class token, MAP probe or position embeddings."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], 'key', None) == 'kernel', params)


def make_optimizer(opt_cfg, total_steps: int):
  """Returns (optax transformation, schedule). Clipping sees the full-batch gradient."""
  schedule = make_schedule(opt_cfg, total_steps)
  if opt_cfg.name == 'sgd':
    tx = optax.sgd(schedule, momentum=opt_cfg.momentum or None, nesterov=opt_cfg.nesterov)
    if opt_cfg.weight_decay:
      tx = optax.chain(optax.add_decayed_weights(opt_cfg.weight_decay, _kernels_only), tx)
  else:
    tx = optax.adamw(schedule, b1=opt_cfg.b1, b2=opt_cfg.b2,
                     weight_decay=opt_cfg.weight_decay, mask=_kernels_only)
  if opt_cfg.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(opt_cfg.grad_clip_norm), tx)
  return tx, schedule
