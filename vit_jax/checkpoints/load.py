"""Loading any ViT checkpoint into a model for fine-tuning, and telling what a file holds.

    params = load_pretrained('ViT-B_16.npz', init_params)   # init_params: model.init(...)
                                                            # ['params'] or its eval_shape
The format is read from the keys (vit_jax .npz, big_vision .npz) or the path (a directory:
an orbax train-state checkpoint of our trainer). Then, to fit the target model:
  - blocks are stacked or unstacked to the target's layout (scanned or per-block);
  - learned position embeddings are resized to the target's patch grid by bilinear
    interpolation of the grid (the class-token slot kept apart), as the reference does;
  - the head is replaced by the target's own (zero-initialised) head when the number of
    classes differs, when the checkpoint has none, or when `pre_logits` is dropped;
  - `pre_logits` is kept or dropped (`keep_pre_logits`);
  - everything else must match exactly: every missing, unexpected or mis-shaped parameter
    is named in one ValueError, with what the checkpoint is and how to build a model
    that fits it.
Arrays are returned on the host (numpy, the target's dtypes), so the caller can put them
on devices directly sharded (`jax.device_put(params, shardings)`).
"""

import math
import os
import sys
from typing import Any, Callable, Mapping, Optional

import numpy as np

from vit_jax.checkpoints import big_vision_npz, hf_vit, names, timm_vit, torch_files, vit_npz

NPZ_FORMATS = {vit_npz.FORMAT: vit_npz, big_vision_npz.FORMAT: big_vision_npz}
TORCH_FORMATS = {hf_vit.FORMAT: hf_vit, timm_vit.FORMAT: timm_vit}
FORMATS = (*NPZ_FORMATS, *TORCH_FORMATS, 'orbax')


def _stderr(msg: str):
  print(msg, file=sys.stderr, flush=True)


# ---- Reading any format into canonical names. ----

def detect_format(flat: Mapping[str, Any], source: str = 'params') -> str:
  """'vit_npz' or 'big_vision_npz' from the keys (prefix already stripped)."""
  for name, module in NPZ_FORMATS.items():
    if module.matches(flat):
      return name
  keys = sorted(flat)
  raise ValueError(
      f'{source}: unknown checkpoint format: no {names.EMBEDDING}/kernel key at the top or '
      f'under one prefix. {len(keys)} keys, the first: {keys[:8]}. Expected a vit_jax or '
      'big_vision ViT .npz; if the ViT sits under a prefix (e.g. a two-tower model), pass '
      "it: prefix='params/img/' (CLI: --prefix). See what it holds: "
      f'python -m vit_jax.convert --inspect {source}')


def detect_torch_format(sd: Mapping[str, Any], source: str) -> str:
  """'hf_vit' or 'timm_vit' from the keys of a PyTorch state dict."""
  for name, module in TORCH_FORMATS.items():
    if module.matches(sd):
      return name
  keys = sorted(sd)
  raise ValueError(
      f'{source}: a PyTorch state dict, but not a ViT this code reads: no '
      f'{hf_vit.PATCH_KEY} (Hugging Face) or {timm_vit.PATCH_KEY} (timm) key. {len(keys)} '
      f'keys, the first: {keys[:8]}.')


def read_torch(path: str, *, format: Optional[str] = None,  # pylint: disable=redefined-builtin
               num_heads: Optional[int] = None) -> tuple[str, dict[str, np.ndarray], dict]:
  """A Hugging Face or timm checkpoint -> (format, canonical flat, its config.json or {})."""
  sd, config = torch_files.read_state_dict(path)
  format = format or detect_torch_format(sd, path)
  flat = TORCH_FORMATS[format].to_canonical(sd, config, num_heads=num_heads, source=path)
  return format, flat, config


def orbax_states(path: str) -> list[str]:
  """WORKDIR, WORKDIR/checkpoints, .../checkpoints/STEP or .../STEP/state -> the 'state'
  item directories of our trainer's orbax checkpoints that the path names: every step,
  newest first, for a workdir or its checkpoints/; the one step when it names a step."""
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, 'checkpoints')):
    path = os.path.join(path, 'checkpoints')
  steps = [d for d in os.listdir(path) if d.isdigit()] if os.path.isdir(path) else []
  if steps and not os.path.isdir(os.path.join(path, 'state')):
    named = [os.path.join(path, s, 'state') for s in sorted(steps, key=int, reverse=True)]
  else:
    named = [path if os.path.basename(path) == 'state' else os.path.join(path, 'state')]
  found = [d for d in named if os.path.isdir(d)]
  if not found:
    raise FileNotFoundError(
        f'{path!r} is not an orbax train-state checkpoint: expected WORKDIR, '
        'WORKDIR/checkpoints or WORKDIR/checkpoints/STEP containing a state/ item.')
  return found


def find_orbax_state(path: str) -> str:
  """The newest 'state' item directory that `path` names (see orbax_states)."""
  return orbax_states(path)[0]


def read_orbax(path: str, log: Callable[[str], None] = _stderr
               ) -> tuple[str, dict[str, np.ndarray]]:
  """Our trainer's orbax checkpoint -> (its state directory, canonical flat params).

  For a workdir, an unreadable newest step (a truncated file) is reported and the
  previous one read, as the trainer does on resume; a step named explicitly is read or
  fails."""
  from vit_jax.checkpoints import train_state  # pylint: disable=g-import-not-at-top
  candidates, failed = orbax_states(path), []
  for state_dir in candidates:
    try:
      state = train_state.restore_on_host(state_dir)
    except train_state.CheckpointError as e:
      failed.append(f'{os.path.dirname(state_dir)} ({str(e)[-200:]})')
      if state_dir != candidates[-1]:
        log(f'checkpoint {os.path.dirname(state_dir)} is unreadable ({str(e)[-120:]}); '
            'reading the one before it')
      continue
    if 'params' not in state:
      raise ValueError(f'orbax checkpoint {state_dir} has no params (items: '
                       f'{sorted(state)}).')
    return state_dir, names.flatten(state['params'])
  raise train_state.CheckpointError(
      'no readable checkpoint: ' + '; '.join(failed) + '. Name a readable '
      'WORKDIR/checkpoints/STEP, or restore a good copy.')


def read_with_meta(path: str, *, format: Optional[str] = None,  # pylint: disable=redefined-builtin
                   prefix: str = '', num_heads: Optional[int] = None
                   ) -> tuple[str, dict[str, np.ndarray], dict[str, Any]]:
  """Any supported checkpoint -> (format, canonical flat dict of numpy arrays, meta).

  The layout (per-block or scanned) is the file's. num_heads: for PyTorch files, whose
  weights do not store it, when no config.json beside them says (else the named variant
  with the same dimensions decides).
  meta: what the files say beyond the weights: `approximate_gelu` (the GELU the weights
  run with; None: not said, our default applies), `image_size`, `labels` (class names)
  and `config` (our trainer's config dict for orbax checkpoints), each None if unknown.
  """
  if format is not None and format not in FORMATS:
    raise ValueError(f'unknown checkpoint format {format!r}; expected one of {FORMATS}.')
  if not os.path.exists(path):
    raise FileNotFoundError(f'checkpoint {path!r} does not exist.')
  meta = dict(approximate_gelu=None, image_size=None, labels=None, config=None)
  torch_file = format in TORCH_FORMATS or (format is None and torch_files.is_torch_path(path))
  if format == 'orbax' or (format is None and os.path.isdir(path) and not torch_file):
    state_dir, flat = read_orbax(path)
    config = orbax_config(state_dir)
    if config:
      meta.update(approximate_gelu=config['model'].get('approximate_gelu'),
                  image_size=config['dataset'].get('image_size'), config=config)
    return 'orbax', flat, meta
  if torch_file:
    format, flat, config = read_torch(path, format=format, num_heads=num_heads)
    meta.update(TORCH_FORMATS[format].meta(config))
    return format, flat, meta
  flat = vit_npz.load_npz(path, prefix)
  format = format or detect_format(flat, path)
  return format, NPZ_FORMATS[format].to_canonical(flat), meta


def read(path: str, *, format: Optional[str] = None,  # pylint: disable=redefined-builtin
         prefix: str = '', num_heads: Optional[int] = None
         ) -> tuple[str, dict[str, np.ndarray]]:
  """Any supported checkpoint -> (format, canonical flat dict); see read_with_meta."""
  fmt, flat, _ = read_with_meta(path, format=format, prefix=prefix, num_heads=num_heads)
  return fmt, flat


# ---- What a checkpoint is. ----

def _shape(flat, key) -> Optional[tuple]:
  return tuple(flat[key].shape) if key in flat else None


def _block_shape(flat, leaf) -> Optional[tuple]:
  if names.is_scanned(flat):
    s = _shape(flat, f'{names.SCANNED_BLOCK}/{leaf}')
    return s and s[1:]
  return _shape(flat, f'{names.BLOCK.format(0)}/{leaf}')


def _resnet_stem(flat) -> tuple[Optional[tuple[int, ...]], Optional[float]]:
  """(units per stage, width factor) of a hybrid's ResNet stem; (None, None) for a pure ViT."""
  root = _shape(flat, 'conv_root/kernel')
  if root is None:
    return None, None
  layers = []
  while units := {k.split('/')[1] for k in flat if k.startswith(f'block{len(layers) + 1}/')}:
    layers.append(len(units))
  return tuple(layers), root[3] / 64


def infer_variant(params: Mapping[str, Any]) -> dict[str, Any]:
  """Model settings from parameter shapes alone.

  `params`: a nested or flat params dict in our names (per-block or scanned) or a
  big_vision / vit_jax flat dict; leaves may be arrays or shape-only structs
  (jax.eval_shape). Returns width, depth, mlp_dim, num_heads, patch_size, channels,
  classifier ('token' | 'gap' | 'map'), posemb ('learn', or None: not stored, so
  'sincos2d' or 'none'), representation_size, num_classes (None: no head), grid and
  image_size (from the position embeddings; None without them), scan, num_params,
  resnet_layers and resnet_width_factor (a hybrid's stem; None for a pure ViT), and
  variant: the get_model name such as 'B/16' or 'R50+B/16' when the widths match one,
  else None.
  """
  from vit_jax.models import HYBRID_STEMS, WIDTHS, resnet  # pylint: disable=g-import-not-at-top
  flat = names.as_flat(params)
  prefix = names.find_params_prefix(flat)
  if prefix:
    flat = names.strip_prefix(flat, prefix)
  flat = NPZ_FORMATS[detect_format(flat)].to_canonical(flat)
  patch, _, channels, width = _shape(flat, f'{names.EMBEDDING}/kernel')
  ln0, attn, _, mlp = names.BLOCK_MODULES
  q = _block_shape(flat, f'{attn}/query/kernel')
  d0 = _block_shape(flat, f'{mlp}/Dense_0/kernel')
  info = dict(
      width=int(width), depth=names.depth(flat), mlp_dim=d0 and int(d0[1]),
      num_heads=q and int(q[1]), patch_size=int(patch), channels=int(channels),
      classifier=('token' if names.CLS in flat else
                  'map' if any(k.startswith(names.MAP_HEAD + '/') for k in flat) else 'gap'),
      posemb='learn' if names.POSEMB in flat else None,
      representation_size=(_shape(flat, f'{names.PRE_LOGITS}/kernel') or (None, None))[1],
      num_classes=(_shape(flat, f'{names.HEAD}/kernel') or (None, None))[1],
      grid=None, image_size=None, scan=names.is_scanned(flat),
      num_params=names.num_params(flat), variant=None)
  layers, width_factor = _resnet_stem(flat)
  info.update(resnet_layers=layers, resnet_width_factor=width_factor)
  stride = 1 if layers is None else resnet.stem_stride(layers)
  if layers is not None:
    info['channels'] = int(_shape(flat, 'conv_root/kernel')[2])
  if info['posemb'] == 'learn':
    n = flat[names.POSEMB].shape[1] - (info['classifier'] == 'token')
    if math.isqrt(n) ** 2 == n:
      info['grid'] = (math.isqrt(n),) * 2
      info['image_size'] = math.isqrt(n) * info['patch_size'] * stride
  for name, dims in WIDTHS.items():
    if dims == (info['width'], info['depth'], info['mlp_dim'], info['num_heads']):
      variant = f'{name}/{info["patch_size"] * stride}'
      if layers is None:
        info['variant'] = variant
      elif width_factor == 1:
        info['variant'] = next((h for h, stages in HYBRID_STEMS.items()
                                if stages == layers and h.endswith('+' + variant)), None)
  return info


# ---- Fitting a checkpoint to a model. ----

def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) linear interpolation with the end points aligned (as
  scipy.ndimage.zoom(order=1), the reference's resize)."""
  w = np.zeros((n_out, n_in))
  pos = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
  lo = np.clip(np.floor(pos).astype(int), 0, n_in - 1)
  hi = np.minimum(lo + 1, n_in - 1)
  frac = pos - lo
  np.add.at(w, (np.arange(n_out), lo), 1 - frac)
  np.add.at(w, (np.arange(n_out), hi), frac)
  return w


def resize_grid(grid: np.ndarray, new_hw: tuple[int, int]) -> np.ndarray:
  """(h, w, D) -> (new_h, new_w, D) by bilinear interpolation, corners kept."""
  h, w, _ = grid.shape
  out = np.einsum('ah,bw,hwd->abd', _interp_matrix(h, new_hw[0]),
                  _interp_matrix(w, new_hw[1]), grid.astype(np.float64))
  return out.astype(grid.dtype)


def _square_grid(n: int, what: str) -> tuple[int, int]:
  g = math.isqrt(n)
  if g * g != n:
    raise ValueError(f'{what}: {n} grid tokens are not a square grid; pass grid=(h, w).')
  return g, g


def resize_posemb(posemb: np.ndarray, num_tokens: int, *, prefix_old: int, prefix_new: int,
                  grid: Optional[tuple[int, int]] = None) -> np.ndarray:
  """(1, prefix_old + h*w, D) -> (1, prefix_new + H*W, D): the grid part interpolated,
  the class slot kept (or zero when the old one has none, or dropped)."""
  posemb = np.asarray(posemb)
  slot, old = posemb[:, :prefix_old], posemb[0, prefix_old:]
  old_hw = _square_grid(old.shape[0], 'checkpoint position embeddings')
  new_hw = grid or _square_grid(num_tokens - prefix_new, 'target position embeddings')
  if new_hw[0] * new_hw[1] != num_tokens - prefix_new:
    raise ValueError(f'grid={new_hw} does not have {num_tokens - prefix_new} tokens.')
  new = resize_grid(old.reshape(*old_hw, -1), new_hw).reshape(1, -1, old.shape[-1])
  if prefix_new:
    slot = slot[:, :prefix_new] if prefix_old else np.zeros_like(posemb[:, :prefix_new])
    return np.concatenate([slot, new], axis=1)
  return new


def _concrete(x) -> bool:
  return hasattr(x, '__array__')


def _describe(info: Mapping[str, Any]) -> str:
  fields = ('width', 'depth', 'mlp_dim', 'num_heads', 'patch_size', 'classifier', 'posemb',
            'representation_size', 'num_classes')
  return ', '.join(f'{k}={info[k]!r}' for k in fields)


def _strict_error(path, fmt, missing, unexpected, misshaped, ckpt, target,
                  original) -> ValueError:
  """ckpt: after the automatic adaptations; original: as read, to describe the file."""
  lines = [f'checkpoint {path} [{fmt}] does not fit the model: {len(missing)} missing, '
           f'{len(unexpected)} unexpected, {len(misshaped)} mis-shaped parameter(s).']
  if missing:
    lines.append('  missing (in the model, not in the checkpoint):')
    lines += [f'    {k} {tuple(target[k].shape)}' for k in missing]
  if unexpected:
    lines.append('  unexpected (in the checkpoint, not in the model):')
    lines += [f'    {k} {tuple(ckpt[k].shape)}' for k in unexpected]
  if misshaped:
    lines.append('  mis-shaped (checkpoint shape vs model shape):')
    lines += [f'    {k}: {tuple(ckpt[k].shape)} vs {tuple(target[k].shape)}'
              for k in misshaped]
  try:
    c, t = infer_variant(original), infer_variant(target)
  except (ValueError, KeyError, TypeError):  # too broken to describe
    c = t = None
  if c and t:
    lines.append(f'The checkpoint is {c["variant"] or "a ViT"}: {_describe(c)}.')
    diff = [f'{k} {t[k]!r} (checkpoint: {c[k]!r})'
            for k in ('width', 'depth', 'mlp_dim', 'num_heads', 'patch_size', 'classifier',
                      'posemb', 'representation_size') if c[k] != t[k]]
    if diff:
      lines.append(f'The model differs in: {", ".join(diff)}.')
    fix = [f"variant='{c['variant']}'"] if c['variant'] else [
        f'width={c["width"]}', f'depth={c["depth"]}', f'mlp_dim={c["mlp_dim"]}',
        f'num_heads={c["num_heads"]}']
    fix += [f"classifier='{c['classifier']}'"]
    if c['representation_size'] is not None:
      fix += [f'representation_size={c["representation_size"]}']
    pre_logits = any(k.startswith(names.PRE_LOGITS + '/') for k in missing + unexpected)
    lines.append(f'Fix: build the model the checkpoint was trained as (config.model: '
                 f'{", ".join(fix)})'
                 + (', or pass keep_pre_logits=False to drop pre_logits' if pre_logits else '')
                 + f'. Inspect the file: python -m vit_jax.convert --inspect {path}')
  return ValueError('\n'.join(lines))


def _check_exact(path, fmt, ckpt, target, original):
  """Raises the strict error unless `ckpt` has exactly `target`'s names and shapes."""
  missing = sorted(set(target) - set(ckpt))
  unexpected = sorted(set(ckpt) - set(target))
  misshaped = sorted(k for k in set(target) & set(ckpt)
                     if tuple(ckpt[k].shape) != tuple(target[k].shape))
  if missing or unexpected or misshaped:
    raise _strict_error(path, fmt, missing, unexpected, misshaped, ckpt, target, original)


def load_pretrained(path: str, init_params: Mapping[str, Any], *,
                    keep_pre_logits: Optional[bool] = None,
                    grid: Optional[tuple[int, int]] = None,
                    format: Optional[str] = None,  # pylint: disable=redefined-builtin
                    prefix: str = '',
                    head_bias_init: float = 0.0,
                    reset_head: bool = False,
                    log: Callable[[str], None] = _stderr) -> dict[str, Any]:
  """Checkpoint at `path` -> params for the model whose fresh params are `init_params`.

  init_params: the target's `model.init(...)['params']`, or its `jax.eval_shape` (shapes
    only: a replaced head is then what the model initialises it to, a zero kernel and a
    bias of `head_bias_init`, which must then be the model's).
  keep_pre_logits: True keeps the checkpoint's `pre_logits` layer (the model must have
    one: representation_size set to its width); False drops it (a model with
    representation_size then keeps its own init, which needs concrete init_params);
    None (default, the reference's rule) keeps it exactly when the model has one.
  reset_head: True gives the model a new head even when the checkpoint's has its shape (the
    paper's fine-tuning); False keeps a head of the same class count.
  grid: the target's (h, w) patch grid when it is not square.
  format: one of FORMATS; None reads it from the path and keys. prefix: the key prefix
    of the ViT inside the file when it is not found by itself (e.g. 'params/img/').
  log: where the one-line notes of what was adapted go (default: stderr).
  Returns a nested dict of numpy arrays with the structure, layout and dtypes of
  `init_params`.
  """
  target = names.flatten(init_params)
  q = next((v for k, v in target.items() if k.endswith('MultiHeadDotProductAttention_1/query/kernel')), None)
  fmt, ckpt = read(path, format=format, prefix=prefix,
                   num_heads=None if q is None else int(q.shape[-2]))
  ckpt = names.to_scanned(ckpt) if names.is_scanned(target) else names.to_per_block(ckpt)
  original = dict(ckpt)
  fresh = set()  # target keys that take the target's own initial values

  def pop(prefix_):
    return {k: ckpt.pop(k) for k in [k for k in ckpt if k.startswith(prefix_ + '/')]}

  pre_kernel, head_kernel = f'{names.PRE_LOGITS}/kernel', f'{names.HEAD}/kernel'
  keep = (pre_kernel in target) if keep_pre_logits is None else keep_pre_logits
  dropped_pre_logits = False
  if not keep:
    dropped = pop(names.PRE_LOGITS)
    dropped_pre_logits = bool(dropped)
    if dropped:
      log(f'load_pretrained: dropped pre_logits {tuple(dropped[pre_kernel].shape)} of the '
          'checkpoint')
    fresh |= {k for k in target if k.startswith(names.PRE_LOGITS + '/')}

  if head_kernel not in target:
    if pop(names.HEAD):
      log('load_pretrained: the model has no head (num_classes=None); dropped the '
          "checkpoint's")
  elif (reset_head or head_kernel not in ckpt or dropped_pre_logits
        or any(_shape(ckpt, k) != _shape(target, k) for k in (head_kernel, 'head/bias'))):
    old = pop(names.HEAD).get(head_kernel)
    fresh |= {k for k in target if k.startswith(names.HEAD + '/')}
    log(f'load_pretrained: new head {tuple(target[head_kernel].shape)} from the model\'s '
        f'initialisation (checkpoint head: {None if old is None else tuple(old.shape)})')

  if names.POSEMB in ckpt and names.POSEMB in target:
    old, new = ckpt[names.POSEMB], target[names.POSEMB]
    if old.shape != new.shape and old.shape[2] == new.shape[2]:
      ckpt[names.POSEMB] = resize_posemb(
          old, new.shape[1], prefix_old=int(names.CLS in ckpt),
          prefix_new=int(names.CLS in target), grid=grid)
      log(f'load_pretrained: resized position embeddings {tuple(old.shape)} -> '
          f'{tuple(new.shape)} (bilinear over the patch grid)')

  for k in sorted(fresh):
    if _concrete(target[k]):
      ckpt[k] = np.asarray(target[k])
    elif k == f'{names.HEAD}/bias':
      ckpt[k] = np.full(target[k].shape, head_bias_init, target[k].dtype)
    elif k.startswith(names.HEAD + '/'):
      ckpt[k] = np.zeros(target[k].shape, target[k].dtype)
    else:
      raise ValueError(f'{k} must come from the model\'s initialisation, but init_params '
                       'holds shapes only: pass concrete params (model.init(...)) or '
                       'keep_pre_logits=True.')

  _check_exact(path, fmt, ckpt, target, original)
  loaded = len(target) - len(fresh)
  log(f'load_pretrained: {loaded}/{len(target)} arrays from {path} [{fmt}]')
  return names.unflatten({k: np.asarray(ckpt[k]).astype(target[k].dtype)
                          for k in target})


# ---- A ready-to-run model from any checkpoint. ----

def orbax_config(path: str) -> Optional[dict]:
  """The training config saved with an orbax checkpoint of our trainer (None if absent)."""
  import json  # pylint: disable=g-import-not-at-top
  step_dir = os.path.dirname(find_orbax_state(path))
  for candidate in (os.path.join(step_dir, 'config', 'metadata'),
                    os.path.join(os.path.dirname(os.path.dirname(step_dir)), 'config.json')):
    if os.path.isfile(candidate):
      with open(candidate) as f:
        config = json.load(f)
      if isinstance(config, dict) and {'model', 'dataset'} <= set(config):
        return config
  return None


def load_model(path: str, *, format: Optional[str] = None,  # pylint: disable=redefined-builtin
               prefix: str = '', num_heads: Optional[int] = None, **model_overrides):
  """Any supported checkpoint -> (model, params, info), ready for `model.apply`.

  The model is the one the checkpoint was trained as: from the saved config for our
  orbax checkpoints (so settings the weights do not show, such as sincos position
  embeddings, are right), else from the parameter shapes (`infer_variant`) and what the
  files say (the GELU form of a PyTorch config). `model_overrides` replace model fields
  (e.g. dtype, or approximate_gelu=False for weights trained with the exact GELU).
  info: infer_variant's fields plus `format`, `labels` (class names, when the files have
  them), `config` (the training config dict of orbax checkpoints, else None), and
  `image_size` (the resolution it was trained at, when known).
  """
  from vit_jax.models import get_model  # pylint: disable=g-import-not-at-top
  fmt, flat, meta = read_with_meta(path, format=format, prefix=prefix, num_heads=num_heads)
  info = infer_variant(flat)
  config = meta['config']
  if config is not None:
    kw = {k: v for k, v in config['model'].items() if v is not None}
    variant = kw.pop('variant')
    kw['num_classes'] = config['dataset']['num_classes']
  else:
    variant = info['variant'] or f'mu/{info["patch_size"]}'
    kw = {k: info[k] for k in ('width', 'depth', 'mlp_dim', 'num_heads', 'classifier',
                                'representation_size', 'num_classes', 'scan')}
    kw['posemb'] = info['posemb'] or 'none'
    if info['resnet_layers'] is not None:
      kw.update(resnet_layers=info['resnet_layers'],
                resnet_width_factor=info['resnet_width_factor'])
    if meta['approximate_gelu'] is not None:
      kw['approximate_gelu'] = meta['approximate_gelu']
  kw.update(model_overrides)
  model = get_model(variant, **kw)
  flat = names.to_scanned(flat) if model.scan else names.to_per_block(flat)
  _check_fits(model, flat, path, fmt, info)
  info.update(format=fmt, config=config, labels=meta['labels'],
              image_size=meta['image_size'] or info['image_size'])
  return model, names.unflatten(flat), info


def _check_fits(model, flat: Mapping[str, Any], path: str, fmt: str, info: Mapping[str, Any]):
  """Raises load_pretrained's strict error when `flat` is not exactly `model`'s params (a
  file edited or cut short in one array would otherwise fail inside model.apply)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  side = (info['grid'] or (2, 2))[0] * model.pixels_per_token()
  images = jnp.zeros((1, side, side, info['channels']), jnp.float32)
  target = names.flatten(jax.eval_shape(
      lambda: model.init(jax.random.key(0), images)['params']))
  if info['grid'] is None:  # position embeddings of no square grid: not compared
    target.pop(names.POSEMB, None)
    flat = {k: v for k, v in flat.items() if k != names.POSEMB}
  _check_exact(path, fmt, flat, target, flat)
