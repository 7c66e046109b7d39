"""Hugging Face `transformers` ViT checkpoints (`ViTForImageClassification`, `ViTModel`).

Two spellings of the same weights are read:
  - 'hub': the files on the Hugging Face Hub (google/vit-base-patch16-224, ...) and
    transformers 4.x: `encoder.layer.N.attention.attention.query`, `...output.dense`,
    `intermediate.dense`, `output.dense`;
  - 'v5': transformers 5 modules: `layers.N.attention.q_proj`, `o_proj`, `mlp.fc1|fc2`.
transformers 5 loads 'hub' files by renaming them, so 'hub' is what we write by default.
A classification model puts the encoder under `vit.` and the head at `classifier`;
a `ViTModel` has no prefix and may have the tanh `pooler`, which is our `pre_logits`
(representation_size == width).

The files do not store the head count: it comes from `config.json` beside the weights,
else from the named variant with the same dimensions, else `num_heads=`.
Not representable in a HF ViT (an error on writing): 'gap' and 'map' classifiers, position
embeddings that are not learned, and `pre_logits` together with a head.
GELU: HF computes `hidden_act` ('gelu' exact, 'gelu_pytorch_tanh' = our
approximate_gelu=True); we write the one the model used, so logits match.
"""

from typing import Any, Mapping, Optional

import numpy as np

from vit_jax.checkpoints import names, torch_files
from vit_jax.checkpoints.torch_files import Rule

FORMAT = 'hf_vit'
LAYOUTS = ('hub', 'v5')
LAYER_NORM_EPS = 1e-6  # our LayerNorm's (Flax default); HF's default is 1e-12

_BLOCK = {
    'hub': ('encoder.layer.{}.', [
        ('layernorm_before', 'LayerNorm_0', 'ln'),
        ('attention.attention.query', 'MultiHeadDotProductAttention_1/query', 'heads_in'),
        ('attention.attention.key', 'MultiHeadDotProductAttention_1/key', 'heads_in'),
        ('attention.attention.value', 'MultiHeadDotProductAttention_1/value', 'heads_in'),
        ('attention.output.dense', 'MultiHeadDotProductAttention_1/out', 'heads_out'),
        ('layernorm_after', 'LayerNorm_2', 'ln'),
        ('intermediate.dense', 'MlpBlock_3/Dense_0', 'dense'),
        ('output.dense', 'MlpBlock_3/Dense_1', 'dense')]),
    'v5': ('layers.{}.', [
        ('layernorm_before', 'LayerNorm_0', 'ln'),
        ('attention.q_proj', 'MultiHeadDotProductAttention_1/query', 'heads_in'),
        ('attention.k_proj', 'MultiHeadDotProductAttention_1/key', 'heads_in'),
        ('attention.v_proj', 'MultiHeadDotProductAttention_1/value', 'heads_in'),
        ('attention.o_proj', 'MultiHeadDotProductAttention_1/out', 'heads_out'),
        ('layernorm_after', 'LayerNorm_2', 'ln'),
        ('mlp.fc1', 'MlpBlock_3/Dense_0', 'dense'),
        ('mlp.fc2', 'MlpBlock_3/Dense_1', 'dense')]),
}
PATCH_KEY = 'embeddings.patch_embeddings.projection.weight'


def rules(layout: str, depth: int, encoder_prefix: str) -> list[Rule]:
  block_fmt, block_rules = _BLOCK[layout]
  p = encoder_prefix
  out = [Rule(f'{p}embeddings.cls_token', names.CLS, 'raw'),
         Rule(f'{p}embeddings.position_embeddings', names.POSEMB, 'raw'),
         Rule(f'{p}embeddings.patch_embeddings.projection', names.EMBEDDING, 'conv')]
  for i in range(depth):
    out += [Rule(p + block_fmt.format(i) + t, f'{names.BLOCK.format(i)}/{c}', k)
            for t, c, k in block_rules]
  out += [Rule(f'{p}layernorm', names.ENCODER_NORM, 'ln'),
          Rule(f'{p}pooler.dense', names.PRE_LOGITS, 'dense'),
          Rule('classifier', names.HEAD, 'dense')]
  return out


def matches(sd: Mapping[str, Any]) -> bool:
  return any(k.endswith(PATCH_KEY) for k in sd)


def _layout(sd) -> str:
  return 'v5' if any('.q_proj.' in k for k in sd) else 'hub'


def _depth(sd) -> int:
  blocks = {int(k.split('.')[i + 1]) for k in sd for i, part in enumerate(k.split('.')[:-1])
            if part in ('layer', 'layers') and k.split('.')[i + 1].isdigit()}
  return max(blocks) + 1 if blocks else 0


def to_canonical(sd: Mapping[str, np.ndarray], config: Optional[Mapping] = None, *,
                 num_heads: Optional[int] = None, source: str = 'state dict'
                 ) -> dict[str, np.ndarray]:
  """A HF ViT state dict (either spelling, with or without `vit.`) -> canonical flat."""
  patch_key = next(k for k in sd if k.endswith(PATCH_KEY))
  prefix = patch_key[:-len(PATCH_KEY)]
  layout, depth = _layout(sd), _depth(sd)
  width = sd[patch_key].shape[0]
  fc1 = f'{prefix}{_BLOCK[layout][0].format(0)}{_BLOCK[layout][1][6][0]}.weight'
  mlp_dim = sd[fc1].shape[0] if fc1 in sd else None
  num_heads = ((config or {}).get('num_attention_heads') or num_heads
               or torch_files.heads_from_widths(width, depth, mlp_dim))
  if not num_heads:
    raise ValueError(f'{source} [{FORMAT}]: the number of attention heads is not stored in '
                     f'the weights and there is no config.json beside them (width {width}, '
                     f'depth {depth}, mlp_dim {mlp_dim} is no named variant): pass '
                     'num_heads (CLI: --num-heads).')
  return torch_files.to_canonical(sd, rules(layout, depth, prefix), num_heads=num_heads,
                                  source=source, fmt=FORMAT)


def check_representable(flat: Mapping[str, Any]):
  problems = []
  if names.CLS not in flat:
    problems.append('its classifier is not a class token (HF ViT classifies the class '
                    "token only; train with model.classifier='token' or export to timm)")
  if names.POSEMB not in flat:
    problems.append('its position embeddings are not learned parameters (HF ViT needs '
                    "model.posemb='learn')")
  pre = f'{names.PRE_LOGITS}/kernel'
  if pre in flat and f'{names.HEAD}/kernel' in flat:
    problems.append('it has both pre_logits and a head (a HF classifier has no '
                    'representation layer; drop one, e.g. convert without the head)')
  if pre in flat and flat[pre].shape[0] != flat[pre].shape[1]:
    problems.append('its pre_logits width differs from the model width (the HF pooler is '
                    'width x width)')
  if problems:
    raise ValueError('cannot write a Hugging Face ViT: ' + '; '.join(problems) + '.')


def from_canonical(params: Mapping[str, Any], layout: str = 'hub') -> dict[str, np.ndarray]:
  """Our params -> a HF state dict: `ViTForImageClassification` when there is a head, else
  `ViTModel` (with the pooler when there is a pre_logits layer)."""
  if layout not in LAYOUTS:
    raise ValueError(f'unknown HF layout {layout!r}; expected one of {LAYOUTS}.')
  flat = names.canonical_posemb(names.to_per_block(names.as_flat(params)))
  check_representable(flat)
  prefix = 'vit.' if f'{names.HEAD}/kernel' in flat else ''
  table = rules(layout, names.depth(flat), prefix)
  left = torch_files.unconverted(flat, table)
  if left:
    raise ValueError(f'cannot write a Hugging Face ViT: no place for {left[:8]}.')
  return torch_files.from_canonical(flat, table)


def config_json(info: Mapping[str, Any], *, approximate_gelu: bool,
                labels: Optional[list[str]] = None) -> dict:
  """The config.json `ViTForImageClassification/ViTModel.from_pretrained` needs; `info`
  is `load.infer_variant` of the params."""
  cfg = dict(
      model_type='vit',
      architectures=['ViTForImageClassification' if info['num_classes'] else 'ViTModel'],
      hidden_size=info['width'], num_hidden_layers=info['depth'],
      num_attention_heads=info['num_heads'], intermediate_size=info['mlp_dim'],
      hidden_act='gelu_pytorch_tanh' if approximate_gelu else 'gelu',
      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
      layer_norm_eps=LAYER_NORM_EPS, image_size=info['image_size'],
      patch_size=info['patch_size'], num_channels=info['channels'], qkv_bias=True,
      pooler_output_size=info['width'], pooler_act='tanh')
  if info['num_classes']:
    labels = labels or [f'LABEL_{i}' for i in range(info['num_classes'])]
    cfg['id2label'] = {str(i): l for i, l in enumerate(labels)}
    cfg['label2id'] = {l: i for i, l in enumerate(labels)}
  return cfg


def meta(config: Mapping[str, Any]) -> dict[str, Any]:
  """What a HF config.json says beyond the weights (see load.read_with_meta)."""
  act = config.get('hidden_act', 'gelu')  # HF's default
  id2label = config.get('id2label') or {}
  labels = [id2label[k] for k in sorted(id2label, key=int)] if id2label else None
  if labels and all(l == f'LABEL_{i}' for i, l in enumerate(labels)):
    labels = None  # HF's placeholders
  return dict(approximate_gelu=act in ('gelu_pytorch_tanh', 'gelu_new', 'gelu_fast'),
              image_size=config.get('image_size'), labels=labels)


def preprocessor_json(image_size: int) -> dict:
  """preprocessor_config.json for `ViTImageProcessor`: our input convention, [-1, 1]
  (scale to [0, 1], then mean 0.5, std 0.5) at the model's resolution."""
  return dict(image_processor_type='ViTImageProcessor', do_resize=True,
              size=dict(height=image_size, width=image_size), resample=2, do_rescale=True,
              rescale_factor=1 / 255, do_normalize=True, image_mean=[0.5] * 3,
              image_std=[0.5] * 3)
