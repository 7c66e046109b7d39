"""Checkpoints: our orbax train state, and the published ViT checkpoint formats.

  train_state     orbax train-state checkpoints in the workdir (save every N, keep k, resume)
  names           the shared name vocabulary: canonical (our model's) parameter names and
                  shapes, flat '/'-joined dicts <-> trees, per-block <-> scanned blocks
  vit_npz         the vit_jax .npz release format (ViT-B_16.npz, AugReg): read and write
  big_vision_npz  big_vision .npz checkpoints (no class slot in pos_embedding, Linen block
                  numbering, scanned blocks, MAP head): read and write
  hf_vit          Hugging Face transformers ViT state dicts (Hub and transformers-5 names)
  timm_vit        timm VisionTransformer state dicts (fused qkv, MAP head)
  torch_files     PyTorch files (safetensors, .pth/.bin, from_pretrained directories) and
                  the torch <-> Flax tensor layouts the two PyTorch formats share
  load            load_pretrained(path, init_params) for fine-tuning (layout, position
                  embedding resize, new head, pre_logits, strict check), load_model(path)
                  for inference, infer_variant

Convert or inspect files with `python -m vit_jax.convert` (see vit_jax/convert.py).
"""
