r"""The performance tables: runs `python -m vit_jax.benchmark` suites, writes the raw JSON
lines and a markdown report to experiments/results/benchmarks/.

  ./launch.sh python -m experiments.benchmarks                       # every CPU suite
  ./launch.sh python -m experiments.benchmarks --suites=cpu_float32  # one of them
  ./launch.sh python -m experiments.benchmarks --report-only         # re-render results.md
  ./launch.sh python -m experiments.benchmarks --results-dir=experiments/results/benchmarks/zen5
  python -m experiments.benchmarks --suites=gpu_train,gpu,gpu_dot_output --results-dir=$OUT

Each suite is one benchmark command; its lines go to SUITE.jsonl next to SUITE.json (the
command, the date, the wall-clock time, the commit). results.md is rendered from those files
only, so every figure it shows comes with the command that produced it. Another CPU's runs
go to a subfolder; the README's table quotes the newest run, the others in a dated sentence
each. Run nothing else on the machine meanwhile: the timings are only as quiet as the
machine.
"""

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / 'experiments' / 'results' / 'benchmarks'
FAST = ['--repeats=5', '--warmup=1']

SUITES = {
    'cpu_float32': dict(
        title='CPU, float32: ours against the PyTorch peer (Hugging Face ViT, eager)',
        args=['--variant=Ti/16,S/16,B/16', '--batch=32', '--mode=infer,train',
              '--dtype=float32', '--compare-torch=eager', *FAST]),
    'cpu_bfloat16': dict(
        title='CPU, bfloat16 compute (float32 parameters and optimiser state)',
        args=['--variant=Ti/16,S/16,B/16', '--batch=32', '--mode=infer,train',
              '--dtype=bfloat16', '--compare-torch=eager', *FAST]),
    'cpu_xla_options': dict(
        title="CPU, float32: XLA's default options against vit_jax.cpu_tuning's",
        args=['--variant=Ti/16,B/16', '--batch=32', '--mode=infer,train',
              '--xla-options=default,tuned', *FAST]),
    'cpu_attention': dict(
        title="CPU, float32: the C++ attention kernel against XLA's written-out attention",
        args=['--variant=Ti/16,B/16', '--batch=32', '--mode=infer,train',
              '--attention=auto,explicit', *FAST]),
    'cpu_compile_memory': dict(
        title='Compile time and XLA temporary memory of a train step, batch 32 '
              '(compiled, not run)',
        args=['--variant=B/16,H/14', '--batch=32', '--mode=train', '--scan=0,1',
              '--remat=0,1', '--compile-only']),
    'gpu': dict(
        title='GPU, bfloat16 inference: B/16 and L/16 with cuDNN attention',
        args=['--variant=B/16,L/16', '--batch=256', '--mode=infer', '--dtype=bfloat16',
              '--repeats=15', '--warmup=3'],
        gpu=True),
    'gpu_train': dict(
        title='GPU, bfloat16 train step: B/16 and L/16, cuDNN attention against XLA\'s',
        args=['--variant=B/16,L/16', '--batch=256', '--mode=train', '--dtype=bfloat16',
              '--attention=auto,xla', '--repeats=15', '--warmup=3'],
        gpu=True),
    'gpu_dot_output': dict(
        title='GPU, bfloat16 train step: plain 16-bit dots against float32 products',
        args=['--variant=B/16', '--batch=256', '--mode=train', '--dtype=bfloat16',
              '--dot-out=auto,float32', '--repeats=15', '--warmup=3'],
        gpu=True),
}


def run_suite(name: str, out_dir: Path):
  argv = [sys.executable, '-m', 'vit_jax.benchmark', *SUITES[name]['args']]
  print(f'== {name}: {shlex.join(argv[1:])}', file=sys.stderr, flush=True)
  t0 = time.time()
  proc = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, text=True, check=False)
  if proc.returncode:
    raise SystemExit(f'{name}: the benchmark exited with {proc.returncode} (its stderr is '
                     'above); nothing written for this suite.')
  (out_dir / f'{name}.jsonl').write_text(proc.stdout)
  (out_dir / f'{name}.json').write_text(json.dumps(dict(
      command='./launch.sh python -m vit_jax.benchmark ' + shlex.join(SUITES[name]['args']),
      finished=time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()),
      wall_s=round(time.time() - t0, 1), commit=_commit()), indent=2))


def _commit() -> str:
  """The code a suite ran: HEAD's short hash, '+changes' where tracked code differs from
  it (not the results and README quote the suites themselves write; 'unknown' outside a
  git checkout, e.g. a copied tree)."""
  git = lambda *a: subprocess.run(['git', *a], cwd=REPO, capture_output=True,  # noqa: E731
                                  text=True, check=False)
  head = git('rev-parse', '--short=10', 'HEAD')
  if head.returncode:
    return 'unknown'
  changed = git('status', '--porcelain', '--untracked-files=no', '--', 'vit_jax', 'configs',
                'experiments', ':(exclude)experiments/results', 'launch.sh',
                'requirements.txt').stdout.strip()
  return head.stdout.strip() + ('+changes' if changed else '')


# ---- Rendering. ----

def _jsonl(path: Path) -> list[dict]:
  """A suite's JSON lines; [] where the suite was not run."""
  if not path.exists():
    return []
  return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def _f(v, digits=2):
  return '' if v is None else f'{v:.{digits}f}'


def _table(header, rows):
  out = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  return out + ['| ' + ' | '.join(str(c) for c in r) + ' |' for r in rows]


def _peer_tables(lines):
  ours = [l for l in lines if l['impl'] == 'vit_jax']
  torch = {(l['variant'], l['mode'], l['dtype']): l for l in lines
           if l['impl'] == 'hf_torch_eager'}
  rows = []
  for l in ours:
    t = torch.get((l['variant'], l['mode'], l['dtype']), {})
    rows.append([l['variant'], l['mode'], _f(l['images_per_sec']),
                 f'{l["step_ms_median"]:.0f} (IQR {l["step_ms_iqr"]:.0f})',
                 _f(t.get('images_per_sec')), _f(l.get('ratio_vs_torch_eager')),
                 f'{l["achieved_gflops"]:.0f}', f'{l["mfu"]:.0%}', f'{l["compile_s"]:.1f}'])
  if not ours:
    return []
  peak = ours[0]['peak_gflops']
  theirs = next((t['peak_gflops'] for t in torch.values() if 'peak_gflops' in t), None)
  return (_table(['variant', 'mode', 'ours images/s', 'ours ms/step', 'PyTorch images/s',
                  'ours / PyTorch', 'ours GFLOP/s', 'MFU', 'compile s'], rows)
          + ['', f'MFU against the measured {ours[0]["dtype"]} matmul peak of {peak:.0f} '
             f'GFLOP/s ({ours[0]["peak_matmul_size"]}^2)'
             + ('.' if theirs is None else
                f'; the same product in PyTorch, in the same run, reached {theirs:.0f} '
                'GFLOP/s (its BLAS), which bounds what the peer can do.')])


def _ab_table(lines, field: str, a: str, b: str, a_label: str, b_label: str):
  """Images/s of the lines whose `field` is a against those where it is b, per variant and
  mode."""
  by = {}
  for l in lines:
    by.setdefault((l['variant'], l['mode']), {})[l[field]] = l
  rows = [[v, m, _f(o[a]['images_per_sec']), _f(o[b]['images_per_sec']),
           f'{o[b]["images_per_sec"] / o[a]["images_per_sec"] - 1:+.0%}']
          for (v, m), o in by.items() if {a, b} <= set(o)]
  return _table(['variant', 'mode', f'{a_label} images/s', f'{b_label} images/s', 'change'],
                rows)


def _gpu_table(lines):
  rows = [[l['variant'], l['mode'], l['dot_out'], l['attention_kernel'],
           _f(l['images_per_sec'], 0), f'{l["step_ms_median"]:.1f} (IQR {l["step_ms_iqr"]:.1f})',
           f'{l["achieved_gflops"] / 1e3:.0f}', f'{l["mfu"]:.0%}', f'{l["compile_s"]:.1f}',
           _f(l['peak_bytes_in_use'] / 2**30, 1)] for l in lines]
  peaks = sorted({round(l['peak_gflops'] / 1e3) for l in lines})
  return _table(['variant', 'mode', 'dots', 'attention kernel', 'images/s', 'ms/step',
                 'TFLOP/s', 'MFU', 'compile s', 'peak GiB in use'], rows) + [
      '', f'MFU against the bfloat16 matmul peak measured in the same run: '
      f'{", ".join(map(str, peaks))} TFLOP/s (8192^2). "dots": auto is the model\'s choice '
      '(on GPU the plain 16-bit dot), float32 writes the float32 product and casts it.'
      + (' ' + _ONE_PRODUCT_PEAK if _one_product_peak(lines) else '')]


_ONE_PRODUCT_PEAK = ('This run predates chained products in the peak: it timed one '
                     'synchronised product per call, host round trip included, so its peak '
                     'may understate the chip and the MFU overstate it.')


def _one_product_peak(lines) -> bool:
  """Whether a GPU run's peak was timed before matmul_peak chained its products."""
  return any('peak_products_per_call' not in l for l in lines)


def _memory_table(lines):
  rows = [[l['variant'], l['mode'], l['scan'], l['remat'], f'{l["compile_s"]:.1f}',
           f'{l["xla_temp_bytes"] / 2**30:.2f}',
           '' if l.get('peak_bytes_in_use') is None else f'{l["peak_bytes_in_use"] / 2**30:.2f}']
          for l in lines]
  return _table(['variant', 'mode', 'scan', 'remat', 'compile s', 'XLA temp GiB',
                 'peak GiB in use'], rows)


def _repo_path(path: Path) -> str:
  """path relative to the repository, as the commands in the report are run from there."""
  try:
    return str(path.resolve().relative_to(REPO))
  except ValueError:
    return str(path)


def render(out_dir: Path) -> str:
  parts = ['<!-- Generated by `python -m experiments.benchmarks --report-only` from the '
           '.jsonl files beside it; do not edit by hand. -->', '',
           '# Benchmarks', '',
           'Images/s are medians over timed steps (compile and warm-up excluded); FLOPs are '
           'the analytic matmul count (a train step is 3x the forward); the train step is the '
           "trainer's own (AdamW, the non-finite guard, donated state). The PyTorch peer is "
           'the same-shaped Hugging Face `ViTForImageClassification`, timed in the same '
           'process after ours.']
  others = [_cpu_sentence(d, f'{d.name}/') for d in reversed(_cpu_runs(out_dir))]
  if others:
    parts += ['', 'Other CPUs (the same suites, run with `--results-dir` set to a '
              'subfolder). ' + ' '.join(others)]
  for name, suite in SUITES.items():
    path = out_dir / f'{name}.jsonl'
    if not path.exists():
      continue
    lines = _jsonl(path)
    meta = json.loads((out_dir / f'{name}.json').read_text())
    env = next((l for l in lines if 'cpu' in l), {})
    parts += ['', f'## {suite["title"]}', '']
    if name == 'cpu_xla_options':
      parts += _ab_table(lines, 'xla_options', 'default', 'tuned', 'XLA default',
                         'cpu_tuning')
    elif name == 'cpu_attention':
      parts += _ab_table(lines, 'attention', 'explicit', 'auto', 'XLA attention',
                         'C++ kernel')
    elif name == 'cpu_compile_memory':
      parts += _memory_table(lines)
    elif suite.get('gpu'):
      parts += _gpu_table(lines)
    else:
      parts += _peer_tables(lines)
    wall = 'wall time not recorded' if meta['wall_s'] is None else f'{meta["wall_s"]:.0f} s'
    at = f' at commit {meta["commit"]}' if 'commit' in meta else ''
    parts += ['', f'`{meta["command"]}` ({wall}, finished {meta["finished"]}{at}; '
              f'{env.get("device", "?")} on {env.get("cpu", "?")}, {env.get("cpu_count", "?")} '
              f'cores, JAX {env.get("jax", "?")}).'
              + (f' {meta["note"]}' if 'note' in meta else '')]
  for stem, command, title, text in STEP_ANALYSES:
    table = out_dir / f'{stem}.md'
    if table.exists():
      parts += ['', f'## {title}', '', text, '', table.read_text().strip(), '',
                f'`./launch.sh python -m experiments.{command} > '
                f'{_repo_path(out_dir)}/{stem}.md`']
  has = lambda *names: any((out_dir / f'{n}.jsonl').exists() for n in names)  # noqa: E731
  notes = [
      (has('cpu_bfloat16'),
       '- bfloat16 runs the Dense matmuls in bfloat16 with float32 accumulation, forward '
       "and backward, which is what reaches the CPU's bf16 dot-product instructions and "
       'AMX tiles (the bfloat16 peak above is measured the same way). The backward takes '
       "vit.Dense's own derivatives: JAX's would feed the backward dots a float32 "
       'cotangent, which XLA then runs in float32, and sum each bias gradient in 16 bits, '
       'rounding after every addition (slow, and ~3% off over a batch of tokens). On a '
       'Xeon with AMX they made bfloat16 train steps 1.7-1.9x faster (Ti/16 15.0 to 26.1 '
       'images/s, B/16 2.0 to 3.7); how much faster than float32 ones they run there is in '
       'the summary line of each CPU. On the Zen 4 an '
       'earlier VJP for the backward dots alone did not speed up a step. bfloat16 '
       'inference is faster than float32 wherever the matmuls dominate (S/16 and B/16 on '
       'every CPU here). The MLP computes its GELU in float32 and rounds it once: XLA:CPU '
       'runs a bfloat16 tanh GELU about 4x slower (bfloat16 Ti/16 steps on the Zen 5: '
       'inference 14-16% and train 6-14% faster with it, interleaved), and its LayerNorms '
       'take float32 matrix-vector statistics (Ti/16 inference 187 to 177 ms, B/16 1.95 to '
       "1.75 s, interleaved). Attention runs the C++ kernel's bfloat16 version; with it "
       'every bfloat16 line on the Zen 5 beats its float32 line of the same day (first on '
       '2026-12-03 at 23992dc: Ti/16 inference +7%, train +32%; B/16 +56%, +74%).'),
      (has('cpu_float32', 'cpu_bfloat16'),
       '- On the Zen 5 VM a few steps (bfloat16 ones above all) took 3-5 s where the others '
       'took ~0.75, nearly all of it system time over about 1,000 page faults (as many '
       'faults took ~25 ms in another step). They move a median of 5 steps: an earlier '
       'run\'s bfloat16 Ti/16 train line read median 1.48 s, min 0.87, max 3.91. Each line '
       'keeps its min, max and IQR, and newer lines the system CPU time of their median and '
       'slowest steps (`step_system_ms_median`, `step_system_ms_slowest`), which shows such '
       'a stall.'),
      (has('cpu_compile_memory'),
       '- Without scan, XLA:CPU schedules the recomputation of a rematerialised block '
       'early, so remat alone barely lowers its planned memory; with scan the backward '
       'recomputes block by block, and scan + remat is the setting for deep models.'),
      (has('cpu_float32', 'cpu_bfloat16'),
       '- A step timed right after a PyTorch one ran up to 1.5x slower (PyTorch\'s '
       'OpenMP threads keep spinning), so every PyTorch measurement runs after ours.'),
      (has('cpu_float32', 'cpu_attention'),
       '- Attention on the CPU runs `vit_jax/native/cpu_attention.cc` (the lines\' '
       '`attention_kernel` is `cpu_kernel`; lines from before it say `xla`): a custom call, '
       'built on first use for the CPU it runs on, that gives each (example, head) to one '
       'core. XLA splits each 197x197x64 matmul of the attention over both cores, and there '
       'they reached ~100 GFLOP/s where one core alone reaches ~140. With the kernel a '
       'Ti/16 layer\'s attention forward and backward took 16.5 ms instead of 28.0, and '
       'the Ti/16 train step 1.22 s instead of 1.44 (interleaved, Xeon VM). bfloat16 models '
       'run its bfloat16 version (bfloat16 operands, float32 sums; AVX512-BF16 dot products '
       'where the CPU has them): on the Zen 5 their B/16 train step took 5.55 s against '
       '6.92 with the float32 kernel on cast inputs (lines from before it, 2026-12-02 and '
       'earlier, ran the float32 kernel).'),
      (has('cpu_float32'),
       '- XLA:CPU allocates a step\'s temporaries as one block (1.59 GB for a Ti/16 train '
       'step at batch 32), which glibc maps afresh for every step and unmaps after it, so '
       'every step faults it back in. On the Xeon VM steps alternated between ~1.55 s (230 '
       'ms of system time) and ~1.95 s (850 ms). launch.sh preloads '
       '`vit_jax/native/block_cache.c`, which keeps such blocks mapped for the next step: '
       '~1.43 s with ~20 ms of system time. The PyTorch peer, in the same process, gets it '
       'too (its S/16 float32 train step went from 8.2 to 9.5 images/s on the Xeon), so the '
       'ratios moved less than our own figures. Each line\'s `block_cache` says whether it '
       'ran with it (lines from before it have no such field). glibc\'s own tunables could not '
       'do it: `arena_max=1:mmap_max=0` kept the block but on 4 KiB pages (user time +10%) '
       'and with 4 s stalls in the kernel.'),
      (has(*(n for n, suite in SUITES.items() if suite.get('gpu'))),
       '- GPU: the model asks `jax.nn.dot_product_attention` for cuDNN\'s fused kernel '
       '(its default is XLA\'s). In the run above inference got it and a train step at '
       '224 px did not: cuDNN\'s backward pass in that JAX refuses the odd sequence '
       'length (197 tokens), so the model warned and used XLA\'s attention. Since then '
       'odd lengths are padded to even ones for cuDNN, the extra key masked '
       '(`vit.even_length_attention`); not yet timed on a GPU. Writing 16-bit dot '
       'products out in float32 (what the CPU needs) made the GPU train step 1.7x slower, '
       'so off the CPU the dots are plain.')]
  notes = [text for shown, text in notes if shown]
  if notes:
    parts += ['', '## Reading the tables', '', *notes]
  return '\n'.join(parts) + '\n'


# The step analyses whose committed markdown output results.md includes: (file stem, the
# experiments module that writes it and its arguments, title, text).
STEP_ANALYSES = (
    ('step_components', 'step_components', 'Where a float32 train step loses to PyTorch',
     'Each part of a Ti/16 block alone, forward and forward + backward, compiled as training '
     'compiles it, against PyTorch eager. The attention core is the gap: PyTorch\'s fused '
     '`scaled_dot_product_attention` against XLA\'s batched matmuls and softmax; a '
     'hand-written backward (the flash-attention formula) did not change it measurably.'),
    ('step_profile', 'step_profile', 'Where a whole float32 Ti/16 train step spends its time',
     "XLA op kinds from a jax.profiler trace of the trainer's compiled step. Three kinds of "
     'work take most of the traced time: the attention matmuls (`dot_general`, batched over '
     'batch x heads), the column sums of the bias and LayerNorm gradients '
     '(`wrapped_reduce-window`: XLA:CPU splits each into windows of 32 rows), and layout '
     'copies (`copy_bitcast_fusion`, `transpose_copy_fusion`: transposed operands of the '
     'weight-gradient and attention matmuls). Since float32 Dense layers run one 2-D matmul '
     'on CPU, the weight-gradient copies are gone: `copy_bitcast_fusion` took 197 ms of a '
     'Ti/16 step on a Xeon before, 27 ms after (xeon_amx/step_profile.md, which also has '
     "launch.sh's block cache: elementwise ops no longer fault in fresh memory)."),
    ('step_profile_bfloat16', 'step_profile --dtype=bfloat16',
     'Where a whole bfloat16 Ti/16 train step spends its time',
     'The same trace for bfloat16 compute (float32 parameters). The Dense matmuls go to '
     "YNNPACK (`ynn_fusion`), XLA:CPU's path to the bf16 dot-product instructions: on the Zen "
     '5, 375 ms of traced time for about 206 GFLOP, ~550 GFLOP/s where its bfloat16 matmul '
     'peak is 700-870. Around them: the attention kernel in bfloat16 (`ffi_call`, 84 ms; '
     'the float32 kernel on cast inputs took 170 ms in the trace of 2026-12-02), '
     'conversions between bfloat16 and float32 (`wrapped_convert` and the `*_convert_fusion` '
     'kinds, ~57 ms), and transposed copies of the activations for the weight gradients '
     "(`copy_bitcast_fusion`, 25 ms), which float32's 2-D Dense does not make. The step took "
     '541 ms untraced against 761 for float32 in the cpu_float32 run of the same day. A '
     'trace taken just before it read 1263 ms of ops for the same step (every elementwise '
     'kind 3-15x slower): a stalled VM, so traces are taken twice.'),
)


README = REPO / 'README.md'
BEGIN = '<!-- benchmarks:begin (generated by `python -m experiments.benchmarks`) -->'
END = '<!-- benchmarks:end -->'


def readme_block(out_dir: Path) -> str:
  """The README's quote of the CPU tables: images/s, ours and the PyTorch peer's, from the
  newest run of the peer suites (out_dir's own or a subfolder's: the code changes between
  runs, so the newest shows what it does now), then a dated sentence per other CPU run."""
  runs = _cpu_runs(out_dir, [out_dir])
  if not runs:
    return ''
  newest = runs[-1]
  rows = {}
  for dtype in ('float32', 'bfloat16'):
    for l in _jsonl(newest / f'cpu_{dtype}.jsonl'):
      rows.setdefault((l['variant'], l['mode']), {})[(l['impl'], dtype)] = l['images_per_sec']
  body = []
  for (variant, mode), r in rows.items():
    cells = [variant, mode]
    for dtype in ('float32', 'bfloat16'):
      ours, theirs = r.get(('vit_jax', dtype)), r.get(('hf_torch_eager', dtype))
      cells += [_f(ours, 1), _f(theirs, 1), _f(ours / theirs if ours and theirs else None)]
    body.append(cells)
  table = _table(['variant (batch 32, 224 px)', 'mode', 'ours f32', 'PyTorch f32', 'ratio',
                  'ours bf16', 'PyTorch bf16', 'ratio'], body)
  env = _jsonl(newest / 'cpu_float32.jsonl')[0]
  link = _readme_link(out_dir, newest)
  return '\n'.join([
      f'Images/s on a {env.get("cpu_count", "?")}-core {_cpu_name(newest)}, measured '
      f'{_measured(newest)}, ours against the same-shaped Hugging Face ViT in PyTorch '
      f'(eager), timed in one run; from [{link}]({link}/results.md), which has MFU, compile '
      'time, memory and the commands:', '', *table, *_gpu_quote(out_dir),
      *[x for d in reversed(runs[:-1])
        for x in ('', _cpu_sentence(d, _readme_link(out_dir, d) + '/'))]])


def _readme_link(out_dir: Path, d: Path) -> str:
  """d (out_dir or one of its subfolders) as the README links it."""
  base = 'experiments/results/benchmarks'
  return base if d == out_dir else f'{base}/{d.name}'


def _meta(d: Path, suite: str) -> dict:
  """A suite's record (command, finish time...) in d; {} where there is none."""
  path = d / f'{suite}.json'
  return json.loads(path.read_text()) if path.exists() else {}


def _measured(d: Path) -> str:
  """When and on which commit d's float32 peer suite ran, as far as its record says."""
  meta = _meta(d, 'cpu_float32')
  text = meta['finished'][:10] if 'finished' in meta else 'on an unrecorded date'
  return text + (f' at commit {meta["commit"]}' if 'commit' in meta else '')


def _cpu_name(d: Path) -> str:
  """The CPU of d's runs: the record's own `cpu` where the lines predate the benchmark
  naming the CPU's model, else the lines'."""
  lines = _jsonl(d / 'cpu_float32.jsonl')
  return _meta(d, 'cpu_float32').get('cpu') or lines[0].get('cpu', '?')


def _cpu_runs(out_dir: Path, include: list[Path] = ()) -> list[Path]:
  """out_dir's subfolders (and the folders in include) holding the float32 peer suite with
  ratios (one CPU's run each, `--results-dir=experiments/results/benchmarks/NAME`), oldest
  first."""
  dirs = [*include, *sorted(p for p in out_dir.iterdir() if p.is_dir())]
  runs = [d for d in dirs
          if any('ratio_vs_torch_eager' in l for l in _jsonl(d / 'cpu_float32.jsonl'))]
  return sorted(runs, key=lambda d: _meta(d, 'cpu_float32').get('finished', ''))


def _cpu_sentence(d: Path, link_prefix: str = '') -> str:
  """d's float32 peer suite in a sentence: its CPU, date, range of ratios, link, and with
  the bfloat16 suite beside it, its ratios and how bfloat16 trains against float32 (AMX
  changes that)."""
  lines = _jsonl(d / 'cpu_float32.jsonl')
  ours = [l for l in lines if 'ratio_vs_torch_eager' in l]
  ratios = [l['ratio_vs_torch_eager'] for l in ours]
  theirs = next((l['peak_gflops'] for l in lines if l['impl'] == 'hf_torch_eager'
                 and 'peak_gflops' in l), None)
  text = (f'On {_cpu_name(d)} ([{d.name}]({link_prefix}results.md), measured '
          f'{_measured(d)}), float32 ours / PyTorch is {min(ratios):.2f} to '
          f'{max(ratios):.2f}'
          + ('' if theirs is None else
             f', with float32 matmul peaks of {ours[0]["peak_gflops"]:.0f} (ours) and '
             f'{theirs:.0f} GFLOP/s (PyTorch)'))
  bf16 = [l for l in _jsonl(d / 'cpu_bfloat16.jsonl') if 'ratio_vs_torch_eager' in l]
  if bf16:
    bf16_ratios = [l['ratio_vs_torch_eager'] for l in bf16]
    text += f'; bfloat16 ours / PyTorch is {min(bf16_ratios):.2f} to {max(bf16_ratios):.2f}'
    f32_train = {l['variant']: l['images_per_sec'] for l in ours if l['mode'] == 'train'}
    speedups = [l['images_per_sec'] / f32_train[l['variant']] for l in bf16
                if l['mode'] == 'train' and l['variant'] in f32_train]
    if speedups:
      text += (f', and our bfloat16 train steps run {min(speedups):.2f} to '
               f'{max(speedups):.2f} times as fast as our float32 ones')
  return text + '.'


def _gpu_quote(out_dir: Path) -> list[str]:
  """One sentence on the GPU suites' figures (the model's own choices), if they were run."""
  lines = [l for name, s in SUITES.items() if s.get('gpu')
           for l in _jsonl(out_dir / f'{name}.jsonl')]
  firsts = {}  # the model's own choices, one line per (variant, mode): the first suite's
  for l in lines:
    if l['dot_out'] == 'auto' and l['attention'] == 'auto':
      firsts.setdefault((l['variant'], l['mode']), l)
  lines = list(firsts.values())
  if not lines:
    return []
  parts = [f'{l["variant"]} {"trains" if l["mode"] == "train" else "infers"} at '
           f'{l["images_per_sec"]:.0f} images/s (MFU {l["mfu"]:.0%})' for l in lines]
  return ['', f'On a GPU ({lines[0]["device"]}, bfloat16, batch {lines[0]["batch"]}): '
          + ', '.join(parts) + '; MFU against a matmul peak measured in the same run.'
          + (' ' + _ONE_PRODUCT_PEAK if _one_product_peak(lines) else '')]


def update_readme(out_dir: Path, readme: Path = README):
  text = readme.read_text()
  if BEGIN not in text or END not in text:
    raise SystemExit(f'{readme} has no {BEGIN} ... {END} block to fill.')
  head, rest = text.split(BEGIN, 1)
  readme.write_text(head + BEGIN + '\n' + readme_block(out_dir) + '\n' + END
                    + rest.split(END, 1)[1])


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog='\n'.join(__doc__.splitlines()[2:]))
  cpu = [n for n, s in SUITES.items() if not s.get('gpu')]
  p.add_argument('--suites', default=','.join(cpu), help=f'comma list of {", ".join(SUITES)}')
  p.add_argument('--results-dir', type=Path, default=RESULTS)
  p.add_argument('--report-only', action='store_true')
  args = p.parse_args(argv)
  unknown = [s for s in args.suites.split(',') if s not in SUITES]
  if unknown:
    p.error(f'unknown suite(s) {unknown}; suites: {", ".join(SUITES)}')
  args.results_dir.mkdir(parents=True, exist_ok=True)
  if not args.report_only:
    for name in args.suites.split(','):
      run_suite(name, args.results_dir)
  (args.results_dir / 'results.md').write_text(render(args.results_dir))
  print(f'wrote {args.results_dir / "results.md"}', file=sys.stderr)
  if RESULTS.resolve() in (args.results_dir.resolve(), args.results_dir.resolve().parent):
    update_readme(RESULTS)  # it quotes the newest run, whichever CPU's folder that is
    print(f'updated the benchmark table in {README}', file=sys.stderr)


if __name__ == '__main__':
  main()
