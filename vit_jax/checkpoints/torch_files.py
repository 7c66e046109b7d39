"""PyTorch checkpoints on disk, and the PyTorch <-> Flax tensor layouts; shared by the
Hugging Face (`hf_vit`) and timm (`timm_vit`) formats.

Files: `.safetensors` (read and written without PyTorch), `.pth` / `.pt` / `.bin`
(`torch.save` state dicts; PyTorch needed), sharded `*.index.json` sets, and Hugging Face
`save_pretrained` directories (`model.safetensors` or `pytorch_model.bin`, plus
`config.json`). Training checkpoints that wrap the state dict (`{'state_dict': ...}`,
`{'model': ...}`, DDP's `module.` prefix) are unwrapped.

Layouts: a torch Linear stores (out, in), Flax Dense (in, out); a torch Conv2d
(out, in, kh, kw), Flax Conv (kh, kw, in, out); attention projections are split by head
in Flax ((D, K, Dh) in, (K, Dh, D) out). Each format is a list of `Rule`s, each naming a
torch module, a canonical module and the kind of conversion; `to_canonical` and
`from_canonical` apply them, and a torch key no rule consumes is an error by name.
"""

import json
import os
import tempfile
from typing import Any, Mapping, NamedTuple, Optional

import numpy as np

WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin')
INDEX_FILES = ('model.safetensors.index.json', 'pytorch_model.bin.index.json')
EXTENSIONS = ('.safetensors', '.pth', '.pt', '.bin')


# ---- Files. ----

def is_torch_path(path: str) -> bool:
  """A PyTorch weights file, an index of shards, or a directory holding them."""
  if os.path.isdir(path):
    return any(os.path.isfile(os.path.join(path, f)) for f in WEIGHT_FILES + INDEX_FILES)
  return path.endswith(EXTENSIONS) or path.endswith('.index.json')


def _torch():
  from vit_jax.torch_peers import import_torch  # pylint: disable=g-import-not-at-top
  return import_torch()


def _tensor_to_numpy(t) -> np.ndarray:
  t = t.detach().cpu()
  if not t.dtype.is_floating_point or t.dtype in (_torch().float32, _torch().float64,
                                                  _torch().float16):
    return t.numpy()
  return t.float().numpy()  # bfloat16 etc.: numpy has no such dtype; widening is exact


def _widen(x: np.ndarray) -> np.ndarray:
  """bfloat16 (ml_dtypes) and other non-numpy floats -> float32, exactly."""
  if x.dtype in (np.float16, np.float32, np.float64) or x.dtype.kind in 'iub':
    return x
  return x.astype(np.float32)


def _unwrap(obj, path: str) -> dict:
  """A loaded .pth object -> its flat {name: tensor} state dict."""
  torch = _torch()
  while isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
    inner = [k for k in ('state_dict', 'model', 'module', 'model_state_dict', 'params')
             if isinstance(obj.get(k), Mapping)]
    if not inner:
      raise ValueError(f'{path}: no state dict found (top-level keys {sorted(obj)[:10]}); '
                       "expected {name: tensor} or {'state_dict' | 'model': {...}}.")
    obj = obj[inner[0]]
  if not isinstance(obj, Mapping):
    raise ValueError(f'{path}: holds a {type(obj).__name__}, not a state dict; save '
                     'model.state_dict(), not the model.')
  sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
  if sd and all(k.startswith('module.') for k in sd):  # DistributedDataParallel
    sd = {k[len('module.'):]: v for k, v in sd.items()}
  return sd


def _read_one(path: str) -> dict[str, np.ndarray]:
  if path.endswith('.safetensors'):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    return {k: _widen(v) for k, v in load_file(path).items()}
  torch = _torch()
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # noqa: BLE001  (pickle errors come in many types)
    raise ValueError(f'{path}: not a readable PyTorch state dict ({type(e).__name__}: '
                     f'{e}).') from e
  return {k: _tensor_to_numpy(v) for k, v in _unwrap(obj, path).items()}


def _weights_and_config(path: str) -> tuple[list[str], Optional[str]]:
  """The weight file(s) to read for `path` and the config.json beside them, if any."""
  folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
  config = os.path.join(folder, 'config.json')
  config = config if os.path.isfile(config) else None
  if os.path.isdir(path):
    for name in INDEX_FILES + WEIGHT_FILES:
      if os.path.isfile(os.path.join(path, name)):
        path = os.path.join(path, name)
        break
  if path.endswith('.index.json'):
    with open(path) as f:
      shards = sorted(set(json.load(f)['weight_map'].values()))
    return [os.path.join(os.path.dirname(path), s) for s in shards], config
  return [path], config


def read_state_dict(path: str) -> tuple[dict[str, np.ndarray], dict]:
  """A PyTorch checkpoint -> ({torch name: numpy array}, config.json beside it or {})."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'checkpoint {path!r} does not exist.')
  files, config_path = _weights_and_config(path)
  sd = {}
  for f in files:
    sd.update(_read_one(f))
  config = {}
  if config_path:
    with open(config_path) as f:
      config = json.load(f)
  return sd, config


def _atomic(path: str, write_to):
  """Runs write_to(tmp) and renames tmp to `path`: a killed write leaves no partial file."""
  path = os.path.abspath(path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix='.tmp')
  os.close(fd)
  try:
    write_to(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def is_directory_target(path: str) -> bool:
  """A DST that is a directory, ends in '/', or has no extension: a Hugging Face-style
  directory (weights + config.json)."""
  return os.path.isdir(path) or path.endswith(os.sep) or '.' not in os.path.basename(path)


def write_state_dict(path: str, sd: Mapping[str, np.ndarray],
                     config: Optional[dict] = None) -> list[str]:
  """Writes `sd` as safetensors (no PyTorch needed) or torch.save (.pth/.pt/.bin); a
  directory gets model.safetensors + config.json (what `from_pretrained` reads).
  Returns the paths written."""
  sd = {k: np.ascontiguousarray(v, dtype=np.float32 if v.dtype.kind == 'f' else v.dtype)
        for k, v in sd.items()}
  written = []
  if is_directory_target(path):
    os.makedirs(path, exist_ok=True)
    if config is not None:
      cfg_path = os.path.join(path, 'config.json')
      _atomic(cfg_path, lambda t: open(t, 'w').write(json.dumps(config, indent=2) + '\n'))
      written.append(cfg_path)
    path = os.path.join(path, WEIGHT_FILES[0])
  if not path.endswith(EXTENSIONS):
    raise ValueError(f'{path!r}: PyTorch weights are written as {", ".join(EXTENSIONS)} '
                     'or into a directory (a name without an extension).')
  if path.endswith('.safetensors'):
    from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
    _atomic(path, lambda t: save_file(sd, t, metadata={'format': 'pt'}))
  else:
    torch = _torch()
    _atomic(path, lambda t: torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, t))
  return [path] + written


# ---- Layouts. ----

class Rule(NamedTuple):
  """torch module name <-> canonical module name, converted as `kind`:
  'dense' (Linear), 'conv' (Conv2d), 'ln' (LayerNorm), 'heads_in' (a query/key/value
  Linear, split by head), 'heads_out' (the attention output Linear), 'raw' (a tensor)."""
  torch: str
  canonical: str
  kind: str


def _parts(rule: Rule) -> list[tuple[str, str]]:
  """(torch key, canonical key) pairs of one rule."""
  if rule.kind == 'raw':
    return [(rule.torch, rule.canonical)]
  weight = 'scale' if rule.kind == 'ln' else 'kernel'
  return [(f'{rule.torch}.weight', f'{rule.canonical}/{weight}'),
          (f'{rule.torch}.bias', f'{rule.canonical}/bias')]


def _to_flax(kind: str, leaf: str, x: np.ndarray, num_heads: int) -> np.ndarray:
  if leaf == 'bias':
    return x.reshape(num_heads, -1) if kind == 'heads_in' else x
  if kind == 'dense':
    return x.T
  if kind == 'conv':
    return x.transpose(2, 3, 1, 0)
  if kind == 'heads_in':
    return x.T.reshape(x.shape[1], num_heads, -1)
  if kind == 'heads_out':
    return x.T.reshape(num_heads, -1, x.shape[0])
  return x


def _to_torch(kind: str, leaf: str, x: np.ndarray) -> np.ndarray:
  if leaf == 'bias':
    return x.reshape(-1)
  if kind == 'dense':
    return x.T
  if kind == 'conv':
    return x.transpose(3, 2, 0, 1)
  if kind == 'heads_in':
    return x.reshape(x.shape[0], -1).T
  if kind == 'heads_out':
    return x.reshape(-1, x.shape[-1]).T
  return x


def to_canonical(sd: Mapping[str, np.ndarray], rules: list[Rule], *, num_heads: int,
                 source: str, fmt: str) -> dict[str, np.ndarray]:
  """Applies `rules` to a torch state dict; any key left over is an error by name."""
  flat, used = {}, set()
  for rule in rules:
    for tkey, ckey in _parts(rule):
      if tkey in sd:
        flat[ckey] = np.asarray(_to_flax(rule.kind, ckey.rsplit('/', 1)[-1], sd[tkey],
                                         num_heads))
        used.add(tkey)
  left = sorted(set(sd) - used)
  if left:
    raise ValueError(
        f'{source} [{fmt}]: {len(left)} parameter(s) have no vit_jax equivalent: '
        f'{", ".join(left[:12])}{" ..." if len(left) > 12 else ""}. The model uses a '
        'feature this ViT does not have (e.g. layer scale, register tokens, QK norm, a '
        'norm after pooling); it cannot be converted exactly.')
  return flat


def from_canonical(flat: Mapping[str, Any], rules: list[Rule]) -> dict[str, np.ndarray]:
  """The inverse of `to_canonical` (the caller has checked that every key has a rule)."""
  sd = {}
  for rule in rules:
    for tkey, ckey in _parts(rule):
      if ckey in flat:
        sd[tkey] = _to_torch(rule.kind, ckey.rsplit('/', 1)[-1], np.asarray(flat[ckey]))
  return sd


def unconverted(flat: Mapping[str, Any], rules: list[Rule]) -> list[str]:
  """Canonical keys that no rule writes (so a target format cannot hold them)."""
  covered = {c for rule in rules for _, c in _parts(rule)}
  return sorted(set(flat) - covered)


def heads_from_widths(width: int, depth: int, mlp_dim: int) -> Optional[int]:
  """The head count of the named variant with these dimensions (the files do not store
  it), or None when no named variant matches."""
  from vit_jax.models import WIDTHS  # pylint: disable=g-import-not-at-top
  for w, d, m, k in WIDTHS.values():
    if (w, d, m) == (width, depth, mlp_dim):
      return k
  return None
