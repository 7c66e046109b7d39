r"""Attention maps and embedding figures of any checkpoint, as PNGs.

  python -m vit_jax.attention --checkpoint=workdirs/default IMAGE_OR_FOLDER ... --out=DIR
  python -m vit_jax.attention --checkpoint=ViT-B_16.npz --embeddings --out=DIR

Per image, DIR/<name>.attention.png: the image as the model sees it (eval preprocessing),
the attention rollout over all layers (Abnar & Zuidema 2020, residual-aware; the method
of the ViT paper's Figure 6) as a patch map and upsampled over the image, and the
class-token attention of the last layer for every head, overlaid. Without a class token
('gap' / 'map' heads) the maps are those of the mean patch token.

--embeddings writes the ViT paper's Figure 7 (left, centre): DIR/patch_embedding_pcs.png
(principal components of the patch-embedding filters) and
DIR/position_embedding_similarity.png (cosine similarity of each position embedding to all
others; only for learned position embeddings).

Takes the flags of vit_jax.predict (--config, --labels, --image_size, ...). Progress on
stderr; one JSON line per file written on stdout: {"path", "png", "label", "name", "prob"}
for an image, {"figure", "png"} for an embedding figure, {"path", "error"} for a skipped
file. Exit status 0 when something was written, 1 when nothing was.
"""

import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402

from vit_jax import predict, visualize  # noqa: E402
from vit_jax.checkpoints import names  # noqa: E402

ROLLOUT_SUFFIX = '.attention.png'
PATCH_PCS_PNG = 'patch_embedding_pcs.png'
POSEMB_PNG = 'position_embedding_similarity.png'


def _stderr(msg: str):
  print(msg, file=sys.stderr, flush=True)


def maps(clf: predict.Classifier, attention, *, head_fusion: str = 'mean'):
  """aux['attention'] (depth, B, K, T, T) -> (last layer per head (B, K, gh, gw),
  rollout (B, gh, gw)), both for the pooled output (class token, or mean patch)."""
  attention = np.asarray(attention)
  last = visualize.token_map(attention[-1], clf.grid, clf.num_prefix)
  rollout = visualize.token_map(visualize.attention_rollout(attention, head_fusion=head_fusion),
                                clf.grid, clf.num_prefix)
  return last, rollout


def attention_figures(clf: predict.Classifier, images, *, head_fusion: str = 'mean',
                      batch_size: Optional[int] = None, titles: Optional[Sequence[str]] = None):
  """Preprocessed images (B, S, S, 3) -> ([figure per image], top-1 predictions)."""
  probs, aux = clf.run(images, return_attention=True, batch_size=batch_size)
  last, rollout = maps(clf, aux['attention'], head_fusion=head_fusion)
  top = [p[0] for p in clf.top_k(probs, 1)]
  figs = []
  for i, image in enumerate(images):
    title = (titles[i] + '\n' if titles else '') + f'{top[i]["name"]} ({top[i]["prob"]:.0%})'
    figs.append(visualize.attention_figure((np.asarray(image) + 1) / 2, last[i], rollout[i],
                                           title=title))
  return figs, top


def _unique_png(out: Path, path: str, used: set) -> Path:
  stem, n = Path(path).stem, 1
  name = stem + ROLLOUT_SUFFIX
  while name in used:
    n += 1
    name = f'{stem}_{n}{ROLLOUT_SUFFIX}'
  used.add(name)
  return out / name


def write_attention_pngs(clf: predict.Classifier, inputs: Iterable[str], out, *,
                         batch_size: int = 32, head_fusion: str = 'mean',
                         log: Callable[[str], None] = _stderr) -> Iterator[dict]:
  """Files/folders -> one PNG per readable image in `out`; yields a record per file."""
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  used = set()
  for entries in clf.batches(inputs, batch_size):
    ok = [e for e in entries if 'image' in e]
    figs, top = attention_figures(
        clf, np.stack([e['image'] for e in ok]), head_fusion=head_fusion,
        batch_size=batch_size, titles=[Path(e['path']).name for e in ok]) if ok else ([], [])
    figs, top = iter(figs), iter(top)
    for e in entries:
      if 'error' in e:
        log(f'skipped {e["path"]}: {e["error"]}')
        yield {'path': e['path'], 'error': e['error']}
        continue
      png = visualize.save(next(figs), _unique_png(out, e['path'], used))
      log(f'wrote {png}')
      yield {'path': e['path'], 'png': png, **next(top)}


def write_embedding_pngs(params, out, *, num_prefix: int,
                         log: Callable[[str], None] = _stderr) -> Iterator[dict]:
  """The patch-embedding PCs and (learned position embeddings only) their similarity."""
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  flat = names.flatten(params)
  png = visualize.save(visualize.patch_embedding_figure(flat[f'{names.EMBEDDING}/kernel']),
                       out / PATCH_PCS_PNG)
  log(f'wrote {png}')
  yield {'figure': 'patch_embedding_pcs', 'png': png}
  if names.POSEMB not in flat:
    log('no learned position embeddings (sincos2d or none): no similarity figure')
    return
  posemb = flat[names.POSEMB]
  grid = visualize.grid_of(posemb.shape[1], num_prefix)
  png = visualize.save(visualize.posemb_similarity_figure(posemb, grid, num_prefix),
                       out / POSEMB_PNG)
  log(f'wrote {png}')
  yield {'figure': 'position_embedding_similarity', 'png': png}


def main(argv: Sequence[str]):
  from absl import flags, logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
  f = flags.FLAGS
  inputs = argv[1:]
  if not inputs and not f.embeddings:
    raise SystemExit('error: nothing to do: give images (files or folders) and/or '
                     '--embeddings; usage: python -m vit_jax.attention --checkpoint=PATH '
                     'IMAGE ... --out=DIR')
  try:
    clf = predict.classifier_from_flags()
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f'error: {e}') from None
  t0, written = time.time(), 0
  records = []
  if f.embeddings:
    records.append(write_embedding_pngs(clf.params, f.out, num_prefix=clf.num_prefix))
  if inputs:
    records.append(write_attention_pngs(clf, inputs, f.out, batch_size=f.batch_size,
                                        head_fusion=f.head_fusion))
  for record in (r for rs in records for r in rs):
    print(json.dumps(record), flush=True)
    written += 'png' in record
  _stderr(f'wrote {written} PNG(s) to {f.out} in {time.time() - t0:.1f}s')
  if not written:
    raise SystemExit('error: nothing written: no readable image among the inputs.')


if __name__ == '__main__':
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  predict.define_model_flags()
  flags.DEFINE_string('out', None, 'Output folder for the PNGs (created if missing).')
  flags.DEFINE_bool('embeddings', False, 'Also write the patch-embedding and position-'
                    'embedding figures (ViT paper Figure 7).')
  flags.DEFINE_enum('head_fusion', 'mean', ['mean', 'max', 'min'],
                    'How the rollout fuses the heads of a layer (the paper: mean).')
  flags.mark_flag_as_required('out')
  app.run(main)
