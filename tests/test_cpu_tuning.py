"""The CPU compiler options: float32 dots leave YNNPACK, bfloat16 ones keep it and
accumulate in float32, and a user's own XLA_FLAGS setting wins. Also the CPU's recorded
name, which tells apart machines that time differently."""

import jax
import jax.numpy as jnp
import numpy as np

from conftest import random_head
from vit_jax import cpu_tuning
from vit_jax.models import get_model


def compiled_hlo(dtype, options):
  model = get_model('mu/8', num_classes=10, dtype=jnp.dtype(dtype))
  x = jnp.zeros((2, 16, 16, 3))
  params = jax.eval_shape(model.init, jax.random.key(0), x)['params']
  fn = jax.jit(lambda p, x: model.apply({'params': p}, x)[0], compiler_options=options)
  return fn.lower(params, x).compile().as_text()


def test_float32_dots_leave_ynnpack_bfloat16_keeps_it(monkeypatch):
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  assert cpu_tuning.compiler_options('bfloat16') == {}
  assert 'ynn_fusion' not in compiled_hlo('float32', cpu_tuning.compiler_options('float32'))
  if cpu_tuning.xla_has_option(cpu_tuning.YNN_FUSION_FLAG):
    assert cpu_tuning.compiler_options('float32') == {cpu_tuning.YNN_FUSION_FLAG: ''}
    assert 'ynn_fusion' in compiled_hlo('float32', {})
  else:  # an older jaxlib (0.6 on Python 3.10): no YNNPACK, so nothing to turn off
    assert cpu_tuning.compiler_options('float32') == {}


def test_an_option_the_installed_xla_lacks_is_not_passed():
  assert not cpu_tuning.xla_has_option('xla_cpu_no_such_option_anywhere')
  assert cpu_tuning.xla_has_option('xla_cpu_enable_fast_math', False)


def test_users_xla_flags_win(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', f'--{cpu_tuning.YNN_FUSION_FLAG}=dot')
  assert cpu_tuning.compiler_options('float32') == {}


def test_bfloat16_dense_layers_accumulate_in_float32():
  model = get_model('mu/8', num_classes=10, dtype=jnp.bfloat16)
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)), jnp.float32)
  params = model.init(jax.random.key(0), x)['params']
  text = jax.jit(lambda p, x: model.apply({'params': p}, x)[0]).lower(params, x).as_text()
  # Every bf16 x bf16 dot yields float32 (then cast back to bf16).
  dots = [l for l in text.splitlines() if 'dot_general' in l and 'bf16' in l]
  assert dots and all('-> tensor<' in l and 'xf32>' in l.split('->')[-1] for l in dots)
  f32 = get_model('mu/8', num_classes=10).apply({'params': params}, x)[0]
  bf16 = model.apply({'params': params}, x)[0]
  assert bf16.dtype == jnp.float32 and np.abs(np.asarray(bf16 - f32)).max() < 0.05


def test_float32_dense_gradient_needs_no_transposed_copy():
  """A float32 Dense on CPU is one 2-D matmul, so XLA:CPU runs the kernel gradient as a
  matmul with a transposed operand; contracting (batch, tokens) in one dot made it first
  copy the activations into a transposed buffer (an 18% slower Ti/16 train step). The bias
  gradient is a fourth dot, with a ones vector, instead of XLA's slow reduce-windows."""
  from vit_jax.models import vit
  x = jnp.ones((4, 9, 8), jnp.float32)
  layer = vit.Dense((2, 6))
  params = layer.init(jax.random.key(0), x)
  grad = jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.tanh(layer.apply(p, x))), argnums=(0, 1)))
  hlo = grad.lower(params, x).compile(compiler_options=cpu_tuning.compiler_options()).as_text()
  ops = [line.split('=', 1)[1] for line in hlo.splitlines() if ' = ' in line]
  # forward, input, kernel and bias gradients
  assert sum(' dot(' in op for op in ops) == 4
  assert not [op for op in ops if ' transpose(' in op or ' copy(' in op or 'reduce' in op]


def test_bfloat16_dense_backward_dots_stay_16_bit(monkeypatch):
  """The backward dots of a bf16 Dense take the 16-bit cotangent (JAX's own transpose of a
  float32-output dot feeds them float32, off the bf16 instructions and AMX tiles), and the
  gradients are as close to float32 ones as those of JAX's own derivatives."""
  from vit_jax.models import vit
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)), jnp.float32)
  model = get_model('mu/8', num_classes=10, dtype=jnp.bfloat16)  # broadcast attention: no
  params = random_head(model.init(jax.random.key(0), x)['params'])  # attention dots

  def grads(model):
    loss = lambda p: jnp.sum(jnp.sin(model.apply({'params': p}, x)[0]))  # noqa: E731
    grad = jax.jit(jax.grad(loss))
    return jax.tree_util.tree_leaves_with_path(grad(params)), grad.lower(params).as_text()
  ours, text = grads(model)
  dots = [l.split(':')[-1].split('->') for l in text.splitlines() if 'dot_general' in l]
  dense = [p for p, _ in ours if 'kernel' in jax.tree_util.keystr(p)
           and 'embedding' not in jax.tree_util.keystr(p)]
  sixteen = [(inputs, out) for inputs, out in dots if 'bf16>' in inputs]
  assert len(sixteen) == 3 * len(dense) >= 3 * 7  # forward, d input, d kernel of each Dense
  for inputs, out in sixteen:
    assert inputs.count('bf16>') == 2 and 'xf32>' in out, (inputs, out)
  # The rest are float32 throughout: LayerNorm's statistics as matrix-vector products.
  assert all(inputs.count('xf32>') == 2 for inputs, _ in dots if 'bf16>' not in inputs)
  float32, _ = grads(get_model('mu/8', num_classes=10))
  monkeypatch.setattr(vit, '_dense_16bit', lambda x, w, b, k: vit.dot_general(x.dtype)(
      x, w, vit._contract_last(k, x.ndim)) + b)  # JAX's own derivatives
  plain, plain_text = grads(model)
  assert 'xf32>, tensor<' in plain_text  # the mixed dots this avoids
  for (path, a), (_, b), (_, ref) in zip(ours, plain, float32):
    if "['key']['bias']" in jax.tree_util.keystr(path):
      continue  # zero in exact arithmetic (softmax ignores a shift shared by all keys)
    scale = float(np.abs(ref).max())
    err, plain_err = (float(np.abs(g - ref).max()) / scale for g in (a, b))
    assert a.dtype == jnp.float32 and err < 0.2 and err <= plain_err + 0.01, path


def test_bfloat16_bias_gradient_is_summed_in_float32():
  """A bias gradient sums the cotangent over batch x tokens rows (6,304 for B/16 at batch
  32); XLA:CPU rounds a 16-bit sum after every addition (3% off here), vit.Dense sums in
  float32 and rounds once."""
  from vit_jax.models import vit
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(32, 197, 8)), jnp.float32)
  cotangent = jnp.asarray(rng.normal(size=(32, 197, 16)) + 0.3, jnp.bfloat16)
  layer = vit.Dense(16, dtype=jnp.bfloat16)
  params = layer.init(jax.random.key(0), x)
  loss = lambda p: jnp.sum(layer.apply(p, x).astype(jnp.float32) * cotangent)  # noqa: E731
  bias_grad = jax.jit(jax.grad(loss))(params)['params']['bias']
  exact = np.asarray(cotangent, np.float64).sum((0, 1))
  assert np.abs(np.asarray(bias_grad, np.float64) - exact).max() < 2 ** -8 * np.abs(exact).max()


def test_bfloat16_dots_are_plain_off_cpu_and_agree(monkeypatch):
  """GPUs and TPUs accumulate 16-bit dots in float32 by themselves, so there the model uses
  the plain dot (writing a float32 product and casting it made a B/16 bf16 train step on
  an H200 1.7x slower); it computes the same logits to bfloat16 rounding."""
  from vit_jax.models import vit
  assert vit.dot_general(jnp.bfloat16) is not jax.lax.dot_general  # CPU: float32 out
  assert vit.dot_general(jnp.float32) is jax.lax.dot_general
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert vit.dot_general(jnp.bfloat16) is jax.lax.dot_general
  monkeypatch.undo()

  model = get_model('mu/8', num_classes=10, dtype=jnp.bfloat16)
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)), jnp.float32)
  params = random_head(model.init(jax.random.key(0), x)['params'])
  apply = lambda p, x: model.apply({'params': p}, x)[0]  # noqa: E731
  float32_out = apply(params, x)
  monkeypatch.setattr(vit, 'DOT_FLOAT32_OUTPUT', False)
  text = jax.jit(apply).lower(params, x).as_text()
  dots = [l for l in text.splitlines() if 'dot_general' in l and 'bf16' in l]
  assert dots and all('xbf16>' in l.split('->')[-1] for l in dots)
  native = apply(params, x)
  scale = float(np.abs(float32_out).max())
  assert scale > 0.1 and np.abs(np.asarray(native - float32_out)).max() < 0.05 * scale


def test_cpu_name_tells_cpus_apart(tmp_path):
  """A Zen 3 and a Zen 4 both call themselves "AMD EPYC"; their timings differ up to 1.5x, so
  the recorded name carries the model, the widest vector ISA and AMX (first processor only)."""
  def cpuinfo(model, flags):
    f = tmp_path / f'cpuinfo_{model}'
    block = (f'processor\t: 0\ncpu family\t: 25\nmodel\t\t: {model}\n'
             f'model name\t: AMD EPYC\nflags\t\t: fpu {flags}\n\n')
    f.write_text(block + block.replace('processor\t: 0', 'processor\t: 1').replace(
        flags, 'avx512f avx512_bf16'))  # a second processor is not read
    return str(f)
  assert (cpu_tuning.cpu_name(cpuinfo(1, 'avx avx2 fma'))
          == 'AMD EPYC (family 25 model 1, AVX2)')
  assert (cpu_tuning.cpu_name(cpuinfo(17, 'avx2 avx512f avx512_bf16'))
          == 'AMD EPYC (family 25 model 17, AVX-512 with bf16)')
  assert cpu_tuning.cpu_name(cpuinfo(2, 'avx2 avx512f')).endswith('model 2, AVX-512)')
  assert (cpu_tuning.cpu_name(cpuinfo(143, 'avx512f avx512_bf16 amx_bf16 amx_tile'))
          .endswith('model 143, AVX-512 with bf16 and AMX)'))
  arm = tmp_path / 'cpuinfo_arm'
  arm.write_text('processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\n\n')
  for path in (str(arm), str(tmp_path / 'absent')):  # no x86 fields, no /proc: no guesses
    name = cpu_tuning.cpu_name(path)
    assert name and 'family' not in name and 'AVX' not in name


def test_bfloat16_mlp_computes_its_gelu_in_float32():
  """A bf16 MLP's tanh GELU runs in float32, forward and backward (XLA:CPU runs it ~4x
  slower in bfloat16), and its result is rounded to bfloat16 once, before Dense_1."""
  from vit_jax.models import vit
  x = jnp.asarray(np.random.default_rng(0).uniform(-2, 2, (2, 5, 8)), jnp.bfloat16)
  block = vit.MlpBlock(mlp_dim=16, dtype=jnp.bfloat16)
  params = block.init(jax.random.key(0), x, deterministic=True)

  def loss(p, x):
    return jnp.sum(block.apply(p, x, deterministic=True).astype(jnp.float32))
  text = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(params, x).as_text()
  tanhs = [l for l in text.splitlines() if 'stablehlo.tanh' in l]
  assert tanhs and all(l.endswith('x16xf32>') for l in tanhs), tanhs
  hidden = vit.Dense(16, dtype=jnp.bfloat16).apply(
      {'params': params['params']['Dense_0']}, x)
  gelu = jax.nn.gelu(hidden.astype(jnp.float32)).astype(jnp.bfloat16)
  expected = vit.Dense(8, dtype=jnp.bfloat16).apply(
      {'params': params['params']['Dense_1']}, gelu)
  np.testing.assert_array_equal(block.apply(params, x, deterministic=True), expected)
