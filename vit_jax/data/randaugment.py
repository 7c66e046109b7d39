"""RandAugment (Cubuk et al. 2020, arXiv:1909.13719) on uint8 (H, W, 3) images.

Each image gets `num_layers` ops drawn uniformly from `OPS`, all at one magnitude
on the paper's 0..10 scale; signed ops flip direction at random. Randomness comes
from a stateless seed, so the same (seed, example) always gets the same ops.
"""
import math

from vit_jax.data.tf_cpu import tf

MAX_MAGNITUDE = 30  # the paper scale is 0..10; AugReg goes to 20
_FILL = 128.  # gray for pixels that geometric ops bring in from outside the image


def parse(spec):
  """'2,10' -> (2, 10.0); None or '' -> None (off)."""
  if not spec:
    return None
  try:
    num_layers, magnitude = (s.strip() for s in str(spec).split(','))
    num_layers, magnitude = int(num_layers), float(magnitude)
  except ValueError:
    num_layers = magnitude = -1
  if num_layers < 1 or not 0 <= magnitude <= MAX_MAGNITUDE:
    raise ValueError(f'config.dataset.randaugment={spec!r}; expected "num_layers,magnitude" '
                     f'with num_layers >= 1 and magnitude in 0..{MAX_MAGNITUDE} (e.g. "2,10"), '
                     'or None for off.')
  return num_layers, magnitude


def _to_uint8(x):
  return tf.cast(tf.clip_by_value(tf.round(x), 0., 255.), tf.uint8)


def _blend(degenerate, image, factor):
  """PIL ImageEnhance semantics: factor 0 gives `degenerate`, 1 gives `image`."""
  d = tf.cast(degenerate, tf.float32)
  return _to_uint8(d + factor * (tf.cast(image, tf.float32) - d))


def _gray(image):
  return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))


def _transform(image, coeffs):
  """Projective transform; coeffs map each output pixel (x, y) to its input pixel."""
  shape = tf.shape(image)[:2]
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=tf.cast(tf.stack(coeffs)[None], tf.float32),
      output_shape=shape, fill_value=_FILL, interpolation='BILINEAR', fill_mode='CONSTANT')
  return out[0]


def _rotate(image, m, sign):
  angle = sign * m * 30. * math.pi / 180.
  h, w = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
  cx, cy, c, s = (w - 1) / 2, (h - 1) / 2, tf.cos(angle), tf.sin(angle)
  return _transform(image, [c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy, 0., 0.])


def _shear_x(image, m, sign):
  return _transform(image, [1., sign * m * 0.3, 0., 0., 1., 0., 0., 0.])


def _shear_y(image, m, sign):
  return _transform(image, [1., 0., 0., sign * m * 0.3, 1., 0., 0., 0.])


def _translate_x(image, m, sign):  # up to 45% of the width, as in timm
  dx = sign * m * 0.45 * tf.cast(tf.shape(image)[1], tf.float32)
  return _transform(image, [1., 0., dx, 0., 1., 0., 0., 0.])


def _translate_y(image, m, sign):
  dy = sign * m * 0.45 * tf.cast(tf.shape(image)[0], tf.float32)
  return _transform(image, [1., 0., 0., 0., 1., dy, 0., 0.])


def _identity(image, m, sign):
  return image


def _autocontrast(image, m, sign):
  """Stretches each channel to span 0..255."""
  x = tf.cast(image, tf.float32)
  lo, hi = tf.reduce_min(x, axis=[0, 1]), tf.reduce_max(x, axis=[0, 1])
  scale = tf.where(hi > lo, 255. / tf.maximum(hi - lo, 1.), 1.)
  return _to_uint8((x - tf.where(hi > lo, lo, 0.)) * scale)


def _equalize_channel(c):
  """PIL's ImageOps.equalize for one channel."""
  hist = tf.histogram_fixed_width(tf.cast(c, tf.int32), [0, 255], nbins=256)
  last = tf.gather(hist, tf.reduce_max(tf.where(hist > 0)))
  step = (tf.reduce_sum(hist) - last) // 255
  lut = (tf.cumsum(hist) + step // 2) // tf.maximum(step, 1)
  lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
  return tf.where(step == 0, c, tf.cast(tf.gather(lut, tf.cast(c, tf.int32)), tf.uint8))


def _equalize(image, m, sign):
  return tf.stack([_equalize_channel(image[..., i]) for i in range(3)], axis=-1)


def _solarize(image, m, sign):  # inverts pixels above a threshold that falls with magnitude
  threshold = tf.cast(tf.round(256. - m * 256.), tf.int32)
  return tf.where(tf.cast(image, tf.int32) >= threshold, 255 - image, image)


def _posterize(image, m, sign):  # keeps 8 .. 4 bits
  shift = min(int(round(m * 4)), 7)
  return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def _factor(m, sign):  # enhancement factor in [0.1, 1.9] at magnitude 10, never negative
  return tf.maximum(1. + sign * m * 0.9, 0.)


def _color(image, m, sign):
  return _blend(_gray(image), image, _factor(m, sign))


def _contrast(image, m, sign):
  mean = tf.reduce_mean(tf.cast(tf.image.rgb_to_grayscale(image), tf.float32))
  return _blend(tf.fill(tf.shape(image), mean), image, _factor(m, sign))


def _brightness(image, m, sign):
  return _blend(tf.zeros_like(image), image, _factor(m, sign))


def _sharpness(image, m, sign):
  """Blends with PIL's SMOOTH-filtered image; the 1-pixel border stays unfiltered."""
  x = tf.cast(image, tf.float32)[None]
  k = tf.constant([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]]) / 13.
  k = tf.tile(k[:, :, None, None], [1, 1, 3, 1])
  smooth = tf.nn.depthwise_conv2d(x, k, strides=[1, 1, 1, 1], padding='VALID')[0]
  smooth = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
  border = tf.pad(tf.zeros_like(smooth[1:-1, 1:-1]), [[1, 1], [1, 1], [0, 0]],
                  constant_values=1.)
  degenerate = border * x[0] + (1. - border) * smooth
  return _blend(degenerate, image, _factor(m, sign))


OPS = (_identity, _autocontrast, _equalize, _rotate, _solarize, _color, _posterize,
       _contrast, _brightness, _sharpness, _shear_x, _shear_y, _translate_x, _translate_y)


def randaugment(image, seed, num_layers, magnitude):
  """Applies `num_layers` random ops at `magnitude` to a uint8 (H, W, 3) image.

  Magnitudes above 10 extrapolate linearly (AugReg uses 15 and 20), as in big_vision."""
  m = magnitude / 10.
  for layer_seed in tf.unstack(tf.random.experimental.stateless_split(seed, num_layers)):
    op_seed, sign_seed = tf.unstack(tf.random.experimental.stateless_split(layer_seed, 2))
    op = tf.random.stateless_uniform([], op_seed, 0, len(OPS), dtype=tf.int32)
    sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, -1., 1.)
    out = tf.switch_case(op, [lambda f=f: f(image, m, sign) for f in OPS])
    out.set_shape(image.shape)
    image = out
  return image
