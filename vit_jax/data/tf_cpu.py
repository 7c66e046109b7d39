"""TensorFlow for the input pipeline, restricted to the CPU, imported without Keras.

tf.data runs on host CPUs; if TF saw the GPUs it would reserve their memory and
starve JAX. Import `tf` from here so the restriction happens before any TF use.

`import tensorflow` also imports all of Keras 3 eagerly (and through it scikit-learn and
matplotlib): 2.2 of its 7 s on a 2-core machine, paid by every run, for an optimizer
registry this code never uses. TF skips that import when TF_USE_LEGACY_KERAS is set and
the legacy `tf_keras` package is absent, so then the variable is set for the import only
and removed after it: `tf.keras` reads it when first used and still loads Keras 3. A user's
own TF_USE_LEGACY_KERAS, or an installed tf_keras, leaves the import as TF does it.
"""
import importlib.util
import os
import sys

_LEGACY_KERAS = 'TF_USE_LEGACY_KERAS'

if ('tensorflow' in sys.modules or _LEGACY_KERAS in os.environ
    or importlib.util.find_spec('tf_keras') is not None):
  import tensorflow as tf
else:
  os.environ[_LEGACY_KERAS] = '1'
  try:
    import tensorflow as tf
  finally:
    del os.environ[_LEGACY_KERAS]

try:
  tf.config.set_visible_devices([], 'GPU')
except (RuntimeError, ValueError):  # TF already initialised its devices; nothing to do.
  pass

__all__ = ['tf']
