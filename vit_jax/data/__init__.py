"""Input pipeline: sources (tfds, image folders, arrays) -> deterministic, sharded batches."""
from vit_jax.data import tf_cpu  # first: hides GPUs from TF before anything else imports it
from vit_jax.data.pipeline import (DatasetInfo, eval_iterator, get_info, local_eval_batches,
                                   local_train_batches, train_iterator)
from vit_jax.data.preprocess import preprocess_eval_image
from vit_jax.data.sources import ArraySource, FileSource, register_arrays
