r"""Where a float32 train step loses to PyTorch: each part of a ViT block, forward and
forward + backward, in JAX (compiled as training compiles it) and in PyTorch eager.

  ./launch.sh python -m experiments.step_components [--width=192] [--batch=32]

Ti/16 shapes by default (197 tokens, width 192, 3 heads of 64, MLP 768). Writes a markdown
table to stdout; experiments/results/benchmarks/step_components.md is its committed output.
The attention core is PyTorch's fused scaled_dot_product_attention against our
written-out softmax(q k^T) v, which is what the CPU path of vit_jax.models runs.
"""

import argparse
import os
import statistics

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import cpu_tuning, torch_peers
from vit_jax.benchmark import time_steps


def _median_ms(fn, repeats):
  return 1e3 * statistics.median(time_steps(fn, warmup=2, repeats=repeats))


def components(width, batch, tokens=197, head_dim=64):
  torch = torch_peers.import_torch()
  heads, mlp = width // head_dim, 4 * width
  rng = np.random.default_rng(0)
  x = rng.standard_normal((batch, tokens, width)).astype(np.float32)
  w = (rng.standard_normal((width, mlp)) * 0.05).astype(np.float32)
  h = rng.standard_normal((batch, tokens, mlp)).astype(np.float32)
  q = (rng.standard_normal((batch, heads, tokens, head_dim)) * 0.3).astype(np.float32)
  scale, bias = np.ones(width, np.float32), np.zeros(width, np.float32)

  def jax_attention(q, k, v):
    logits = jnp.matmul(q / np.sqrt(head_dim), jnp.swapaxes(k, -1, -2))
    return jnp.matmul(jax.nn.softmax(logits, -1), v)

  def jax_layernorm(x, s, b):
    return nn.LayerNorm(epsilon=1e-6).apply({'params': {'scale': s, 'bias': b}}, x)

  F = torch.nn.functional
  return [
      ('Dense width -> MLP', lambda x, w: x @ w, (x, w), lambda x, w: x @ w),
      ('GELU (tanh)', lambda h: jax.nn.gelu(h, approximate=True), (h,),
       lambda h: F.gelu(h, approximate='tanh')),
      ('LayerNorm', jax_layernorm, (x, scale, bias),
       lambda x, s, b: F.layer_norm(x, (width,), s, b, 1e-6)),
      ('attention core', jax_attention, (q, q, q), F.scaled_dot_product_attention),
  ]


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--width', type=int, default=192)
  p.add_argument('--batch', type=int, default=32)
  p.add_argument('--repeats', type=int, default=15)
  args = p.parse_args(argv)
  torch = torch_peers.import_torch()
  torch.set_num_threads(os.cpu_count())
  options = cpu_tuning.compiler_options('float32')
  print(f'| part (width {args.width}, batch {args.batch}) | JAX fwd ms | PyTorch fwd ms | '
        'JAX fwd+bwd ms | PyTorch fwd+bwd ms | PyTorch / JAX (fwd+bwd) |')
  print('|---|---|---|---|---|---|')
  for name, jfn, arrays, tfn in components(args.width, args.batch):
    jargs = [jnp.asarray(a) for a in arrays]
    cot = jnp.asarray(np.random.default_rng(1).standard_normal(
        jax.eval_shape(jfn, *jargs).shape).astype(np.float32))
    fwd = jax.jit(jfn, compiler_options=options)
    loss = lambda *a, f=jfn, c=cot: (f(*a) * c).sum()  # noqa: E731
    both = jax.jit(jax.grad(loss, argnums=tuple(range(len(jargs)))), compiler_options=options)
    j_f = _median_ms(lambda: jax.block_until_ready(fwd(*jargs)), args.repeats)
    j_b = _median_ms(lambda: jax.block_until_ready(both(*jargs)), args.repeats)
    targs = [torch.tensor(a).requires_grad_() for a in arrays]
    tcot = torch.tensor(np.asarray(cot))

    def t_fwd():
      with torch.no_grad():
        tfn(*targs)

    def t_both():
      for a in targs:
        a.grad = None
      (tfn(*targs) * tcot).sum().backward()
    t_f = _median_ms(t_fwd, args.repeats)
    t_b = _median_ms(t_both, args.repeats)
    print(f'| {name} | {j_f:.1f} | {t_f:.1f} | {j_b:.1f} | {t_b:.1f} | {t_b / j_b:.2f} |',
          flush=True)


if __name__ == '__main__':
  main()
