"""The benchmark CLI: its FLOP count against XLA's, and its JSON lines, on a micro ViT."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO
from vit_jax import benchmark
from vit_jax.benchmark import forward_flops
from vit_jax.models import get_model, variant_kwargs


def xla_flops(variant, image_size, **kw):
  """XLA's FLOP count of the forward pass, with XLA's attention: a custom call (the CPU
  attention kernel) counts no FLOPs."""
  from vit_jax.models import vit  # pylint: disable=g-import-not-at-top
  model = get_model(variant, num_classes=10, **kw)
  x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.key(0), x)['params']
  kernel, vit.CPU_ATTENTION_KERNEL = vit.CPU_ATTENTION_KERNEL, False
  try:
    cost = jax.jit(lambda p, x: model.apply({'params': p}, x)[0]).lower(
        params, x).compile().cost_analysis()
  finally:
    vit.CPU_ATTENTION_KERNEL = kernel
  return (cost[0] if isinstance(cost, list) else cost)['flops']


@pytest.mark.parametrize('variant,size,classifier,slack', [
    ('Ti/16', 224, 'token', 0.03),   # XLA also counts LayerNorm, softmax, GELU: ~1.3%
    ('mu/8', 32, 'map', 0.10),       # a micro model: elementwise ops weigh more
    ('mu/8', 32, 'gap', 0.10),
    ('R26+S/32', 224, 'token', 0.03),  # hybrids: the stem's convolutions, 4 stages
    ('mu/1', 28, 'token', 0.10)])     # a 2-stage stem of 32 channels, 28 -> 4x4 tokens
def test_analytic_flops_match_xla_cost_analysis(variant, size, classifier, slack):
  kw = dict(resnet_layers=(1, 1), resnet_width_factor=0.5) if variant == 'mu/1' else {}
  ours = forward_flops(**{**variant_kwargs(variant), **kw}, image_size=size, num_classes=10,
                       classifier=classifier)
  xla = xla_flops(variant, size, classifier=classifier, **kw)
  assert ours <= xla <= ours * (1 + slack)


def run_cli(*args):
  out = subprocess.run([sys.executable, '-m', 'vit_jax.benchmark', *args], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return [json.loads(l) for l in out.stdout.splitlines()], out.stderr


def test_cli_measures_ours_and_pytorch_with_ratios():
  lines, err = run_cli('--variant=mu/8', '--image-size=32', '--batch=4', '--mode=infer,train',
                       '--repeats=3', '--warmup=1', '--peak-size=64,256', '--num-classes=10',
                       '--compare-torch=eager')
  ours = [l for l in lines if l['impl'] == 'vit_jax']
  torch = [l for l in lines if l['impl'] == 'hf_torch_eager']
  assert [l['mode'] for l in ours] == ['infer', 'train'] and len(torch) == 2
  for line in ours:
    assert line['step_ms_min'] <= line['step_ms_median'] <= line['step_ms_max']
    assert line['images_per_sec'] == pytest.approx(4e3 / line['step_ms_median'])
    assert line['peak_gflops'] > 0 and 0 < line['mfu'] == pytest.approx(
        line['achieved_gflops'] / line['peak_gflops'])
    # A 256^2 product lasts well under the ~50 ms a timed call is sized to: chained.
    assert line['peak_products_per_call'] > 1
    assert line['compile_s'] > 0 and line['xla_temp_bytes'] > 0
    assert line['backend'] == 'cpu' and line['repeats'] == 3
  for line in lines:
    assert line['step_system_ms_median'] >= 0 and line['step_system_ms_slowest'] >= 0
  infer, train = ours
  assert train['gflop_per_image'] == pytest.approx(3 * infer['gflop_per_image'])
  for line, peer in zip(ours, torch):
    assert line['ratio_vs_torch_eager'] == pytest.approx(
        line['images_per_sec'] / peer['images_per_sec'])
    # The peer's own ceiling: PyTorch's 256^2 float32 product, once for both modes.
    assert peer['peak_gflops'] > 0 and peer['peak_matmul_size'] == 256
    assert peer['mfu'] == pytest.approx(peer['achieved_gflops'] / peer['peak_gflops'])
  assert torch[0]['peak_gflops'] == torch[1]['peak_gflops']
  assert 'MFU' in err and 'of its own float32 matmul peak' in err
  # The peak is the best of the sizes: a 64^2 product is all call overhead next to 256^2.
  assert 'the best of [64, 256]' in err
  assert {l['peak_matmul_size'] for l in lines} == {256}


def test_compile_only_reports_memory_with_and_without_scan_and_remat():
  lines, _ = run_cli('--variant=mu/8', '--image-size=32', '--batch=4', '--mode=train',
                     '--scan=0,1', '--remat=0,1', '--compile-only', '--num-classes=10',
                     '--attention=explicit')
  assert [(l['scan'], l['remat'], l['attention']) for l in lines] == [
      (scan, remat, 'explicit') for scan in (False, True) for remat in (False, True)]
  for line in lines:
    assert line['compile_s'] > 0 and line['xla_temp_bytes'] > 0
    assert 'images_per_sec' not in line


def test_xla_options_ab_compiles_both():
  lines, _ = run_cli('--variant=mu/8', '--image-size=32', '--batch=4', '--mode=infer',
                     '--compile-only', '--num-classes=10', '--xla-options=default,tuned')
  assert [l['xla_options'] for l in lines] == ['default', 'tuned']


def test_dot_output_and_attention_ab_name_each_line():
  lines, _ = run_cli('--variant=mu/8', '--image-size=32', '--batch=4', '--mode=train',
                     '--compile-only', '--num-classes=10', '--dtype=bfloat16',
                     '--dot-out=auto,native', '--attention=explicit,xla')
  assert [(l['attention'], l['dot_out']) for l in lines] == [
      ('explicit', 'auto'), ('explicit', 'native'), ('xla', 'auto'), ('xla', 'native')]
  assert {l['attention_kernel'] for l in lines} == {'xla'}  # no cuDNN on a CPU
  out = subprocess.run([sys.executable, '-m', 'vit_jax.benchmark', '--dot-out=half'],
                       cwd=REPO, capture_output=True, text=True)
  assert out.returncode == 2 and "['half']" in out.stderr and '--dot-out' in out.stderr


def test_train_step_needs_no_input_pipeline_or_checkpointing():
  """The benchmark runs on a machine with JAX, Flax and Optax alone (a lent GPU has no
  TensorFlow): its train step, the trainer's own, imports no tf.data, tfds or orbax."""
  code = (
      'import importlib.abc, runpy, sys\n'
      'class Block(importlib.abc.MetaPathFinder):\n'
      '  def find_spec(self, name, path, target=None):\n'
      '    if name.split(".")[0] in ("tensorflow", "tensorflow_datasets", "orbax", "torch"):\n'
      '      raise ImportError("not installed here: " + name)\n'
      'sys.meta_path.insert(0, Block())\n'
      'sys.argv[0] = "vit_jax.benchmark"\n'
      'runpy.run_module("vit_jax.benchmark", run_name="__main__")\n')
  out = subprocess.run([sys.executable, '-c', code, '--variant=mu/8', '--image-size=32',
                        '--batch=4', '--mode=infer,train', '--compile-only',
                        '--num-classes=10'], cwd=REPO, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  lines = [json.loads(l) for l in out.stdout.splitlines() if l.startswith('{')]
  assert [l['mode'] for l in lines] == ['infer', 'train']


def test_bad_arguments_are_named():
  out = subprocess.run([sys.executable, '-m', 'vit_jax.benchmark', '--variant=X/16'],
                       cwd=REPO, capture_output=True, text=True)
  assert out.returncode == 2 and "unknown ViT variant 'X/16'" in out.stderr
  out = subprocess.run([sys.executable, '-m', 'vit_jax.benchmark', '--mode=fit'],
                       cwd=REPO, capture_output=True, text=True)
  assert out.returncode == 2 and "['fit']" in out.stderr
  out = subprocess.run([sys.executable, '-m', 'vit_jax.benchmark', '--variant=R50+B/16',
                        '--compare-torch'], cwd=REPO, capture_output=True, text=True)
  assert out.returncode == 2 and 'R50+B/16 is a hybrid and the PyTorch peer' in out.stderr


@pytest.mark.parametrize('args,message', [
    (['--repeats=0'], '--repeats 0: expected >= 1'),
    (['--batch=0'], '--batch 0: expected >= 1'),
    (['--warmup=-1'], '--warmup -1: expected >= 0'),
    (['--peak-size=abc'], '--peak-size abc: expected positive integers'),
    (['--scan=on'], '--scan on: expected 0 or 1'),
    (['--variant=mu/16,mu/14', '--image-size=32'],
     'does not divide into the patches of mu/14: use --image-size 28'),
])
def test_nonsense_numbers_are_named_before_anything_runs(args, message, capsys, monkeypatch):
  monkeypatch.setattr(benchmark, 'run', lambda a: pytest.fail('ran with bad arguments'))
  with pytest.raises(SystemExit) as exit_:
    benchmark.main(args)
  assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_benchmark_suites_write_jsonl_and_tables(tmp_path, monkeypatch):
  from experiments import benchmarks
  tiny = ['--variant=mu/8', '--image-size=32', '--batch=4', '--num-classes=10']
  monkeypatch.setattr(benchmarks, 'SUITES', {
      'cpu_float32': dict(title='peers', args=[*tiny, '--mode=infer', '--repeats=3',
                                               '--warmup=1', '--peak-size=256',
                                               '--compare-torch=eager']),
      'cpu_compile_memory': dict(title='memory', args=[*tiny, '--mode=train', '--scan=0,1',
                                                       '--compile-only'])})
  benchmarks.main([f'--results-dir={tmp_path}'])
  md = (tmp_path / 'results.md').read_text()
  meta = json.loads((tmp_path / 'cpu_float32.json').read_text())
  assert meta['command'].startswith('./launch.sh python -m vit_jax.benchmark --variant=mu/8')
  assert f'`{meta["command"]}`' in md
  head = subprocess.run(['git', 'rev-parse', '--short=10', 'HEAD'], cwd=REPO,
                        capture_output=True, text=True, check=True).stdout.strip()
  assert meta['commit'].startswith(head) and f'at commit {meta["commit"]};' in md
  ours, = [json.loads(l) for l in (tmp_path / 'cpu_float32.jsonl').read_text().splitlines()
           if '"vit_jax"' in l]
  assert f'| mu/8 | infer | {ours["images_per_sec"]:.2f} |' in md
  assert f'{ours["ratio_vs_torch_eager"]:.2f}' in md
  theirs, = [json.loads(l) for l in (tmp_path / 'cpu_float32.jsonl').read_text().splitlines()
             if '"hf_torch_eager"' in l]
  assert f'in PyTorch, in the same run, reached {theirs["peak_gflops"]:.0f} GFLOP/s' in md
  # The same suite run on another CPU into a subfolder: named and linked from both reports.
  (tmp_path / 'zen9').mkdir()
  (tmp_path / 'zen9' / 'cpu_float32.jsonl').write_text(
      (tmp_path / 'cpu_float32.jsonl').read_text())
  ratio = f'{ours["ratio_vs_torch_eager"]:.2f}'
  assert (f'On {ours["cpu"]} ([zen9](zen9/results.md), measured on an unrecorded date), '
          f'float32 ours / PyTorch is {ratio} to '
          f'{ratio}, with float32 matmul peaks of {ours["peak_gflops"]:.0f} (ours) and '
          f'{theirs["peak_gflops"]:.0f} GFLOP/s (PyTorch).') in benchmarks.render(tmp_path)
  # The README's table shows the newest run (zen9's has no record: it counts as the oldest);
  # each other run is a sentence that says when it was measured.
  block = benchmarks.readme_block(tmp_path)
  assert (f'[experiments/results/benchmarks](experiments/results/benchmarks/results.md)'
          in block.split('|')[0])
  assert ('([zen9](experiments/results/benchmarks/zen9/results.md), measured on an '
          'unrecorded date)') in block
  (tmp_path / 'zen9' / 'cpu_float32.json').write_text(json.dumps(
      dict(meta, finished='2999-01-01 00:00:00 UTC', commit='abc', cpu='Zen 9')))
  block = benchmarks.readme_block(tmp_path)
  assert block.startswith('Images/s on a 2-core Zen 9, measured 2999-01-01 at commit abc')
  assert f'measured {meta["finished"][:10]} at commit {meta["commit"]})' in block
  # With the bfloat16 suite beside it: its ratios, and bfloat16 train steps against float32.
  line = lambda mode, ips, ratio: dict(ours, mode=mode, images_per_sec=ips,  # noqa: E731
                                       ratio_vs_torch_eager=ratio)
  (tmp_path / 'zen9' / 'cpu_float32.jsonl').write_text(json.dumps(line('train', 2.0, 0.7)))
  (tmp_path / 'zen9' / 'cpu_bfloat16.jsonl').write_text('\n'.join(
      json.dumps(l) for l in (line('infer', 9.0, 0.4), line('train', 3.0, 0.5))))
  assert ('; bfloat16 ours / PyTorch is 0.40 to 0.50, and our bfloat16 train steps run 1.50 '
          'to 1.50 times as fast as our float32 ones.') in benchmarks.render(tmp_path)
  # A step profile committed in another CPU's folder: its command writes it there.
  (tmp_path / 'xeon9').mkdir()
  (tmp_path / 'xeon9' / 'step_profile.md').write_text('| op kind | ms per step |')
  assert (f'step_profile > {tmp_path}/xeon9/step_profile.md`'
          in benchmarks.render(tmp_path / 'xeon9'))
  (tmp_path / 'xeon9' / 'step_profile_bfloat16.md').write_text('| op kind | bf16 ms |')
  report = benchmarks.render(tmp_path / 'xeon9')
  assert ('| op kind | bf16 ms |' in report and '## Where a whole bfloat16 Ti/16 train step'
          in report and f'step_profile --dtype=bfloat16 > {tmp_path}/xeon9/'
          'step_profile_bfloat16.md`' in report)
  assert (benchmarks._repo_path(benchmarks.RESULTS / 'zen9')  # pylint: disable=protected-access
          == 'experiments/results/benchmarks/zen9')
  assert '| mu/8 | train | False | False |' in md and '| mu/8 | train | True | False |' in md


def test_gpu_quote_takes_the_models_own_choice_once_per_variant_and_mode(tmp_path):
  """The README's GPU sentence: of the A/B lines (attention, dots), only the model's own
  choice, and a train step measured by two suites is quoted once, from the first."""
  from experiments import benchmarks
  def line(ips, attention='auto', dot_out='auto', mode='train'):
    return json.dumps(dict(variant='B/16', mode=mode, batch=256, device='H200', mfu=0.5,
                           attention=attention, dot_out=dot_out, images_per_sec=ips,
                           peak_products_per_call=8))
  (tmp_path / 'gpu.jsonl').write_text(line(9000, mode='infer') + '\n')
  (tmp_path / 'gpu_train.jsonl').write_text(line(3000) + '\n' + line(2600, 'xla') + '\n')
  (tmp_path / 'gpu_dot_output.jsonl').write_text(line(2641) + '\n' + line(1575, dot_out='float32'))
  quote = ' '.join(benchmarks._gpu_quote(tmp_path))  # pylint: disable=protected-access
  assert 'B/16 infers at 9000 images/s' in quote and 'B/16 trains at 3000 images/s' in quote
  assert quote.count('trains') == 1


def test_readme_quotes_the_committed_benchmark_tables():
  from experiments import benchmarks
  text = (REPO / 'README.md').read_text()
  block = text.split(benchmarks.BEGIN, 1)[1].split(benchmarks.END, 1)[0].strip()
  assert block == benchmarks.readme_block(benchmarks.RESULTS).strip()
  assert '| B/16 | train |' in block
  # Each CPU's committed results.md is what its .jsonl files render to today.
  folders = [benchmarks.RESULTS, *(d for d in benchmarks.RESULTS.iterdir()
                                   if (d / 'results.md').exists())]
  assert len(folders) >= 3
  for folder in folders:
    assert (folder / 'results.md').read_text() == benchmarks.render(folder), folder


def test_step_profile_sums_a_traced_step_by_op_kind(capsys):
  from experiments import step_profile
  code = step_profile.main(['--variant=mu/8', '--image-size=48', '--batch=4', '--steps=2',
                            '--rows=100'])
  out, err = capsys.readouterr()
  tf_trace = sys.modules.get('tensorflow.python.profiler.trace')
  assert tf_trace is None or callable(tf_trace.enabled)  # tf.data still works after
  if jax.lib.__version__.startswith('0.6.'):  # what Python 3.10 gets: no per-op events
    assert code == 1 and 'records no per-op events' in err and not out
    return
  assert code == 0
  out = out.splitlines()
  assert out[0].startswith('| op kind (mu/8 train, float32, batch 4) | ms per step |')
  rows = [l.split(' | ') for l in out[2:] if l.startswith('| ')]
  ms = [float(r[1]) for r in rows]
  assert len(rows) > 5 and ms == sorted(ms, reverse=True)
  assert all(int(r[3]) > 0 for r in rows) and not any('other kinds' in l for l in out)
  # The attention of a 2-head model over 37 tokens is listed with its shapes: the CPU
  # kernel's custom calls, forward (output, softmax) and backward (fewer tokens would take
  # broadcast products instead: vit.BROADCAST_ATTENTION_MAX).
  attention, = [r for r in rows if r[0] == '| ffi_call']
  assert '(f32[4,37,2,16], f32[4,2,37,37])' in attention[4]
  assert 'Ops sum to' in out[-1] and 'the step takes' in out[-1]


def test_timed_steps_record_the_time_spent_in_the_kernel():
  """Each timed step's system CPU time, the part a VM's page-fault stalls show in: faulting
  in fresh memory is kernel time, a Python loop is not."""
  def fault_in():  # 256 MiB of fresh pages, written once
    np.ones(1 << 25)

  def compute():
    sum(i * i for i in range(2_000_000))
  faults = benchmark.timed_summary(fault_in, 1, warmup=1, repeats=3)
  loop = benchmark.timed_summary(compute, 1, warmup=1, repeats=3)
  assert faults['step_system_ms_median'] > 0.3 * faults['step_ms_median']
  assert loop['step_system_ms_median'] < 0.3 * loop['step_ms_median']
  assert faults['step_system_ms_slowest'] > 0
