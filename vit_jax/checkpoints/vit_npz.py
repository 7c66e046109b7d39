"""The vit_jax .npz release format (google-research/vision_transformer).

The published files (ViT-B_16.npz, ViT-L_16.npz, the AugReg files such as
Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0.npz) are one `np.savez` of the
params tree with '/'-joined keys, exactly the canonical names of `names.py`:
per-block `Transformer/encoderblock_N/...` and `Transformer/posembed_input/pos_embedding`
of shape (1, N+1, D) that includes the class-token slot (our model: the same array at
`Transformer/pos_embedding`). Also read: files written by the
Linen vision_transformer code (blocks numbered MultiHeadDotProductAttention_0,
LayerNorm_1, MlpBlock_0), old Flax-optimizer checkpoints (keys under 'opt/target/') and
a scanned layout. Written: the published layout, float32.
"""

import os
import tempfile
import zipfile
from typing import Any, Mapping

import numpy as np

from vit_jax.checkpoints import names

FORMAT = 'vit_npz'


def load_npz(path: str, prefix: str = '') -> dict[str, np.ndarray]:
  """Every array of an .npz file, keys with '/' separators and the params prefix
  (`prefix`, else the one found, e.g. 'params/') stripped."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'checkpoint file {path!r} does not exist.')
  def unreadable(reason):
    return ValueError(f'{path} is not a readable .npz checkpoint ({reason}): a download cut '
                      'short, or another kind of file; download it again.')
  arrays = None
  try:
    loaded = np.load(path, allow_pickle=False)
    if isinstance(loaded, np.lib.npyio.NpzFile):
      with loaded as f:
        arrays = {k: f[k] for k in f.files}
  except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
    # np.load reads a file that is neither a zip nor a .npy as a pickle: hence 'pickled'.
    not_zip = isinstance(e, zipfile.BadZipFile) or 'pickled' in str(e)
    raise unreadable('not a zip archive of arrays' if not_zip else
                     f'{type(e).__name__}: {e}') from e
  if arrays is None:
    raise unreadable('a single .npy array, not named parameters')
  flat = names.normalize_separator(arrays)
  prefix = prefix or names.find_params_prefix(flat)
  return names.strip_prefix(flat, prefix) if prefix else flat


def _host_array(x) -> np.ndarray:
  x = np.asarray(x)  # jax arrays: copied to host
  if x.dtype.kind == 'f' and x.dtype not in (np.float16, np.float32, np.float64):
    x = x.astype(np.float32)  # bfloat16 etc.: plain np.load cannot read them back
  return x


def save_npz(path: str, flat: Mapping[str, Any]):
  """Writes an .npz atomically (temporary file, then rename) at exactly `path`."""
  path = os.path.abspath(path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix='.npz.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, **{k: _host_array(v) for k, v in flat.items()})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; give it ordinary permissions
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def matches(flat: Mapping[str, Any]) -> bool:
  """Whether a flat dict (prefix already stripped) is in this format's layout."""
  if f'{names.EMBEDDING}/kernel' not in flat or 'pos_embedding' in flat or (
      names.OLD_BV_POSEMB in flat):  # big_vision's top-level / pre-2022 places
    return False
  if names.POSEMB in flat:
    return True
  # No learned posemb: canonical block numbering, per block, is this format's.
  return not names.is_scanned(flat) and not any(
      (p := names.parse_block_key(k)) and p[1].startswith(names.LINEN_BLOCK_MODULES[1])
      for k in flat)


def to_canonical(flat: Mapping[str, Any]) -> dict[str, Any]:
  """This format's flat dict -> canonical flat dict (layout kept: per-block or scanned)."""
  return names.rename_linen_block_modules(flat)


def from_canonical(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Our params (nested or flat, per-block or scanned) -> the published flat layout."""
  flat = names.to_per_block(names.as_flat(params))
  if f'{names.EMBEDDING}/kernel' not in flat:
    raise ValueError(f'params have no {names.EMBEDDING}/kernel: not a ViT params tree '
                     f'(keys start {sorted(flat)[:5]}).')
  return {k: _host_array(v) for k, v in flat.items()}


def read(path: str, prefix: str = '') -> dict[str, np.ndarray]:
  """A vit_jax .npz file -> canonical flat dict of numpy arrays."""
  return to_canonical(load_npz(path, prefix))


def write(path: str, params: Mapping[str, Any]):
  """Our params -> a vit_jax .npz file that the published loaders (vit_jax, timm) read."""
  save_npz(path, from_canonical(params))
