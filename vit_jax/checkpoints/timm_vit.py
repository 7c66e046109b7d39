"""timm `VisionTransformer` checkpoints (`timm.create_model('vit_base_patch16_224')`, ...).

  cls_token (1, 1, D), pos_embed (1, [1 +] N, D), patch_embed.proj (Conv2d),
  blocks.N.{norm1, attn.qkv (fused q|k|v: (3D, D)), attn.proj, norm2, mlp.fc1, mlp.fc2},
  norm, head; the MAP head is attn_pool.{latent, q, kv (fused k|v), proj, norm, mlp}.
Classifiers: 'token' (global_pool='token'), 'gap' (global_pool='avg', class_token=False,
fc_norm=False: our gap averages the normed tokens) and 'map' (global_pool='map').
`no_embed_class=True` files (no position embedding for the class token) read as a zero
class slot. The head count is not stored: config.json's `model_args`, else the named
variant with the same dimensions, else `num_heads=`. timm uses the exact GELU by default
(`act_layer='gelu_tanh'` is our approximate_gelu=True); `model_kwargs` says which.
Not representable (an error naming the parameters): layer scale, register tokens, QK norm,
a norm after pooling (fc_norm), a pre-norm, and a pre_logits layer (timm has none).
"""

from typing import Any, Mapping, Optional

import numpy as np

from vit_jax.checkpoints import names, torch_files
from vit_jax.checkpoints.torch_files import Rule

FORMAT = 'timm_vit'
PATCH_KEY = 'patch_embed.proj.weight'
_ATTN, _MAP_ATTN = 'MultiHeadDotProductAttention_1', f'{names.MAP_HEAD}/MultiHeadDotProductAttention_0'
_FUSED = {'attn.qkv': ('attn.q', 'attn.k', 'attn.v'), 'attn_pool.kv': ('attn_pool.k', 'attn_pool.v')}


def rules(depth: int) -> list[Rule]:
  out = [Rule('cls_token', names.CLS, 'raw'), Rule('pos_embed', names.POSEMB, 'raw'),
         Rule('patch_embed.proj', names.EMBEDDING, 'conv')]
  for i in range(depth):
    b, c = f'blocks.{i}.', f'{names.BLOCK.format(i)}/'
    out += [Rule(b + 'norm1', c + 'LayerNorm_0', 'ln'),
            Rule(b + 'attn.q', f'{c}{_ATTN}/query', 'heads_in'),
            Rule(b + 'attn.k', f'{c}{_ATTN}/key', 'heads_in'),
            Rule(b + 'attn.v', f'{c}{_ATTN}/value', 'heads_in'),
            Rule(b + 'attn.proj', f'{c}{_ATTN}/out', 'heads_out'),
            Rule(b + 'norm2', c + 'LayerNorm_2', 'ln'),
            Rule(b + 'mlp.fc1', c + 'MlpBlock_3/Dense_0', 'dense'),
            Rule(b + 'mlp.fc2', c + 'MlpBlock_3/Dense_1', 'dense')]
  m = names.MAP_HEAD
  out += [Rule('norm', names.ENCODER_NORM, 'ln'),
          Rule('attn_pool.latent', f'{m}/probe', 'raw'),
          Rule('attn_pool.q', f'{_MAP_ATTN}/query', 'heads_in'),
          Rule('attn_pool.k', f'{_MAP_ATTN}/key', 'heads_in'),
          Rule('attn_pool.v', f'{_MAP_ATTN}/value', 'heads_in'),
          Rule('attn_pool.proj', f'{_MAP_ATTN}/out', 'heads_out'),
          Rule('attn_pool.norm', f'{m}/LayerNorm_0', 'ln'),
          Rule('attn_pool.mlp.fc1', f'{m}/MlpBlock_0/Dense_0', 'dense'),
          Rule('attn_pool.mlp.fc2', f'{m}/MlpBlock_0/Dense_1', 'dense'),
          Rule('head', names.HEAD, 'dense')]
  return out


def matches(sd: Mapping[str, Any]) -> bool:
  return PATCH_KEY in sd


def _split_fused(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  out = {}
  for k, v in sd.items():
    stem, _, leaf = k.rpartition('.')
    fused = next((f for f in _FUSED if stem == f or stem.endswith('.' + f)), None)
    if fused is None:
      out[k] = v
      continue
    base = stem[:-len(fused)]
    for part, piece in zip(_FUSED[fused], np.split(v, len(_FUSED[fused]), axis=0)):
      out[f'{base}{part}.{leaf}'] = piece
  return out


def _fuse(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  out = dict(sd)
  for fused, parts in _FUSED.items():
    for k in [k for k in sd if k.rpartition('.')[0].endswith(parts[0])]:
      stem, _, leaf = k.rpartition('.')
      base = stem[:-len(parts[0])]
      out[f'{base}{fused}.{leaf}'] = np.concatenate(
          [out.pop(f'{base}{p}.{leaf}') for p in parts], axis=0)
  return out


def to_canonical(sd: Mapping[str, np.ndarray], config: Optional[Mapping] = None, *,
                 num_heads: Optional[int] = None, source: str = 'state dict'
                 ) -> dict[str, np.ndarray]:
  """A timm VisionTransformer state dict -> canonical flat."""
  depth = len({k.split('.')[1] for k in sd if k.startswith('blocks.')})
  width = sd[PATCH_KEY].shape[0]
  mlp_dim = sd['blocks.0.mlp.fc1.weight'].shape[0] if depth else None
  num_heads = (((config or {}).get('model_args') or {}).get('num_heads') or num_heads
               or torch_files.heads_from_widths(width, depth, mlp_dim))
  if not num_heads:
    raise ValueError(f'{source} [{FORMAT}]: the number of attention heads is not stored in '
                     f'the weights (width {width}, depth {depth}, mlp_dim {mlp_dim} is no '
                     'named variant): pass num_heads (CLI: --num-heads).')
  flat = torch_files.to_canonical(_split_fused(sd), rules(depth), num_heads=num_heads,
                                  source=source, fmt=FORMAT)
  if names.CLS in flat and names.POSEMB in flat:
    n = flat[names.POSEMB].shape[1]
    if int(np.sqrt(n)) ** 2 == n:  # no_embed_class: the class token has no posemb
      pe = flat[names.POSEMB]
      flat[names.POSEMB] = np.concatenate([np.zeros_like(pe[:, :1]), pe], axis=1)
  return flat


def from_canonical(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Our params -> a timm VisionTransformer state dict (build it with `model_kwargs`)."""
  flat = names.canonical_posemb(names.to_per_block(names.as_flat(params)))
  if f'{names.PRE_LOGITS}/kernel' in flat:
    raise ValueError('cannot write a timm ViT: it has a pre_logits (representation) layer, '
                     'which timm VisionTransformer does not have; convert without it or '
                     'write Hugging Face (ViTModel has it as the pooler).')
  table = rules(names.depth(flat))
  left = torch_files.unconverted(flat, table)
  if left:
    raise ValueError(f'cannot write a timm ViT: no place for {left[:8]}.')
  return _fuse(torch_files.from_canonical(flat, table))


def model_kwargs(info: Mapping[str, Any], *, approximate_gelu: bool) -> dict[str, Any]:
  """`timm.create_model('vit_base_patch16_224', pretrained=False, **kwargs)` (or
  VisionTransformer(**kwargs)) arguments of the model these params fit; `info` is
  `load.infer_variant` of them."""
  pool = {'token': 'token', 'gap': 'avg', 'map': 'map'}[info['classifier']]
  return dict(
      img_size=info['image_size'] or 224, patch_size=info['patch_size'],
      in_chans=info['channels'], num_classes=info['num_classes'] or 0, global_pool=pool,
      class_token=info['classifier'] == 'token', fc_norm=False,
      pos_embed='learn' if info['posemb'] == 'learn' else 'none',
      embed_dim=info['width'], depth=info['depth'], num_heads=info['num_heads'],
      mlp_ratio=info['mlp_dim'] / info['width'],
      act_layer='gelu_tanh' if approximate_gelu else 'gelu')


def config_json(info: Mapping[str, Any], *, approximate_gelu: bool,
                labels: Optional[list[str]] = None) -> dict:
  """A timm Hub-style config.json: `timm.create_model('local-dir:DIR', pretrained=True)`
  builds the model from it and loads DIR/model.safetensors."""
  kwargs = model_kwargs(info, approximate_gelu=approximate_gelu)
  size = kwargs['img_size']
  pretrained_cfg = dict(input_size=[info['channels'], size, size], mean=[0.5] * 3,
                        std=[0.5] * 3, interpolation='bilinear', crop_pct=1.0,
                        num_classes=kwargs['num_classes'])
  if labels:
    pretrained_cfg['label_names'] = list(labels)
  return dict(architecture='vit_base_patch16_224', num_classes=kwargs['num_classes'],
              num_features=info['width'], global_pool=kwargs['global_pool'],
              model_args=kwargs, pretrained_cfg=pretrained_cfg)


def meta(config: Mapping[str, Any]) -> dict[str, Any]:
  """What a timm config.json says beyond the weights (see load.read_with_meta)."""
  args = config.get('model_args') or {}
  pretrained = config.get('pretrained_cfg') or {}
  size = args.get('img_size') or (pretrained.get('input_size') or [None, None])[-1]
  return dict(approximate_gelu=args.get('act_layer') in ('gelu_tanh', 'gelu_pytorch_tanh'),
              image_size=size if isinstance(size, int) else None,
              labels=pretrained.get('label_names') or config.get('label_names'))
