"""big_vision ViT checkpoints (.npz), as read by `big_vision.models.vit.load`.

How they differ from the canonical names (`names.py`):
  - keys may sit under 'params/' (a training checkpoint, next to 'opt/...') or another
    prefix such as 'params/img/' (the image tower of a two-tower model; pass `prefix`);
  - `pos_embedding` (1, N, D) is top-level and has NO class-token slot: big_vision adds
    position embeddings to the patches and then prepends `cls`. Our token models add them
    after prepending, so on reading the class slot is a zero row, and on writing the
    slot is folded into `cls` (cls + pos_embedding[:, 0]); both ways the logits are equal;
  - blocks use Linen numbering (LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1,
    MlpBlock_0) and are either per-block `encoderblock_N` or scanned `encoderblock` with a
    leading depth axis;
  - the `map` head is `MAPHead_0/{probe, MultiHeadDotProductAttention_0, LayerNorm_0,
    MlpBlock_0}` (as ours); very old files have it at the top level.
Also read, like big_vision's `fix_old_checkpoints`: `Transformer/pos_embedding` (big_vision
before 2022, and our own model flattened), and a top-level `pos_embedding` that still
includes the class slot (N+1 tokens).
"""

import math
from typing import Any, Mapping, Optional

import numpy as np

from vit_jax.checkpoints import names
from vit_jax.checkpoints.vit_npz import _host_array, load_npz, save_npz

FORMAT = 'big_vision_npz'
POSEMB = 'pos_embedding'


def matches(flat: Mapping[str, Any]) -> bool:
  """Whether a flat dict (prefix already stripped) is in big_vision's layout."""
  if f'{names.EMBEDDING}/kernel' not in flat or names.POSEMB in flat:
    return False
  return (POSEMB in flat or names.OLD_BV_POSEMB in flat or names.is_scanned(flat)
          or any((p := names.parse_block_key(k)) and
                 p[1].startswith(names.LINEN_BLOCK_MODULES[1]) for k in flat))


def _is_square(n: int) -> bool:
  return n > 0 and math.isqrt(n) ** 2 == n


def _prepend_zero_slot(pe):
  if names.is_shape_only(pe):
    return names.ShapeOnly((pe.shape[0], pe.shape[1] + 1, pe.shape[2]), pe.dtype)
  pe = np.asarray(pe)
  return np.concatenate([np.zeros_like(pe[:, :1]), pe], axis=1)


def to_canonical(flat: Mapping[str, Any]) -> dict[str, Any]:
  """big_vision flat dict -> canonical flat dict (layout kept: per-block or scanned)."""
  flat = names.canonical_posemb(flat)
  if 'probe' in flat:  # MAP head inlined at the top level
    for k in [k for k in flat if k.split(names.SEP)[0] in names.MAP_HEAD_MODULES]:
      flat[f'{names.MAP_HEAD}/{k}'] = flat.pop(k)
  if names.CLS in flat and names.POSEMB in flat:
    # In the encoder (ours; big_vision before 2022): the slot is there unless the tokens
    # make a square grid exactly.
    t = flat[names.POSEMB].shape[1]
    if _is_square(t) and not _is_square(t - 1):
      flat[names.POSEMB] = _prepend_zero_slot(flat[names.POSEMB])
  if POSEMB in flat:
    # Top level (big_vision since 2022): no slot, unless an old file's tokens say so.
    pe = flat.pop(POSEMB)
    t = pe.shape[1]
    has_slot = not _is_square(t) and _is_square(t - 1)
    flat[names.POSEMB] = _prepend_zero_slot(pe) if (
        names.CLS in flat and not has_slot) else pe
  return names.rename_linen_block_modules(flat)


def from_canonical(params: Mapping[str, Any], *, scan: Optional[bool] = None,
                   prefix: str = '') -> dict[str, np.ndarray]:
  """Our params (nested or flat) -> big_vision flat dict. scan: None keeps the layout of
  `params`, True writes `encoderblock` with a depth axis, False `encoderblock_N`."""
  flat = {k: _host_array(v) for k, v in names.as_flat(params).items()}
  if f'{names.EMBEDDING}/kernel' not in flat:
    raise ValueError(f'params have no {names.EMBEDDING}/kernel: not a ViT params tree '
                     f'(keys start {sorted(flat)[:5]}).')
  if scan is True:
    flat = names.to_scanned(flat)
  elif scan is False:
    flat = names.to_per_block(flat)
  if names.POSEMB in flat:
    pe = flat.pop(names.POSEMB)
    if names.CLS in flat:  # fold the class slot into cls: same first token, same logits
      flat[names.CLS] = flat[names.CLS] + pe[:, :1]
      pe = pe[:, 1:]
    flat[POSEMB] = pe
  flat = names.to_linen_block_modules(flat)
  if prefix:
    flat = {f'{prefix.rstrip(names.SEP)}{names.SEP}{k}': v for k, v in flat.items()}
  return flat


def read(path: str, prefix: str = '') -> dict[str, np.ndarray]:
  """A big_vision .npz file -> canonical flat dict of numpy arrays."""
  return to_canonical(load_npz(path, prefix))


def write(path: str, params: Mapping[str, Any], *, scan: Optional[bool] = None,
          prefix: str = ''):
  """Our params -> a big_vision .npz that `big_vision.models.vit.load` reads."""
  save_npz(path, from_canonical(params, scan=scan, prefix=prefix))
