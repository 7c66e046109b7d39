"""The shared name vocabulary of ViT parameters, for every checkpoint format.

Canonical names are our model's own (vit_jax/models/vit.py), which are those of the
published vit_jax .npz files (ViT-B_16.npz, the AugReg files). Old big_vision files keep
the learned position embeddings at `Transformer/pos_embedding` (OLD_BV_POSEMB);
`canonical_posemb` renames that where params come in. Flat keys join the tree path
with '/'. Shapes: P patch, C channels, D width, K heads, Dh = D/K, M mlp_dim,
R representation_size, L classes, T = (1 if cls) + N position-embedding tokens.

  embedding/{kernel (P, P, C, D), bias (D,)}
  cls (1, 1, D)                                        classifier='token' only
  Transformer/pos_embedding (1, T, D)                  posemb='learn' only; class slot first
  Transformer/encoderblock_{i}/                        i = 0..depth-1, or scanned:
  Transformer/encoderblock/                            every leaf with a leading depth axis
      LayerNorm_0/{scale, bias} (D,)
      MultiHeadDotProductAttention_1/{query, key, value}/{kernel (D, K, Dh), bias (K, Dh)}
      MultiHeadDotProductAttention_1/out/{kernel (K, Dh, D), bias (D,)}
      LayerNorm_2/{scale, bias} (D,)
      MlpBlock_3/Dense_0/{kernel (D, M), bias (M,)}, MlpBlock_3/Dense_1/{kernel (M, D), bias (D,)}
  Transformer/encoder_norm/{scale, bias} (D,)
  MAPHead_0/                                           classifier='map' only
      probe (1, 1, D), MultiHeadDotProductAttention_0/..., LayerNorm_0/..., MlpBlock_0/...
  pre_logits/{kernel (D, R), bias (R,)}                representation_size only
  head/{kernel (R or D, L), bias (L,)}                 num_classes only

Each foreign format (vit_npz, big_vision_npz, later PyTorch timm / Hugging Face) is one
module that maps its flat dict to and from this canonical flat dict; loading, inspection
and conversion work on canonical names only. Helpers here take numpy arrays, jax arrays
or shape-only structs (anything with `.shape` and `.dtype`), so layouts can be checked
without allocating weights.
"""

import re
from typing import Any, Mapping, Optional

import numpy as np

SEP = '/'

EMBEDDING = 'embedding'
CLS = 'cls'
POSEMB = 'Transformer/posembed_input/pos_embedding'   # our model and the vit_jax files
OLD_BV_POSEMB = 'Transformer/pos_embedding'           # pre-2022 big_vision files
ENCODER_NORM = 'Transformer/encoder_norm'
BLOCK = 'Transformer/encoderblock_{}'       # per-block layout
SCANNED_BLOCK = 'Transformer/encoderblock'  # scanned layout (leading depth axis)
MAP_HEAD = 'MAPHead_0'
PRE_LOGITS = 'pre_logits'
HEAD = 'head'

# The four sub-modules of an encoder block, canonical (pre-Linen numbering, as in the
# published files) and as Flax Linen numbers them when modules are left unnamed (the
# vision_transformer Linen code and big_vision write these).
BLOCK_MODULES = ('LayerNorm_0', 'MultiHeadDotProductAttention_1', 'LayerNorm_2', 'MlpBlock_3')
LINEN_BLOCK_MODULES = ('LayerNorm_0', 'MultiHeadDotProductAttention_0', 'LayerNorm_1',
                       'MlpBlock_0')
MAP_HEAD_MODULES = ('probe', 'MultiHeadDotProductAttention_0', 'LayerNorm_0', 'MlpBlock_0')

_BLOCK_RE = re.compile(r'^Transformer/encoderblock(?:_(\d+))?/(.+)$')


# ---- Trees <-> flat dicts. ----

def flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """{'a': {'b': x}} -> {'a/b': x}. Leaves are anything that is not a mapping."""
  flat = {}
  for k, v in tree.items():
    key = f'{prefix}{k}'
    if isinstance(v, Mapping):
      flat.update(flatten(v, key + SEP))
    else:
      flat[key] = v
  return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """{'a/b': x} -> {'a': {'b': x}}; the inverse of `flatten`."""
  tree: dict[str, Any] = {}
  for key, v in flat.items():
    *parents, leaf = key.split(SEP)
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
      if not isinstance(node, dict):
        raise ValueError(f'key {key!r} nests under {p!r}, which is also a leaf.')
    node[leaf] = v
  return tree


def as_flat(params: Mapping[str, Any]) -> dict[str, Any]:
  """A nested tree or an already flat dict -> flat dict."""
  return flatten(params) if any(isinstance(v, Mapping) for v in params.values()) else dict(
      params)


def canonical_posemb(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Renames OLD_BV_POSEMB to POSEMB."""
  return {(POSEMB if k == OLD_BV_POSEMB else k): v for k, v in flat.items()}


# ---- Blocks. ----

def parse_block_key(key: str) -> Optional[tuple[Optional[int], str]]:
  """'Transformer/encoderblock_3/LayerNorm_0/scale' -> (3, 'LayerNorm_0/scale');
  scanned 'Transformer/encoderblock/...' -> (None, ...); any other key -> None."""
  m = _BLOCK_RE.match(key)
  if not m:
    return None
  return (None if m.group(1) is None else int(m.group(1))), m.group(2)


def is_scanned(flat: Mapping[str, Any]) -> bool:
  return any(k.startswith(SCANNED_BLOCK + SEP) for k in flat)


def depth(flat: Mapping[str, Any]) -> int:
  """Number of encoder blocks, in either layout."""
  if is_scanned(flat):
    return int(next(v.shape[0] for k, v in flat.items() if k.startswith(SCANNED_BLOCK + SEP)))
  ids = {p[0] for p in map(parse_block_key, flat) if p is not None}
  return len(ids)


def rename_linen_block_modules(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Blocks saved with Linen numbering (MultiHeadDotProductAttention_0, LayerNorm_1,
  MlpBlock_0) -> canonical numbering. Blocks already canonical are left alone."""
  linen_blocks = set()
  for k in flat:
    p = parse_block_key(k)
    if p and p[1].split(SEP)[0] in LINEN_BLOCK_MODULES[1:]:
      linen_blocks.add(p[0])
  rename = dict(zip(LINEN_BLOCK_MODULES, BLOCK_MODULES))
  out = {}
  for k, v in flat.items():
    p = parse_block_key(k)
    if p and p[0] in linen_blocks:
      module, _, rest = p[1].partition(SEP)
      k = f'{k[:len(k) - len(p[1])]}{rename.get(module, module)}{SEP}{rest}'
    out[k] = v
  return out


def to_linen_block_modules(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Canonical block numbering -> Linen numbering (the inverse of the above)."""
  rename = dict(zip(BLOCK_MODULES, LINEN_BLOCK_MODULES))
  out = {}
  for k, v in flat.items():
    p = parse_block_key(k)
    if p:
      module, _, rest = p[1].partition(SEP)
      k = f'{k[:len(k) - len(p[1])]}{rename.get(module, module)}{SEP}{rest}'
    out[k] = v
  return out


def is_shape_only(x) -> bool:
  """True for jax.ShapeDtypeStruct / ShapeOnly (no data), False for numpy or jax arrays."""
  return not hasattr(x, '__array__')


def _stack(xs):
  if any(is_shape_only(x) for x in xs):
    return ShapeOnly((len(xs), *xs[0].shape), xs[0].dtype)
  return np.stack([np.asarray(x) for x in xs])


class ShapeOnly:
  """A (shape, dtype) stand-in for an array, like jax.ShapeDtypeStruct but numpy-only."""

  def __init__(self, shape, dtype):
    self.shape, self.dtype = tuple(shape), np.dtype(dtype)

  def __repr__(self):
    return f'ShapeOnly({self.shape}, {self.dtype})'


def to_scanned(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Per-block layout -> scanned layout (host-side numpy, leading depth axis).

  Same result as `vit_jax.models.scan_params`, but stays in host memory so that a loaded
  checkpoint can be put on devices directly sharded.
  """
  if is_scanned(flat):
    return dict(flat)
  out, blocks = {}, {}
  for k, v in flat.items():
    p = parse_block_key(k)
    if p is None:
      out[k] = v
    else:
      blocks.setdefault(p[1], {})[p[0]] = v
  n = depth(flat)
  for leaf, by_block in sorted(blocks.items()):
    if sorted(by_block) != list(range(n)):
      missing = sorted(set(range(n)) - set(by_block))
      raise ValueError(f'cannot stack blocks: {leaf!r} is missing from '
                       f'{[BLOCK.format(i) for i in missing]}.')
    shapes = {tuple(x.shape) for x in by_block.values()}
    if len(shapes) > 1:
      raise ValueError(f'cannot stack blocks: {leaf!r} has different shapes {shapes}.')
    out[f'{SCANNED_BLOCK}{SEP}{leaf}'] = _stack([by_block[i] for i in range(n)])
  return out


def to_per_block(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Scanned layout -> per-block layout (the inverse of `to_scanned`)."""
  if not is_scanned(flat):
    return dict(flat)
  out, n = {}, depth(flat)
  for k, v in flat.items():
    p = parse_block_key(k)
    if p is None or p[0] is not None:
      out[k] = v
      continue
    for i in range(n):
      key = f'{BLOCK.format(i)}{SEP}{p[1]}'
      out[key] = ShapeOnly(v.shape[1:], v.dtype) if is_shape_only(v) else np.asarray(v)[i]
  return out


# ---- The canonical key set and shapes of a model. ----

def _dense(prefix, n_in, n_out):
  return {f'{prefix}/kernel': (n_in, n_out), f'{prefix}/bias': (n_out,)}


def _layer_norm(prefix, d):
  return {f'{prefix}/scale': (d,), f'{prefix}/bias': (d,)}


def _attention(prefix, d, k):
  shapes = {}
  for proj in ('query', 'key', 'value'):
    shapes.update({f'{prefix}/{proj}/kernel': (d, k, d // k),
                   f'{prefix}/{proj}/bias': (k, d // k)})
  shapes.update({f'{prefix}/out/kernel': (k, d // k, d), f'{prefix}/out/bias': (d,)})
  return shapes


def block_shapes(width: int, mlp_dim: int, num_heads: int) -> dict[str, tuple]:
  """Leaf name within a block -> shape, canonical numbering."""
  ln0, attn, ln2, mlp = BLOCK_MODULES
  return {**_layer_norm(ln0, width), **_attention(attn, width, num_heads),
          **_layer_norm(ln2, width), **_dense(f'{mlp}/Dense_0', width, mlp_dim),
          **_dense(f'{mlp}/Dense_1', mlp_dim, width)}


def canonical_shapes(*, width: int, depth: int, mlp_dim: int, num_heads: int,
                     patch_size: int, grid: tuple[int, int] = (14, 14), channels: int = 3,
                     classifier: str = 'token', posemb: str = 'learn',
                     representation_size: Optional[int] = None,
                     num_classes: Optional[int] = 1000, scan: bool = False
                     ) -> dict[str, tuple]:
  """Every canonical key of a ViT with these settings -> its shape."""
  d = width
  shapes = {f'{EMBEDDING}/kernel': (patch_size, patch_size, channels, d),
            f'{EMBEDDING}/bias': (d,)}
  prefix = 1 if classifier == 'token' else 0
  if classifier == 'token':
    shapes[CLS] = (1, 1, d)
  if posemb == 'learn':
    shapes[POSEMB] = (1, prefix + grid[0] * grid[1], d)
  for leaf, shape in block_shapes(d, mlp_dim, num_heads).items():
    if scan:
      shapes[f'{SCANNED_BLOCK}/{leaf}'] = (depth, *shape)
    else:
      shapes.update({f'{BLOCK.format(i)}/{leaf}': shape for i in range(depth)})
  shapes.update(_layer_norm(ENCODER_NORM, d))
  if classifier == 'map':
    _, attn, ln, mlp = MAP_HEAD_MODULES
    shapes.update({f'{MAP_HEAD}/probe': (1, 1, d),
                   **_attention(f'{MAP_HEAD}/{attn}', d, num_heads),
                   **_layer_norm(f'{MAP_HEAD}/{ln}', d),
                   **_dense(f'{MAP_HEAD}/{mlp}/Dense_0', d, mlp_dim),
                   **_dense(f'{MAP_HEAD}/{mlp}/Dense_1', mlp_dim, d)})
  if representation_size is not None:
    shapes.update(_dense(PRE_LOGITS, d, representation_size))
  if num_classes is not None:
    shapes.update(_dense(HEAD, representation_size or d, num_classes))
  return shapes


def num_params(flat: Mapping[str, Any]) -> int:
  return int(sum(int(np.prod(v.shape)) for v in flat.values()))


# ---- Key spelling shared by the .npz formats. ----

def normalize_separator(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Keys joined with '::' or '.' (some exporters) -> joined with '/'."""
  if any(SEP in k for k in flat):
    return dict(flat)
  for sep in ('::', '.'):
    if any(sep in k for k in flat):
      return {k.replace(sep, SEP): v for k, v in flat.items()}
  return dict(flat)


def strip_prefix(flat: Mapping[str, Any], prefix: str) -> dict[str, Any]:
  """Keeps only the keys under `prefix` ('params/', 'opt/target/', ...), without it."""
  prefix = prefix.rstrip(SEP) + SEP
  return {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}


def find_params_prefix(flat: Mapping[str, Any]) -> str:
  """'' when 'embedding/kernel' is at the top; else the path above it ('params/',
  'opt/target/', 'params/img/' for a SigLIP image tower, ...)."""
  leaf = f'{EMBEDDING}/kernel'
  if leaf in flat:
    return ''
  found = sorted(k[:-len(leaf)] for k in flat if k.endswith(SEP + leaf))
  return found[0] if len(found) == 1 else ''
