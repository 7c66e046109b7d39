"""Multi-head attention on the CPU as one batch-parallel custom call (cpu_attention.cc),
with its own backward pass, in float32 or bfloat16 (bfloat16 operands, float32 sums:
AVX512-BF16's dot products where the CPU has them).

XLA:CPU computes a ViT's attention as batched 197x197x64 matmuls, each split over all
cores; the kernel here gives each (example, head) to one core instead and skips the
transposes to and from heads-major layout. The C++ is compiled on first use with the C++
compiler ($CXX, default c++) for this CPU (-march=native) into a cache folder
($VIT_JAX_NATIVE_CACHE, default ~/.cache/vit_jax, or a temp folder where that is not
writable), keyed by the source, jaxlib and the CPU.
Without a compiler, off x86-64/aarch64 Linux, or with VIT_JAX_CPU_ATTENTION=0, `available()`
is False and the model keeps XLA's attention.
"""

import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

SOURCE = Path(__file__).with_name('cpu_attention.cc')
# The handlers of cpu_attention.cc: 'forward' (out and the softmax, for the backward
# pass), 'inference' (the forward pass without saving the softmax) and 'backward', for each
# dtype (the C++ symbol's suffix).
STAGES = ('forward', 'inference', 'backward')
DTYPES = {jnp.dtype(jnp.float32): '', jnp.dtype(jnp.bfloat16): 'Bf16'}
TARGET_PREFIX = 'vit_jax_attention_'


def target(stage: str, dtype) -> str:
  """The XLA custom-call target of `stage` for `dtype`: 'vit_jax_attention_forward_bf16'."""
  suffix = DTYPES[jnp.dtype(dtype)]
  return TARGET_PREFIX + stage + ('_' + suffix.lower() if suffix else '')


def symbol(stage: str, dtype) -> str:
  """The C++ handler of `stage` for `dtype`: 'VitAttentionForwardBf16'."""
  return 'VitAttention' + stage.capitalize() + DTYPES[jnp.dtype(dtype)]


def _cache_dir() -> Path:
  """$VIT_JAX_NATIVE_CACHE, else ~/.cache/vit_jax, else (a read-only home) a temp folder."""
  if os.environ.get('VIT_JAX_NATIVE_CACHE'):
    return Path(os.environ['VIT_JAX_NATIVE_CACHE'])
  home = Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'vit_jax'
  try:
    home.mkdir(parents=True, exist_ok=True)
    if os.access(home, os.W_OK):
      return home
  except OSError:
    pass
  return Path(tempfile.gettempdir()) / f'vit_jax-{os.getuid()}'


def _cpu_flags() -> str:
  """What -march=native depends on: the CPU's model and feature flags (x86, ARM)."""
  from vit_jax import cpu_tuning  # pylint: disable=g-import-not-at-top
  info = cpu_tuning.cpu_info()
  return cpu_tuning.cpu_name() + info.get('flags', info.get('Features', ''))


def build(cache_dir=None, march: str = 'native') -> Path:
  """The compiled library for this source, jaxlib and CPU (-march=`march`): built once,
  then reused.

  Raises RuntimeError (with the compiler's message) when it cannot be built."""
  import jaxlib  # pylint: disable=g-import-not-at-top
  cxx = os.environ.get('CXX', 'c++')
  source = SOURCE.read_bytes()
  key = hashlib.sha256(b'\0'.join(
      [source, jaxlib.__version__.encode(), cxx.encode(), march.encode(),
       _cpu_flags().encode()])).hexdigest()
  lib = Path(cache_dir or _cache_dir()) / f'cpu_attention-{key[:16]}.so'
  if lib.exists():
    return lib
  lib.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
  # Built under a temporary name and renamed: processes building at once (pytest workers)
  # each get a whole library, and the last rename wins.
  fd, tmp = tempfile.mkstemp(suffix='.so', dir=lib.parent)
  os.close(fd)
  cmd = [cxx, '-O3', f'-march={march}', '-std=c++17', '-shared', '-fPIC',
         f'-I{jax.ffi.include_dir()}', '-o', tmp, str(SOURCE)]
  try:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
  except OSError as e:
    os.unlink(tmp)
    raise RuntimeError(f'cannot run the C++ compiler {cxx!r} ({e}); set CXX') from None
  if result.returncode:
    os.unlink(tmp)
    raise RuntimeError(f'{" ".join(cmd)} failed:\n{result.stderr[-2000:]}')
  os.replace(tmp, lib)
  return lib


@functools.lru_cache(maxsize=None)
def available() -> bool:
  """Whether the kernel is built and registered with XLA:CPU (built on the first call)."""
  if os.environ.get('VIT_JAX_CPU_ATTENTION', '1') == '0':
    return False
  if (sys.platform != 'linux' or platform.machine() not in ('x86_64', 'aarch64')
      or not hasattr(jax, 'ffi')):
    return False
  try:
    lib = ctypes.cdll.LoadLibrary(str(build()))
  except (RuntimeError, OSError) as e:
    warnings.warn(f'vit_jax: CPU attention kernel unavailable, XLA attention instead: {e}')
    return False
  for dtype in DTYPES:
    for stage in STAGES:
      jax.ffi.register_ffi_target(target(stage, dtype),
                                  jax.ffi.pycapsule(getattr(lib, symbol(stage, dtype))),
                                  platform='cpu')
  return True


def _call(stage: str, shapes, *args, scale):
  """The custom call of `stage` for the args' dtype, returning arrays of `shapes` in it."""
  dtype = args[0].dtype
  if dtype not in DTYPES or any(a.dtype != dtype for a in args):
    raise ValueError(f'cpu_attention takes float32 or bfloat16 arrays of one dtype, got '
                     f'{[str(a.dtype) for a in args]}: cast them first.')
  out = tuple(jax.ShapeDtypeStruct(s, dtype) for s in shapes)
  return jax.ffi.ffi_call(target(stage, dtype), out, vmap_method='sequential')(
      *args, scale=np.float32(scale))


def _forward(q, k, v, scale):
  """(out, softmax) for the backward pass."""
  b, tq, heads, _ = q.shape
  return _call('forward', (q.shape, (b, heads, tq, k.shape[1])), q, k, v, scale=scale)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def attention(q, k, v, scale: float):
  """softmax(scale q.k^T) v per head: q (B, Tq, K, Dh), k and v (B, Tk, K, Dh), all float32
  or all bfloat16 -> (B, Tq, K, Dh) in that dtype. Needs available(). Not differentiated
  (inference), the softmax is not written out: inference 2-3% faster (S/16 1.34 to 1.30 s,
  Ti/16 415 to 403 ms, batch 32, interleaved medians, Xeon VM)."""
  return _call('inference', (q.shape,), q, k, v, scale=scale)[0]


def _attention_fwd(q, k, v, scale):
  out, probs = _forward(q, k, v, scale)
  return out, (q, k, v, probs)


def _attention_bwd(scale, residuals, g):
  shapes = tuple(t.shape for t in residuals[:3])  # q, k, v
  return _call('backward', shapes, *residuals, g.astype(residuals[0].dtype), scale=scale)


attention.defvjp(_attention_fwd, _attention_bwd)
