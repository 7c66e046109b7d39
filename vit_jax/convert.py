"""`python -m vit_jax.convert`: convert ViT checkpoints between formats, or inspect one.

  python -m vit_jax.convert SRC DST [--from FMT] [--to FMT] [--scan | --no-scan]
  python -m vit_jax.convert --inspect FILE [--json]

Formats: vit_npz (the published vit_jax files, e.g. ViT-B_16.npz), big_vision_npz, and as
a source only orbax (our trainer's WORKDIR, WORKDIR/checkpoints or
WORKDIR/checkpoints/STEP; the latest step when none is named). Without --from, a directory
is orbax and an .npz is told by its keys. Without --to, DST's name decides: *.bv.npz or a
name containing 'big_vision' -> big_vision_npz, other *.npz -> vit_npz.
Examples:
  python -m vit_jax.convert workdirs/finetune_B_16_cifar10 B16_cifar10.npz
  python -m vit_jax.convert ViT-B_16.npz ViT-B_16.bv.npz --scan
  python -m vit_jax.convert --inspect ViT-B_16.npz
Progress and the human table go to stderr / stdout; --json (inspect) prints one JSON
object, and a conversion prints one JSON line describing what it wrote.
"""

import argparse
import json
import os
import sys

from vit_jax.checkpoints import big_vision_npz, load, names, vit_npz

WRITERS = {vit_npz.FORMAT: vit_npz, big_vision_npz.FORMAT: big_vision_npz}


def log(msg: str):
  print(msg, file=sys.stderr, flush=True)


def dst_format(path: str) -> str:
  base = os.path.basename(path)
  if base.endswith('.bv.npz') or ('big_vision' in base and base.endswith('.npz')):
    return big_vision_npz.FORMAT
  if base.endswith('.npz'):
    return vit_npz.FORMAT
  raise ValueError(f'cannot tell the output format from the name {path!r}: name it *.npz '
                   f'(vit_npz) or *.bv.npz (big_vision_npz), or pass --to '
                   f'{{{",".join(WRITERS)}}}.')


def inspect(path: str, *, format=None,  # pylint: disable=redefined-builtin
            prefix: str = '') -> dict:
  """What a checkpoint holds: its arrays as stored, its format and the inferred model."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'checkpoint {path!r} does not exist.')
  if format == 'orbax' or (format is None and os.path.isdir(path)):
    raw = load.read_orbax(path)
    fmt, prefix, canonical = 'orbax', '', raw
  else:
    raw = vit_npz.load_npz(path)
    prefix = prefix or names.find_params_prefix(raw)
    flat = names.strip_prefix(raw, prefix) if prefix else raw
    try:
      fmt = format or load.detect_format(flat, path)
      canonical = load.NPZ_FORMATS[fmt].to_canonical(flat)
    except ValueError:
      fmt, canonical = 'unknown', None
  variant = load.infer_variant(canonical) if canonical is not None else None
  return dict(
      path=path, format=fmt, prefix=prefix,
      num_params=variant['num_params'] if variant else names.num_params(raw),
      variant=variant,
      arrays=[dict(name=k, shape=list(v.shape), dtype=str(v.dtype))
              for k, v in sorted(raw.items())])


def format_table(info: dict) -> str:
  arrays = info['arrays']
  width = max([len(a['name']) for a in arrays] + [4])
  lines = [f'{info["path"]} [{info["format"]}]'
           + (f' prefix {info["prefix"]!r}' if info['prefix'] else ''),
           f'  {"name":<{width}}  {"shape":<22} dtype']
  lines += [f'  {a["name"]:<{width}}  {str(tuple(a["shape"])):<22} {a["dtype"]}'
            for a in arrays]
  v = info['variant']
  if v:
    lines.append(f'model: {v["variant"] or "(no named variant)"}; ' + ', '.join(
        f'{k}={v[k]}' for k in ('width', 'depth', 'mlp_dim', 'num_heads', 'patch_size',
                                'classifier', 'posemb', 'representation_size',
                                'num_classes', 'image_size', 'scan')))
  else:
    lines.append('model: not a ViT checkpoint in a known format')
  lines.append(f'parameters: {info["num_params"]:,} in {len(arrays)} arrays')
  return '\n'.join(lines)


def convert(src: str, dst: str, *, src_format=None, dst_format_=None, scan=None,
            prefix: str = '') -> dict:
  dst_fmt = dst_format_ or dst_format(dst)
  if dst_fmt not in WRITERS:
    raise ValueError(f'unknown output format {dst_fmt!r}; expected one of {tuple(WRITERS)}.')
  log(f'reading {src} ...')
  fmt, flat = load.read(src, format=src_format, prefix=prefix)
  info = load.infer_variant(flat)
  log(f'read {len(flat)} arrays [{fmt}]: {info["variant"] or "ViT"}, '
      f'{info["num_params"]:,} parameters')
  if dst_fmt == big_vision_npz.FORMAT:
    big_vision_npz.write(dst, flat, scan=scan)
  else:
    if scan:
      raise ValueError('--scan: the vit_npz format is per-block only; drop --scan.')
    vit_npz.write(dst, flat)
  log(f'wrote {dst} [{dst_fmt}]')
  return dict(src=src, src_format=fmt, dst=dst, dst_format=dst_fmt,
              num_params=info['num_params'], variant=info['variant'])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m vit_jax.convert', description=__doc__.splitlines()[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog='\n'.join(__doc__.splitlines()[2:]))
  parser.add_argument('paths', nargs='*', metavar='SRC DST')
  parser.add_argument('--inspect', metavar='FILE', help='print what FILE holds')
  parser.add_argument('--json', action='store_true', help='inspect: one JSON object')
  parser.add_argument('--from', dest='src_format', choices=load.FORMATS)
  parser.add_argument('--to', dest='dst_format', choices=tuple(WRITERS))
  parser.add_argument('--scan', action=argparse.BooleanOptionalAction, default=None,
                      help='big_vision_npz output: scanned encoderblock (default: as SRC)')
  parser.add_argument('--prefix', default='',
                      help="key prefix of the ViT in SRC, e.g. 'params/img/'")
  args = parser.parse_args(argv)
  try:
    if args.inspect:
      if args.paths:
        parser.error('--inspect takes one FILE and no SRC DST.')
      info = inspect(args.inspect, format=args.src_format, prefix=args.prefix)
      print(json.dumps(info) if args.json else format_table(info))
    else:
      if len(args.paths) != 2:
        parser.error('expected SRC DST (or --inspect FILE).')
      print(json.dumps(convert(*args.paths, src_format=args.src_format,
                               dst_format_=args.dst_format, scan=args.scan,
                               prefix=args.prefix)))
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
