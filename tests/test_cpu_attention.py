"""vit_jax/native/cpu_attention.cc: the batch-parallel float32 and bfloat16 attention
kernels of the CPU path, built on first use, against XLA's attention, alone and inside the
model."""

import os
import platform
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.models import get_model
from vit_jax.models import vit
from vit_jax.native import cpu_attention

from conftest import REPO, random_head


def xla_attention(q, k, v, scale):
  q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))
  weights = jax.nn.softmax(jnp.einsum('bhqd,bhkd->bhqk', q * scale, k), axis=-1)
  return jnp.einsum('bhqk,bhkd->bhqd', weights, v).transpose(0, 2, 1, 3)


def test_kernel_builds_and_registers_here():
  """The machines this repo runs on (CI included) have a C++ compiler: the kernel must
  build, or the CPU path silently loses its attention speed-up."""
  assert cpu_attention.available()


def close_to(got, want, dtype, err_msg=''):
  """float32: within float32 rounding of the sums. bfloat16: operands and results are
  rounded to 8 bits of mantissa, so each value is within 1% of the largest (0.55% seen)."""
  got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
  if dtype == jnp.float32:
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max(),
                               err_msg=err_msg)
  else:
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-2 * np.abs(want).max(),
                               err_msg=err_msg)


def attention_inputs(b, tq, tk, heads, dh, dtype):
  """q, k, v and an output cotangent; q doubled for peaked softmaxes too."""
  keys = jax.random.split(jax.random.key(0), 4)
  q = jax.random.normal(keys[0], (b, tq, heads, dh)) * 2
  k, v = (jax.random.normal(key, (b, tk, heads, dh)) for key in keys[1:3])
  g = jax.random.normal(keys[3], (b, tq, heads, dh))
  return tuple(t.astype(dtype) for t in (q, k, v, g))


# Token counts and head widths that leave partial register tiles (12 rows x 32 columns on
# AVX-512, 6 x 16 on AVX2; 12 row pairs in bfloat16), a ViT's 197 x 64 heads, and
# cross-attention (Tq != Tk). The reference is XLA's attention in float32 on the same
# (bfloat16-rounded) inputs.
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('b,tq,tk,heads,dh', [(2, 37, 37, 3, 20), (1, 197, 197, 2, 64),
                                              (3, 5, 50, 2, 33), (2, 1, 9, 4, 8)])
def test_kernel_matches_xla_attention_forward_and_backward(b, tq, tk, heads, dh, dtype):
  q, k, v, ct = attention_inputs(b, tq, tk, heads, dh, dtype)
  scale = 1 / np.sqrt(dh)
  loss = lambda attend: lambda *a: jnp.sum(  # noqa: E731
      attend(*a, scale).astype(jnp.float32) * ct.astype(jnp.float32))
  f32 = [t.astype(jnp.float32) for t in (q, k, v)]
  want, want_grads = jax.value_and_grad(loss(xla_attention), argnums=(0, 1, 2))(*f32)
  step = jax.jit(jax.value_and_grad(loss(cpu_attention.attention), argnums=(0, 1, 2)))
  for stage in ('forward', 'backward'):
    assert cpu_attention.target(stage, dtype) in step.lower(q, k, v).as_text()
  got, got_grads = step(q, k, v)
  assert all(g.dtype == dtype for g in got_grads)
  # Not differentiated: the inference call, which keeps the softmax in scratch.
  inference = jax.jit(cpu_attention.attention, static_argnums=3)
  assert cpu_attention.target('inference', dtype) in inference.lower(q, k, v, scale).as_text()
  close_to(inference(q, k, v, scale), xla_attention(*f32, scale), dtype)
  np.testing.assert_allclose(got, want, rtol=1e-4 if dtype == jnp.float32 else 2e-2)
  for g, w in zip(got_grads, want_grads):
    close_to(g, w, dtype)


def test_kernel_names_mixed_dtypes():
  q = jnp.zeros((2, 5, 3, 8), jnp.bfloat16)
  with pytest.raises(ValueError, match=r"float32 or bfloat16 arrays of one dtype.*"
                     r"\['bfloat16', 'float32', 'float32'\]: cast them first"):
    cpu_attention.attention(q, q.astype(jnp.float32), q.astype(jnp.float32), 1.0)
  with pytest.raises(ValueError, match=r"\['float16', 'float16', 'float16'\]"):
    h = q.astype(jnp.float16)
    cpu_attention.attention(h, h, h, 1.0)


def _cpu_has(flag: str) -> bool:
  with open('/proc/cpuinfo') as f:
    return flag in next(line for line in f if line.startswith('flags')).split()


def test_every_vector_width_computes_the_same_attention(tmp_path):
  """The kernel's register tiles depend on the vector width it is built for: 512-bit
  (AVX-512, 12x32 tiles), 256-bit (AVX2, 6x16) and 128-bit (the x86-64 baseline, 6x8); its
  bfloat16 products use AVX512-BF16's dot products (cooperlake) or float32 FMAs. Each build
  this CPU can run is registered under its own names and checked against XLA in both
  dtypes, forward, inference and backward, on shapes that leave partial tiles."""
  import ctypes
  if platform.machine() != 'x86_64':
    marches = ['native']
  else:
    marches = (['x86-64'] + ['haswell'] * _cpu_has('avx2')
               + ['skylake-avx512'] * _cpu_has('avx512f')
               + ['cooperlake'] * _cpu_has('avx512_bf16'))
  b, tq, tk, heads, dh = 2, 29, 23, 3, 20
  for march in marches:
    lib = ctypes.cdll.LoadLibrary(str(cpu_attention.build(tmp_path, march=march)))
    for dtype in cpu_attention.DTYPES:
      q, k, v, g = attention_inputs(b, tq, tk, heads, dh, dtype)
      scale = np.float32(0.3)
      f32 = [t.astype(jnp.float32) for t in (q, k, v, g)]
      want, vjp = jax.vjp(lambda *a: xla_attention(*a, scale), *f32[:3])
      want_grads = vjp(f32[3])
      names = {}
      for stage in cpu_attention.STAGES:
        names[stage] = f'vit_jax_test_{march}_{cpu_attention.symbol(stage, dtype)}'
        jax.ffi.register_ffi_target(
            names[stage], jax.ffi.pycapsule(getattr(lib, cpu_attention.symbol(stage, dtype))),
            platform='cpu')
      shaped = lambda shape: jax.ShapeDtypeStruct(shape, dtype)  # noqa: E731,B023
      out, probs = jax.ffi.ffi_call(names['forward'], (
          shaped(q.shape), shaped((b, heads, tq, tk))))(q, k, v, scale=scale)
      inference = jax.ffi.ffi_call(names['inference'], shaped(q.shape))(q, k, v, scale=scale)
      grads = jax.ffi.ffi_call(names['backward'], (
          shaped(q.shape), shaped(k.shape), shaped(v.shape)))(q, k, v, probs, g, scale=scale)
      for got in (out, inference, *grads):
        assert got.dtype == dtype
      for got in (out, inference):
        close_to(got, want, dtype, err_msg=f'{march} {dtype}')
      for got, w in zip(grads, want_grads):
        close_to(got, w, dtype, err_msg=f'{march} {dtype}')


def test_kernel_rejects_inconsistent_shapes():
  assert cpu_attention.available()  # registered, also when this test runs alone
  q = jnp.zeros((2, 5, 3, 8))
  k = jnp.zeros((2, 5, 4, 8))  # 4 heads against q's 3
  with pytest.raises(Exception, match='disagree on dimension 2'):
    jax.block_until_ready(cpu_attention._forward(q, k, k, 1.0))


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_model_takes_the_kernel_on_one_cpu_with_the_same_outputs_and_gradients(monkeypatch,
                                                                                 dtype):
  """A ViT with 65 tokens of 16 dims (above vit.BROADCAST_ATTENTION_MAX) compiles to the
  kernel's custom calls and agrees with the written-out XLA attention; in bfloat16 too (the
  bfloat16 kernel: as close as bfloat16 rounding allows)."""
  model = get_model('mu/4', width=32, depth=2, mlp_dim=64, num_heads=2, num_classes=5,
                    dtype=dtype)
  x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), minval=-1, maxval=1)
  params = random_head(model.init(jax.random.key(0), x)['params'])
  loss = lambda p: jnp.sum(  # noqa: E731
      model.apply({'params': p}, x, train=True)[0].astype(jnp.float32) ** 2)
  assert vit.use_cpu_attention_kernel(65, 65, 16)
  step = jax.jit(jax.value_and_grad(loss))
  assert cpu_attention.target('backward', dtype) in step.lower(params).compile().as_text()
  value, grads = step(params)
  monkeypatch.setattr(vit, 'CPU_ATTENTION_KERNEL', False)
  xla_step = jax.jit(jax.value_and_grad(loss))
  assert cpu_attention.TARGET_PREFIX not in xla_step.lower(params).compile().as_text()
  xla_value, xla_grads = xla_step(params)
  rtol, atol = (1e-5, 1e-5) if dtype == jnp.float32 else (1e-2, 2e-2)
  np.testing.assert_allclose(value, xla_value, rtol=rtol)
  top = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(xla_grads))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=10 * rtol, atol=atol * top), grads, xla_grads)


def test_kernel_left_out_where_it_does_not_apply(monkeypatch):
  assert vit.use_cpu_attention_kernel(197, 197, 64)
  assert not vit.use_cpu_attention_kernel(17, 17, 16)  # broadcast products
  monkeypatch.setattr(jax, 'device_count', lambda: 8)  # a sharded step: XLA's
  assert not vit.use_cpu_attention_kernel(197, 197, 64)
  monkeypatch.undo()
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert not vit.use_cpu_attention_kernel(197, 197, 64)


def test_build_is_cached_and_a_missing_compiler_is_named(tmp_path, monkeypatch):
  lib = cpu_attention.build(tmp_path)
  mtime = lib.stat().st_mtime_ns
  assert cpu_attention.build(tmp_path) == lib and lib.stat().st_mtime_ns == mtime
  assert [p.name for p in tmp_path.iterdir()] == [lib.name]  # no temporary left behind
  monkeypatch.setenv('CXX', '/nonexistent/c++')
  with pytest.raises(RuntimeError, match="C\\+\\+ compiler '/nonexistent/c\\+\\+'.*set CXX"):
    cpu_attention.build(tmp_path)
  assert [p.name for p in tmp_path.iterdir()] == [lib.name]


def test_without_the_kernel_the_model_runs_xla_attention():
  """VIT_JAX_CPU_ATTENTION=0 (or no compiler) leaves the kernel out; nothing else changes."""
  code = ('import jax, jax.numpy as jnp; from vit_jax.models import vit; '
          'print(vit.use_cpu_attention_kernel(197, 197, 64))')
  env = {**os.environ, 'VIT_JAX_CPU_ATTENTION': '0'}
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, check=True,
                       capture_output=True, text=True).stdout
  assert out.strip() == 'False'
