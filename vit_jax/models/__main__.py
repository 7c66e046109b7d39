"""`python -m vit_jax.models`: every named variant with its exact parameter count.

Counts are for 224x224 RGB inputs, a 1000-class head, the class-token classifier and
learned position embeddings (the paper's setting), from `jax.eval_shape` (no weights).
Progress goes to stderr; `--json` prints one JSON object per variant on stdout.
"""

import argparse
import json
import sys

from vit_jax.models import NAMED_VARIANTS, count_params, get_model


def model_table(image_size: int = 224, num_classes: int = 1000, variants=NAMED_VARIANTS):
  """Rows of (name, width, depth, mlp_dim, num_heads, patch, tokens, params)."""
  rows = []
  for name in variants:
    m = get_model(name, num_classes=num_classes)
    tokens = (image_size // m.patch_size) ** 2 + 1
    rows.append(dict(name=name, width=m.width, depth=m.depth, mlp_dim=m.mlp_dim,
                     num_heads=m.num_heads, patch=m.patch_size, tokens=tokens,
                     params=count_params(m, image_size)))
  return rows


def format_markdown(rows) -> str:
  lines = ['| variant | width | depth | MLP | heads | patch | tokens @224 | parameters |',
           '|---|---:|---:|---:|---:|---:|---:|---:|']
  for r in rows:
    lines.append(f"| {r['name']} | {r['width']} | {r['depth']} | {r['mlp_dim']} | "
                 f"{r['num_heads']} | {r['patch']} | {r['tokens']} | {r['params']:,} |")
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--image-size', type=int, default=224)
  parser.add_argument('--num-classes', type=int, default=1000)
  parser.add_argument('--json', action='store_true', help='one JSON line per variant')
  parser.add_argument('variants', nargs='*', default=list(NAMED_VARIANTS))
  args = parser.parse_args(argv)
  print(f'counting parameters of {len(args.variants)} variants (jax.eval_shape)...',
        file=sys.stderr)
  rows = model_table(args.image_size, args.num_classes, args.variants)
  if args.json:
    for r in rows:
      print(json.dumps(r))
  else:
    print(format_markdown(rows))


if __name__ == '__main__':
  main()
