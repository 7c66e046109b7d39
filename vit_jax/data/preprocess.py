"""Per-example preprocessing: uint8 image -> float32 (S, S, 3) in [-1, 1].

Training randomness is stateless (seeded per example by the pipeline), so an
example's augmentation depends only on (seed, position), never on history.
"""
import numpy as np

from vit_jax.data import randaugment as randaugment_lib
from vit_jax.data.tf_cpu import tf

CROPS = ('inception', 'resize', 'pad_crop')


def to_rgb(image):
  """Any of 1 (gray), 2 (gray+alpha), 3 or 4 (RGBA) channels -> 3, so RGB checkpoints fit."""
  channels = image.shape[-1]
  if channels in (1, 2):
    return tf.image.grayscale_to_rgb(image[..., :1])
  if channels in (3, 4):
    return image[..., :3]
  raise ValueError(f'image has {channels} channels; expected 1, 2, 3 or 4.')


def _resize(image, size):
  """Antialiased bilinear resize, rounded back to uint8 so augmentations see real pixels."""
  image = tf.image.resize(image, [size, size], method='bilinear', antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(image), 0., 255.), tf.uint8)


def normalize(image):
  return tf.cast(image, tf.float32) / 127.5 - 1.


def train_image(image, seed, *, image_size, crop, crop_min_scale, crop_padding, flip,
                randaugment):
  """Random crop (or plain resize), flip and RandAugment; `seed` is an int (2,) tensor.

  crop: 'inception' (random area >= crop_min_scale and aspect ratio, resized), 'resize',
  or 'pad_crop' (resize, zero-pad by crop_padding pixels, random image_size crop: a random
  translation, the classic MNIST / CIFAR augmentation)."""
  crop_seed, flip_seed, ra_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  image = to_rgb(image)
  if crop == 'inception':  # Szegedy et al. 2015: random area and aspect ratio
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([0, 0, 4], tf.float32), seed=crop_seed,
        min_object_covered=0., aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(crop_min_scale, 1.), max_attempts=10, use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, size)
  image = _resize(image, image_size)
  if crop == 'pad_crop':
    pad = [[crop_padding, crop_padding], [crop_padding, crop_padding], [0, 0]]
    image = tf.image.stateless_random_crop(tf.pad(image, pad), [image_size, image_size, 3],
                                           seed=crop_seed)
  if flip:
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  if randaugment:
    image = randaugment_lib.randaugment(image, ra_seed, *randaugment)
  return normalize(image)


def eval_image(image, *, image_size, crop_ratio):
  """Resize to image_size / crop_ratio (square), keep the central image_size crop.

  crop_ratio 1.0 is a plain resize, as usual when fine-tuning ViT; 0.875 is the
  classic ImageNet "resize 256, crop 224"."""
  image = to_rgb(image)
  resized = int(round(image_size / crop_ratio))
  image = _resize(image, resized)
  offset = (resized - image_size) // 2
  image = image[offset:offset + image_size, offset:offset + image_size]
  return normalize(image)


def preprocess_eval_image(image_uint8_hwc, image_size, crop_ratio=1.0):
  """Eval preprocessing for one numpy image (H, W[, C]) uint8 -> (S, S, 3) float32 [-1, 1]."""
  image = np.asarray(image_uint8_hwc)
  if image.dtype != np.uint8:
    raise ValueError(f'image dtype is {image.dtype}; expected uint8 (0..255).')
  if image.ndim == 2:
    image = image[..., None]
  return eval_image(tf.constant(image), image_size=image_size, crop_ratio=crop_ratio).numpy()
