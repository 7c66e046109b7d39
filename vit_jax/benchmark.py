"""`python -m vit_jax.benchmark`: how fast a ViT runs here, against the limit and the peers.

  python -m vit_jax.benchmark --variant=Ti/16,S/16,B/16 --batch=32 --mode=infer,train
  python -m vit_jax.benchmark --variant=B/16 --dtype=bfloat16 --compare-torch
  python -m vit_jax.benchmark --variant=H/14 --mode=train --scan=0,1 --remat=0,1 --compile-only
  python -m vit_jax.benchmark --variant=Ti/16,S/16 --attention=sdpa,explicit   # A/B
  python -m vit_jax.benchmark --variant=B/16 --xla-options=default,tuned          # A/B
  python -m vit_jax.benchmark --variant=B/16,L/16 --dtype=bfloat16 --batch=256 \
      --attention=auto,xla --dot-out=auto,float32                 # GPU: cuDNN attention
  python -m vit_jax.benchmark --variant=mu/7 --image-size=28 --batch=128 --mode=train \
      --attention=matmul,broadcast                   # A/B at MNIST shapes (17 tokens)

For each (variant, mode, dtype, scan, remat) it prints one JSON line (stdout): images/s,
step time (median, min, max and interquartile range over --repeats timed steps; compile and
--warmup steps excluded) with the system CPU time of the median and slowest steps (a VM's
page-fault stalls show there), compile time, the model's analytic FLOPs (matmuls only, 2 per
multiply-add; a train step counts 3x the forward), achieved GFLOP/s, and MFU against a
matmul peak measured here on the same device and dtype (the best of a few --peak-size
square matmuls). Memory: XLA's planned temporary bytes of the compiled step (every
backend) and the peak bytes in use where the backend reports them (GPU, TPU).
--compile-only compiles without running (memory and compile time of models too big to run
here).

The train step is the trainer's own (`steps.make_train_step`: AdamW, label smoothing off,
the non-finite guard), jitted with the state donated, so a speed-up here is one in training.
Steps compile with the XLA options training uses (vit_jax.cpu_tuning; --xla-options=default
for XLA's own). --compare-torch also times the same-shaped Hugging Face ViT in PyTorch in
this process, after all of ours (eager, and torch.compile when it works; inference under
torch.inference_mode, train as forward + backward + AdamW step) and adds the ratio
ours/theirs to our line. Its lines carry PyTorch's own matmul peak (the same --peak-size
product, through its BLAS) and its MFU against it: a ratio far from 1 can then be read as
model against model or as matmul library against matmul library.
Progress goes to stderr.
"""

import argparse
import contextlib
import functools
import itertools
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Optional, Sequence

try:
  import resource
except ImportError:  # Windows
  resource = None

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import cpu_tuning
from vit_jax.models import get_model, resnet, variant_kwargs
from vit_jax.models.vit import fitting_image_size
from vit_jax.native import cpu_attention


def log(msg: str):
  print(msg, file=sys.stderr, flush=True)


# ---- What the model costs. ----

def forward_flops(*, width: int, depth: int, mlp_dim: int, patch_size: int, image_size: int,
                  channels: int = 3, classifier: str = 'token', num_classes: int = 1000,
                  representation_size: Optional[int] = None,
                  resnet_layers: Optional[Sequence[int]] = None,
                  resnet_width_factor: float = 1.0, **_) -> int:
  """Matmul FLOPs of one image's forward pass (2 per multiply-add). LayerNorm, softmax,
  GELU and additions are left out, as in the usual MFU accounting: XLA's own count, which
  includes them, is 1.3% higher for Ti/16 at 224 (tests/test_benchmark.py). They cost
  time rather than FLOPs, which is what a low MFU then shows. A hybrid adds its stem's
  convolutions, and its patches are cut from the stem's feature map."""
  d, m = width, mlp_dim
  flops, side = 0, image_size
  if resnet_layers is not None:
    flops, side, channels = resnet.stem_flops(image_size, resnet_layers, resnet_width_factor,
                                              channels)
  n = (side // patch_size) ** 2
  t = n + (classifier == 'token')
  flops += 2 * n * patch_size * patch_size * channels * d           # patch embedding
  flops += depth * (2 * t * d * 3 * d       # query, key, value projections
                    + 2 * t * t * d * 2     # scores q.k and the weighted sum of values
                    + 2 * t * d * d         # output projection
                    + 2 * t * d * m * 2)    # MLP
  if classifier == 'map':  # one probe attending to the t tokens, then an MLP
    flops += 2 * d * d * 2 + 2 * t * d * 2 * d + 2 * t * d * 2 + 2 * d * m * 2
  out = representation_size or d
  if representation_size:
    flops += 2 * d * representation_size
  return flops + 2 * out * (num_classes or 0)


# ---- Timing. ----

def _ready(x):
  return jax.block_until_ready(x)


def time_steps(step: Callable[[], Any], *, warmup: int, repeats: int,
               system: Optional[list] = None) -> list[float]:
  """Seconds of each of `repeats` calls of `step` (which must block), after `warmup`.
  `system`, a list, gets each call's system CPU seconds (all threads of the process)."""
  for _ in range(warmup):
    step()
  times = []
  for _ in range(repeats):
    s0, t0 = _system_seconds(), time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
    if system is not None:
      system.append(_system_seconds() - s0)
  return times


def _system_seconds() -> float:
  """The process's system CPU seconds so far: getrusage's (microseconds) where there is
  one, else os.times' (clock ticks, 10 ms on Linux)."""
  if resource is None:
    return os.times().system
  return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def summary(times: list[float], images: int) -> dict[str, float]:
  q = np.percentile(times, [25, 75])
  med = statistics.median(times)
  return dict(images_per_sec=images / med, step_ms_median=1e3 * med,
              step_ms_min=1e3 * min(times), step_ms_max=1e3 * max(times),
              step_ms_iqr=1e3 * float(q[1] - q[0]), repeats=len(times))


def timed_summary(step: Callable[[], Any], images: int, *, warmup: int,
                  repeats: int) -> dict[str, float]:
  """summary() of timed steps, with the system CPU time of the median and the slowest
  step: on the VMs here a few steps stalled for seconds, nearly all of it in the kernel
  (page faults that cost ~25 ms in other steps), and these fields show such a step."""
  system = []
  times = time_steps(step, warmup=warmup, repeats=repeats, system=system)
  out = summary(times, images)
  out.update(step_system_ms_median=1e3 * statistics.median(system),
             step_system_ms_slowest=1e3 * system[int(np.argmax(times))])
  return out


# --xla-options: the compiler options a step is compiled with (A/B of cpu_tuning).
XLA_OPTIONS = {'tuned': cpu_tuning.compiler_options, 'default': lambda dtype: {}}
_PEAKS: dict = {}


def matmul_peak(dtype: str, size: int, repeats: int = 5) -> dict[str, float]:
  """GFLOP/s of a size x size matmul in `dtype` on the default device, through the model's
  own dot (vit.dot_general: float32 accumulation), best median of three rounds under XLA's
  default options and ours (cpu_tuning): the practical ceiling MFU is measured against.

  A timed call chains enough dependent products to last ~50 ms: a GPU does an 8192^2
  product in ~1.5 ms, and one product per synchronised call would count the host round
  trip as matmul time. On a CPU one product already lasts longer, so a call is one."""
  from vit_jax.models import vit  # pylint: disable=g-import-not-at-top
  key = (dtype, size)
  if key not in _PEAKS:
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32).astype(dtype)
    b = (jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
         / np.sqrt(size)).astype(dtype)  # keeps a chain of products at unit scale
    dot = vit.dot_general(dtype)

    def chain(x, y, n):
      for _ in range(n):
        x = dot(x, y, (((1,), (0,)), ((), ())))
      return x

    @functools.cache
    def compiled(options, n):
      f = jax.jit(chain, static_argnums=2).lower(a, b, n).compile(
          compiler_options=dict(options))
      _ready(f(a, b))
      return f

    def per_product(options, n):
      f = compiled(options, n)
      return min(statistics.median(time_steps(lambda: _ready(f(a, b)), warmup=1,
                                              repeats=repeats)) for _ in range(3)) / n

    distinct = {tuple(sorted(o(dtype).items())) for o in XLA_OPTIONS.values()}
    once = compiled(sorted(distinct)[0], 1)
    # Sized on the fastest of 3 calls: one call caught by a stall of the VM would size the
    # chain at a single product.
    n = max(1, min(64, round(0.05 / min(time_steps(lambda: _ready(once(a, b)), warmup=0,
                                                    repeats=3)))))
    # The same set twice (other backends, bf16) is timed once.
    best = min(per_product(options, n) for options in distinct)
    _PEAKS[key] = dict(peak_gflops=2 * size ** 3 / best / 1e9, peak_matmul_size=size,
                       peak_products_per_call=n)
  return _PEAKS[key]


def _memory(compiled) -> dict[str, Optional[int]]:
  out = dict(xla_temp_bytes=None, peak_bytes_in_use=None)
  try:
    analysis = compiled.memory_analysis()
    out['xla_temp_bytes'] = int(analysis.temp_size_in_bytes)
  except Exception:  # noqa: BLE001  (not every backend has it)
    pass
  stats = jax.devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    out['peak_bytes_in_use'] = int(stats['peak_bytes_in_use'])
  return out


# ---- Our model. ----

def _train_config(batch: int):
  from configs import common  # pylint: disable=g-import-not-at-top
  c = common.get_config()
  c.batch_size = batch
  c.optimizer.update(name='adamw', learning_rate=1e-3, warmup_steps=1, decay='constant',
                     weight_decay=0.0, grad_clip_norm=0.0)
  return c


ATTENTION_PATHS = ('auto', 'sdpa', 'xla', 'cudnn', 'explicit', 'matmul', 'broadcast')


@contextlib.contextmanager
def attention_path(name: str):
  """'auto' (the model's choice: on CPU the C++ kernel where it can), 'sdpa'
  (jax.nn.dot_product_attention with the model's implementation choice), 'xla' or 'cudnn'
  (dot_product_attention forced to that implementation), 'explicit' (written out,
  heads-major), or the explicit path forced to batched 'matmul's or to 'broadcast'
  products: for A/B timing of the formulations. All but 'auto' leave the C++ kernel out."""
  from vit_jax.models import vit  # pylint: disable=g-import-not-at-top
  saved = (vit.fused_attention_backend, vit.BROADCAST_ATTENTION_MAX, vit.sdpa_implementation,
           vit.CPU_ATTENTION_KERNEL)
  if name != 'auto':
    vit.CPU_ATTENTION_KERNEL = False
    vit.fused_attention_backend = lambda: name in ('sdpa', 'xla', 'cudnn')
  if name in ('xla', 'cudnn'):
    vit.sdpa_implementation = lambda dtype: None if name == 'xla' else 'cudnn'
  if name in ('matmul', 'broadcast'):
    vit.BROADCAST_ATTENTION_MAX = 0 if name == 'matmul' else float('inf')
  try:
    yield
  finally:
    (vit.fused_attention_backend, vit.BROADCAST_ATTENTION_MAX, vit.sdpa_implementation,
     vit.CPU_ATTENTION_KERNEL) = saved


DOT_OUTPUTS = {'auto': None, 'float32': True, 'native': False}


@contextlib.contextmanager
def dot_output(name: str):
  """How 16-bit Dense dots write their product: 'auto' (the model's per-backend choice),
  'float32' (float32 accumulator written out, then cast) or 'native' (the backend's own
  16-bit dot): A/B of models.vit.dot_general."""
  from vit_jax.models import vit  # pylint: disable=g-import-not-at-top
  saved = vit.DOT_FLOAT32_OUTPUT
  vit.DOT_FLOAT32_OUTPUT = DOT_OUTPUTS[name]
  try:
    yield
  finally:
    vit.DOT_FLOAT32_OUTPUT = saved


def attention_kernel(compiled) -> str:
  """Which attention the compiled step runs: 'cudnn' when it calls cuDNN's fused
  attention (the custom call __cudnn$fmha...), 'cpu_kernel' when it calls
  vit_jax/native/cpu_attention.cc, else 'xla' (XLA's own ops)."""
  text = compiled.as_text()
  if 'cudnn$fmha' in text:
    return 'cudnn'
  return 'cpu_kernel' if cpu_attention.TARGET_PREFIX in text else 'xla'


def bench_ours(variant: str, *, mode: str, batch: int, image_size: int, dtype: str,
               scan: bool, remat: bool, num_classes: int, warmup: int, repeats: int,
               compile_only: bool, attention: str = 'auto', xla_options: str = 'tuned',
               dot_out: str = 'auto') -> dict[str, Any]:
  from vit_jax import optim, sharding, steps  # pylint: disable=g-import-not-at-top
  model = get_model(variant, num_classes=num_classes, dtype=jnp.dtype(dtype), scan=scan,
                    remat=remat)
  images = jax.ShapeDtypeStruct((batch, image_size, image_size, 3), jnp.float32)
  labels = jax.ShapeDtypeStruct((batch,), jnp.int32)
  abstract_params = jax.eval_shape(model.init, jax.random.key(0), images)['params']
  if mode == 'infer':
    fn = jax.jit(lambda p, x: model.apply({'params': p}, x)[0])
    args_abstract = (abstract_params, images)
  else:
    config = _train_config(batch)
    tx, schedule = optim.make_optimizer(config.optimizer, 10)
    mesh = sharding.make_mesh()
    fn = jax.jit(steps.make_train_step(model, tx, schedule, config, num_classes, mesh),
                 donate_argnums=(0,))
    state = jax.eval_shape(lambda p: dict(step=jnp.zeros((), jnp.int32), params=p,
                                          opt_state=tx.init(p)), abstract_params)
    args_abstract = (state, dict(image=images, label=labels))
  t0 = time.perf_counter()
  with attention_path(attention), dot_output(dot_out):
    compiled = fn.lower(*args_abstract).compile(
        compiler_options=XLA_OPTIONS[xla_options](dtype))
  result = dict(compile_s=time.perf_counter() - t0, attention_kernel=attention_kernel(compiled),
                **_memory(compiled))
  if compile_only:
    return result

  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros(images.shape))['params']
  x = jax.random.uniform(jax.random.key(1), images.shape, minval=-1.0, maxval=1.0)
  if mode == 'infer':
    step = lambda: _ready(compiled(params, x))  # noqa: E731
  else:
    y = jax.random.randint(jax.random.key(2), labels.shape, 0, num_classes)
    box = [dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))]
    batch_ = dict(image=x, label=y)

    def step():
      box[0], metrics = compiled(box[0], batch_)
      _ready(metrics)
  result.update(timed_summary(step, batch, warmup=warmup, repeats=repeats))
  result.update(_memory(compiled))
  return result


# ---- The PyTorch peer: Hugging Face transformers ViT of the same shape. ----

def _torch_for(dtype: str):
  """(torch, its dtype for `dtype`), with every core's thread, as each peer timing runs."""
  from vit_jax import torch_peers  # pylint: disable=g-import-not-at-top
  torch = torch_peers.import_torch()
  torch.set_num_threads(os.cpu_count())
  return torch, {'float32': torch.float32, 'bfloat16': torch.bfloat16}[dtype]


def bench_torch(variant: str, *, mode: str, batch: int, image_size: int, dtype: str,
                num_classes: int, warmup: int, repeats: int, compiled: bool
                ) -> dict[str, Any]:
  from vit_jax import torch_peers  # pylint: disable=g-import-not-at-top
  torch, tdtype = _torch_for(dtype)
  transformers = torch_peers.import_transformers()
  v = variant_kwargs(variant)
  config = transformers.ViTConfig(
      hidden_size=v['width'], num_hidden_layers=v['depth'], num_attention_heads=v['num_heads'],
      intermediate_size=v['mlp_dim'], image_size=image_size, patch_size=v['patch_size'],
      num_labels=num_classes, hidden_act='gelu_pytorch_tanh', layer_norm_eps=1e-6,
      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  model = transformers.ViTForImageClassification(config).to(tdtype)
  x = torch.rand(batch, 3, image_size, image_size, dtype=tdtype) * 2 - 1
  y = torch.randint(0, num_classes, (batch,))
  if mode == 'infer':
    model.eval()
    fwd = torch.compile(model) if compiled else model

    def step():
      with torch.inference_mode():
        fwd(pixel_values=x).logits.float().sum().item()
  else:
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    fwd = torch.compile(model) if compiled else model

    def step():
      loss = torch.nn.functional.cross_entropy(fwd(pixel_values=x).logits.float(), y)
      loss.backward()
      opt.step()
      opt.zero_grad(set_to_none=True)
      loss.item()
  t0 = time.perf_counter()
  step()  # the first call compiles (torch.compile) or warms the allocator (eager)
  first_s = time.perf_counter() - t0
  out = timed_summary(step, batch, warmup=warmup, repeats=repeats)
  out['compile_s'] = first_s if compiled else None
  return out


_TORCH_PEAKS: dict = {}


# Square matmul sizes the peak is the best of, per backend (8192 elsewhere). On a 2-core Xeon VM
# XLA:CPU's 4096^2 float32 product ran at 274 GFLOP/s against 303-312 for 2048^2 and
# 3072^2 (and 313 for B/16's 6304x768x3072): against 4096^2 alone B/16 inference showed an
# MFU of 106%.
DEFAULT_PEAK_SIZES = {'cpu': '2048,3072,4096'}


def torch_matmul_peak(dtype: str, size: int, repeats: int = 5) -> float:
  """GFLOP/s of a size x size matmul in PyTorch on the CPU, with the threads its ViT gets,
  best median of three rounds: the peer's own ceiling, as matmul_peak is ours."""
  if (dtype, size) not in _TORCH_PEAKS:
    torch, tdtype = _torch_for(dtype)
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=gen).to(tdtype) for _ in range(2))
    best = min(statistics.median(time_steps(lambda: a @ b, warmup=1, repeats=repeats))
               for _ in range(3))  # CPU tensors: the product is done when @ returns
    _TORCH_PEAKS[(dtype, size)] = 2 * size ** 3 / best / 1e9
  return _TORCH_PEAKS[(dtype, size)]


# ---- CLI. ----

_TRUE, _FALSE = ('1', 'true', 'yes'), ('0', 'false', 'no')


def _bools(s: str) -> list[bool]:
  return [v.strip().lower() in _TRUE for v in s.split(',')]


def _environment() -> dict[str, Any]:
  dev = jax.devices()[0]
  return dict(backend=jax.default_backend(), device=dev.device_kind, devices=jax.device_count(),
              cpu=cpu_tuning.cpu_name(), cpu_count=os.cpu_count(), jax=jax.__version__,
              xla_flags=os.environ.get('XLA_FLAGS', ''),
              # launch.sh's vit_jax/native/block_cache.c: CPU train steps ~20% apart with it
              block_cache='vit_jax_block_cache' in os.environ.get('LD_PRELOAD', ''))


def measure_ours(args, *, variant: str, mode: str, dtype: str, scan: bool, remat: bool,
                 attention: str, xla_options: str, dot_out: str, flops: int, peak: dict,
                 env: dict) -> dict:
  """One configuration of our model: its JSON line (printed by run())."""
  log(f'{variant} {mode} batch {args.batch} {args.image_size}px {dtype} scan={scan} '
      f'remat={remat} attention={attention} xla_options={xla_options} dot_out={dot_out} ...')
  r = bench_ours(variant, mode=mode, batch=args.batch, image_size=args.image_size,
                 dtype=dtype, scan=scan, remat=remat, num_classes=args.num_classes,
                 warmup=args.warmup, repeats=args.repeats, compile_only=args.compile_only,
                 attention=attention, xla_options=xla_options, dot_out=dot_out)
  line = dict(impl='vit_jax', variant=variant, mode=mode, batch=args.batch,
              image_size=args.image_size, dtype=dtype, scan=scan, remat=remat,
              attention=attention, xla_options=xla_options, dot_out=dot_out, **r,
              gflop_per_image=flops / 1e9, **peak, **env)
  if 'images_per_sec' in r:
    line['achieved_gflops'] = flops * r['images_per_sec'] / 1e9
    if peak:
      line['mfu'] = line['achieved_gflops'] / peak['peak_gflops']
    log(f'  {line["images_per_sec"]:.1f} images/s, {line["step_ms_median"]:.1f} ms/step'
        + (f', MFU {line["mfu"]:.1%}' if 'mfu' in line else ''))
  else:
    log(f'  compiled in {line["compile_s"]:.1f} s, XLA temp '
        f'{(line["xla_temp_bytes"] or 0) / 2**30:.2f} GiB')
  return line


def measure_torch(args, kind: str, *, variant: str, mode: str, dtype: str, flops: int,
                  peak_sizes: Sequence[int], env: dict) -> dict:
  """The same-shaped Hugging Face ViT: its JSON line, or {'error': ...}."""
  log(f'PyTorch (Hugging Face ViT, {kind}) {variant} {mode} {dtype} ...')
  try:
    t = bench_torch(variant, mode=mode, batch=args.batch, image_size=args.image_size,
                    dtype=dtype, num_classes=args.num_classes, warmup=args.warmup,
                    repeats=args.repeats, compiled=kind == 'compile')
  except Exception as e:  # noqa: BLE001  (torch.compile fails in many ways)
    log(f'  PyTorch {kind} failed: {type(e).__name__}: {str(e)[:300]}')
    return dict(error=f'{type(e).__name__}: {str(e)[:300]}')
  peak, peak_size = max((torch_matmul_peak(dtype, n), n) for n in peak_sizes)
  achieved = flops * t['images_per_sec'] / 1e9
  log(f'  {t["images_per_sec"]:.1f} images/s, {t["step_ms_median"]:.1f} ms/step, MFU '
      f'{achieved / peak:.1%} of its own {dtype} matmul peak ({peak:.0f} GFLOP/s)')
  return dict(impl=f'hf_torch_{kind}', variant=variant, mode=mode, batch=args.batch,
              image_size=args.image_size, dtype=dtype, **t, gflop_per_image=flops / 1e9,
              achieved_gflops=achieved, peak_gflops=peak, peak_matmul_size=peak_size,
              mfu=achieved / peak, **env)


def run(args) -> list[dict]:
  """All of our measurements first, then PyTorch's: PyTorch's OpenMP threads keep
  spinning after it returns, and a JAX step timed right after one ran up to 1.5x slower
  (B/16 train 0.91 vs 1.30 images/s). Our lines carry ratio_vs_torch_<kind>. Without
  --compare-torch each line is printed as soon as it is measured, so a run cut short
  keeps what it measured."""
  env = _environment()
  log(f'benchmark on {env["backend"]} ({env["device"]} x{env["devices"]}; {env["cpu"]}, '
      f'{env["cpu_count"]} cores), jax {env["jax"]}')
  sizes = args.peak_size or DEFAULT_PEAK_SIZES.get(env['backend'], '8192')
  peak_sizes = [int(n) for n in sizes.split(',')]
  kinds = args.compare_torch.split(',') if args.compare_torch and not args.compile_only else []
  ours = []
  for dtype in args.dtype.split(','):
    peak = {} if args.compile_only else max(
        (matmul_peak(dtype, n) for n in peak_sizes), key=lambda p: p['peak_gflops'])
    if peak:
      log(f'{dtype} matmul peak: {peak["peak_gflops"]:.1f} GFLOP/s '
          f'({peak["peak_matmul_size"]}^2, the best of {peak_sizes})')
    for variant, mode, scan, remat, attention, xla_options, dot_out in itertools.product(
        args.variant.split(','), args.mode.split(','), _bools(args.scan), _bools(args.remat),
        args.attention.split(','), args.xla_options.split(','), args.dot_out.split(',')):
      flops = forward_flops(**variant_kwargs(variant), image_size=args.image_size,
                            num_classes=args.num_classes) * (3 if mode == 'train' else 1)
      ours.append(measure_ours(args, variant=variant, mode=mode, dtype=dtype, scan=scan,
                               remat=remat, attention=attention, xla_options=xla_options,
                               dot_out=dot_out, flops=flops, peak=peak, env=env))
      if not kinds:
        print(json.dumps(ours[-1]), flush=True)
  if not kinds:
    return ours
  theirs = {}
  for line in ours:
    key = (line['variant'], line['mode'], line['dtype'])
    for kind in kinds:
      if (kind, *key) not in theirs:
        theirs[(kind, *key)] = measure_torch(args, kind, variant=key[0], mode=key[1],
                                             dtype=key[2], flops=line['gflop_per_image'] * 1e9,
                                             peak_sizes=peak_sizes, env=env)
      t = theirs[(kind, *key)]
      if 'error' in t:
        line[f'torch_{kind}_error'] = t['error']
      else:
        line[f'ratio_vs_torch_{kind}'] = line['images_per_sec'] / t['images_per_sec']
  lines = [t for t in theirs.values() if 'error' not in t] + ours
  for line in lines:
    print(json.dumps(line), flush=True)
  for line in ours:
    ratios = ', '.join(f'x{line[k]:.2f} {k[len("ratio_vs_"):]}' for k in line
                       if k.startswith('ratio_vs_'))
    if ratios:
      log(f'{line["variant"]} {line["mode"]} {line["dtype"]} '
          f'{line["images_per_sec"]:.1f} images/s: {ratios}')
  return lines


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m vit_jax.benchmark', description=__doc__.splitlines()[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog='\n'.join(__doc__.splitlines()[2:]))
  parser.add_argument('--variant', default='Ti/16', help='comma list, e.g. Ti/16,S/16,B/16')
  parser.add_argument('--mode', default='infer,train', help='infer, train or both')
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--image-size', type=int, default=224)
  parser.add_argument('--dtype', default='float32', help='float32, bfloat16 or both')
  parser.add_argument('--num-classes', type=int, default=1000)
  parser.add_argument('--scan', default='0', help='0, 1 or 0,1 (scan over layers)')
  parser.add_argument('--remat', default='0', help='0, 1 or 0,1 (per-block remat)')
  parser.add_argument('--attention', default='auto',
                      help="auto (the model's choice), sdpa, xla, cudnn, explicit, matmul, "
                      'broadcast, or a comma list: A/B of the attention formulations')
  parser.add_argument('--xla-options', default='tuned',
                      help='tuned (vit_jax.cpu_tuning, what training uses), default (XLA\'s '
                      'own), or default,tuned: A/B of the compiler options')
  parser.add_argument('--dot-out', default='auto',
                      help="auto (the model's per-backend choice), float32 (16-bit dots write "
                      'float32, then cast), native (the backend\'s 16-bit dot), or a comma '
                      'list: A/B of models.vit.dot_general')
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--peak-size', default='',
                      help='matmul size(s) for the peak, a comma list: the best counts '
                      '(default 2048,3072,4096 on CPU, 8192 else)')
  parser.add_argument('--compile-only', action='store_true')
  parser.add_argument('--compare-torch', nargs='?', const='eager,compile', default='',
                      help='eager, compile or both (default both)')
  args = parser.parse_args(argv)
  for v in args.variant.split(','):
    try:
      if 'resnet_layers' in variant_kwargs(v) and args.compare_torch:
        parser.error(f'{v} is a hybrid and the PyTorch peer is a pure ViT: drop '
                     '--compare-torch, or pass a ViT variant such as B/16.')
    except ValueError as e:
      parser.error(str(e))
  bad = [m for m in args.mode.split(',') if m not in ('infer', 'train')]
  bad += [d for d in args.dtype.split(',') if d not in ('float32', 'bfloat16')]
  bad += [k for k in args.compare_torch.split(',') if k and k not in ('eager', 'compile')]
  bad += [a for a in args.attention.split(',') if a not in ATTENTION_PATHS]
  bad += [o for o in args.xla_options.split(',') if o not in XLA_OPTIONS]
  bad += [o for o in args.dot_out.split(',') if o not in DOT_OUTPUTS]
  if bad:
    parser.error(f'unknown value(s) {bad}: --mode takes infer,train; --dtype float32,'
                 'bfloat16; --compare-torch eager,compile; --attention '
                 + ','.join(ATTENTION_PATHS) + '; '
                 '--xla-options tuned,default; --dot-out ' + ','.join(DOT_OUTPUTS) + '.')
  bad = [f'--{name} {value}' for name in ('scan', 'remat')
         for value in getattr(args, name).split(',') if value.strip().lower() not in
         _TRUE + _FALSE]
  if bad:
    parser.error(f'{", ".join(bad)}: expected 0 or 1, or 0,1 for both.')
  for name, least in (('batch', 1), ('repeats', 1), ('warmup', 0), ('image_size', 1),
                      ('num_classes', 1)):
    if getattr(args, name) < least:
      parser.error(f'--{name.replace("_", "-")} {getattr(args, name)}: expected >= {least}.')
  if args.peak_size and not all(n.strip().isdigit() and int(n) > 0
                                for n in args.peak_size.split(',')):
    parser.error(f'--peak-size {args.peak_size}: expected positive integers, e.g. 2048,4096.')
  for v in args.variant.split(','):
    kw = variant_kwargs(v)
    fit = fitting_image_size(args.image_size, kw['patch_size'], kw.get('resnet_layers'))
    if fit != args.image_size:
      parser.error(f'--image-size {args.image_size} does not divide into the patches of {v}: '
                   f'use --image-size {fit}.')
  run(args)
  return 0


if __name__ == '__main__':
  sys.exit(main())
