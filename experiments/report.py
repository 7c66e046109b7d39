r"""Turns an experiment's runs into a markdown table, PNG plots and a JSON summary.

  ./launch.sh python -m experiments.report workdirs/experiments/posemb  # -> experiments/results/posemb
  ./launch.sh python -m experiments.report --summary                   # -> experiments/results/summary.md

Reads ROOT/EXPERIMENT/experiment.json (written by the experiment's script) and, for each
run directory in it, `run.json` (labels, exact command, wall time), `metrics.jsonl` and
`config.json`. Runs that differ only in their seed form one row: accuracy as mean ± std
(sample std over seeds), training seconds, images/s (median over the logged intervals)
and analytic forward GFLOPs per image. Writes OUT/results.md (table, commands, wall-clock
time, machine), OUT/results.json (the same rows as numbers) and OUT/*.png.

`--summary` collects every OUT/results.json under experiments/results into summary.md,
the snippet the README links: every number in it is copied from those files by this tool.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python experiments/report.py` as well as `-m`
  sys.path.insert(0, str(REPO))

from configs import datasets  # noqa: E402
from experiments import flops as flops_lib  # noqa: E402

METRICS = {  # key -> (column title, format)
    'accuracy': ('test accuracy (%)', '{:.2f}'),
    'train_seconds': ('train s', '{:.0f}'),
    'images_per_sec': ('images/s', '{:.0f}'),
    'gflops': ('GFLOPs/image (fwd)', '{:.4f}'),
}


# ---- Reading runs. ----

def read_jsonl(path: Path) -> list:
  return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def read_run(workdir: Path) -> dict:
  """One finished run: labels, command, final eval accuracy, throughput, FLOPs, curves."""
  record = json.loads((workdir / 'run.json').read_text())
  lines = read_jsonl(workdir / 'metrics.jsonl')
  config = json.loads((workdir / 'config.json').read_text())
  evals = [l for l in lines if l['split'] == 'eval']
  rates = [l['images_per_sec'] for l in lines if l['split'] == 'train' and 'images_per_sec' in l]
  if not evals:
    raise ValueError(f'{workdir}/metrics.jsonl has no eval line; the run did not finish.')
  return dict(
      name=record['name'], labels=record['labels'], command=record['command'],
      wall_seconds=record['wall_seconds'], finished=record.get('finished', ''),
      load_avg_1m=record.get('load_avg_1m'), cpu=record.get('cpu'),
      accuracy=100 * evals[-1]['accuracy'], eval_examples=evals[-1]['examples'],
      accuracy_single_view=(100 * evals[-1]['accuracy_single_view']
                            if 'accuracy_single_view' in evals[-1] else None),
      train_seconds=record['result']['train_seconds'],
      images_per_sec=statistics.median(rates) if rates else float('nan'),
      gflops=flops_lib.from_config(config) / 1e9,
      eval_curve=[(l['step'], 100 * l['accuracy']) for l in evals])


def read_experiment(root: Path):
  spec = json.loads((root / 'experiment.json').read_text())
  runs = [read_run(d) for d in sorted(root.iterdir()) if (d / 'run.json').exists()]
  if not runs:
    raise ValueError(f'{root} has no finished runs (no */run.json); run the experiment first.')
  order = spec.get('order')  # keep the script's run order when it gives one
  if order:
    runs.sort(key=lambda r: order.index(r['name']) if r['name'] in order else len(order))
  return spec, runs


# ---- Aggregating. ----

def mean_std(values):
  m = statistics.fmean(values)
  return m, (statistics.stdev(values) if len(values) > 1 else 0.0)


def group_rows(runs, columns):
  """Runs with equal labels (seed aside) -> one row with mean/std of every metric."""
  rows, index = [], {}
  for r in runs:
    key = tuple(r['labels'].get(c) for c in columns)
    if key not in index:
      index[key] = len(rows)
      rows.append(dict(labels=dict(zip(columns, key)), runs=[]))
    rows[index[key]]['runs'].append(r)
  for row in rows:
    row['seeds'] = sorted(r['labels'].get('seed', 0) for r in row['runs'])
    row['n'] = len(row['runs'])
    for k in METRICS:
      m, s = mean_std([r[k] for r in row['runs']])
      row[k], row[k + '_std'] = m, s
    singles = [r.get('accuracy_single_view') for r in row['runs']]
    row['accuracy_single_view'] = None if None in singles else statistics.fmean(singles)
  return rows


def fmt_metric(row, key):
  fmt = METRICS[key][1]
  if key == 'accuracy' and row['n'] > 1:
    return f'{fmt.format(row[key])} ± {fmt.format(row[key + "_std"])}'
  return fmt.format(row[key])


# ---- Machine. ----

def machine() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from vit_jax import cpu_tuning  # pylint: disable=g-import-not-at-top
  return dict(cpu=cpu_tuning.cpu_name(), cores=os.cpu_count(),
              python=platform.python_version(), jax=jax.__version__, platform=platform.platform(),
              devices=f'{jax.device_count()} x {jax.devices()[0].platform}')


# ---- Plots. ----

def plot(spec_plot, rows, runs, out_dir: Path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  kind, y = spec_plot.get('kind', 'line'), spec_plot.get('y', 'accuracy')
  where = spec_plot.get('where', {})  # only rows/runs whose labels have these values
  keep = lambda labels: all(labels.get(k) == v for k, v in where.items())  # noqa: E731
  rows = [r for r in rows if keep(r['labels'])]
  runs = [r for r in runs if keep(r['labels'])]
  fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
  if kind == 'curves':  # eval accuracy against step, one line per run
    for r in runs:
      steps, accs = zip(*r['eval_curve'])
      ax.plot(steps, accs, marker='o', label=r['name'])
    ax.set_xlabel('step')
    ax.set_ylabel(METRICS['accuracy'][0])
  else:
    x, series = spec_plot['x'], spec_plot.get('series')
    groups = {}
    for row in rows:
      groups.setdefault(row['labels'].get(series) if series else '', []).append(row)
    if kind == 'bar':
      names = list(dict.fromkeys(str(r['labels'][x]) for r in rows))
      width = 0.8 / max(len(groups), 1)
      for i, (g, rs) in enumerate(groups.items()):
        pos = [names.index(str(r['labels'][x])) + (i - (len(groups) - 1) / 2) * width for r in rs]
        ax.bar(pos, [r[y] for r in rs], width, yerr=[r[y + '_std'] for r in rs], capsize=3,
               label=f'{series}={g}' if series else None)
        for p, r in zip(pos, rs):
          ax.annotate(METRICS[y][1].format(r[y]), (p, r[y] + r[y + '_std']), ha='center',
                      va='bottom',
                      fontsize=7, xytext=(0, 2), textcoords='offset points')
      ax.set_xticks(range(len(names)), names)
      lo = min(r[y] - r[y + '_std'] for r in rows)
      hi = max(r[y] + r[y + '_std'] for r in rows)
      if y == 'accuracy':
        ax.set_ylim(max(0, lo - 0.15 * (hi - lo + 1)), min(100, hi + 0.15 * (hi - lo + 1)))
    else:
      for g, rs in groups.items():
        rs = sorted(rs, key=lambda r: r['labels'][x])
        ax.errorbar([r['labels'][x] for r in rs], [r[y] for r in rs],
                    yerr=[r[y + '_std'] for r in rs], marker='o', capsize=3,
                    label=f'{series}={g}' if series else None)
      if spec_plot.get('xscale'):
        ax.set_xscale(spec_plot['xscale'])
      if spec_plot.get('yscale'):
        ax.set_yscale(spec_plot['yscale'])
    ax.set_xlabel(spec_plot.get('xlabel', x))
    ax.set_ylabel(METRICS[y][0])
  if spec_plot.get('title'):
    ax.set_title(spec_plot['title'], fontsize=10)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  path = out_dir / spec_plot['file']
  fig.savefig(path)
  plt.close(fig)
  return path


# ---- Writing. ----

def target_lines(spec, rows) -> list:
  """For spec['targets'] = {label value: [min accuracy %, max train seconds]}."""
  targets, out = spec.get('targets') or {}, []
  for row in rows:
    value = next(iter(row['labels'].values()), None)
    if value not in targets:
      continue
    acc, secs = targets[value]
    ok = row['accuracy'] >= acc and row['train_seconds'] <= secs
    single = ('' if row.get('accuracy_single_view') is None else
              f' (flip-averaged prediction; single view {row["accuracy_single_view"]:.2f}%)')
    out.append(f'- {value}: {row["accuracy"]:.2f}%{single} in {row["train_seconds"]:.0f} s '
               f'of training; target >= {acc:.1f}% in <= {secs:.0f} s: '
               f'**{"met" if ok else "missed"}**')
  return out + [''] if out else []


def markdown_table(rows, columns, metrics):
  head = columns + ['seeds'] + [METRICS[m][0] for m in metrics]
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for row in rows:
    cells = [str(row['labels'][c]) for c in columns] + [
        ','.join(str(s) for s in row['seeds'])] + [fmt_metric(row, m) for m in metrics]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def write_report(root: Path, out_dir: Path) -> Path:
  """Reads the runs under `root`, writes out_dir/results.md, results.json and plots."""
  root, out_dir = Path(root), Path(out_dir)
  spec, runs = read_experiment(root)
  columns = [c for c in spec['columns'] if c != 'seed']
  metrics = spec.get('metrics', ['accuracy', 'train_seconds', 'images_per_sec'])
  rows = group_rows(runs, columns)
  out_dir.mkdir(parents=True, exist_ok=True)
  pngs = [plot(p, rows, runs, out_dir) for p in spec.get('plots', [])]
  env = machine()
  recorded = sorted({r['cpu'] for r in runs if r.get('cpu')})
  if recorded:  # where the runs ran, which a later --report-only may not be
    env['cpu'] = ' and '.join(recorded)
  total_wall = sum(r['wall_seconds'] for r in runs)
  name = root.name
  smoke = ' (SMOKE RUN: micro model, a handful of steps; numbers mean nothing)' if spec.get(
      'smoke') else ''
  md = [f'# {spec["title"]}{smoke}', '', spec.get('text', '').strip(), '',
        markdown_table(rows, columns, metrics), '',
        f'{len(runs)} runs; test accuracy on {int(runs[0]["eval_examples"]):,} test images at '
        'the last step; mean ± sample std over seeds where there are several. '
        '"train s" is the trainer\'s own clock (compilation, input pipeline, training and '
        'evaluation; not the process start-up); images/s is the median over logged '
        'intervals. FLOPs are analytic (experiments/flops.py), forward pass only.', '']
  md += target_lines(spec, rows)
  md += [f'![{p.stem}]({p.name})' for p in pngs] + ['']
  md += ['## How it was run', '', '```bash', spec.get('script', ''), '```', '',
         'which ran, one after another:', '', '```bash'] + [r['command'] for r in runs] + [
             '```', '',
         f'Wall-clock time: {total_wall:.0f} s for the {len(runs)} runs (processes '
         f'included), finished {max(r["finished"] for r in runs)}.', '',
         f'Machine: {env["cpu"]}, {env["cores"]} cores ({env["devices"]}), '
         f'{env["platform"]}, Python {env["python"]}, JAX {env["jax"]}.'
         + load_sentence(runs), '']
  if spec.get('attempts'):
    md += attempts_section(root.parent / spec['attempts'], out_dir,
                           [json.loads((root / r['name'] / 'config.json').read_text())
                            for r in runs])
  if spec.get('notes'):
    md += ['## Notes', '', spec['notes'].strip(), '']
  (out_dir / 'results.md').write_text('\n'.join(md))
  (out_dir / 'results.json').write_text(json.dumps(dict(
      experiment=name, title=spec['title'], smoke=bool(spec.get('smoke')),
      columns=columns, machine=env, wall_seconds=total_wall,
      targets=target_lines(spec, rows),
      rows=[dict(labels=r['labels'], seeds=r['seeds'],
                 **{k: r[k] for k in METRICS}, **{k + '_std': r[k + '_std'] for k in METRICS})
            for r in rows],
      runs=[{k: r[k] for k in ('name', 'labels', 'command', 'accuracy', 'train_seconds',
                               'wall_seconds', 'images_per_sec', 'gflops')} for r in runs]),
      indent=2))
  return out_dir / 'results.md'


def load_sentence(runs) -> str:
  """The machine's 1-minute load average as each run finished (recorded by
  common.launch): above the core count, other work shared the CPU and times suffer."""
  loads = [r['load_avg_1m'] for r in runs if r.get('load_avg_1m') is not None]
  if not loads:
    return ''
  return (f' Load average (1 min) as the runs finished: {min(loads):.1f} to {max(loads):.1f}'
          f' on {os.cpu_count()} cores.')


def attempts_section(attempts_root: Path, out_dir: Path, current_configs=()) -> list:
  """Earlier versions of the configs: a table of their settings and results.

  The record of each attempt is committed under out_dir/attempts/ (NAME.config.json, the
  resolved config; NAME.result.json, its accuracy and times), so the table survives a
  fresh clone without the workdirs. Runs moved by hand to ATTEMPTS_ROOT/NAME (re)write
  their records; an attempt whose config is one of `current_configs` (a run moved back
  into the experiment) is not an earlier attempt and its record is dropped. To forget
  an attempt, delete its two files.
  """
  records = Path(out_dir) / 'attempts'
  for d in sorted(Path(attempts_root).glob('*')):
    if (d / 'run.json').exists():
      r, c = read_run(d), json.loads((d / 'config.json').read_text())
      records.mkdir(parents=True, exist_ok=True)
      (records / f'{d.name}.config.json').write_text(_portable_json(c))
      (records / f'{d.name}.result.json').write_text(json.dumps(
          {k: r[k] for k in ('accuracy', 'accuracy_single_view', 'train_seconds',
                             'images_per_sec', 'cpu', 'command', 'finished')}, indent=2))
  current = [_portable_json(c) for c in current_configs]
  rows = []
  for path in sorted(records.glob('*.result.json')):
    name = path.name.removesuffix('.result.json')
    config_path = records / f'{name}.config.json'
    if config_path.read_text() in current:
      path.unlink()
      config_path.unlink()
      continue
    rows.append((name, json.loads(config_path.read_text()), json.loads(path.read_text())))
  if not rows:
    return []
  md = ['## Earlier attempts', '',
        'Earlier versions of the configs, each run once as the headline runs are; the full '
        'resolved config of each is in `attempts/NAME.config.json`. Times compare only '
        'on the same CPU.', '',
        '| attempt | ResNet stem | patch | width x depth (mlp) | batch x steps | lr | '
        'weight decay | grad clip | label smoothing | train crop | flip | random erasing | '
        'test accuracy (%) | train s | images/s | CPU |',
        '|' + '---|' * 16]
  for name, c, r in rows:
    m, ds = c['model'], c['dataset']
    crop = ds['train_crop'] + {'inception': f' >= {ds["crop_min_scale"]:g}',
                               'pad_crop': f' {ds.get("crop_padding")} px'}.get(
                                   ds['train_crop'], '')
    stem = ('-' if m.get('resnet_layers') is None else
            f'{tuple(m["resnet_layers"])}, x{m["resnet_width_factor"]:g}')
    md.append(f'| {name} | {stem} | {m["variant"].partition("/")[2]} | {m["width"]} x '
              f'{m["depth"]} ({m["mlp_dim"]}) | {c["batch_size"]} x {c["total_steps"]} | '
              f'{c["optimizer"]["learning_rate"]:g} | {c["optimizer"]["weight_decay"]:g} | '
              f'{c["optimizer"]["grad_clip_norm"]:g} | '
              f'{c["label_smoothing"]:g} | {crop} | {ds["flip"]} | '
              f'{c.get("random_erasing", 0):g} | '
              f'{r["accuracy"]:.2f}{flip_averaged(r)} | {r["train_seconds"]:.0f} | '
              f'{r["images_per_sec"]:.0f} | {r.get("cpu") or "not recorded"} |')
  return md + ['']


def flip_averaged(result: dict) -> str:
  """' (single view X)' after a flip-averaged accuracy; '' after a single-view one."""
  single = result.get('accuracy_single_view')
  return '' if single is None else f' (flip-avg; single view {single:.2f})'


def _portable_json(config: dict) -> str:
  """A config as committed: the shared data directory as the repository sees it."""
  return json.dumps(config, indent=2).replace(str(datasets.SHARED), '../shared')


def write_summary(results_dir: Path) -> Path:
  """results_dir/summary.md: every experiment's table, each linked to its results.md."""
  results_dir = Path(results_dir)
  order = ['headline', 'posemb', 'classifier_lr', 'patch_size', 'transfer', 'resolution',
           'precision']
  found = {p.parent.name: json.loads(p.read_text())
           for p in sorted(results_dir.glob('*/results.json'))}
  names = [n for n in order if n in found] + sorted(set(found) - set(order))
  md = ['<!-- Generated by `python -m experiments.report --summary` from '
        'experiments/results/*/results.json; do not edit by hand. -->', '']
  for n in names:
    res = found[n]
    if res.get('smoke'):
      continue
    md += [f'### [{res["title"]}]({n}/results.md)', '']
    metrics = ['accuracy', 'train_seconds', 'images_per_sec'] + (
        ['gflops'] if n == 'patch_size' else [])
    rows = [dict(r, n=len(r['seeds'])) for r in res['rows']]
    md += [markdown_table(rows, res['columns'], metrics), ''] + res.get('targets', [])
  if len(md) == 2:
    md.append('No results yet.')
  path = results_dir / 'summary.md'
  path.write_text('\n'.join(md) + '\n')
  return path


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('roots', nargs='*', type=Path,
                 help='experiment directories, e.g. workdirs/experiments/posemb')
  p.add_argument('--results-dir', type=Path, default=REPO / 'experiments' / 'results')
  p.add_argument('--summary', action='store_true',
                 help='(re)write RESULTS_DIR/summary.md from every RESULTS_DIR/*/results.json')
  args = p.parse_args(argv)
  if not args.roots and not args.summary:
    p.error('give experiment directories and/or --summary')
  for root in args.roots:
    print(write_report(root, args.results_dir / root.name))
  if args.summary:
    print(write_summary(args.results_dir))


if __name__ == '__main__':
  main()
