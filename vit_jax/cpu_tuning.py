"""XLA options that make ViT steps faster on the CPU backend, chosen by measurement.

XLA:CPU hands dots to YNNPACK by default. For float32 its own (Eigen) dot kernels are
faster on the Zen 4 (family 25 model 17, AVX-512) this repo was first measured on: a
6304x768 @ 768x768 matmul (the B/16 attention projections) runs at ~211 GFLOP/s instead
of ~190, and batch-32 steps get faster: Ti/16 inference +15% and train step +5%, B/16 +16%
and +6% (the cpu_xla_options table of experiments/results/benchmarks, from `python -m
vit_jax.benchmark --xla-options=default,tuned`). On a Zen 3 without AVX-512 the choice
holds too: Ti/16 inference +7%, train step +7% (same command, batch 32, 5 repeats,
2026-11-30). On a Xeon with AMX (family 6 model 167) the choice first split: inference +5%
(Ti/16) and +9% (B/16), train steps -9% and -5% (xeon_amx's cpu_xla_options table,
2026-12-02, with the 2-D float32 Dense and launch.sh's block cache; Ti/16 train 1.38 s
under YNNPACK against 1.47-1.50 in separate processes; the rerun below replaced those
lines). With attention in vit_jax/native/cpu_attention.cc (no longer XLA dots) the split
went away there: Ti/16 +14% and +11%, B/16 +3% and +8% (inference, train; the same table
rerun later on 2026-12-02), so it stays one choice.
For bfloat16 YNNPACK is the one that uses the CPU's bf16 dot-product instructions (334
GFLOP/s against Eigen's ~190 with float32 accumulation), so bfloat16 keeps the default.
None of the flag's other fusion types speeds up a float32 step (Ti/16 train step,
batch 32, Zen 3, interleaved medians of 5 under launch.sh, 2026-12-01): with none 3.29 s;
LIBRARY_FUSION_TYPE_DOT 3.56, _INDIVIDUAL_DOT 3.74, _ELTWISE 4.94. _REDUCE takes the bias
and LayerNorm gradient sums off XLA's slow reduce-windows (380 ms of a traced step) but
its YNNPACK fusions, which also take the softmax, cost 470 ms: 3.17 against 3.12 s over
10 rounds. xla_cpu_enable_concurrency_optimized_scheduler (3.34 s) and
xla_cpu_experimental_enable_tiling_propagation (3.92 s) do not help either.

The options go to `jax.jit(..., compiler_options=...)`, per function: nothing global is
changed, other backends get none, and a user who sets the flag in XLA_FLAGS keeps theirs.
cpu_name() names the CPU in every recorded timing (benchmark lines, experiment reports).
"""

import functools
import os
import platform

import jax
import jax.numpy as jnp

YNN_FUSION_FLAG = 'xla_cpu_experimental_ynn_fusion_type'


def compiler_options(dtype='float32') -> dict:
  """jax.jit compiler_options for a step computing in `dtype` on the default backend."""
  if jax.default_backend() != 'cpu' or YNN_FUSION_FLAG in os.environ.get('XLA_FLAGS', ''):
    return {}
  if jnp.dtype(dtype) == jnp.float32 and xla_has_option(YNN_FUSION_FLAG):
    return {YNN_FUSION_FLAG: ''}  # an empty list: no dot goes to YNNPACK
  return {}


@functools.cache
def xla_has_option(flag: str, value='') -> bool:
  """Whether the installed XLA accepts this compile option with `value`. Older jaxlibs (0.6,
  what pip resolves on Python 3.10) have no YNNPACK flag, and their dots are XLA's own
  already: passing the flag there fails every compile with 'No such compile option'."""
  try:
    jax.jit(lambda x: x + 1, compiler_options={flag: value}).lower(jnp.float32(0)).compile()
  except Exception as e:  # jaxlib's XlaRuntimeError; its module moved between releases
    if 'No such compile option' in str(e):
      return False
    raise
  return True


def cpu_info(cpuinfo: str = '/proc/cpuinfo') -> dict:
  """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
  info = {}
  try:
    with open(cpuinfo) as f:
      for line in f:
        if not line.strip():
          break  # the first processor is enough
        key, _, value = line.partition(':')
        info[key.strip()] = value.strip()
  except OSError:
    pass
  return info


def cpu_name(cpuinfo: str = '/proc/cpuinfo') -> str:
  """The host CPU as timings need it named: 'AMD EPYC (family 25 model 1, AVX2)'. Two
  machines both called "AMD EPYC" here differ up to 1.5x in speed (a Zen 3 without
  AVX-512 and a Zen 4 with it), so every recorded timing carries the model, the widest
  vector ISA and whether the CPU has AMX matrix tiles."""
  info = cpu_info(cpuinfo)
  parts = []
  if 'cpu family' in info or 'model' in info:  # x86; ARM kernels list other fields
    parts.append(f"family {info.get('cpu family', '?')} model {info.get('model', '?')}")
  if 'flags' in info:
    flags = set(info['flags'].split())
    isa = next((name for flag, name in (('avx512_bf16', 'AVX-512 with bf16'),
                                        ('avx512f', 'AVX-512'), ('avx2', 'AVX2'))
                if flag in flags), 'no AVX2')
    # AMX tiles multiply bfloat16 matrices ~4.5x faster than AVX-512 on a Xeon here.
    parts.append(isa + (' and AMX' if 'amx_bf16' in flags else ''))
  name = info.get('model name') or platform.processor() or platform.machine()
  return f"{name} ({', '.join(parts)})" if parts else name
