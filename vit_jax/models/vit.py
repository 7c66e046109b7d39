"""The Vision Transformer (Dosovitskiy et al., ICLR 2021) in Flax Linen.

Reads top to bottom like the paper: patches -> tokens -> position embeddings ->
pre-norm encoder blocks -> pooled representation -> head. Parameter names follow the
published vit_jax checkpoints (`embedding`, `cls`, `Transformer/posembed_input`,
`Transformer/encoderblock_N/{LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2,
MlpBlock_3}`, `Transformer/encoder_norm`, `pre_logits`, `head`), so those load as-is.
With `scan=True` the blocks live under `Transformer/encoderblock` with a leading depth
axis (the big_vision layout); `scan_params` / `unscan_params` convert between the two.

Shapes in comments: B batch, H x W image, P patch, N = HW/P^2 patches, T tokens,
D width, K heads, Dh = D/K.
"""

import functools
import warnings
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.models import resnet
from vit_jax.native import cpu_attention

Dtype = Any
CLASSIFIERS = ('token', 'gap', 'map')
POSEMBS = ('learn', 'sincos2d', 'none')


def fitting_image_size(side: int, patch_size: int, resnet_layers=None) -> int:
  """`side` when side x side images cut into whole patches (for a hybrid: patches of the
  stem's feature map, whose 'SAME' strides round up, so 28 px fits a stride-8 stem), else
  the nearest smaller size that does (at least one patch)."""
  if resnet_layers is None:
    return side if side % patch_size == 0 else max(side // patch_size, 1) * patch_size
  if resnet.feature_size(side, resnet_layers) % patch_size == 0:
    return side
  unit = resnet.stem_stride(resnet_layers) * patch_size
  return max(side // unit, 1) * unit


def posemb_sincos_2d(h: int, w: int, width: int, temperature: float = 10_000.0) -> np.ndarray:
  """Fixed 2-D sine-cosine position embeddings, (h*w, width), rows in raster order."""
  if width % 4:
    raise ValueError(f'sincos2d position embeddings need width divisible by 4, got {width}.')
  y, x = np.mgrid[:h, :w]
  omega = 1.0 / temperature ** (np.arange(width // 4) / (width // 4 - 1 or 1))
  y = y.reshape(-1)[:, None] * omega[None]
  x = x.reshape(-1)[:, None] * omega[None]
  return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1).astype(np.float32)


# Whether 16-bit dots are written out in float32 and cast back (True), left to the
# backend's own dot (False), or decided per backend (None): see dot_general.
DOT_FLOAT32_OUTPUT: Optional[bool] = None


def dot_general(dtype):
  """The forward dot_general of Dense layers computing in `dtype`.

  On CPU, low-precision inputs accumulate in float32 (`preferred_element_type`) and the
  result is cast back: that is what lets XLA:CPU use the bf16 dot-product instructions (a
  bfloat16 4096^2 matmul runs at ~334 GFLOP/s on the development machine with it, ~156
  without it and ~190 in float32; ~1,250 through a Xeon's AMX tiles). GPUs and TPUs
  accumulate 16-bit dots in float32 by themselves, so there the plain dot is used and no
  float32 product is written out.
  """
  float32_output = DOT_FLOAT32_OUTPUT
  if float32_output is None:
    float32_output = jax.default_backend() == 'cpu'
  if jnp.dtype(dtype) == jnp.float32 or not float32_output:
    return jax.lax.dot_general
  return _dot_float32_accumulated


def _dot_float32_accumulated(lhs, rhs, dimension_numbers, precision=None,
                             preferred_element_type=None):
  """A 16-bit dot accumulated and written out in float32, then cast back."""
  del preferred_element_type
  out = jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                            preferred_element_type=jnp.float32)
  return out.astype(jnp.result_type(lhs, rhs))


def _contract_last(k: int, x_ndim: int):
  """dimension_numbers contracting x's last k axes with w's first k."""
  return (tuple(range(x_ndim - k, x_ndim)), tuple(range(k))), ((), ())


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _dense_16bit(x, w, b, k):
  """x . w + b over x's last k axes, for 16-bit compute on CPU: float32 accumulation
  forward (dot_general) and backward.

  With JAX's own derivatives a 16-bit train step loses twice. The transpose of a
  float32-output dot feeds the float32 cotangent to both backward dots, which XLA:CPU
  then runs as f32 x bf16, missing the bf16 instructions and AMX tiles. And the bias
  gradient is a 16-bit column sum, which XLA:CPU rounds to 16 bits after every addition
  (slow, and ~3% off over 6,304 rows). Here the backward dots take the 16-bit cotangent
  (the same values: the float32 one was only its conversion) and the bias gradient is
  summed in float32."""
  return _dot_float32_accumulated(x, w, _contract_last(k, x.ndim)) + b


def _dense_16bit_fwd(x, w, b, k):
  return _dense_16bit(x, w, b, k), (x, w)


def _dense_16bit_bwd(k, residuals, g):
  x, w = residuals
  kept = x.ndim - k  # g's axes: x's kept ones, then w's
  dot = lambda a, b, dims: _dot_float32_accumulated(a, b, (dims, ((), ())))  # noqa: E731
  dx = dot(g, w, (tuple(range(kept, g.ndim)), tuple(range(k, w.ndim))))  # x's shape
  dw = dot(x, g, (tuple(range(kept)), tuple(range(kept))))               # w's shape
  db = jnp.sum(g.astype(jnp.float32), axis=tuple(range(kept)))
  return dx.astype(x.dtype), dw.astype(w.dtype), db.astype(g.dtype)


_dense_16bit.defvjp(_dense_16bit_fwd, _dense_16bit_bwd)


# Sums over the rows or columns of a 2-D float32 array on CPU, as matrix-vector products:
# XLA:CPU rewrites a plain sum into a slow two-level reduce-window (6.7 ms for the column
# sum of a 6304x768 bias gradient in a Ti/16 train step, `experiments.step_profile`; 1.4 ms
# as a product). _dense_2d and _layer_norm_2d take their sums here.
def _column_sum(x):
  return jnp.ones((x.shape[0],), x.dtype) @ x


def _row_mean(x):
  return x @ jnp.full((x.shape[1],), 1 / x.shape[1], x.dtype)


@jax.custom_vjp
def _dense_2d(x, w, b):
  """x (tokens, fan_in) . w (fan_in, fan_out) + b, for float32 on CPU, with the bias
  gradient a _column_sum: Ti/16 train step 1.20 to 1.16 s (interleaved medians, Xeon VM,
  batch 32)."""
  return x @ w + b


def _dense_2d_fwd(x, w, b):
  return x @ w + b, (x, w)


def _dense_2d_bwd(residuals, g):
  x, w = residuals
  return g @ w.T, x.T @ g, _column_sum(g)


_dense_2d.defvjp(_dense_2d_fwd, _dense_2d_bwd)


class Dense(nn.Module):
  """flax.linen.Dense / DenseGeneral over x's last axes: the same parameters (names,
  shapes and, from the same key, initial values), so checkpoints load either way.

  float32 on CPU runs one 2-D matmul, (tokens, fan_in) . (fan_in, fan_out): XLA:CPU then
  computes the kernel gradient as a matmul with a transposed operand, where a dot that
  contracts (batch, tokens) first copies the activations into a transposed buffer. Train
  steps on a Xeon, batch 32: Ti/16 1.82 to 1.49 s, S/16 4.66 to 4.26, B/16 16.3 to 14.8
  (interleaved medians); its derivatives are _dense_2d's, the bias gradient a ones-vector
  product. 16-bit compute on CPU keeps the axes (flattened, YNNPACK's
  bfloat16 Ti/16 train step was 12% slower on a Xeon, 534 to 702 ms on a Zen 5, inference
  200 to 195 ms within noise) and takes _dense_16bit's derivatives: bfloat16
  train steps on a Xeon with AMX ran 1.7-1.9x faster with them (Ti/16 15.0 to 26.1
  images/s, B/16 2.0 to 3.7: the cpu_bfloat16 suite of
  experiments/results/benchmarks/xeon_amx, batch 32)."""
  features: Any            # int, or a tuple for several output axes (heads, head width)
  axis: Any = -1           # the contracted input axes: -1, or (-2, -1)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x):
    features = tuple(np.atleast_1d(self.features).tolist())
    axes = sorted(a % x.ndim for a in np.atleast_1d(self.axis).tolist())
    k = len(axes)
    if axes != list(range(x.ndim - k, x.ndim)):
      raise ValueError(f'Dense contracts trailing axes; got axis={self.axis} for a '
                       f'{x.ndim}-D input: use -1, or (-2, -1) for the last two.')
    fan_in, fan_out = int(np.prod(x.shape[-k:])), int(np.prod(features))

    def flat_init(init, flat_shape):  # initialised as a 2-D matrix, like DenseGeneral
      return lambda key, shape, dtype: init(key, flat_shape, dtype).reshape(shape)
    kernel = self.param('kernel', flat_init(self.kernel_init, (fan_in, fan_out)),
                        x.shape[-k:] + features, self.param_dtype)
    bias = self.param('bias', flat_init(self.bias_init, (fan_out,)), features,
                      self.param_dtype)
    x, kernel, bias = (a.astype(self.dtype) for a in (x, kernel, bias))
    dot = dot_general(self.dtype)
    if dot is not jax.lax.dot_general:  # 16-bit compute on CPU
      return _dense_16bit(x, kernel, bias, k)
    if jax.default_backend() == 'cpu':  # float32 (or --dot-out=native's 16-bit A/B) on CPU
      x2, kernel2 = x.reshape(-1, fan_in), kernel.reshape(fan_in, fan_out)
      bias2 = bias.reshape(fan_out)
      y = (_dense_2d(x2, kernel2, bias2) if jnp.dtype(self.dtype) == jnp.float32
           else dot(x2, kernel2, _contract_last(1, 2)) + bias2)
      return y.reshape(x.shape[:-k] + features)
    return dot(x, kernel, _contract_last(k, x.ndim)) + bias


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _layer_norm_2d(x, scale, bias, epsilon):
  """flax's LayerNorm (fast variance) of x (rows, features), float32 on CPU, with every
  reduction a matrix-vector product (_row_mean, _column_sum): JAX's own formulation spent
  93 ms of a traced Ti/16 train step in XLA:CPU's reduce-windows."""
  return _layer_norm_2d_fwd(x, scale, bias, epsilon)[0]


def _layer_norm_2d_fwd(x, scale, bias, epsilon):
  mean = _row_mean(x)
  var = jnp.maximum(_row_mean(x * x) - mean * mean, 0.0)
  rstd = jax.lax.rsqrt(var + epsilon)
  xhat = (x - mean[:, None]) * rstd[:, None]
  return xhat * scale + bias, (xhat, rstd, scale)


def _layer_norm_2d_bwd(epsilon, residuals, g):
  del epsilon
  xhat, rstd, scale = residuals
  gs = g * scale
  dx = rstd[:, None] * (gs - _row_mean(gs)[:, None] - xhat * _row_mean(gs * xhat)[:, None])
  return dx, _column_sum(g * xhat), _column_sum(g)


_layer_norm_2d.defvjp(_layer_norm_2d_fwd, _layer_norm_2d_bwd)


class LayerNorm(nn.Module):
  """flax.linen.LayerNorm over the last axis: the same parameters and results. On CPU it
  takes _layer_norm_2d, whose reductions are matrix-vector products, in float32 whatever
  the compute dtype (as flax's statistics are), the output rounded to it once. float32:
  Ti/16 train step 1.20 to 1.15 s (interleaved medians, Xeon VM, batch 32); inference and
  B/16 unchanged within noise. bfloat16, where XLA:CPU gave flax's reductions to YNNPACK
  (13 ms of a traced 206 ms Ti/16 inference step; Zen 5, batch 32, interleaved medians):
  Ti/16 inference 187 to 177 ms and 189 to 180, train 552 to 538; B/16 inference 1.95 to
  1.75 s, train unchanged within its noise. Elsewhere it is flax's own."""
  epsilon: float = 1e-6
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    param = lambda name, init: self.param(name, init, (d,), self.param_dtype)  # noqa: E731
    params = dict(scale=param('scale', nn.initializers.ones_init()),
                  bias=param('bias', nn.initializers.zeros_init()))
    if jax.default_backend() == 'cpu':
      f32 = lambda a: a.astype(jnp.float32)  # noqa: E731
      y = _layer_norm_2d(f32(x.reshape(-1, d)), f32(params['scale']), f32(params['bias']),
                         self.epsilon)
      return y.reshape(x.shape).astype(self.dtype)
    flax_norm = nn.LayerNorm(epsilon=self.epsilon, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    return flax_norm.apply({'params': params}, x)


class MlpBlock(nn.Module):
  """Dense -> GELU -> Dense, with dropout after each Dense."""
  mlp_dim: int
  dropout: float = 0.0
  approximate_gelu: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic: bool):
    dense = lambda n, name: Dense(  # noqa: E731
        n, dtype=self.dtype, param_dtype=self.param_dtype, name=name,
        kernel_init=nn.initializers.xavier_uniform(),
        bias_init=nn.initializers.normal(stddev=1e-6))
    d = x.shape[-1]
    x = dense(self.mlp_dim, 'Dense_0')(x)                          # (B, T, mlp_dim)
    # GELU in float32 whatever the compute dtype, rounded once: XLA:CPU runs a bfloat16
    # tanh GELU about 4x slower than a float32 one (traced Ti/16 inference: 65 against 16
    # ms). bfloat16 steps on a Zen 5, batch 32, interleaved medians: Ti/16 (two runs)
    # inference 281 to 236 and 286 to 245 ms, train 727 to 622 and 914 to 860 ms; B/16
    # (one run) inference 2.39 to 2.31 s, train 7.76 to 7.19 s. GPUs: not measured.
    x = nn.gelu(x.astype(jnp.float32), approximate=self.approximate_gelu).astype(x.dtype)
    x = nn.Dropout(self.dropout)(x, deterministic)
    x = dense(d, 'Dense_1')(x)                                     # (B, T, D)
    return nn.Dropout(self.dropout)(x, deterministic)


# On the CPU, per-head problems of at most this many multiply-adds (queries x keys x
# head dim) are computed as broadcast products and sums instead of batched matmuls:
# XLA:CPU runs one small Eigen matmul per (example, head), and a fused elementwise loop
# beats that below ~8k. For the 17-token, 16-dim heads of the MNIST / Fashion-MNIST
# configs: attention fwd+bwd 2.6x faster, an MNIST train step 17% faster (102 -> 85 ms),
# the hybrid's 5%. At 33 tokens it is already 6x slower.
BROADCAST_ATTENTION_MAX = 8192


def fused_attention_backend() -> bool:
  """Whether `jax.nn.dot_product_attention` beats the written-out attention here (GPU)."""
  return jax.default_backend() == 'gpu'


# False keeps XLA's attention on the CPU (the benchmark's --attention A/Bs set it); else
# vit_jax/native/cpu_attention.cc runs wherever use_cpu_attention_kernel allows.
CPU_ATTENTION_KERNEL = True


def use_cpu_attention_kernel(tq: int, tk: int, dh: int) -> bool:
  """Whether the batch-parallel C++ kernel computes this attention: on a CPU with one
  device (an XLA custom call is not split by the sharding of a multi-device step: there
  XLA's attention stays), heads too big for broadcast products, and the kernel built
  (cpu_attention.available()). On a 2-core Xeon VM, batch 32, interleaved medians: one
  Ti/16 layer's attention fwd+bwd 28.0 to 16.5 ms; float32 steps Ti/16 train 1.44 to 1.22
  s, S/16 train 4.07 to 3.62 s, Ti/16 inference 415 to 341 ms.
  bfloat16 runs the kernel's bfloat16 version (float32 sums): on a 2-core Zen 5, batch 32,
  interleaved medians against the float32 kernel on cast inputs, train steps Ti/16 578 to
  518 ms, B/16 6.92 to 5.55 s; inference Ti/16 216 to 197 ms, B/16 2.03 to 1.91 s. Other
  16-bit dtypes are cast to float32 for it."""
  return (CPU_ATTENTION_KERNEL and jax.default_backend() == 'cpu' and jax.device_count() == 1
          and tq * tk * dh > BROADCAST_ATTENTION_MAX and cpu_attention.available())


def sdpa_implementation(dtype) -> Optional[str]:
  """The `implementation` passed to `jax.nn.dot_product_attention`: 'cudnn' (the fused
  flash kernel) for 16-bit compute on GPU, else None (XLA). It must be asked for: None
  never picks cuDNN by itself, and cuDNN takes only 16-bit inputs."""
  if jax.default_backend() == 'gpu' and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16):
    return 'cudnn'
  return None


def even_length_attention(q, k, v, implementation: Optional[str] = None):
  """jax.nn.dot_product_attention(q, k, v) on (B, T, K, Dh) inputs with odd token counts
  padded to even ones, for cuDNN: its backward pass refuses odd lengths (a ViT's 197
  tokens: "Unsupported sequence length Q 197, KV 197", JAX 0.11.2 on an H200). A zero
  query row is appended and sliced off the output; a zero key is appended and hidden by
  the kernel's own padding mask (key_value_seq_lengths: no bias tensor). Every real query
  attends to the keys it had unpadded, so the result and its gradients are unchanged."""
  tq, tkv = q.shape[1], k.shape[1]
  if tq % 2 == 0 and tkv % 2 == 0:
    return jax.nn.dot_product_attention(q, k, v, implementation=implementation)
  pad = lambda t: jnp.pad(t, ((0, 0), (0, t.shape[1] % 2), (0, 0), (0, 0)))  # noqa: E731
  out = jax.nn.dot_product_attention(
      pad(q), pad(k), pad(v), implementation=implementation,
      key_value_seq_lengths=jnp.full((q.shape[0],), tkv, jnp.int32))
  return out[:, :tq]


class MultiHeadDotProductAttention(nn.Module):
  """Multi-head attention; kernels shaped like flax.linen.MultiHeadDotProductAttention's.

  A one-device CPU runs vit_jax/native/cpu_attention.cc, one core per (example, head), on
  the projections' own layout, in float32 or bfloat16 (use_cpu_attention_kernel).
  On GPU the path is `jax.nn.dot_product_attention`: cuDNN's fused flash kernel for
  bfloat16 / float16 compute (sdpa_implementation), odd token counts padded to even ones
  for it (even_length_attention), XLA's for float32 and for problems cuDNN refuses.
  Otherwise, and whenever the weights are requested for visualisation or attention dropout
  is active, the softmax of q.k is written out in heads-major layout (B, K, T, Dh), queries
  pre-scaled: on the CPU that makes Ti/16 and S/16 forward passes 15-19% faster and a
  Ti/16 train step 7-11% faster than `dot_product_attention`'s XLA path (`python -m
  vit_jax.benchmark --variant=Ti/16 --attention=sdpa,explicit`). Tokens are not padded
  for those matmuls: 197 padded to 208 (a multiple of 16, padded keys masked) makes the
  six of a Ti/16 fwd+bwd faster (39 against 47 ms on a Zen 3, 2026-12-01) but not the
  attention (72.5 against 72.2 ms), the padding and masking costing what the matmuls gain.
  Tiny heads take broadcast products instead of matmuls (BROADCAST_ATTENTION_MAX). All
  paths agree to float32 rounding.
  """
  num_heads: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_q, x_kv=None, *, deterministic: bool, return_weights: bool = False):
    x_kv = x_q if x_kv is None else x_kv
    d = x_q.shape[-1]
    if d % self.num_heads:
      raise ValueError(f'width {d} is not divisible by num_heads {self.num_heads}.')
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype,
              kernel_init=nn.initializers.xavier_uniform())
    heads = (self.num_heads, d // self.num_heads)
    proj = lambda name: Dense(heads, name=name, **kw)  # noqa: E731
    q, k, v = proj('query')(x_q), proj('key')(x_kv), proj('value')(x_kv)  # (B, T, K, Dh)

    use_dropout = self.dropout > 0 and not deterministic
    if (not (return_weights or use_dropout)
        and use_cpu_attention_kernel(q.shape[1], k.shape[1], q.shape[3])):
      kernel_dtype = q.dtype if q.dtype in cpu_attention.DTYPES else jnp.float32
      q, k, v = (t.astype(kernel_dtype) for t in (q, k, v))
      out = cpu_attention.attention(q, k, v, 1 / np.sqrt(q.shape[-1])).astype(self.dtype)
      weights = None
    elif return_weights or use_dropout or not fused_attention_backend():
      q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))        # (B, K, T, Dh)
      q = q * jnp.asarray(1 / np.sqrt(q.shape[-1]), q.dtype)
      broadcast = (jax.default_backend() == 'cpu'
                   and q.shape[2] * k.shape[2] * q.shape[3] <= BROADCAST_ATTENTION_MAX)
      if broadcast:
        q, k, v = (t.astype(jnp.float32) for t in (q, k, v))
        logits = jnp.sum(q[:, :, :, None] * k[:, :, None], -1)
      else:
        logits = jnp.matmul(q, k.transpose(0, 1, 3, 2), preferred_element_type=jnp.float32)
      weights = jax.nn.softmax(logits, axis=-1)                       # (B, K, Tq, Tkv) f32
      probs = nn.Dropout(self.dropout)(weights, deterministic)
      if broadcast:
        out = jnp.sum(probs[..., None] * v[:, :, None], -2)
      else:
        out = jnp.matmul(probs.astype(v.dtype), v, preferred_element_type=jnp.float32)
      out = out.astype(self.dtype)
      out = out.transpose(0, 2, 1, 3)                                # (B, Tq, K, Dh)
      weights = weights if return_weights else None
    else:
      weights = None
      implementation = sdpa_implementation(self.dtype)
      try:
        out = (even_length_attention(q, k, v, implementation) if implementation == 'cudnn'
               else jax.nn.dot_product_attention(q, k, v, implementation=implementation))
      except (NotImplementedError, RuntimeError) as e:  # a shape cuDNN's kernel does not
        # take (NotImplementedError), or no cuDNN at all, e.g. a ROCm GPU (RuntimeError)
        if implementation is None:
          raise
        warnings.warn(f'cuDNN attention does not take this problem ({e}): XLA attention '
                      'instead.')
        out = jax.nn.dot_product_attention(q, k, v)

    out = Dense(d, axis=(-2, -1), name='out', **kw)(out)
    return out, weights


class Encoder1DBlock(nn.Module):
  """Pre-norm block: x + Attn(LN(x)), then x + MLP(LN(x)), each branch with drop-path."""
  mlp_dim: int
  num_heads: int
  dropout: float = 0.0
  attention_dropout: float = 0.0
  stochastic_depth: float = 0.0  # drop-path rate of the last block; block i gets i/(depth-1) of it
  approximate_gelu: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def drop_path(self, x, depth_fraction, deterministic):
    """Stochastic depth (Huang et al. 2016): drops the whole branch per example."""
    if deterministic or self.stochastic_depth == 0:
      return x
    rate = self.stochastic_depth * depth_fraction
    keep = jax.random.bernoulli(self.make_rng('dropout'), 1.0 - rate, (x.shape[0], 1, 1))
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros_like(x))

  @nn.compact
  def __call__(self, x, depth_fraction, deterministic: bool, return_attention: bool = False):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = LayerNorm(name='LayerNorm_0', **kw)(x)
    y, weights = MultiHeadDotProductAttention(
        self.num_heads, self.attention_dropout, name='MultiHeadDotProductAttention_1', **kw)(
            y, deterministic=deterministic, return_weights=return_attention)
    y = nn.Dropout(self.dropout)(y, deterministic)
    x = x + self.drop_path(y, depth_fraction, deterministic)

    y = LayerNorm(name='LayerNorm_2', **kw)(x)
    y = MlpBlock(self.mlp_dim, self.dropout, self.approximate_gelu, name='MlpBlock_3', **kw)(
        y, deterministic)
    x = x + self.drop_path(y, depth_fraction, deterministic)
    return x, (x, weights)  # (carry, per-block outputs) so the same block works under nn.scan


class AddPositionEmbs(nn.Module):
  """Learned 1-D position embeddings, one per token, normal(0.02) init."""
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    pe = self.param('pos_embedding', nn.initializers.normal(stddev=0.02), (1, *x.shape[1:]),
                    self.param_dtype)
    return x + pe.astype(x.dtype)


class Encoder(nn.Module):
  """Position embeddings, `depth` encoder blocks, final LayerNorm."""
  depth: int
  mlp_dim: int
  num_heads: int
  posemb: str = 'learn'
  dropout: float = 0.0
  attention_dropout: float = 0.0
  stochastic_depth: float = 0.0
  approximate_gelu: bool = True
  remat: bool = False
  scan: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, grid, num_prefix: int, *, deterministic: bool, return_attention: bool):
    """x: (B, T, D) with `num_prefix` class tokens before the grid[0]*grid[1] patch tokens."""
    d = x.shape[-1]
    # The residual stream stays float32 when the blocks compute in bfloat16: each block adds
    # a small update, which bfloat16's 8-bit mantissa would round away.
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    if self.posemb == 'learn':  # includes the class-token slot, as in the published checkpoints
      x = AddPositionEmbs(self.param_dtype, name='posembed_input')(x)
    elif self.posemb == 'sincos2d':  # fixed; class tokens get none
      pe = posemb_sincos_2d(*grid, d)
      x = x + jnp.asarray(np.pad(pe, ((num_prefix, 0), (0, 0)))[None], x.dtype)
    x = nn.Dropout(self.dropout)(x, deterministic)

    block_cls = Encoder1DBlock
    if self.remat:  # recompute activations in the backward pass: memory for compute
      block_cls = nn.remat(block_cls, prevent_cse=not self.scan, static_argnums=(3, 4))
    kw = dict(mlp_dim=self.mlp_dim, num_heads=self.num_heads, dropout=self.dropout,
              attention_dropout=self.attention_dropout, stochastic_depth=self.stochastic_depth,
              approximate_gelu=self.approximate_gelu, dtype=self.dtype,
              param_dtype=self.param_dtype)
    fractions = np.arange(self.depth) / max(self.depth - 1, 1)
    if self.scan:
      blocks = nn.scan(block_cls, variable_axes={'params': 0}, split_rngs={'params': True,
                       'dropout': True}, in_axes=(0, nn.broadcast, nn.broadcast),
                       length=self.depth)(name='encoderblock', **kw)
      x, (outs, weights) = blocks(x, jnp.asarray(fractions, jnp.float32), deterministic,
                                  return_attention)
    else:
      per_block = []
      for i in range(self.depth):
        x, out = block_cls(name=f'encoderblock_{i}', **kw)(
            x, float(fractions[i]), deterministic, return_attention)
        per_block.append(out)
      outs = jnp.stack([o for o, _ in per_block])                   # (depth, B, T, D)
      weights = jnp.stack([w for _, w in per_block]) if return_attention else None
    x = LayerNorm(name='encoder_norm', dtype=self.dtype, param_dtype=self.param_dtype)(x)
    return x, {'blocks': outs, 'attention': weights}


class MAPHead(nn.Module):
  """Multihead attention pooling (big_vision): a learned probe attends over all tokens."""
  mlp_dim: int
  num_heads: int
  approximate_gelu: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    probe = self.param('probe', nn.initializers.xavier_uniform(), (1, 1, x.shape[-1]),
                       self.param_dtype).astype(x.dtype)
    probe = jnp.broadcast_to(probe, (x.shape[0], 1, x.shape[-1]))
    x, _ = MultiHeadDotProductAttention(self.num_heads, name='MultiHeadDotProductAttention_0',
                                        **kw)(probe, x, deterministic=True)
    y = LayerNorm(name='LayerNorm_0', **kw)(x)
    x = x + MlpBlock(self.mlp_dim, approximate_gelu=self.approximate_gelu, name='MlpBlock_0',
                     **kw)(y, deterministic=True)
    return x[:, 0]                                                  # (B, D)


class VisionTransformer(nn.Module):
  """ViT. `__call__(images, train=False) -> (logits, aux)`; images NHWC in [-1, 1].

  aux always has 'pre_logits' (B, D or representation_size); with `return_blocks=True`
  also 'blocks' (depth, B, T, D) per-block outputs, with `return_attention=True`
  'attention' (depth, B, K, T, T) softmax weights. `num_classes=None` drops the head and
  returns the pre-logits features as logits.
  """
  num_classes: Optional[int] = 1000
  patch_size: int = 16
  width: int = 768
  depth: int = 12
  mlp_dim: int = 3072
  num_heads: int = 12
  classifier: str = 'token'
  posemb: str = 'learn'
  representation_size: Optional[int] = None
  dropout: float = 0.0
  attention_dropout: float = 0.0
  stochastic_depth: float = 0.0
  head_bias_init: float = 0.0
  approximate_gelu: bool = True   # tanh GELU, as the published JAX checkpoints were trained
  # Hybrid (paper section 3.1): units per ResNet stage of a stem whose feature map is cut
  # into patches; None = a pure ViT on pixels, () = the root block alone (stride 4).
  resnet_layers: Optional[tuple[int, ...]] = None
  resnet_width_factor: float = 1.0
  remat: bool = False
  scan: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def pixels_per_token(self) -> int:
    """Side of the image square behind one patch token (the stem's stride x the patch)."""
    stride = 1 if self.resnet_layers is None else resnet.stem_stride(self.resnet_layers)
    return stride * self.patch_size

  def fitting_image_size(self, side: int) -> int:
    """`side` if this model takes side x side images, else the nearest smaller size it
    takes (see the module-level fitting_image_size)."""
    return fitting_image_size(side, self.patch_size, self.resnet_layers)

  def token_grid(self, h: int, w: int) -> tuple[int, int]:
    """(rows, cols) of patch tokens for h x w images."""
    if self.resnet_layers is not None:
      h, w = (resnet.feature_size(n, self.resnet_layers) for n in (h, w))
    return h // self.patch_size, w // self.patch_size

  @nn.compact
  def __call__(self, images, *, train: bool = False, return_attention: bool = False,
               return_blocks: bool = False):
    if self.classifier not in CLASSIFIERS:
      raise ValueError(f'classifier={self.classifier!r}; expected one of {CLASSIFIERS}.')
    if self.posemb not in POSEMBS:
      raise ValueError(f'posemb={self.posemb!r}; expected one of {POSEMBS}.')
    b, h, w, _ = images.shape
    p = self.patch_size
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = images.astype(self.dtype)
    if self.resnet_layers is not None:  # hybrid: patches of the CNN feature map
      fh, fw = (resnet.feature_size(n, self.resnet_layers) for n in (h, w))
      if fh % p or fw % p:
        s = resnet.stem_stride(self.resnet_layers)
        raise ValueError(
            f'the ResNet stem turns {h}x{w} images into a {fh}x{fw} feature map, not '
            f'divisible by patch size {p}: use images whose size is a multiple of '
            f'{self.pixels_per_token()} (stride {s} x patch {p}) or a patch size dividing '
            'the feature map.')
      x = resnet.stem(x, self.resnet_layers, self.resnet_width_factor, **kw)
    elif h % p or w % p:
      raise ValueError(f'image size {h}x{w} is not divisible by patch size {p}: resize the '
                       f'images to a multiple of {p} (e.g. {h // p * p or p}) or pick a '
                       'variant whose patch size divides it.')
    h, w = x.shape[1:3]

    # 1. Patches -> tokens: a PxP convolution with stride P is the linear patch projection.
    x = nn.Conv(self.width, (p, p), strides=(p, p), padding='VALID', name='embedding',
                **kw)(x)                                             # (B, H/P, W/P, D)
    grid = (h // p, w // p)
    x = x.reshape(b, grid[0] * grid[1], self.width)                 # (B, N, D)

    # 2. Prepend the learned class token.
    num_prefix = 0
    if self.classifier == 'token':
      cls = self.param('cls', nn.initializers.zeros, (1, 1, self.width), self.param_dtype)
      x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, self.width)), x], 1)
      num_prefix = 1                                                # (B, N+1, D)

    # 3. Position embeddings + Transformer encoder.
    x, aux = Encoder(
        self.depth, self.mlp_dim, self.num_heads, self.posemb, self.dropout,
        self.attention_dropout, self.stochastic_depth, self.approximate_gelu, self.remat,
        self.scan, name='Transformer', **kw)(
            x, grid, num_prefix, deterministic=not train, return_attention=return_attention)
    aux = {k: v for k, v in aux.items()
           if (k == 'blocks' and return_blocks) or (k == 'attention' and return_attention)}

    # 4. Pool: class token output, mean of patch tokens, or attention pooling.
    if self.classifier == 'token':
      x = x[:, 0]
    elif self.classifier == 'gap':
      x = x.mean(axis=1)
    else:
      x = MAPHead(self.mlp_dim, self.num_heads, self.approximate_gelu, name='MAPHead_0',
                  **kw)(x)                                          # (B, D)

    # 5. Optional representation layer, then the zero-initialised linear head.
    if self.representation_size is not None:
      x = jnp.tanh(Dense(self.representation_size, name='pre_logits', **kw)(x))
    aux['pre_logits'] = x
    if self.num_classes is None:
      return x.astype(jnp.float32), aux
    logits = Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                   bias_init=nn.initializers.constant(self.head_bias_init), name='head',
                   **kw)(x)
    return logits.astype(jnp.float32), aux


def scan_params(params):
  """Per-block layout (encoderblock_0..L-1) -> scanned layout (encoderblock, depth axis 0)."""
  enc = dict(params['Transformer'])
  names = sorted((k for k in enc if k.startswith('encoderblock_')), key=lambda k: int(k[13:]))
  if not names:
    raise ValueError('params have no Transformer/encoderblock_N entries; already scanned?')
  blocks = [enc.pop(k) for k in names]
  enc['encoderblock'] = jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)
  return {**params, 'Transformer': enc}


def unscan_params(params):
  """Scanned layout (encoderblock with depth axis 0) -> per-block layout."""
  enc = dict(params['Transformer'])
  if 'encoderblock' not in enc:
    raise ValueError('params have no Transformer/encoderblock entry; already per-block?')
  stacked = enc.pop('encoderblock')
  depth = jax.tree.leaves(stacked)[0].shape[0]
  for i in range(depth):
    enc[f'encoderblock_{i}'] = jax.tree.map(lambda x, i=i: x[i], stacked)
  return {**params, 'Transformer': enc}
