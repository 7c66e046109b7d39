r"""Classify images with any checkpoint: top-k classes with probabilities.

  python -m vit_jax.predict --checkpoint=workdirs/default IMAGE_OR_FOLDER ... [--top_k=5]
  python -m vit_jax.predict --checkpoint=ViT-B_16.npz --json photos/ > predictions.jsonl
  python -m vit_jax.predict --checkpoint=model.npz --config=configs/finetune.py:B/16,imagenette \
      --config.dataset.path=DIR photos/

The checkpoint is anything `vit_jax.checkpoints.load.load_model` reads (an orbax workdir
of our trainer, vit_jax / big_vision .npz, the PyTorch formats). Images get the eval
preprocessing the model was trained with (`image_size`, `eval_crop_ratio` of the saved or
given config), so predictions match the trainer's evaluation.

Class names, first that applies: --labels FILE (one name a line); the dataset of --config
or of the training config saved with an orbax checkpoint; ImageNet-1k names for a
1000-class head; WordNet ids for a 21843-class ImageNet-21k head (with their lemma when
timm is installed); else 'class N'.

Output: one line per image on stdout ("PATH: name (97.1%), ..."), or with --json one JSON
object per image: {"path", "predictions": [{"label", "name", "prob"}, ...]}; a file that is
not a readable image gives {"path", "error"} and is named on stderr; the others still run.
Exit status 0 when at least one image was classified, 1 when none was.
"""

import dataclasses
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402

DATA_DIR = Path(__file__).resolve().parent / 'data'
IMAGENET_LABELS = DATA_DIR / 'imagenet_labels.txt'        # 1000 lines, class-id order
IMAGENET21K_WNIDS = DATA_DIR / 'imagenet21k_wnids.txt'    # 21843 lines, Google's order


def _stderr(msg: str):
  print(msg, file=sys.stderr, flush=True)


# ---- Class names. ----

def read_labels(path) -> tuple[str, ...]:
  """A labels file: one class name a line, in class-id order (blank lines kept as '')."""
  with open(path, encoding='utf-8') as f:
    return tuple(line.rstrip('\r\n') for line in f)


@functools.lru_cache(maxsize=1)
def _timm_lemmas() -> dict[str, str]:
  """WordNet id -> first lemma, from timm's data files when timm is installed (located
  without importing timm, which would import torch)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.find_spec('timm')
  if spec is None or not spec.origin:
    return {}
  path = Path(spec.origin).parent / 'data' / '_info' / 'imagenet_synset_to_lemma.txt'
  if not path.is_file():
    return {}
  with open(path, encoding='utf-8') as f:
    return {wnid: lemma.split(',')[0].strip()
            for wnid, _, lemma in (line.rstrip('\n').partition('\t') for line in f)}


def builtin_class_names(num_classes: int) -> tuple[Optional[tuple[str, ...]], str]:
  """(names, where from) for the ImageNet heads we know, else (None, why not)."""
  if num_classes == 1000:
    return read_labels(IMAGENET_LABELS), 'built-in ImageNet-1k names'
  if num_classes == 21843:
    wnids, lemmas = read_labels(IMAGENET21K_WNIDS), _timm_lemmas()
    if lemmas:
      return (tuple(f'{w} {lemmas[w]}' if w in lemmas else w for w in wnids),
              'built-in ImageNet-21k WordNet ids, lemmas from timm')
    return wnids, 'built-in ImageNet-21k WordNet ids (install timm for their names)'
  return None, f'no class names known for {num_classes} classes'


def dataset_class_names(dataset_cfg) -> tuple[str, ...]:
  """Class names of a config's dataset (cheap: tfds metadata or folder names)."""
  from vit_jax.data import sources  # pylint: disable=g-import-not-at-top
  return tuple(sources.class_names(dataset_cfg))


def class_names_for(num_classes: int, *, labels: Optional[str] = None, dataset_cfg=None,
                    log: Callable[[str], None] = _stderr) -> tuple[tuple[str, ...], str]:
  """(num_classes names, where they came from); see the module docstring for the order."""
  if labels:
    names = read_labels(labels)
    if len(names) != num_classes:
      raise ValueError(f'--labels={labels} has {len(names)} lines but the model has '
                       f'{num_classes} classes; give one name a line, in class-id order.')
    return names, f'labels file {labels}'
  if dataset_cfg is not None:
    try:
      names = dataset_class_names(dataset_cfg)
    except Exception as e:  # pylint: disable=broad-except  (the data may live elsewhere)
      log(f'class names: dataset {dataset_cfg.get("source")!r} of the config is not '
          f'readable here ({type(e).__name__}: {str(e).splitlines()[0]}); pass --labels=FILE '
          'for names')
    else:
      if len(names) == num_classes:
        what = dataset_cfg.get('name') or dataset_cfg.get('path') or dataset_cfg['source']
        return names, f'dataset {what}'
      log(f'class names: the config\'s dataset has {len(names)} classes but the model '
          f'{num_classes}; ignoring them')
  names, where = builtin_class_names(num_classes)
  if names is not None:
    return names, where
  return tuple(f'class {i}' for i in range(num_classes)), f'{where}: "class N" (use --labels)'


# ---- Reading images. ----

class UnreadableImage(ValueError):
  """A file that is not a decodable image; str() is the reason."""


def list_inputs(inputs: Iterable[str]) -> list[tuple[str, Optional[str]]]:
  """Files and folders -> [(path, None) to try, or (path, why it is skipped)].

  Folders are walked recursively in sorted order; in them only image file names are
  tried (others and hidden files are reported). A file named directly is always tried:
  its contents decide."""
  from vit_jax.data.sources import IMAGE_EXTENSIONS  # pylint: disable=g-import-not-at-top
  out = []
  for item in inputs:
    path = Path(item)
    if path.is_dir():
      for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        for name in sorted(files):
          f = os.path.join(root, name)
          if name.startswith('.'):
            out.append((f, 'hidden file'))
          elif os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
            out.append((f, 'not an image file name'))
          else:
            out.append((f, None))
    elif path.is_file():
      out.append((str(path), None))
    else:
      out.append((str(path), 'no such file or directory'))
  return out


def read_image(path: str) -> np.ndarray:
  """An image file -> uint8 (H, W, 3) with the training pipeline's own decoder (so gray,
  CMYK, 16-bit and palette images become what training saw); UnreadableImage if not."""
  from vit_jax.data import sources  # pylint: disable=g-import-not-at-top
  from vit_jax.data.tf_cpu import tf  # pylint: disable=g-import-not-at-top
  try:
    image = sources.decode_image_file(str(path)).numpy()
  except (tf.errors.OpError, OSError):
    why = sources._why_unreadable(path)  # pylint: disable=protected-access
    raise UnreadableImage(why) from None
  if image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
    raise UnreadableImage(f'empty image {image.shape}')
  return image


# ---- The classifier. ----

@dataclasses.dataclass
class Classifier:
  """A model with its params, eval preprocessing and class names."""
  model: Any
  params: Any
  image_size: int
  crop_ratio: float
  class_names: tuple[str, ...]
  info: dict
  checkpoint: str = ''

  @property
  def num_prefix(self) -> int:
    return int(self.model.classifier == 'token')

  @property
  def grid(self) -> tuple[int, int]:
    return self.model.token_grid(self.image_size, self.image_size)

  def preprocess(self, image_uint8) -> np.ndarray:
    """uint8 (H, W[, C]) -> float32 (S, S, 3) in [-1, 1], exactly as the trainer evaluates."""
    from vit_jax.data import preprocess_eval_image  # pylint: disable=g-import-not-at-top
    return preprocess_eval_image(image_uint8, self.image_size, self.crop_ratio)

  @functools.cached_property
  def _apply(self):
    import jax  # pylint: disable=g-import-not-at-top
    from vit_jax import cpu_tuning  # pylint: disable=g-import-not-at-top

    @functools.partial(jax.jit, static_argnums=2,
                       compiler_options=cpu_tuning.compiler_options(self.model.dtype))
    def apply(params, images, return_attention):
      logits, aux = self.model.apply({'params': params}, images,
                                     return_attention=return_attention)
      return jax.nn.softmax(logits), aux
    return apply

  def run(self, images, return_attention: bool = False, batch_size: Optional[int] = None):
    """images (B, S, S, 3) in [-1, 1] -> (probs (B, C), aux) as numpy. Padded to
    batch_size (default B) so every batch reuses one compiled program."""
    import jax  # pylint: disable=g-import-not-at-top
    images = np.asarray(images, np.float32)
    n = len(images)
    pad = max(batch_size or n, n) - n
    if pad:
      images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), np.float32)])
    probs, aux = jax.device_get(self._apply(self.params, images, return_attention))
    aux = {k: (v[:, :n] if k == 'attention' else v[:n]) for k, v in aux.items()}
    return np.asarray(probs[:n]), aux

  def top_k(self, probs, k: int) -> list[list[dict]]:
    """(B, C) probabilities -> per image the k best {"label", "name", "prob"}."""
    k = min(k, probs.shape[-1])
    order = np.argsort(-probs, axis=-1, kind='stable')[:, :k]
    return [[{'label': int(c), 'name': self.class_names[c], 'prob': float(p[c])} for c in row]
            for p, row in zip(probs, order)]

  def batches(self, inputs: Iterable[str], batch_size: int) -> Iterator[list[dict]]:
    """Files/folders -> lists of entries in input order: {"path", "image"} (preprocessed)
    or {"path", "error"}; each list holds at most batch_size images."""
    pending, count = [], 0
    for path, why in list_inputs(inputs):
      entry = {'path': path}
      if why is None:
        try:
          entry['image'] = self.preprocess(read_image(path))
          count += 1
        except UnreadableImage as e:
          why = str(e)
      if why is not None:
        entry['error'] = why
      pending.append(entry)
      if count == batch_size:
        yield pending
        pending, count = [], 0
    if pending:
      yield pending

  def predict_files(self, inputs: Iterable[str], *, top_k: int = 5, batch_size: int = 32,
                    log: Callable[[str], None] = _stderr) -> Iterator[dict]:
    """Files/folders -> one result per file in order: {"path", "predictions"} or
    {"path", "error"} (also logged)."""
    for entries in self.batches(inputs, batch_size):
      ok = [e for e in entries if 'image' in e]
      preds = iter(self.top_k(self.run(np.stack([e['image'] for e in ok]),
                                       batch_size=batch_size)[0], top_k) if ok else [])
      for e in entries:
        if 'error' in e:
          log(f'skipped {e["path"]}: {e["error"]}')
          yield {'path': e['path'], 'error': e['error']}
        else:
          yield {'path': e['path'], 'predictions': next(preds)}


def load_classifier(checkpoint: str, *, config=None, format: Optional[str] = None,  # pylint: disable=redefined-builtin
                    prefix: str = '', labels: Optional[str] = None,
                    image_size: Optional[int] = None, crop_ratio: Optional[float] = None,
                    log: Callable[[str], None] = _stderr) -> Classifier:
  """Any checkpoint -> Classifier.

  config: a training config (ConfigDict or dict) whose `dataset` gives class names,
    image_size and eval_crop_ratio; default: the one saved with an orbax checkpoint.
  image_size / crop_ratio: override the config's (needed for an .npz without learned
    position embeddings and without a config)."""
  from vit_jax.checkpoints import load  # pylint: disable=g-import-not-at-top
  model, params, info = load.load_model(checkpoint, format=format, prefix=prefix)
  if model.num_classes is None:
    raise ValueError(f'checkpoint {checkpoint} has no classification head (a feature '
                     'extractor): fine-tune it first, e.g. configs/finetune.py with '
                     f'--config.init_from={checkpoint}.')
  dataset = None
  if config is not None:
    dataset = config['dataset']
  elif info.get('config'):
    dataset = info['config']['dataset']
  # The size it was trained at, where known, else one its position embeddings fit (a
  # hybrid's stem rounds up: 28 and 32 px both give a 4x4 grid after a stride-8 stem).
  grid = info.get('grid') if info.get('posemb') == 'learn' else None
  size = image_size or (dataset and dataset['image_size']) or info['image_size']
  if not size:
    raise ValueError(f'the image size of {checkpoint} is unknown (no learned position '
                     'embeddings, no saved config): pass --image_size=N (the resolution it '
                     'was trained at) or --config=... with dataset.image_size.')
  if model.fitting_image_size(size) != size:
    raise ValueError(f'image size {size} does not divide into the {model.pixels_per_token()}'
                     f'-pixel patches of {checkpoint}; pass --image_size='
                     f'{model.fitting_image_size(size)}.')
  tokens = model.token_grid(size, size)
  if grid and tokens != tuple(grid):
    raise ValueError(f'image size {size} gives a {tokens[0]}x{tokens[1]} patch grid, but the '
                     f'position embeddings of {checkpoint} are for {grid[0]}x{grid[1]} '
                     f'({info["image_size"]}px); use --image_size={info["image_size"]}, or '
                     f'fine-tune at {size}px (--config.init_from resizes them).')
  ratio = crop_ratio or float(dataset['eval_crop_ratio'] if dataset else 1.0)
  if not 0 < ratio <= 1:
    raise ValueError(f'crop_ratio={ratio}; expected (0, 1]: 1.0 is a plain resize, 0.875 '
                     'resizes to size/0.875 and crops the centre.')
  names, where = class_names_for(model.num_classes, labels=labels, dataset_cfg=dataset,
                                 log=log)
  log(f'model from {checkpoint} [{info["format"]}]: {info["variant"] or "ViT"} '
      f'{info["num_params"]:,} params, {model.num_classes} classes ({where}), '
      f'{size}px, crop ratio {ratio}')
  return Classifier(model, params, int(size), ratio, tuple(names), info, str(checkpoint))


# ---- Command line (shared with vit_jax.attention). ----

def define_model_flags():
  """The flags of every CLI that runs a checkpoint on images."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('checkpoint', None, 'Orbax workdir / checkpoint dir, .npz, or a '
                      'PyTorch file: anything vit_jax.checkpoints.load reads.')
  config_flags.DEFINE_config_file('config', None, 'Optional training config (e.g. '
                                  'configs/finetune.py:B/16,imagenette): class names, image '
                                  'size and eval crop from its dataset.', lock_config=False)
  flags.DEFINE_string('format', None, 'Checkpoint format; default: from the path and keys.')
  flags.DEFINE_string('prefix', '', 'Key prefix of the ViT inside the checkpoint.')
  flags.DEFINE_string('labels', None, 'File of class names, one a line, in class-id order.')
  flags.DEFINE_integer('image_size', None, 'Resolution; default: from the checkpoint/config.')
  flags.DEFINE_float('crop_ratio', None, 'Eval central crop; default: the config\'s, else 1.')
  flags.DEFINE_integer('batch_size', 32, 'Images per forward pass.')
  flags.mark_flag_as_required('checkpoint')


def classifier_from_flags() -> Classifier:
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  if f.batch_size < 1:
    raise ValueError(f'--batch_size={f.batch_size}; expected >= 1.')
  return load_classifier(f.checkpoint, config=f.config, format=f.format, prefix=f.prefix,
                         labels=f.labels, image_size=f.image_size, crop_ratio=f.crop_ratio)


def format_line(result: dict) -> str:
  """A result as one human-readable line."""
  if 'error' in result:
    return f'{result["path"]}: skipped ({result["error"]})'
  return f'{result["path"]}: ' + ', '.join(
      f'{p["name"]} ({100 * p["prob"]:.1f}%)' for p in result['predictions'])


def main(argv: Sequence[str]):
  from absl import flags, logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
  f = flags.FLAGS
  inputs = argv[1:]
  if not inputs:
    raise SystemExit('error: no images given; usage: python -m vit_jax.predict '
                     '--checkpoint=PATH IMAGE_OR_FOLDER ...')
  if f.top_k < 1:
    raise SystemExit(f'error: --top_k={f.top_k}; expected >= 1.')
  try:
    clf = classifier_from_flags()
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f'error: {e}') from None
  t0, done, skipped = time.time(), 0, 0
  for result in clf.predict_files(inputs, top_k=f.top_k, batch_size=f.batch_size):
    print(json.dumps(result) if f.json else format_line(result), flush=True)
    done += 'predictions' in result
    skipped += 'error' in result
  _stderr(f'classified {done} image(s), skipped {skipped}, in {time.time() - t0:.1f}s')
  if not done:
    raise SystemExit('error: no readable image among the inputs.')


if __name__ == '__main__':
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  define_model_flags()
  flags.DEFINE_integer('top_k', 5, 'How many classes to print per image.')
  flags.DEFINE_bool('json', False, 'One JSON object per image on stdout.')
  app.run(main)
