"""`python -m vit_jax.convert`: convert ViT checkpoints between formats, or inspect one.

  python -m vit_jax.convert SRC DST [--from FMT] [--to FMT] [--scan | --no-scan]
      [--num-heads K] [--gelu tanh|exact] [--hf-layout hub|v5]
  python -m vit_jax.convert --inspect FILE [--json]

Formats: vit_npz (the published vit_jax files, e.g. ViT-B_16.npz), big_vision_npz,
hf_vit (Hugging Face transformers ViTForImageClassification / ViTModel) and timm_vit (timm
VisionTransformer), the last two as .safetensors, .pth/.pt/.bin or a directory
(model.safetensors + config.json, what from_pretrained / timm 'local-dir:' read); and as a
source only orbax (our trainer's WORKDIR, WORKDIR/checkpoints or WORKDIR/checkpoints/STEP;
the latest step when none is named). Without --from, the path and keys tell. Without
--to, DST's name decides: *.bv.npz or a name containing 'big_vision' -> big_vision_npz,
other *.npz -> vit_npz; a name containing 'timm' -> timm_vit; any other .safetensors /
.pth / .pt / .bin or directory -> hf_vit.
PyTorch files do not store the head count: config.json beside them, the named variant of
the same size, or --num-heads gives it. --gelu sets the GELU written into a PyTorch
config (default: the source's; tanh for .npz files, which were trained with it).
Examples:
  python -m vit_jax.convert workdirs/finetune_B_16_cifar10 B16_cifar10.npz
  python -m vit_jax.convert ViT-B_16.npz ViT-B_16.bv.npz --scan
  python -m vit_jax.convert workdirs/finetune_B_16_cifar10 hf_b16_cifar10/   # HF dir
  python -m vit_jax.convert ViT-B_16.npz vit_b16.timm.safetensors
  python -m vit_jax.convert google-vit-base-patch16-224/ ViT-B_16-hf.npz   # HF -> npz
  python -m vit_jax.convert --inspect ViT-B_16.npz
Progress and the human table go to stderr / stdout; --json (inspect) prints one JSON
object, and a conversion prints one JSON line describing what it wrote.
"""

import argparse
import json
import os
import sys

from vit_jax.checkpoints import big_vision_npz, hf_vit, load, names, timm_vit, torch_files
from vit_jax.checkpoints import vit_npz

WRITERS = (vit_npz.FORMAT, big_vision_npz.FORMAT, hf_vit.FORMAT, timm_vit.FORMAT)


def log(msg: str):
  print(msg, file=sys.stderr, flush=True)


def dst_format(path: str) -> str:
  base = os.path.basename(os.path.normpath(path))  # 'out_timm/' names the directory too
  if base.endswith('.bv.npz') or ('big_vision' in base and base.endswith('.npz')):
    return big_vision_npz.FORMAT
  if base.endswith('.npz'):
    return vit_npz.FORMAT
  if 'timm' in base:
    return timm_vit.FORMAT
  if base.endswith(torch_files.EXTENSIONS) or torch_files.is_directory_target(path):
    return hf_vit.FORMAT
  raise ValueError(f'cannot tell the output format from the name {path!r}: name it *.npz '
                   f'(vit_npz), *.bv.npz (big_vision_npz), *.safetensors or a directory '
                   f'(hf_vit; timm_vit with "timm" in the name), or pass --to '
                   f'{{{",".join(WRITERS)}}}.')


def inspect(path: str, *, format=None,  # pylint: disable=redefined-builtin
            prefix: str = '', num_heads=None) -> dict:
  """What a checkpoint holds: its arrays as stored, its format and the inferred model."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'checkpoint {path!r} does not exist.')
  if format in load.TORCH_FORMATS or (format is None and torch_files.is_torch_path(path)):
    raw, config = torch_files.read_state_dict(path)
    try:
      fmt = format or load.detect_torch_format(raw, path)
      canonical = load.TORCH_FORMATS[fmt].to_canonical(raw, config, num_heads=num_heads,
                                                         source=path)
    except ValueError as e:
      log(f'not readable as a ViT: {e}')
      fmt, canonical = 'unknown', None
  elif format == 'orbax' or (format is None and os.path.isdir(path)):
    _, raw = load.read_orbax(path, log=log)
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
                                'num_classes', 'image_size', 'scan'))
        + (f', resnet_layers={v["resnet_layers"]}, resnet_width_factor='
           f'{v["resnet_width_factor"]}' if v.get('resnet_layers') is not None else ''))
  else:
    lines.append('model: not a ViT checkpoint in a known format')
  lines.append(f'parameters: {info["num_params"]:,} in {len(arrays)} arrays')
  return '\n'.join(lines)


def convert(src: str, dst: str, *, src_format=None, dst_format_=None, scan=None,
            prefix: str = '', num_heads=None, gelu=None, hf_layout: str = 'hub') -> dict:
  """Reads SRC in any format and writes DST; returns what was written (one JSON line)."""
  dst_fmt = dst_format_ or dst_format(dst)
  if dst_fmt not in WRITERS:
    raise ValueError(f'unknown output format {dst_fmt!r}; expected one of {WRITERS}.')
  log(f'reading {src} ...')
  fmt, flat, meta = load.read_with_meta(src, format=src_format, prefix=prefix,
                                        num_heads=num_heads)
  info = load.infer_variant(flat)
  info['image_size'] = meta['image_size'] or info['image_size']
  log(f'read {len(flat)} arrays [{fmt}]: {info["variant"] or "ViT"}, '
      f'{info["num_params"]:,} parameters')
  result = dict(src=src, src_format=fmt, dst=dst, dst_format=dst_fmt,
                num_params=info['num_params'], variant=info['variant'])
  if scan and dst_fmt != big_vision_npz.FORMAT:
    raise ValueError(f'--scan: the {dst_fmt} format is per-block only; drop --scan.')
  if dst_fmt == big_vision_npz.FORMAT:
    big_vision_npz.write(dst, flat, scan=scan)
  elif dst_fmt == vit_npz.FORMAT:
    vit_npz.write(dst, flat)
  else:
    approximate = {'tanh': True, 'exact': False, None: meta['approximate_gelu']}[gelu]
    approximate = True if approximate is None else approximate  # .npz: trained with tanh
    directory = torch_files.is_directory_target(dst)
    if dst_fmt == hf_vit.FORMAT:
      sd = hf_vit.from_canonical(flat, layout=hf_layout)
      config = hf_vit.config_json(info, approximate_gelu=approximate, labels=meta['labels'])
      result['hf_config'] = config
    else:
      sd = timm_vit.from_canonical(flat)
      config = timm_vit.config_json(info, approximate_gelu=approximate,
                                    labels=meta['labels'])
      result['timm_kwargs'] = config['model_args']
    result['written'] = torch_files.write_state_dict(dst, sd, config if directory else None)
    if directory and dst_fmt == hf_vit.FORMAT and info['image_size']:
      path = os.path.join(dst, 'preprocessor_config.json')
      with open(path, 'w') as f:
        json.dump(hf_vit.preprocessor_json(info['image_size']), f, indent=2)
      result['written'].append(path)
  log(f'wrote {dst} [{dst_fmt}]')
  return result


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m vit_jax.convert', description=__doc__.splitlines()[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog='\n'.join(__doc__.splitlines()[2:]))
  parser.add_argument('paths', nargs='*', metavar='SRC DST')
  parser.add_argument('--inspect', metavar='FILE', help='print what FILE holds')
  parser.add_argument('--json', action='store_true', help='inspect: one JSON object')
  parser.add_argument('--from', dest='src_format', choices=load.FORMATS)
  parser.add_argument('--to', dest='dst_format', choices=WRITERS)
  parser.add_argument('--scan', action=argparse.BooleanOptionalAction, default=None,
                      help='big_vision_npz output: scanned encoderblock (default: as SRC)')
  parser.add_argument('--prefix', default='',
                      help="key prefix of the ViT in SRC, e.g. 'params/img/'")
  parser.add_argument('--num-heads', type=int, default=None,
                      help='PyTorch SRC: attention heads, when no config.json says')
  parser.add_argument('--gelu', choices=('tanh', 'exact'), default=None,
                      help="PyTorch DST: the GELU written into its config (default: SRC's)")
  parser.add_argument('--hf-layout', choices=hf_vit.LAYOUTS, default='hub',
                      help='hf_vit DST key spelling: hub (Hub files, transformers 4 and 5 '
                      'from_pretrained) or v5 (transformers 5 load_state_dict)')
  args = parser.parse_args(argv)
  try:
    if args.inspect:
      if args.paths:
        parser.error('--inspect takes one FILE and no SRC DST.')
      info = inspect(args.inspect, format=args.src_format, prefix=args.prefix,
                     num_heads=args.num_heads)
      print(json.dumps(info) if args.json else format_table(info))
    else:
      if len(args.paths) != 2:
        parser.error('expected SRC DST (or --inspect FILE).')
      print(json.dumps(convert(*args.paths, src_format=args.src_format,
                               dst_format_=args.dst_format, scan=args.scan,
                               prefix=args.prefix, num_heads=args.num_heads,
                               gelu=args.gelu, hf_layout=args.hf_layout)))
  except (ValueError, FileNotFoundError, ImportError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
