"""Smoke versions of every experiment script and the report tool (issue #8).

Each script runs its real sweep with --smoke (micro model, a handful of steps, 64 test
images, real MNIST/Fashion-MNIST from ../shared) as subprocesses of vit_jax.main, then
writes its report; the tests check the runs, the table rows and the numbers in them.
"""

import argparse
import json
import math
import re

import pytest

from experiments import (classifier_lr, common, flops, headline, patch_size, posemb,
                         precision, report, resolution, transfer)


def smoke(module, tmp_path, *extra):
  root, results = tmp_path / 'runs', tmp_path / 'results'
  module.main(['--smoke', f'--workdir-root={root}', f'--results-dir={results}', *extra])
  out = results / module.NAME
  md = (out / 'results.md').read_text()
  res = json.loads((out / 'results.json').read_text())
  return root / module.NAME, out, md, res


def table_rows(md):
  """The markdown table's body rows, as lists of cells."""
  lines = [l for l in md.splitlines() if l.startswith('| ')]
  return [[c.strip() for c in l.strip('|').split('|')] for l in lines[1:]]


def check_runs(root, res, expected_runs):
  assert len(res['runs']) == expected_runs
  for run in res['runs']:
    workdir = root / run['name']
    record = json.loads((workdir / 'run.json').read_text())
    assert record['command'].startswith('./launch.sh python -m vit_jax.main --config=configs/')
    assert f'--workdir=' in record['command'] and record['wall_seconds'] > 0
    evals = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()
             if '"eval"' in l]
    # The report's accuracy is the run's last eval line, in percent.
    assert math.isclose(run['accuracy'], 100 * evals[-1]['accuracy'])
    assert evals[-1]['examples'] == 64
    assert run['images_per_sec'] > 0 and run['train_seconds'] > 0


def test_flops_counts_every_matmul_by_hand():
  # 28x28, 7x7 patches: 16 patches + class token, width 8, 1 block, mlp 16, 10 classes.
  n, t, d = 16, 17, 8
  expected = 2 * (n * 147 * d + 4 * t * d * d + 2 * t * t * d + 2 * t * d * 16 + d * 10)
  assert flops.forward_flops(image_size=28, patch_size=7, width=8, depth=1, mlp_dim=16,
                             num_classes=10) == expected
  # Patches 4x smaller in area: 4x the patch tokens; cost grows faster than linearly.
  f7, f4 = (flops.forward_flops(image_size=28, patch_size=p, width=64, depth=4,
                                mlp_dim=256, num_classes=10) for p in (7, 4))
  assert f4 > 3 * f7


def test_posemb_smoke(tmp_path):
  root, out, md, res = smoke(posemb, tmp_path, '--seeds=1')
  check_runs(root, res, 3)
  rows = table_rows(md)
  assert [r[0] for r in rows] == ['none', 'learn', 'sincos2d']
  assert all(r[1] == '0' and re.fullmatch(r'\d+\.\d\d', r[2]) for r in rows)
  assert (out / 'accuracy.png').stat().st_size > 1000
  assert 'SMOKE' in md and 'Machine:' in md and 'JAX' in md
  config = json.loads((root / 'sincos2d_s0' / 'config.json').read_text())
  assert config['model']['posemb'] == 'sincos2d' and config['dataset']['name'] == 'fashion_mnist'


def test_precision_smoke(tmp_path):
  root, out, md, res = smoke(precision, tmp_path, '--seeds=1')
  check_runs(root, res, 2)
  assert [r[:2] for r in table_rows(md)] == [['float32', '0'], ['bfloat16', '0']]
  for dtype in precision.DTYPES:
    config = json.loads((root / f'{dtype}_s0' / 'config.json').read_text())
    assert config['model']['dtype'] == dtype and config['model']['param_dtype'] == 'float32'
    assert config['dataset']['name'] == 'mnist'


def test_precision_variant_puts_the_attention_kernel_in_the_comparison():
  """configs/mnist.py's 17 tokens keep XLA's attention; --variant=mu/4's 50 tokens run the
  C++ kernel in the compute dtype, and the variant reaches every run's overrides."""
  from vit_jax.models import vit  # pylint: disable=g-import-not-at-top
  dh = 64 // 4  # configs/mnist.py: width 64, 4 heads
  assert not vit.use_cpu_attention_kernel(17, 17, dh)
  assert vit.use_cpu_attention_kernel(50, 50, dh)
  args = argparse.Namespace(variant='mu/4', seeds=2, steps=1400, smoke=False)
  runs = precision.runs(args)
  assert [r.overrides['model.variant'] for r in runs] == ['mu/4'] * 4
  args.variant = ''  # configs/mnist.py's
  assert all('model.variant' not in r.overrides for r in precision.runs(args))


def test_headline_smoke_rerun_skips_finished_runs_and_report_cli(tmp_path, capsys):
  smoke(headline, tmp_path)
  capsys.readouterr()
  root, _, md, res = smoke(headline, tmp_path)
  assert capsys.readouterr().out.count('done already, skipped') == 3
  check_runs(root, res, 3)
  assert [r[0] for r in table_rows(md)] == ['mnist', 'fashion_mnist', 'fashion_mnist_hybrid']
  hybrid = json.loads((root / 'fashion_mnist_hybrid_s0' / 'config.json').read_text())['model']
  assert hybrid['resnet_layers'] == [1, 1] and hybrid['variant'] == 'mu/1'
  assert 'target >= 99.0% in <= 600 s: **missed**' in md  # a 4-step run misses it
  assert (tmp_path / 'results' / 'headline' / 'eval_curves.png').exists()
  # The report CLI on its own, and the summary of every result directory.
  report.main([str(root), f'--results-dir={tmp_path / "again"}', '--summary'])
  assert json.loads((tmp_path / 'again' / 'headline' / 'results.json').read_text())['rows'] \
      == res['rows']
  summary = (tmp_path / 'again' / 'summary.md').read_text()
  assert 'Generated by' in summary  # smoke results are left out of the summary


def test_classifier_lr_smoke(tmp_path):
  root, out, md, res = smoke(classifier_lr, tmp_path, '--seeds=1')
  check_runs(root, res, 2)
  assert [(r[0], r[1]) for r in table_rows(md)] == [('token', '0.003'), ('gap', '0.003')]
  config = json.loads((root / 'gap_lr0.003_s0' / 'config.json').read_text())
  assert config['model']['classifier'] == 'gap'
  assert config['optimizer']['learning_rate'] == 0.003
  assert (out / 'accuracy_vs_lr.png').exists()


def test_patch_size_smoke(tmp_path):
  root, out, md, res = smoke(patch_size, tmp_path, '--seeds=1')
  check_runs(root, res, 3)
  rows = {r['labels']['patch']: r for r in res['rows']}
  assert {p: r['labels']['tokens'] for p, r in rows.items()} == {14: 4, 7: 16, 4: 49}
  assert rows[4]['gflops'] > rows[7]['gflops'] > rows[14]['gflops']
  assert math.isclose(rows[7]['gflops'] * 1e9, flops.from_config(json.loads(
      (root / 'p7_s0' / 'config.json').read_text())))
  for png in ('accuracy_vs_tokens.png', 'throughput_vs_tokens.png', 'flops_vs_tokens.png'):
    assert (out / png).exists()


def test_transfer_smoke(tmp_path):
  root, out, md, res = smoke(transfer, tmp_path, '--seeds=1')
  check_runs(root, res, 3)
  pre = root / 'pretrain_fashion_mnist' / 'checkpoints' / str(common.SMOKE['total_steps'])
  assert pre.exists()
  ft = json.loads((root / 'mnist_1pct_fashion_mnist_s0' / 'run.json').read_text())
  assert ft['overrides']['init_from'].endswith(str(pre.relative_to(tmp_path)))
  assert 'load_pretrained' in (root / 'mnist_1pct_fashion_mnist_s0' / 'stderr.log').read_text()
  cfg = json.loads((root / 'mnist_1pct_scratch_s0' / 'config.json').read_text())
  assert cfg['dataset']['train_split'] == 'train[:1%]' and cfg['init_from'] == ''
  assert cfg['dataset']['name'] == 'mnist'
  assert len(table_rows(md)) == 3 and (out / 'accuracy.png').exists()


def test_resolution_smoke(tmp_path):
  root, out, md, res = smoke(resolution, tmp_path)
  check_runs(root, res, 3)
  cfg = json.loads((root / 'continue_42_s0' / 'config.json').read_text())
  assert cfg['dataset']['image_size'] == 42 and cfg['init_from'].endswith('checkpoints/4')
  sizes = [r['labels']['resolution'] for r in res['rows']]
  assert sizes == [28, 28, 42]
  gf = {r['labels']['resolution']: r['gflops'] for r in res['rows']}
  assert gf[42] > 2 * gf[28]  # 36 + 1 tokens instead of 16 + 1
  assert (out / 'accuracy.png').exists()


def fake_run(root, name, labels, accuracy, rate, config, single_view=None, cpu=None):
  """A finished run's files, as the trainer and common.launch write them."""
  d = root / name
  d.mkdir(parents=True)
  (d / 'config.json').write_text(json.dumps(config))
  evaluation = {'step': 100, 'split': 'eval', 'accuracy': accuracy, 'loss': 0.4,
                'examples': 1000.0}
  if single_view is not None:  # a flip-averaged evaluation
    evaluation.update(accuracy_single_view=single_view, loss_single_view=0.5)
  (d / 'metrics.jsonl').write_text(''.join(json.dumps(l) + '\n' for l in [
      {'step': 50, 'split': 'train', 'loss': 1.0, 'images_per_sec': rate},
      {'step': 100, 'split': 'train', 'loss': 0.5, 'images_per_sec': rate + 2},
      evaluation]))
  (d / 'run.json').write_text(json.dumps(dict(
      name=name, labels=labels, command=f'cmd {name}', wall_seconds=20.0,
      result={'train_seconds': 10.0}, finished='2026-01-01 00:00:00 UTC',
      **({'cpu': cpu} if cpu else {}))))


def test_report_mean_std_over_seeds(tmp_path):
  from configs import fashion_mnist
  config = json.loads(fashion_mnist.get_config().to_json_best_effort())
  root = tmp_path / 'posemb'
  common.write_spec('posemb', tmp_path, dict(posemb.SPEC, order=[]))
  accs = {'learn': [0.80, 0.82, 0.87], 'none': [0.70, 0.71, 0.72]}
  for p, values in accs.items():
    for s, a in enumerate(values):
      fake_run(root, f'{p}_s{s}', {'posemb': p, 'seed': s}, a, 100.0 * (s + 1), config,
               cpu='Some CPU (family 1 model 2, AVX2)')
  md = (report.write_report(root, tmp_path / 'results' / 'posemb')).read_text()
  rows = {r[0]: r for r in table_rows(md)}
  assert rows['learn'][1:] == ['0,1,2', '83.00 ± 3.61', '10', '201']  # stdev(80, 82, 87); mean of medians 101, 201, 301
  assert rows['none'][1:3] == ['0,1,2', '71.00 ± 1.00']
  assert md.count('cmd ') == 6 and 'Wall-clock time: 120 s for the 6 runs' in md
  assert 'Machine: Some CPU (family 1 model 2, AVX2), ' in md  # the runs', not the report's
  res = json.loads((tmp_path / 'results' / 'posemb' / 'results.json').read_text())
  assert math.isclose(res['rows'][0]['accuracy_std'], 3.6055512754639896)
  # The summary copies the table and links the result.
  summary = report.write_summary(tmp_path / 'results').read_text()
  assert '(posemb/results.md)' in summary and '| learn | 0,1,2 | 83.00 ± 3.61 |' in summary


def test_a_failed_run_names_its_log(tmp_path):
  run = common.Run('bad', 'configs/fashion_mnist.py', {'model.posemb': 'nope'}, {})
  with pytest.raises(RuntimeError, match='bad failed.*stderr.log'):
    common.launch('x', run, tmp_path, log=lambda _: None)


def test_attempt_records_outlive_their_workdirs_and_drop_when_moved_back(tmp_path):
  from configs import fashion_mnist
  current = json.loads(fashion_mnist.get_config('hybrid').to_json_best_effort())
  older = json.loads(json.dumps(current))
  older['total_steps'], older['random_erasing'] = 15000, 0.25
  attempts_dir, out = tmp_path / 'runs' / 'headline_attempts', tmp_path / 'results'
  fake_run(attempts_dir, 'hybrid_v1', {}, 0.9163, 2000.0, older)
  fake_run(attempts_dir, 'hybrid_v2', {}, 0.9197, 1800.0, current)
  tta = dict(current, eval_flip_average=True, total_steps=17000)
  fake_run(attempts_dir, 'hybrid_v3', {}, 0.9213, 1800.0, tta, single_view=0.9188,
           cpu='AMD EPYC (family 25 model 17, AVX-512 with bf16)')
  rows = lambda md: {r[0]: r for r in table_rows('\n'.join(md))}  # noqa: E731
  # hybrid_v2 has the current config (moved back into the experiment): no earlier attempt.
  table = rows(report.attempts_section(attempts_dir, out, [current]))
  assert list(table) == ['hybrid_v1', 'hybrid_v3']
  assert table['hybrid_v1'][4] == '64 x 15000' and table['hybrid_v1'][11] == '0.25'
  assert table['hybrid_v1'][12:] == ['91.63', '10', '2001', 'not recorded']
  assert table['hybrid_v3'][12] == '92.13 (flip-avg; single view 91.88)'
  assert table['hybrid_v3'][15] == 'AMD EPYC (family 25 model 17, AVX-512 with bf16)'
  assert sorted(p.name for p in (out / 'attempts').iterdir()) == [
      'hybrid_v1.config.json', 'hybrid_v1.result.json', 'hybrid_v3.config.json',
      'hybrid_v3.result.json']
  saved = (out / 'attempts' / 'hybrid_v1.config.json').read_text()
  assert '"total_steps": 15000' in saved and '"../shared/tfds"' in saved
  # A fresh clone: no workdirs, the committed records still make the table.
  again = rows(report.attempts_section(tmp_path / 'nowhere', out, [current]))
  assert again == table


def test_target_lines_give_the_single_view_accuracy_of_a_flip_averaged_run():
  spec = dict(targets={'fmnist': [92.0, 600], 'mnist': [99.0, 600]})
  rows = [dict(labels={'dataset': 'fmnist'}, accuracy=92.1, accuracy_single_view=91.9,
               train_seconds=580.0),
          dict(labels={'dataset': 'mnist'}, accuracy=98.9, accuracy_single_view=None,
               train_seconds=610.0)]
  assert report.target_lines(spec, rows) == [
      '- fmnist: 92.10% (flip-averaged prediction; single view 91.90%) in 580 s of training; '
      'target >= 92.0% in <= 600 s: **met**',
      '- mnist: 98.90% in 610 s of training; target >= 99.0% in <= 600 s: **missed**', '']


def test_smoke_runs_and_reports_never_land_among_the_real_ones():
  real, smoke_ = common.parse_args('x', []), common.parse_args('x', ['--smoke'])
  assert (real.workdir_root, real.results_dir) == (common.DEFAULT_ROOT, common.RESULTS)
  assert smoke_.workdir_root == common.SMOKE_ROOT
  assert smoke_.results_dir == common.SMOKE_ROOT / 'results'
  assert common.RESULTS not in smoke_.results_dir.parents


def test_a_workdir_of_other_settings_or_a_stopped_run_is_not_taken_as_finished(
    tmp_path, monkeypatch):
  run = common.Run('r', 'configs/mnist.py', common.base({}, smoke=False), {'seed': 0})
  other = common.Run('r', 'configs/mnist.py', common.base({}, smoke=True), {'seed': 0})
  monkeypatch.setattr(common.subprocess, 'run', lambda *a, **k: pytest.fail('launched'))
  (tmp_path / 'exp' / 'r').mkdir(parents=True)
  (tmp_path / 'exp' / 'r' / 'run.json').write_text(json.dumps(dict(
      config=other.config, command='./launch.sh python -m vit_jax.main ...',
      overrides={k: common.fmt_value(v) for k, v in other.overrides.items()})))
  with pytest.raises(RuntimeError, match='holds a run of other settings'):
    common.launch('exp', run, tmp_path, log=lambda _: None)
  # A run stopped by a signal exits 0 with preempted=true: no run.json, an error to rerun.
  stopped = json.dumps(dict(step=103, preempted=True, train_seconds=9.0))
  monkeypatch.setattr(common.subprocess, 'run', lambda *a, **k: common.subprocess.
                      CompletedProcess(a, 0, stdout=stopped + '\n'))
  with pytest.raises(RuntimeError, match='stopped at step 103 by a signal.*rerun the script'):
    common.launch('exp', run, tmp_path / 'fresh', log=lambda _: None)
  assert not (tmp_path / 'fresh' / 'exp' / 'r' / 'run.json').exists()
