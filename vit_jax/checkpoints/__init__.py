"""Checkpoints: our orbax train state, and the published ViT checkpoint formats.

  train_state     orbax train-state checkpoints in the workdir (save every N, keep k, resume)
  names           the shared name vocabulary: canonical (our model's) parameter names and
                  shapes, flat '/'-joined dicts <-> trees, per-block <-> scanned blocks
  vit_npz         the vit_jax .npz release format (ViT-B_16.npz, AugReg): read and write
  big_vision_npz  big_vision .npz checkpoints (no class slot in pos_embedding, Linen block
                  numbering, scanned blocks, MAP head): read and write
  load            load_pretrained(path, init_params) for fine-tuning (layout, position
                  embedding resize, new head, pre_logits, strict check) and infer_variant

Convert or inspect files with `python -m vit_jax.convert` (see vit_jax/convert.py).
"""
