"""Analytic forward-pass FLOPs per image of a ViT (2 FLOPs per multiply-add).

Counts the matrix products, which are all but a few percent of the work: the patch
embedding, per block the q/k/v/out projections, the attention scores (q.k) and the
weighted sum of values, the two MLP layers, and the head. LayerNorms, softmax, GELU,
biases and the position-embedding add are left out. A training step costs about 3x the
forward pass (forward + backward).
"""


def vit_forward_flops(*, image_size: int, patch_size: int, width: int, depth: int,
                      mlp_dim: int, num_classes: int, channels: int = 3,
                      classifier: str = 'token') -> int:
  n = (image_size // patch_size) ** 2                      # patch tokens
  t = n + (classifier == 'token')                          # + class token
  d = width
  patch_embed = n * (patch_size * patch_size * channels) * d
  per_block = (4 * t * d * d          # q, k, v and output projections
               + 2 * t * t * d        # scores q.k^T and the weighted sum of values
               + 2 * t * d * mlp_dim)  # MLP: D -> mlp_dim -> D
  head = d * num_classes
  return 2 * (patch_embed + depth * per_block + head)


def from_config(config: dict) -> int:
  """FLOPs per image from a run's config.json (a dict); variant fields fill the gaps."""
  from vit_jax.models import variant_kwargs  # pylint: disable=g-import-not-at-top
  m = config['model']
  dims = variant_kwargs(m['variant']) if m.get('variant') else {}
  dims.update({k: m[k] for k in ('width', 'depth', 'mlp_dim') if m.get(k) is not None})
  return vit_forward_flops(image_size=config['dataset']['image_size'],
                           patch_size=dims['patch_size'], width=dims['width'],
                           depth=dims['depth'], mlp_dim=dims['mlp_dim'],
                           num_classes=config['dataset']['num_classes'],
                           classifier=m.get('classifier', 'token'))
