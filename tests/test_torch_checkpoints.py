"""PyTorch checkpoints: Hugging Face transformers and timm ViTs, both directions, by parity.

Each PyTorch model is built here with random weights (CPU) and run on real photos; the
same weights converted to vit_jax must give the same outputs (max abs difference at most
1e-4 in float32), and ours converted to PyTorch must load with the libraries' own loaders
(`from_pretrained`, timm 'local-dir:') and give ours.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, SHARED
from vit_jax import torch_peers
from vit_jax.checkpoints import hf_vit, load, names, timm_vit, torch_files
from vit_jax.convert import main as convert_main
from vit_jax.models import get_model

torch = torch_peers.import_torch()
transformers = torch_peers.import_transformers()
timm = torch_peers.import_timm()

TOL = 1e-4
SIZE, PATCH, WIDTH, DEPTH, HEADS, MLP, CLASSES = 32, 8, 32, 2, 4, 64, 5


@pytest.fixture(scope='module')
def photos():
  """Five real photos, 32x32, NHWC in [-1, 1]."""
  files = sorted((SHARED / 'data' / 'imagenette_subset' / 'val').rglob('*.JPEG'))[::60][:5]
  assert len(files) == 5
  imgs = [np.asarray(Image.open(f).convert('RGB').resize((SIZE, SIZE)), np.float32)
          for f in files]
  return np.stack(imgs) / 127.5 - 1.0


def nchw(x):
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def randomize(module, seed=0):
  """Non-trivial weights everywhere (zero heads or unit norms would hide mistakes)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in module.parameters():
      p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
  return module.eval()


def hf_config(**kw):
  return transformers.ViTConfig(
      hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
      intermediate_size=MLP, image_size=SIZE, patch_size=PATCH, num_labels=CLASSES,
      layer_norm_eps=1e-6, hidden_act='gelu', **kw)


def ours(**kw):
  return get_model(f'mu/{PATCH}', width=WIDTH, depth=DEPTH, num_heads=HEADS, mlp_dim=MLP,
                   **{'num_classes': CLASSES, 'approximate_gelu': False, **kw})


def apply(model, params, x):
  return np.asarray(model.apply({'params': params}, x)[0])


def state_dict(module):
  return {k: v.numpy() for k, v in module.state_dict().items()}


# ---- Hugging Face -> vit_jax. ----

@pytest.mark.parametrize('suffix', ['.safetensors', '.bin'])
def test_hf_classifier_to_vit_jax_gives_the_same_logits(tmp_path, photos, suffix):
  hf = randomize(transformers.ViTForImageClassification(hf_config()))
  path = tmp_path / f'model{suffix}'
  if suffix == '.bin':
    torch.save(hf.state_dict(), path)
  else:
    hf.save_pretrained(tmp_path)  # model.safetensors + config.json (heads from there)
  with torch.no_grad():
    ref = hf(nchw(photos)).logits.numpy()
  fmt, flat = load.read(str(path), num_heads=HEADS)
  assert fmt == 'hf_vit'
  got = apply(ours(), names.unflatten(flat), photos)
  assert np.abs(got - ref).max() <= TOL
  assert np.abs(ref).max() > 0.1  # the comparison is not between near-zero outputs


@pytest.mark.parametrize('pooler', [True, False])
def test_hf_vit_model_with_and_without_pooler(tmp_path, photos, pooler):
  hf = randomize(transformers.ViTModel(hf_config(), add_pooling_layer=pooler))
  hf.save_pretrained(tmp_path)
  with torch.no_grad():
    out = hf(nchw(photos))
  ref = (out.pooler_output if pooler else out.last_hidden_state[:, 0]).numpy()
  model, params, info = load.load_model(str(tmp_path))  # heads and GELU from config.json
  assert info['representation_size'] == (WIDTH if pooler else None)
  assert info['num_classes'] is None and model.approximate_gelu is False
  assert np.abs(apply(model, params, photos) - ref).max() <= TOL


def test_transformers_5_key_spelling_reads_like_the_hub_spelling(photos):
  hf = randomize(transformers.ViTForImageClassification(hf_config()))
  sd = state_dict(hf)  # transformers 5 names: vit.layers.N.attention.q_proj ...
  assert any('.q_proj.' in k for k in sd)
  hub = hf_vit.from_canonical(hf_vit.to_canonical(sd, num_heads=HEADS), layout='hub')
  assert any('.attention.attention.query.' in k for k in hub)
  a = hf_vit.to_canonical(sd, num_heads=HEADS)
  b = hf_vit.to_canonical(hub, num_heads=HEADS)
  assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
  back = hf_vit.from_canonical(a, layout='v5')
  assert back.keys() == sd.keys() and all(np.array_equal(back[k], sd[k]) for k in sd)


# ---- vit_jax -> Hugging Face. ----

def random_params(model, seed=0):
  """Our model's init with every leaf redrawn (the head is zero-initialised)."""
  import jax
  shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, SIZE, SIZE, 3)))
  rng = np.random.RandomState(seed)
  return jax.tree.map(lambda s: (rng.randn(*s.shape) * 0.2).astype(np.float32),
                      shapes['params'])


def save_ours(path, params):
  from vit_jax.checkpoints import vit_npz
  vit_npz.write(str(path), params)
  return str(path)


def test_vit_jax_to_hf_directory_loads_with_from_pretrained(tmp_path, photos):
  model = ours(approximate_gelu=True)
  params = random_params(model)
  src = save_ours(tmp_path / 'ours.npz', params)
  assert convert_main([src, str(tmp_path / 'hf')]) == 0  # tanh GELU written to config
  hf = transformers.ViTForImageClassification.from_pretrained(tmp_path / 'hf').eval()
  assert hf.config.hidden_act == 'gelu_pytorch_tanh'
  with torch.no_grad():
    ref = hf(nchw(photos)).logits.numpy()
  assert np.abs(apply(model, params, photos) - ref).max() <= TOL
  info = json.loads(subprocess.run(
      [sys.executable, '-m', 'vit_jax.convert', '--inspect', str(tmp_path / 'hf'), '--json'],
      cwd=REPO, capture_output=True, text=True, check=True).stdout)
  assert info['format'] == 'hf_vit' and info['variant']['num_heads'] == HEADS
  assert info['num_params'] == sum(p.numel() for p in hf.parameters())
  assert any(a['name'] == 'vit.encoder.layer.0.attention.attention.query.weight'
             for a in info['arrays'])
  processor = json.loads((tmp_path / 'hf' / 'preprocessor_config.json').read_text())
  assert processor['size'] == {'height': SIZE, 'width': SIZE}
  assert processor['image_mean'] == [0.5] * 3  # our [-1, 1] input convention


def test_vit_jax_with_pre_logits_to_hf_vit_model_pooler(tmp_path, photos):
  model = ours(num_classes=None, representation_size=WIDTH)
  params = random_params(model, seed=1)
  src = save_ours(tmp_path / 'ours.npz', params)
  assert convert_main([src, str(tmp_path / 'hf'), '--gelu=exact', '--hf-layout=v5']) == 0
  hf = transformers.ViTModel.from_pretrained(tmp_path / 'hf').eval()
  with torch.no_grad():
    ref = hf(nchw(photos)).pooler_output.numpy()
  assert np.abs(apply(model, params, photos) - ref).max() <= TOL


def test_what_hf_cannot_hold_is_a_clear_error(tmp_path):
  gap = random_params(ours(classifier='gap'))
  with pytest.raises(ValueError, match='not a class token'):
    hf_vit.from_canonical(gap)
  both = random_params(ours(representation_size=WIDTH))
  with pytest.raises(ValueError, match='both pre_logits and a head'):
    hf_vit.from_canonical(both)


def test_unknown_head_count_asks_for_num_heads(tmp_path):
  hf = randomize(transformers.ViTForImageClassification(hf_config()))
  torch.save(hf.state_dict(), tmp_path / 'w.pth')  # no config.json, no named size
  with pytest.raises(ValueError, match='--num-heads'):
    load.read(str(tmp_path / 'w.pth'))


# ---- timm, both directions. ----

def timm_vit_model(pool, **kw):
  return timm.create_model(
      'vit_tiny_patch16_224', pretrained=False, img_size=SIZE, patch_size=PATCH,
      embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS, mlp_ratio=MLP / WIDTH,
      num_classes=CLASSES, global_pool=pool, class_token=pool == 'token', fc_norm=False,
      **kw)


@pytest.mark.parametrize('pool,classifier', [('token', 'token'), ('avg', 'gap'),
                                             ('map', 'map')])
def test_timm_to_vit_jax_and_back(tmp_path, photos, pool, classifier):
  tm = randomize(timm_vit_model(pool))
  with torch.no_grad():
    ref = tm(nchw(photos)).numpy()
  torch.save({'state_dict': tm.state_dict()}, tmp_path / 'timm.pth')  # a train checkpoint
  model, params, info = load.load_model(str(tmp_path / 'timm.pth'), num_heads=HEADS)
  assert (info['format'], info['classifier']) == ('timm_vit', classifier)
  got = apply(model, params, photos)
  assert np.abs(got - ref).max() <= TOL and np.abs(ref).max() > 0.1
  # and back: a timm directory that timm builds and loads by itself
  src = save_ours(tmp_path / 'ours.npz', params)
  assert convert_main([src, str(tmp_path / 'timm_dir'), '--to=timm_vit', '--gelu=exact']) == 0
  again = timm.create_model(f'local-dir:{tmp_path / "timm_dir"}', pretrained=True).eval()
  with torch.no_grad():
    assert np.abs(again(nchw(photos)).numpy() - ref).max() <= TOL
  assert state_dict(again).keys() == state_dict(tm).keys()


def test_timm_without_class_posemb_reads_as_a_zero_class_slot(photos):
  tm = randomize(timm_vit_model('token', no_embed_class=True))
  with torch.no_grad():
    ref = tm(nchw(photos)).numpy()
  flat = timm_vit.to_canonical(state_dict(tm), num_heads=HEADS)
  assert flat[names.POSEMB].shape == (1, 1 + (SIZE // PATCH) ** 2, WIDTH)
  assert not flat[names.POSEMB][0, 0].any()
  assert np.abs(apply(ours(), names.unflatten(flat), photos) - ref).max() <= TOL


def test_timm_golden_layout_of_b16():
  """The state-dict names and shapes timm's vit_base_patch16_224 has, from our B/16."""
  import jax
  model = get_model('B/16', num_classes=1000)
  shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 224, 224, 3)))
  flat = {k: np.zeros(v.shape, np.float32) for k, v in names.flatten(shapes['params']).items()}
  sd = timm_vit.from_canonical(flat)
  reference = timm.create_model('vit_base_patch16_224', pretrained=False)
  want = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
  assert {k: v.shape for k, v in sd.items()} == want
  assert want['blocks.11.attn.qkv.weight'] == (2304, 768)


def test_timm_features_we_do_not_have_are_named_in_the_error():
  tm = randomize(timm_vit_model('token', init_values=1e-5))  # layer scale
  with pytest.raises(ValueError, match=r'blocks\.0\.ls1\.gamma.*no vit_jax equivalent|'
                                       r'no vit_jax equivalent.*blocks\.0\.ls1\.gamma'):
    timm_vit.to_canonical(state_dict(tm), num_heads=HEADS)


# ---- Files and the fine-tuning path. ----

def test_bfloat16_safetensors_and_sharded_index_read(tmp_path):
  from safetensors.torch import save_file
  hf = randomize(transformers.ViTForImageClassification(hf_config()))
  sd = hf.state_dict()
  keys = sorted(sd)
  half = len(keys) // 2
  shards = {'a.safetensors': keys[:half], 'b.safetensors': keys[half:]}
  for name, ks in shards.items():
    save_file({k: sd[k].to(torch.bfloat16).contiguous() for k in ks}, tmp_path / name)
  (tmp_path / 'model.safetensors.index.json').write_text(json.dumps(
      {'weight_map': {k: n for n, ks in shards.items() for k in ks}}))
  read, _ = torch_files.read_state_dict(str(tmp_path))
  assert read.keys() == sd.keys()
  for k in keys:
    assert read[k].dtype == np.float32
    np.testing.assert_array_equal(read[k], sd[k].to(torch.bfloat16).float().numpy())


def test_fine_tunes_from_a_hf_checkpoint_at_a_higher_resolution(tmp_path, photos):
  hf = randomize(transformers.ViTForImageClassification(hf_config()))
  hf.save_pretrained(tmp_path / 'hf')
  model = ours(num_classes=3)
  import jax
  target = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 48, 48, 3)))['params']
  params = load.load_pretrained(str(tmp_path / 'hf'), target, log=lambda _: None)
  assert params['Transformer']['posembed_input']['pos_embedding'].shape == (1, 37, WIDTH)
  assert params['head']['kernel'].shape == (WIDTH, 3) and not params['head']['kernel'].any()
  # and through training: --config.init_from=<the HF directory>, model read off the file
  cmd = [sys.executable, '-m', 'vit_jax.main', '--config=configs/finetune.py:mu/8,mnist',
         f'--workdir={tmp_path / "run"}', f'--config.init_from={tmp_path / "hf"}',
         '--config.model.variant=', f'--config.dataset.data_dir={SHARED / "tfds"}',
         '--config.dataset.image_size=16', '--config.dataset.eval_split=test[:32]',
         '--config.batch_size=16', '--config.total_steps=2', '--config.eval_every=0',
         '--config.checkpoint_every=0', '--config.optimizer.warmup_steps=1']
  run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  assert 'resized position embeddings (1, 17, 32) -> (1, 5, 32)' in run.stderr
  result = json.loads(run.stdout.strip().splitlines()[-1])
  assert result['step'] == 2
