"""TensorFlow for the input pipeline, restricted to the CPU.

tf.data runs on host CPUs; if TF saw the GPUs it would reserve their memory and
starve JAX. Import `tf` from here so the restriction happens before any TF use.
"""
import tensorflow as tf

try:
  tf.config.set_visible_devices([], 'GPU')
except (RuntimeError, ValueError):  # TF already initialised its devices; nothing to do.
  pass

__all__ = ['tf']
