"""The ResNet stem of the paper's hybrid models (ViT paper, section 3.1).

A hybrid ViT forms its tokens from a CNN feature map instead of raw pixels: the patch
projection runs on the stem's output. The structure and parameter names follow the
published hybrid checkpoints (R50+ViT-B_16.npz, R26+ViT-S_32.npz): a weight-standardised
7x7 root convolution with GroupNorm and max-pooling (stride 4 in all), then bottleneck
ResNet stages, the first at stride 1 and each later one at stride 2.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = jnp.dtype


def weight_standardize(w, axis, eps: float = 1e-5):
  """Zero mean, unit standard deviation per output channel (the published models' formula:
  the std, not the variance, gets the epsilon)."""
  w = w - jnp.mean(w, axis=axis, keepdims=True)
  return w / (jnp.std(w, axis=axis, keepdims=True) + eps)


class StdConv(nn.Module):
  """Bias-free convolution whose kernel is weight-standardised at every call.

  1x1 kernels stay convolutions: as strided slices and dot_generals (the same values) the
  Fashion-MNIST hybrid's train step was 13% slower on XLA:CPU (49.6 against 43.7 ms per
  batch of 64, Zen 3, under launch.sh, interleaved medians of 16 rounds, 2026-12-01)."""
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (*self.kernel_size, x.shape[-1], self.features), self.param_dtype)
    kernel = weight_standardize(kernel.astype(jnp.float32), axis=(0, 1, 2))
    return jax.lax.conv_general_dilated(
        x.astype(self.dtype), kernel.astype(self.dtype), self.strides, 'SAME',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _group_norm(name: str, dtype, param_dtype, **kw):
  return nn.GroupNorm(num_groups=32, epsilon=1e-6, dtype=dtype, param_dtype=param_dtype,
                      name=name, **kw)


class ResidualUnit(nn.Module):
  """Bottleneck unit: 1x1 -> 3x3 (strided) -> 1x1 with 4x the features, GroupNorm after
  each, the last one zero-initialised so a fresh unit is the identity on its input path."""
  features: int
  strides: tuple[int, int] = (1, 1)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    residual = x
    if x.shape[-1] != self.features * 4 or self.strides != (1, 1):
      residual = StdConv(self.features * 4, (1, 1), self.strides, name='conv_proj', **kw)(x)
      residual = _group_norm('gn_proj', **kw)(residual)
    y = StdConv(self.features, (1, 1), name='conv1', **kw)(x)
    y = nn.relu(_group_norm('gn1', **kw)(y))
    y = StdConv(self.features, (3, 3), self.strides, name='conv2', **kw)(y)
    y = nn.relu(_group_norm('gn2', **kw)(y))
    y = StdConv(self.features * 4, (1, 1), name='conv3', **kw)(y)
    y = _group_norm('gn3', scale_init=nn.initializers.zeros, **kw)(y)
    return nn.relu(residual + y)


class ResNetStage(nn.Module):
  """`units` bottleneck units; the first one strided (and projecting the residual)."""
  units: int
  features: int
  first_stride: tuple[int, int]
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    for j in range(self.units):
      x = ResidualUnit(self.features, self.first_stride if j == 0 else (1, 1),
                       name=f'unit{j + 1}', **kw)(x)
    return x


def max_pool(x, window: int = 3, stride: int = 2):
  """nn.max_pool(x, (window,) * 2, (stride,) * 2, 'SAME') as two 1-D passes of strided
  maxima: the same values and gradients, but its backward pass is elementwise selects
  instead of XLA:CPU's select-and-scatter, 3.3x faster (fwd + bwd) at 128x14x14x32 and
  4.7x at the R50 root's 2x112x112x64."""
  pads = jax.lax.padtype_to_pads(x.shape[1:3], (window, window), (stride, stride), 'SAME')
  x = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
  for axis in (1, 2):
    n = (x.shape[axis] - window) // stride + 1
    shifted = [jax.lax.slice_in_dim(x, i, i + stride * (n - 1) + 1, stride, axis)
               for i in range(window)]
    x = functools.reduce(jnp.maximum, shifted)
  return x


def stem_stride(num_layers: Sequence[int]) -> int:
  """Pixels per feature-map position: 4 for the root, x2 for each stage after the first."""
  return 4 * 2 ** max(len(num_layers) - 1, 0)


def feature_size(pixels: int, num_layers: Sequence[int]) -> int:
  """The stem's output side for an input side of `pixels` ('SAME' strides round up)."""
  for _ in range(stem_stride(num_layers).bit_length() - 1):
    pixels = -(-pixels // 2)
  return pixels


def stem_flops(image_size: int, num_layers: Sequence[int], width_factor: float,
               channels: int = 3) -> tuple[int, int, int]:
  """(forward FLOPs of the stem's convolutions per image, 2 per multiply-add; the side of
  its feature map; its channels). GroupNorm, ReLU and pooling are left out, as for the
  ViT's own count."""
  width = int(64 * width_factor)
  side = -(-image_size // 2)
  flops = 2 * side * side * 7 * 7 * channels * width          # root convolution
  side, c = -(-side // 2), width                                # max-pool
  for i, units in enumerate(num_layers):
    f = width * 2 ** i
    for j in range(units):
      out = -(-side // 2) if i and j == 0 else side
      flops += 2 * side * side * c * f + 2 * out * out * (9 * f * f + f * 4 * f)
      if c != 4 * f or out != side:
        flops += 2 * out * out * c * 4 * f                      # residual projection
      side, c = out, 4 * f
  return flops, side, c


def stem(x, num_layers: Sequence[int], width_factor: float, dtype, param_dtype):
  """Root block and stages, called inside the VisionTransformer's scope so the parameters
  sit at the top level of the tree, where the published hybrid checkpoints have them."""
  kw = dict(dtype=dtype, param_dtype=param_dtype)
  width = int(64 * width_factor)
  if width % 32:
    raise ValueError(f'resnet_width_factor={width_factor} gives {width} root channels; '
                     'GroupNorm needs a multiple of 32 (use a factor that is a multiple '
                     'of 0.5).')
  x = StdConv(width, (7, 7), (2, 2), name='conv_root', **kw)(x)
  x = nn.relu(_group_norm('gn_root', **kw)(x))
  x = max_pool(x)
  for i, units in enumerate(num_layers):
    x = ResNetStage(units, width * 2 ** i, (2, 2) if i else (1, 1), name=f'block{i + 1}',
                    **kw)(x)
  return x
