"""Analytic forward-pass FLOPs per image of a run, from its config.json.

The count itself is `vit_jax.benchmark.forward_flops` (2 FLOPs per multiply-add over the
matrix products: patch embedding, q/k/v/out projections, attention scores and values,
MLP, head; checked against XLA's own count in tests/test_benchmark.py). A training step
costs about 3x the forward pass.
"""

from vit_jax.benchmark import forward_flops


def from_config(config: dict) -> int:
  """FLOPs per image from a run's config.json (a dict); variant fields fill the gaps."""
  from vit_jax.models import variant_kwargs  # pylint: disable=g-import-not-at-top
  m = config['model']
  dims = variant_kwargs(m['variant']) if m.get('variant') else {}
  dims.update({k: m[k] for k in ('width', 'depth', 'mlp_dim', 'resnet_layers')
               if m.get(k) is not None})
  return forward_flops(image_size=config['dataset']['image_size'],
                       patch_size=dims['patch_size'], width=dims['width'], depth=dims['depth'],
                       mlp_dim=dims['mlp_dim'], num_classes=config['dataset']['num_classes'],
                       classifier=m.get('classifier', 'token'),
                       representation_size=m.get('representation_size'),
                       resnet_layers=dims.get('resnet_layers'),
                       resnet_width_factor=m.get('resnet_width_factor', 1.0))
