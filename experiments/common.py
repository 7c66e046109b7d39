"""Shared by the experiment scripts: launching runs, skipping finished ones, smoke mode.

Each run is `python -m vit_jax.main --config=... --workdir=ROOT/EXPERIMENT/RUN [--config.K=V]`
in a subprocess, one at a time, in its own workdir. Next to the trainer's files the run's
workdir gets `run.json`: its labels (the table's columns: seed, learning rate, ...), the
exact command (`./launch.sh python -m vit_jax.main ...`, i.e. the module in the venv),
the wall-clock seconds of the whole process and the trainer's final JSON line. A run whose
`run.json` exists is skipped, so an interrupted sweep is resumed by rerunning its script.
ROOT/EXPERIMENT/experiment.json holds what experiments/report.py needs to present it.
"""

import argparse
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO / 'workdirs' / 'experiments'
RESULTS = REPO / 'experiments' / 'results'
# --smoke runs and reports go apart, so that they never overwrite the committed results
# nor pass for finished runs of a real sweep.
SMOKE_ROOT = REPO / 'workdirs' / 'experiments_smoke'

# The ablations' base model: small enough for about a minute per run on 2 CPU cores.
# 7x7 patches of 28x28 images (16 tokens), 4 blocks of width 64. The recipe is pinned to
# the one the committed ablation results were run with (random crops of >= 80% of the
# area, lr 1e-3, gradients clipped at norm 1, label smoothing 0.1), so the committed
# tables reproduce now that configs/mnist.py and configs/fashion_mnist.py have moved on.
ABLATION = {
    'model.variant': 'mu/7', 'model.width': 64, 'model.depth': 4, 'model.mlp_dim': 256,
    'model.num_heads': 4,
    'batch_size': 128, 'total_steps': 300, 'optimizer.warmup_steps': 30,
    'log_every': 50, 'eval_every': 0, 'checkpoint_every': 0,
    'dataset.train_crop': 'inception', 'dataset.crop_min_scale': 0.8,
    'optimizer.learning_rate': 0.001, 'optimizer.grad_clip_norm': 1.0,
    'label_smoothing': 0.1,
}
# --smoke: a micro model, a handful of steps, 64 eval images (seconds per run).
SMOKE = {
    'model.variant': 'mu/7', 'model.width': 16, 'model.depth': 1, 'model.mlp_dim': 32,
    'model.num_heads': 2,
    'batch_size': 16, 'total_steps': 4, 'optimizer.warmup_steps': 1,
    'log_every': 2, 'eval_every': 0, 'checkpoint_every': 0,
    'dataset.train_split': 'train[:512]', 'dataset.eval_split': 'test[:64]',
}


@dataclasses.dataclass
class Run:
  name: str                   # the workdir's name inside ROOT/EXPERIMENT
  config: str                 # e.g. configs/fashion_mnist.py or configs/scratch.py:mnist
  overrides: dict             # config key -> value, as --config.KEY=VALUE
  labels: dict                # table columns, e.g. {'posemb': 'learn', 'seed': 0}


def parse_args(doc: str, argv=None, **extra):
  """--smoke, --workdir-root, --results-dir (default experiments/results), --no-report;
  `extra` adds options with their defaults (and types), e.g. seeds=3."""
  p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--smoke', action='store_true',
                 help='micro model, a handful of steps, 64 eval images: checks the script runs')
  p.add_argument('--workdir-root', type=Path, default=None,
                 help=f'runs go to ROOT/EXPERIMENT/RUN (default {DEFAULT_ROOT.relative_to(REPO)}; '
                 f'with --smoke {SMOKE_ROOT.relative_to(REPO)})')
  p.add_argument('--results-dir', type=Path, default=None,
                 help='report written to RESULTS_DIR/EXPERIMENT (default experiments/results; '
                 f'with --smoke {(SMOKE_ROOT / "results").relative_to(REPO)})')
  p.add_argument('--no-report', action='store_true', help='only run, do not write the report')
  for name, default in extra.items():
    p.add_argument(f'--{name.replace("_", "-")}', type=type(default), default=default)
  args = p.parse_args(argv)
  if args.workdir_root is None:
    args.workdir_root = SMOKE_ROOT if args.smoke else DEFAULT_ROOT
  if args.results_dir is None:
    args.results_dir = SMOKE_ROOT / 'results' if args.smoke else RESULTS
  return args


def fmt_value(v) -> str:
  return str(v)


def command(run: Run, workdir: Path) -> list[str]:
  """The argv after `python -m vit_jax.main` / `./launch.sh`."""
  return [f'--config={run.config}', f'--workdir={workdir}'] + [
      f'--config.{k}={fmt_value(v)}' for k, v in run.overrides.items()]


def display_path(path: Path) -> str:
  try:
    return str(Path(path).resolve().relative_to(REPO))
  except ValueError:
    return str(path)


def launch(experiment: str, run: Run, root: Path, log=print) -> dict:
  """Runs `run` unless its workdir already has run.json; returns the run.json contents."""
  workdir = Path(root) / experiment / run.name
  record_file = workdir / 'run.json'
  overrides = {k: fmt_value(v) for k, v in run.overrides.items()}
  if record_file.exists():
    record = json.loads(record_file.read_text())
    if (record.get('config'), record.get('overrides')) != (run.config, overrides):
      raise RuntimeError(
          f'[{experiment}] {workdir} holds a run of other settings ({record.get("command")}), '
          f'not of this one ({run.config} with {overrides}): pass another --workdir-root, or '
          'move that workdir away.')
    log(f'[{experiment}] {run.name}: done already, skipped ({display_path(record_file)})')
    return record
  workdir.mkdir(parents=True, exist_ok=True)
  args = command(run, workdir)
  shown = command(run, Path(display_path(workdir)))
  shown = './launch.sh python -m vit_jax.main ' + shlex.join(shown)
  log(f'[{experiment}] {run.name}: {shown}')
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  t0 = time.time()
  with open(workdir / 'stderr.log', 'w') as err:
    proc = subprocess.run([sys.executable, '-m', 'vit_jax.main', *args], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=err, text=True)
  wall = time.time() - t0
  if proc.returncode != 0:
    tail = (workdir / 'stderr.log').read_text().strip().splitlines()[-15:]
    raise RuntimeError(f'[{experiment}] {run.name} failed (exit {proc.returncode}) after '
                       f'{wall:.0f}s; last lines of {workdir}/stderr.log:\n' + '\n'.join(tail))
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  if result.get('preempted'):  # stopped by a signal: its checkpoint is kept, no run.json
    raise RuntimeError(f'[{experiment}] {run.name} was stopped at step {result["step"]} by a '
                       'signal (SIGTERM/Ctrl-C) before its end; rerun the script to resume '
                       'it from the checkpoint saved then.')
  from vit_jax import cpu_tuning  # pylint: disable=g-import-not-at-top (imports jax)
  record = dict(experiment=experiment, name=run.name, labels=run.labels,
                command=shown, config=run.config,
                overrides=overrides,
                wall_seconds=wall, result=result, load_avg_1m=os.getloadavg()[0],
                cpu=cpu_tuning.cpu_name(), finished=time.strftime('%Y-%m-%d %H:%M:%S %Z'))
  record_file.write_text(json.dumps(record, indent=2))
  log(f'[{experiment}] {run.name}: accuracy {result.get("eval_accuracy", float("nan")):.4f}, '
      f'{result["train_seconds"]:.0f}s training, {wall:.0f}s wall')
  return record


def write_spec(experiment: str, root: Path, spec: dict):
  """ROOT/EXPERIMENT/experiment.json: title, text and plots for experiments/report.py."""
  path = Path(root) / experiment
  path.mkdir(parents=True, exist_ok=True)
  (path / 'experiment.json').write_text(json.dumps(spec, indent=2))


def sweep(experiment: str, runs: list, args, spec: dict, log=print) -> list:
  """Writes the spec (with the runs' order, which the report keeps), launches every run
  in order, then writes the report."""
  write_spec(experiment, args.workdir_root,
             dict(spec, order=[r.name for r in runs], smoke=bool(args.smoke)))
  records = [launch(experiment, r, args.workdir_root, log=log) for r in runs]
  if not args.no_report:
    from experiments import report  # pylint: disable=g-import-not-at-top
    out = report.write_report(Path(args.workdir_root) / experiment,
                              Path(args.results_dir) / experiment)
    log(f'[{experiment}] report: {display_path(out)}')
  return records


def base(overrides: dict, smoke: bool) -> dict:
  """The ablation base (or the smoke settings) with `overrides` on top."""
  return {**(SMOKE if smoke else ABLATION), **overrides}
