"""Looking inside a ViT: attention rollout, class-token maps, embedding figures.

Pure numpy over what the model returns (`aux['attention']`, the params), so every
function is testable on hand-made arrays. The figures are matplotlib Figures without
pyplot (Agg renders them; a notebook's backend is left alone) with fixed pixel sizes
(PANEL_PX per panel), so scripts and tests can rely on them.

  attention_rollout   Abnar & Zuidema 2020, the method of the ViT paper's Figure 6
  token_map           what the pooled output looks at, as a (gh, gw) patch grid
  patch_embedding_pcs / posemb_similarity   the ViT paper's Figure 7 (left, centre)
"""

import math
from typing import Optional, Sequence

import numpy as np

PANEL_PX = 200   # pixels per panel of every figure (figsize in inches x DPI)
DPI = 100


# ---- Maths. ----

def attention_rollout(attention, *, head_fusion: str = 'mean', residual: bool = True):
  """Attention weights (depth, B, K, T, T) -> rollout (B, T, T).

  Each layer's attention is fused over heads, then (residual=True) the skip connection
  is accounted for as in Abnar & Zuidema (2020): A <- (A + I), rows renormalised to sum
  to 1 (the same as 0.5 A + 0.5 I for softmax rows). The layers are multiplied through,
  last layer on the left: R = A_L ... A_2 A_1, so R[b, i, j] is how much output token i
  draws on input token j. Rows of R sum to 1.
  head_fusion: 'mean' (the paper), 'max' or 'min' over heads.
  """
  a = np.asarray(attention, np.float64)
  if a.ndim != 5 or a.shape[-1] != a.shape[-2]:
    raise ValueError(f'attention has shape {a.shape}; expected (depth, B, K, T, T) as in '
                     "model.apply(..., return_attention=True)[1]['attention'].")
  fuse = {'mean': np.mean, 'max': np.max, 'min': np.min}
  if head_fusion not in fuse:
    raise ValueError(f'head_fusion={head_fusion!r}; expected one of {sorted(fuse)}.')
  a = fuse[head_fusion](a, axis=2)                                 # (depth, B, T, T)
  if residual:
    a = a + np.eye(a.shape[-1])
  a = a / a.sum(-1, keepdims=True)
  rollout = np.broadcast_to(np.eye(a.shape[-1]), a.shape[1:]).copy()
  for layer in a:                                                  # first layer first
    rollout = layer @ rollout
  return rollout


def token_map(weights, grid: Sequence[int], num_prefix: int):
  """(..., T, T) token-to-token weights -> (..., gh, gw): what the pooled output sees.

  With a class token (num_prefix=1) that is the class token's row over the patch
  tokens; without one ('gap', and 'map' whose probe is not in the returned weights) it
  is the mean of the patch tokens' rows, since the pooled output is their mean."""
  w = np.asarray(weights)
  gh, gw = grid
  if w.shape[-1] != num_prefix + gh * gw:
    raise ValueError(f'{w.shape[-1]} tokens do not fit a {gh}x{gw} patch grid with '
                     f'{num_prefix} class token(s).')
  rows = w[..., 0, :] if num_prefix else w[..., num_prefix:, :].mean(-2)
  return rows[..., num_prefix:].reshape(*rows.shape[:-1], gh, gw)


def upsample(grid_map, size: Sequence[int]):
  """(gh, gw) map -> (H, W), bilinear (PIL), scaled to [0, 1] for overlaying."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  m = np.asarray(grid_map, np.float32)
  m = np.asarray(Image.fromarray(m, mode='F').resize((size[1], size[0]), Image.BILINEAR))
  lo, hi = float(m.min()), float(m.max())
  return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def patch_embedding_pcs(kernel, num: int = 28):
  """Patch-embedding kernel (P, P, C, D) -> (n, P, P, C) principal components, each
  scaled to [0, 1]: the ViT paper's Figure 7 (left). The D filters are the samples;
  n = min(num, D, P*P*C)."""
  k = np.asarray(kernel, np.float64)
  if k.ndim != 4:
    raise ValueError(f'patch-embedding kernel has shape {k.shape}; expected (P, P, C, D), '
                     "params['embedding']['kernel'].")
  p, q, c, d = k.shape
  filters = k.reshape(p * q * c, d).T                              # (D, P*P*C)
  filters = filters - filters.mean(0)
  _, _, vt = np.linalg.svd(filters, full_matrices=False)          # rows: components
  pcs = vt[:min(num, d, p * q * c)].reshape(-1, p, q, c)
  lo = pcs.min(axis=(1, 2, 3), keepdims=True)
  hi = pcs.max(axis=(1, 2, 3), keepdims=True)
  return (pcs - lo) / np.where(hi > lo, hi - lo, 1.0)


def posemb_similarity(posemb, grid: Sequence[int], num_prefix: int):
  """Learned position embeddings (1, T, D) -> (gh, gw, gh, gw) cosine similarities:
  [i, j] is the similarity of patch (i, j)'s embedding to every patch's. Figure 7
  (centre) of the ViT paper."""
  pe = np.asarray(posemb, np.float64).reshape(-1, np.shape(posemb)[-1])[num_prefix:]
  gh, gw = grid
  if len(pe) != gh * gw:
    raise ValueError(f'{len(pe)} position embeddings (after {num_prefix} class slot(s)) '
                     f'do not fit a {gh}x{gw} grid.')
  pe = pe / np.maximum(np.linalg.norm(pe, axis=-1, keepdims=True), 1e-12)
  return (pe @ pe.T).reshape(gh, gw, gh, gw)


def mosaic(tiles, ncols: int, pad: int = 1, fill=1.0):
  """(n, h, w[, c]) -> one image of the tiles in rows of ncols, `pad` pixels apart."""
  tiles = np.asarray(tiles, np.float64)
  n, h, w = tiles.shape[:3]
  nrows = -(-n // ncols)
  out = np.full((nrows * (h + pad) - pad, ncols * (w + pad) - pad, *tiles.shape[3:]), fill)
  for i, t in enumerate(tiles):
    r, c = divmod(i, ncols)
    out[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = t
  return out


# ---- Figures (matplotlib, Agg). ----

def _figure(ncols: int, nrows: int):
  """A pyplot-free Figure (rendered by Agg on save; leaves a notebook's backend alone)."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  inches = PANEL_PX / DPI
  fig = Figure(figsize=(ncols * inches, nrows * inches), dpi=DPI)
  axes = fig.subplots(nrows, ncols, squeeze=False)
  for ax in axes.flat:
    ax.axis('off')
  return fig, axes


def attention_layout(num_heads: int) -> tuple[int, int]:
  """(columns, rows) of panels of attention_figure: a top row of 3 (image, rollout,
  overlay), then the heads, up to 6 a row."""
  ncols = max(3, min(num_heads, 6))
  return ncols, 1 + -(-num_heads // ncols)


def _overlay(ax, image, heat, title):
  ax.imshow(image, interpolation='nearest')
  ax.imshow(heat, cmap='jet', alpha=0.5, vmin=0, vmax=1, interpolation='bilinear')
  ax.set_title(title, fontsize=8)


def attention_figure(image, last_layer_maps, rollout_map, title: str = ''):
  """image (H, W, 3) in [0, 1]; last_layer_maps (K, gh, gw) class-token attention of the
  last layer per head; rollout_map (gh, gw). Maps are upsampled to the image and
  overlaid. Returns a figure of attention_layout(K) panels, PANEL_PX pixels each."""
  image = np.clip(np.asarray(image, np.float32), 0, 1)
  size = image.shape[:2]
  k = len(last_layer_maps)
  fig, axes = _figure(*attention_layout(k))
  axes[0, 0].imshow(image, interpolation='nearest')
  axes[0, 0].set_title(title or 'input', fontsize=8)
  axes[0, 1].imshow(rollout_map, cmap='jet', interpolation='nearest')
  axes[0, 1].set_title('rollout (patches)', fontsize=8)
  _overlay(axes[0, 2], image, upsample(rollout_map, size), 'rollout, all layers')
  ncols = axes.shape[1]
  for h, m in enumerate(last_layer_maps):
    _overlay(axes[1 + h // ncols, h % ncols], image, upsample(m, size),
             f'last layer, head {h + 1}')
  fig.tight_layout(pad=0.3)
  return fig


def _one_panel(ncols: int, nrows: int):
  """A figure of ncols x nrows panel sizes holding one axes-free panel."""
  fig, axes = _figure(ncols, nrows)
  gs = axes[0, 0].get_gridspec()
  for ax in axes.flat:
    ax.remove()
  ax = fig.add_subplot(gs[:, :])
  ax.axis('off')
  return fig, ax


def patch_embedding_figure(kernel, num: int = 28):
  """Principal components of the patch-embedding filters as one image grid (Figure 7,
  left; RGB when the model has 3 input channels). 2x2 panels of PANEL_PX pixels."""
  pcs = patch_embedding_pcs(kernel, num)
  if pcs.shape[-1] != 3:
    pcs = pcs.mean(-1)
  grid = mosaic(pcs, ncols=min(7, len(pcs)))
  fig, ax = _one_panel(2, 2)
  ax.imshow(grid, cmap='gray' if grid.ndim == 2 else None, interpolation='nearest')
  ax.set_title(f'Embedding filters: first {len(pcs)} principal components', fontsize=8)
  fig.tight_layout(pad=0.3)
  return fig


def posemb_similarity_figure(posemb, grid: Sequence[int], num_prefix: int):
  """Cosine similarity of each patch's position embedding to all others, as a gh x gw
  grid of gh x gw heatmaps (Figure 7, centre). 2x2 panels of PANEL_PX pixels."""
  sim = posemb_similarity(posemb, grid, num_prefix)
  gh, gw = grid
  tiles = sim.reshape(gh * gw, gh, gw)
  pad = max(1, gh // 8)
  image = mosaic(tiles, ncols=gw, pad=pad, fill=np.nan)
  fig, ax = _one_panel(2, 2)
  im = ax.imshow(image, cmap='viridis', vmin=-1, vmax=1, interpolation='nearest')
  ax.set_title('Position embedding similarity (rows/cols: patch)', fontsize=8)
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label='cosine similarity')
  fig.tight_layout(pad=0.3)
  return fig


def save(fig, path) -> str:
  """Writes a figure as PNG at its fixed size (no tight bbox: sizes stay predictable)."""
  fig.savefig(path, dpi=DPI, format='png')
  return str(path)


def grid_of(num_tokens: int, num_prefix: int, image_hw: Optional[Sequence[int]] = None,
            patch_size: Optional[int] = None) -> tuple[int, int]:
  """The (gh, gw) patch grid: from the image size and patch when known, else square."""
  if image_hw is not None and patch_size:
    return image_hw[0] // patch_size, image_hw[1] // patch_size
  n = num_tokens - num_prefix
  g = math.isqrt(n)
  if g * g != n:
    raise ValueError(f'{n} patch tokens are not a square grid; pass the image size.')
  return g, g
