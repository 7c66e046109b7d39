"""The jit-able train and eval steps: pure functions of the model, the optimiser and the
config, with the losses and the on-device augmentations they use (mixup, random erasing).

Kept apart from the training loop (train.py) so that they import no input pipeline and
no checkpointing: `python -m vit_jax.benchmark` times the trainer's own step on a machine
with JAX, Flax and Optax alone (a lent GPU has no TensorFlow).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax


def loss_per_example(logits, labels, kind: str):
  """labels: (B, C) targets (one-hot, smoothed or mixed)."""
  if kind == 'sigmoid_xent':
    return optax.sigmoid_binary_cross_entropy(logits, labels).sum(-1)
  return optax.softmax_cross_entropy(logits, labels)


def global_norm(tree):
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def mixup(rng, images, labels, alpha: float):
  """Mixup (Zhang et al. 2018) with the batch rolled by one, as big_vision does."""
  p = jax.random.beta(rng, alpha, alpha)
  p = jnp.maximum(p, 1 - p)
  mix = lambda x: p * x + (1 - p) * jnp.roll(x, 1, axis=0)  # noqa: E731
  return mix(images), mix(labels)


def random_erasing(rng, images, prob: float):
  """Random erasing (Zhong et al. 2020), per example with probability `prob`: a rectangle
  of 2-33% of the image, aspect ratio 0.3-3.3, is replaced by uniform noise in [-1, 1].
  On device, like mixup, so every input path gets it and it is a function of (seed, step)."""
  b, h, w, _ = images.shape
  k_apply, k_area, k_ratio, k_y, k_x, k_noise = jax.random.split(rng, 6)
  area = jax.random.uniform(k_area, (b,), minval=0.02, maxval=1 / 3) * (h * w)
  ratio = jnp.exp(jax.random.uniform(k_ratio, (b,), minval=np.log(0.3), maxval=np.log(1 / 0.3)))
  eh = jnp.clip(jnp.round(jnp.sqrt(area * ratio)), 1, h)
  ew = jnp.clip(jnp.round(jnp.sqrt(area / ratio)), 1, w)
  y0 = jnp.floor(jax.random.uniform(k_y, (b,)) * (h - eh + 1))
  x0 = jnp.floor(jax.random.uniform(k_x, (b,)) * (w - ew + 1))
  rows, cols = jnp.arange(h)[None], jnp.arange(w)[None]
  in_rows = (rows >= y0[:, None]) & (rows < (y0 + eh)[:, None])          # (B, H)
  in_cols = (cols >= x0[:, None]) & (cols < (x0 + ew)[:, None])          # (B, W)
  erase = jax.random.bernoulli(k_apply, prob, (b,))[:, None, None]
  box = (in_rows[:, :, None] & in_cols[:, None, :] & erase)[..., None]   # (B, H, W, 1)
  noise = jax.random.uniform(k_noise, images.shape, images.dtype, -1.0, 1.0)
  return jnp.where(box, noise, images)


def all_finite(tree) -> jax.Array:
  """Whether every element is finite (a norm would overflow on large finite values)."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _is_count(path) -> bool:
  """An optax state's step counter (`count` of ScaleByAdamState, ScaleByScheduleState...)."""
  return bool(path) and getattr(path[-1], 'name', None) == 'count'


def make_train_step(model, tx, schedule, config, num_classes: int, mesh):
  """(state, batch) -> (state, metrics). Randomness is a function of (seed, step) only."""
  k = config.grad_accum_steps
  microbatch_sharding = jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(None, 'data'))

  def loss_fn(params, images, labels, rng):
    logits, _ = model.apply({'params': params}, images, train=True, rngs={'dropout': rng})
    return loss_per_example(logits, labels, config.loss).mean(), logits

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state, batch):
    step, params = state['step'], state['params']
    rng = jax.random.fold_in(jax.random.key(config.seed), step)
    mix_rng, drop_rng = jax.random.split(rng)
    images, int_labels = batch['image'], batch['label']
    labels = jax.nn.one_hot(int_labels, num_classes)
    if config.random_erasing > 0:
      images = random_erasing(jax.random.fold_in(rng, 1), images, config.random_erasing)
    if config.mixup_alpha > 0:
      images, labels = mixup(mix_rng, images, labels, config.mixup_alpha)
    if config.label_smoothing > 0:
      labels = optax.smooth_labels(labels, config.label_smoothing)

    if k == 1:
      (loss, logits), grads = grad_fn(params, images, labels, drop_rng)
    else:
      # k equal microbatches, example i in microbatch i % k, so each is spread over all
      # devices; the mean of their mean-loss gradients is the full-batch gradient.
      def split(x):
        x = x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)
        return jax.lax.with_sharding_constraint(x, microbatch_sharding)
      def micro(grads_acc, xs):
        i, im, lb = xs
        (loss, logits), g = grad_fn(params, im, lb, jax.random.fold_in(drop_rng, i))
        return jax.tree.map(jnp.add, grads_acc, g), (loss, logits)
      zeros = jax.tree.map(jnp.zeros_like, params)
      grads, (losses, logits) = jax.lax.scan(
          micro, zeros, (jnp.arange(k), split(images), split(labels)))
      grads = jax.tree.map(lambda g: g / k, grads)
      loss = losses.mean()
      logits = logits.swapaxes(0, 1).reshape(-1, num_classes)

    updates, opt_state = tx.update(grads, state['opt_state'], params)
    grad_norm = global_norm(grads)
    # A non-finite loss, gradient or update (an optimiser state that under- or overflows)
    # never reaches the state: the update is dropped (the host then stops or carries on,
    # per config.nonfinite), so every saved state is good. The optimiser's step counts
    # still advance, so its schedule stays at schedule(step), the rate logged.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & all_finite(updates)
    keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
    opt_state = jax.tree_util.tree_map_with_path(
        lambda path, new, old: new if _is_count(path) else keep(new, old),
        opt_state, state['opt_state'])
    new_state = dict(step=step + 1, opt_state=opt_state,
                     params=jax.tree.map(keep, optax.apply_updates(params, updates), params))
    out = dict(loss=loss, accuracy=jnp.mean(jnp.argmax(logits, -1) == int_labels),
               grad_norm=grad_norm, learning_rate=schedule(step),
               nonfinite=1.0 - finite.astype(jnp.float32))
    return new_state, out

  return train_step


def make_eval_step(model, config, num_classes: int):
  """Sums of correct predictions and loss over a padded batch (mask = real examples).

  With config.eval_flip_average the prediction averages the logits of each image and of
  its left-right mirror (test-time augmentation, for models trained with flips); the
  single-view figures are summed too, so both accuracies are logged."""
  def sums(logits, batch, suffix=''):
    labels = jax.nn.one_hot(batch['label'], num_classes)
    mask = batch['mask']
    correct = (jnp.argmax(logits, -1) == batch['label']) * mask
    loss = loss_per_example(logits, labels, config.loss) * mask
    return {f'correct{suffix}': correct.sum(), f'loss{suffix}': loss.sum()}

  def eval_step(params, batch):
    logits, _ = model.apply({'params': params}, batch['image'])
    out = dict(count=batch['mask'].sum())
    if config.eval_flip_average:
      mirrored, _ = model.apply({'params': params}, batch['image'][:, :, ::-1])
      out.update(sums(logits, batch, '_single_view'))
      logits = (logits + mirrored) / 2
    out.update(sums(logits, batch))
    return out
  return eval_step
