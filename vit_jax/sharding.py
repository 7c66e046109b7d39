"""Device mesh and sharding rules: one 'data' axis over every device of every host.

The batch is split over 'data'. Parameters and optimiser state are either replicated, or
FSDP-sharded: each array is split over 'data' along its largest dimension that the axis
size divides (small or indivisible arrays stay replicated). The rule looks at shapes only,
so optimiser state (same shapes as the params) is sharded like the params.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

STRATEGIES = ('replicate', 'fsdp')
FSDP_MIN_SIZE = 2 ** 14  # arrays smaller than this are cheaper replicated


def make_mesh() -> Mesh:
  """A 1-D mesh over all devices of all processes."""
  return Mesh(np.asarray(jax.devices()), ('data',))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def fsdp_spec(shape, axis_size: int) -> P:
  """Shards the largest dimension divisible by axis_size; replicates small arrays."""
  if axis_size == 1 or int(np.prod(shape)) < FSDP_MIN_SIZE:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % axis_size == 0:
      return P(*([None] * dim + ['data']))
  return P()


def tree_shardings(abstract_tree, mesh: Mesh, strategy: str):
  """NamedShardings for a pytree of ShapeDtypeStructs under `strategy`."""
  if strategy not in STRATEGIES:
    raise ValueError(f'sharding={strategy!r}; expected one of {STRATEGIES}.')
  size = mesh.shape['data']
  def rule(x):
    spec = fsdp_spec(x.shape, size) if strategy == 'fsdp' else P()
    return NamedSharding(mesh, spec)
  return jax.tree.map(rule, abstract_tree)
