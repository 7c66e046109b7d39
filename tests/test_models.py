"""The ViT model: shapes, exact parameter counts, layouts, dtypes, randomness, errors."""

import itertools
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.models import (HYBRID_STEMS, NAMED_VARIANTS, count_params, get_model, resnet,
                            scan_params, unscan_params, variant_kwargs)
from vit_jax.models.vit import posemb_sincos_2d

from conftest import REPO, random_head

# A micro ViT that still has every code path: 2 blocks, 2 heads, 4 patches of 8x8.
TINY = dict(width=32, depth=2, mlp_dim=64, num_heads=2, num_classes=5)


def tiny(**kw):
  return get_model('mu/8', **{**TINY, **kw})


def images(n=2, size=16, seed=0):
  return jax.random.uniform(jax.random.key(seed), (n, size, size, 3), minval=-1, maxval=1)


def init(model, x, seed=0):
  return model.init(jax.random.key(seed), x)['params']


@pytest.mark.parametrize('classifier,posemb',
                         list(itertools.product(['token', 'gap', 'map'],
                                                ['learn', 'sincos2d', 'none'])))
def test_output_shapes_for_every_classifier_and_posemb(classifier, posemb):
  model = tiny(classifier=classifier, posemb=posemb)
  x = images(size=24)  # 3x3 grid of 8x8 patches
  params = init(model, x)
  logits, aux = model.apply({'params': params}, x, return_blocks=True, return_attention=True)
  tokens = 9 + (classifier == 'token')
  assert logits.shape == (2, 5) and logits.dtype == jnp.float32
  assert aux['pre_logits'].shape == (2, 32)
  assert aux['blocks'].shape == (2, 2, tokens, 32)
  assert aux['attention'].shape == (2, 2, 2, tokens, tokens)
  np.testing.assert_allclose(aux['attention'].sum(-1), 1.0, atol=1e-5)
  assert ('posembed_input' in params['Transformer']) == (posemb == 'learn')
  assert ('cls' in params) == (classifier == 'token')
  assert ('MAPHead_0' in params) == (classifier == 'map')
  # The head is zero-initialised: logits start at the bias (0).
  np.testing.assert_array_equal(logits, 0.0)


def test_aux_is_empty_of_extras_unless_requested():
  model = tiny()
  params = init(model, images())
  _, aux = model.apply({'params': params}, images())
  assert set(aux) == {'pre_logits'}


# The reference counts of google-research/vision_transformer at 224x224, 1000 classes.
REFERENCE_COUNTS = {'Ti/16': 5_717_416, 'S/16': 22_050_664, 'B/16': 86_567_656,
                    'B/32': 88_224_232, 'L/16': 304_326_632, 'H/14': 632_045_800}


@pytest.mark.parametrize('name', sorted(REFERENCE_COUNTS))
def test_exact_parameter_counts(name):
  assert count_params(get_model(name, num_classes=1000)) == REFERENCE_COUNTS[name]


def test_models_cli_prints_every_named_variant():
  out = subprocess.run([sys.executable, '-m', 'vit_jax.models', '--json', 'Ti/16', 'H/14'],
                       cwd=REPO, capture_output=True, text=True, check=True).stdout
  rows = [eval(line, {'null': None}) for line in out.splitlines()]  # JSON objects of ints/strs
  assert {r['name']: r['params'] for r in rows} == {'Ti/16': 5_717_416, 'H/14': 632_045_800}
  assert len(NAMED_VARIANTS) == 28 and {'B/16', 'L/32', 'H/14', 'Ti/16', 'G/14'} <= set(
      NAMED_VARIANTS)


def test_representation_layer_and_head_bias():
  model = tiny(representation_size=16, head_bias_init=-3.0)
  params = init(model, images())
  assert params['pre_logits']['kernel'].shape == (32, 16)
  logits, aux = model.apply({'params': params}, images())
  assert aux['pre_logits'].shape == (2, 16) and np.all(np.abs(aux['pre_logits']) <= 1)
  np.testing.assert_allclose(logits, -3.0)


def test_no_head_returns_features():
  model = tiny(num_classes=None)
  params = init(model, images())
  assert 'head' not in params
  logits, aux = model.apply({'params': params}, images())
  np.testing.assert_array_equal(logits, aux['pre_logits'])


@pytest.mark.parametrize('classifier', ['token', 'map'])
def test_scanned_and_per_block_layouts_give_the_same_logits(classifier):
  per_block, scanned = tiny(classifier=classifier), tiny(classifier=classifier, scan=True)
  x = images()
  params = random_head(init(per_block, x))
  as_scanned = scan_params(params)
  assert as_scanned['Transformer']['encoderblock']['LayerNorm_0']['scale'].shape == (2, 32)
  # The scanned model's own init has exactly this tree structure and these shapes.
  own = init(scanned, x)
  assert jax.tree.structure(own) == jax.tree.structure(as_scanned)
  assert jax.tree.map(jnp.shape, own) == jax.tree.map(jnp.shape, as_scanned)
  a, aux_a = per_block.apply({'params': params}, x, return_attention=True, return_blocks=True)
  b, aux_b = scanned.apply({'params': as_scanned}, x, return_attention=True, return_blocks=True)
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(aux_a['attention'], aux_b['attention'], atol=1e-6)
  np.testing.assert_allclose(aux_a['blocks'], aux_b['blocks'], atol=1e-5)
  # And back: the round trip is the identity.
  back = unscan_params(as_scanned)
  jax.tree.map(np.testing.assert_array_equal, back, params)


def test_remat_gives_the_same_loss_and_gradients():
  x = images()
  params = random_head(init(tiny(), x))
  def loss(model, p):
    return jnp.sum(model.apply({'params': p}, x)[0] ** 2)
  for remat_model, p in [(tiny(remat=True), params),
                         (tiny(remat=True, scan=True), scan_params(params))]:
    g_ref = jax.grad(lambda p: loss(tiny(scan=remat_model.scan), p))(p)
    g = jax.grad(lambda p: loss(remat_model, p))(p)
    # Float32 round-off of recomputed activations: ~1e-6 of the largest gradient entry.
    atol = 1e-6 * max(float(np.abs(v).max()) for v in jax.tree.leaves(g_ref))
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-4, atol=atol), g, g_ref)


@pytest.mark.parametrize('broadcast_max', [0, 1 << 20])
def test_fused_attention_matches_explicit_weights_path(monkeypatch, broadcast_max):
  """The GPU path (jax.nn.dot_product_attention) and the written-out one, with matmuls or
  (tiny heads on CPU) broadcast products, agree, forward and backward."""
  from vit_jax.models import vit
  monkeypatch.setattr(vit, 'BROADCAST_ATTENTION_MAX', broadcast_max)
  model = tiny()
  x = images()
  params = random_head(init(model, x))
  loss = lambda p: jnp.sum(model.apply({'params': p}, x)[0] ** 2)  # noqa: E731
  explicit, g_explicit = model.apply({'params': params}, x)[0], jax.grad(loss)(params)
  monkeypatch.setattr(vit, 'fused_attention_backend', lambda: True)
  fused, g_fused = model.apply({'params': params}, x)[0], jax.grad(loss)(params)
  np.testing.assert_allclose(fused, explicit, rtol=1e-5, atol=1e-5)
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(g_explicit))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(  # float32 rounding of the largest
      a, b, rtol=1e-4, atol=1e-6 * scale), g_fused, g_explicit)
  weights = model.apply({'params': params}, x, return_attention=True)[1]['attention']
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize('refusal', [
    NotImplementedError('Unsupported sequence length Q 6'),  # a shape cuDNN refuses
    RuntimeError('cuDNN is not detected.')])                 # a GPU without cuDNN
def test_sdpa_asks_for_cudnn_on_gpu_in_16_bit_and_falls_back_to_xla(monkeypatch, refusal):
  """jax.nn.dot_product_attention never picks cuDNN by itself; the model asks for it where
  it can run (GPU, 16-bit), and where cuDNN refuses, falls back to XLA's attention with a
  warning, with the same result."""
  from vit_jax.models import vit
  assert vit.sdpa_implementation(jnp.bfloat16) is None  # CPU: XLA's
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert vit.sdpa_implementation(jnp.bfloat16) == 'cudnn'
  assert vit.sdpa_implementation(jnp.float16) == 'cudnn'
  assert vit.sdpa_implementation(jnp.float32) is None
  monkeypatch.undo()

  model, x = tiny(), images()
  params = random_head(init(model, x))
  explicit = model.apply({'params': params}, x)[0]
  real, asked = jax.nn.dot_product_attention, []

  def cudnn_refuses(q, k, v, implementation=None, **kw):
    asked.append((implementation, q.shape[1], k.shape[1],
                  None if kw.get('key_value_seq_lengths') is None
                  else int(kw['key_value_seq_lengths'][0])))
    if implementation == 'cudnn':
      raise refusal
    return real(q, k, v, implementation=implementation, **kw)
  monkeypatch.setattr(jax.nn, 'dot_product_attention', cudnn_refuses)
  monkeypatch.setattr(vit, 'fused_attention_backend', lambda: True)
  monkeypatch.setattr(vit, 'sdpa_implementation', lambda dtype: 'cudnn')
  with pytest.warns(UserWarning, match='cuDNN attention does not take this problem'):
    fused = model.apply({'params': params}, x)[0]
  # cuDNN is asked with the 5 tokens padded to 6, the extra key masked; XLA gets 5.
  assert asked[:2] == [('cudnn', 6, 6, 5), (None, 5, 5, None)]
  np.testing.assert_allclose(fused, explicit, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('tq,tkv', [(17, 17), (17, 8), (6, 9), (8, 8)])
def test_even_length_attention_equals_unpadded_forward_and_backward(tq, tkv):
  """The padding done for cuDNN (whose backward pass refuses odd lengths) changes nothing:
  checked through XLA's implementation, which takes the same padding mask."""
  from vit_jax.models import vit
  q, k, v = (jax.random.normal(jax.random.key(i), (2, t, 3, 8))
             for i, t in enumerate((tq, tkv, tkv)))
  ct = jax.random.normal(jax.random.key(3), (2, tq, 3, 8))  # a cotangent touching every row
  f = lambda attend: lambda *a: jnp.sum(attend(*a) * ct)  # noqa: E731
  want = jax.value_and_grad(f(jax.nn.dot_product_attention), argnums=(0, 1, 2))(q, k, v)
  got = jax.value_and_grad(f(vit.even_length_attention), argnums=(0, 1, 2))(q, k, v)
  assert vit.even_length_attention(q, k, v).shape == q.shape
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), got, want)


def test_bfloat16_compute_over_float32_params():
  x = images()
  f32 = tiny()
  params = random_head(init(f32, x))
  bf16 = tiny(dtype=jnp.bfloat16)
  assert jax.tree.map(lambda a: a.dtype, init(bf16, x)) == jax.tree.map(lambda a: a.dtype, params)
  logits, aux = bf16.apply({'params': params}, x, return_blocks=True)
  assert logits.dtype == jnp.float32 and aux['pre_logits'].dtype == jnp.bfloat16
  assert aux['blocks'].dtype == jnp.float32  # the residual stream between blocks
  ref, _ = f32.apply({'params': params}, x)
  np.testing.assert_allclose(logits, ref, rtol=0.05, atol=0.05)
  # Gradients flow to the float32 params in float32.
  grads = jax.grad(lambda p: bf16.apply({'params': p}, x)[0].sum())(params)
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
  # bfloat16 params too.
  p16 = init(tiny(param_dtype=jnp.bfloat16), x)
  assert all(a.dtype == jnp.bfloat16 for a in jax.tree.leaves(p16))


@pytest.mark.parametrize('theirs, kw, ndim', [
    ('Dense', dict(features=6), 3),
    ('DenseGeneral', dict(features=(2, 4)), 3),                       # the q/k/v projections
    ('DenseGeneral', dict(features=7, axis=(-2, -1)), 4)])            # the attention output
def test_dense_has_flaxs_parameters_and_outputs(theirs, kw, ndim):
  """vit.Dense replaces flax's Dense layers (for its CPU matmul layouts and 16-bit
  derivatives): from the same key the same parameter names, shapes and values, and the same
  outputs and gradients, so seeds, published checkpoints and converted ones mean what they
  meant."""
  import flax.linen as nn
  from vit_jax.models import vit
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 3, 8)[:ndim]), jnp.float32)
  kw = dict(kw, kernel_init=nn.initializers.xavier_uniform(),
            bias_init=nn.initializers.normal(1.0))
  ours, flax_layer = vit.Dense(**kw), getattr(nn, theirs)(**kw)
  p_ours, p_flax = (m.init(jax.random.key(3), x) for m in (ours, flax_layer))
  assert jax.tree.map(np.shape, p_ours) == jax.tree.map(np.shape, p_flax)
  assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), p_ours, p_flax)))
  np.testing.assert_allclose(ours.apply(p_ours, x), flax_layer.apply(p_flax, x), rtol=1e-6)
  grads = [jax.grad(lambda p, x: jnp.sum(jnp.sin(m.apply(p, x))), argnums=(0, 1))(p, x)
           for m, p in ((ours, p_ours), (flax_layer, p_flax))]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), *grads)
  with pytest.raises(ValueError, match='trailing axes'):
    vit.Dense(4, axis=0).init(jax.random.key(0), x)


@pytest.mark.parametrize('x_dtype,dtype', [(jnp.float32, jnp.float32),
                                           (jnp.bfloat16, jnp.bfloat16),
                                           (jnp.float32, jnp.bfloat16)])  # a bf16 model's
def test_layer_norm_has_flaxs_parameters_outputs_and_gradients(x_dtype, dtype):
  """vit.LayerNorm (matrix-vector reductions in float32 on CPU, flax's own elsewhere)
  matches flax.linen.LayerNorm, including on rows with a large mean (fast variance), and
  returns the compute dtype."""
  import flax.linen as nn
  from vit_jax.models import vit
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 7, 48)) * 3 + rng.normal(size=(2, 7, 1)) * 20, x_dtype)
  ours, theirs = vit.LayerNorm(dtype=dtype), nn.LayerNorm(dtype=dtype)
  params = ours.init(jax.random.key(0), x)
  assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, theirs.init(
      jax.random.key(0), x))
  params = jax.tree.map(lambda p: p + jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
  tol = dict(rtol=1e-5, atol=1e-5) if dtype == jnp.float32 else dict(rtol=2e-2, atol=2e-2)
  y = ours.apply(params, x)
  assert y.dtype == theirs.apply(params, x).dtype == dtype
  np.testing.assert_allclose(y.astype(np.float32),
                             theirs.apply(params, x).astype(np.float32), **tol)
  ct = jnp.asarray(rng.normal(size=x.shape), dtype)
  grads = [jax.grad(lambda p, x: jnp.sum(m.apply(p, x).astype(jnp.float32) * ct),
                    argnums=(0, 1))(params, x) for m in (ours, theirs)]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      np.asarray(a, np.float32), np.asarray(b, np.float32), **tol), *grads)


def test_init_is_deterministic_from_the_seed():
  model, x = tiny(), images()
  a, b, c = init(model, x, 0), init(model, x, 0), init(model, x, 1)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  diffs = [not np.array_equal(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(c))
           if np.any(u)]  # zero-initialised leaves (head, cls, biases) stay equal
  assert any(diffs)
  std = float(np.std(a['Transformer']['posembed_input']['pos_embedding']))
  assert 0.01 < std < 0.03  # normal(0.02)


@pytest.mark.parametrize('rates', [dict(dropout=0.3), dict(attention_dropout=0.3),
                                   dict(stochastic_depth=0.5)])
def test_dropout_is_active_only_in_training(rates):
  model, x = tiny(**rates), images(n=8)
  params = random_head(init(model, x))
  eval_a, _ = model.apply({'params': params}, x)
  eval_b, _ = model.apply({'params': params}, x, train=False)
  np.testing.assert_array_equal(eval_a, eval_b)
  np.testing.assert_allclose(eval_a, tiny().apply({'params': params}, x)[0], atol=1e-5)
  rngs = lambda s: {'dropout': jax.random.key(s)}  # noqa: E731
  train_a, _ = model.apply({'params': params}, x, train=True, rngs=rngs(0))
  train_b, _ = model.apply({'params': params}, x, train=True, rngs=rngs(0))
  train_c, _ = model.apply({'params': params}, x, train=True, rngs=rngs(1))
  np.testing.assert_array_equal(train_a, train_b)   # same rng, same mask
  assert not np.allclose(train_a, eval_a)
  assert not np.allclose(train_a, train_c)


def test_stochastic_depth_grows_linearly_and_spares_the_first_block():
  model = get_model('mu/8', width=32, depth=3, mlp_dim=64, num_heads=2, num_classes=5,
                    stochastic_depth=0.9)
  x = images(n=64)
  params = init(model, x)
  _, aux = model.apply({'params': params}, x, train=True, return_blocks=True,
                       rngs={'dropout': jax.random.key(0)})
  _, ref = model.apply({'params': params}, x, return_blocks=True)
  # Block 0 has rate 0: its output equals the deterministic one exactly.
  np.testing.assert_allclose(aux['blocks'][0], ref['blocks'][0], atol=1e-6)


def test_jit_compiles_and_matches_eager():
  model, x = tiny(), images()
  params = random_head(init(model, x))
  fn = jax.jit(lambda p, x: model.apply({'params': p}, x)[0])
  np.testing.assert_allclose(fn(params, x), model.apply({'params': params}, x)[0],
                             rtol=1e-5, atol=1e-5)
  # Any image size the patch divides (here 8x16 = 1x2 patches) works with non-learned posemb.
  rect = tiny(posemb='sincos2d')
  p = init(rect, jnp.zeros((1, 8, 16, 3)))
  assert jax.jit(lambda p, x: rect.apply({'params': p}, x)[0])(p, jnp.zeros((3, 8, 16, 3))
                                                               ).shape == (3, 5)


def test_sincos2d_matches_its_definition():
  pe = posemb_sincos_2d(2, 3, 8)
  assert pe.shape == (6, 8)
  # Row for (y=1, x=2): omega = 1/10000^(k/1), k=0,1 -> [sin(2w), cos(2w), sin(w), cos(w)].
  omega = np.array([1.0, 1e-4])
  expected = np.concatenate([np.sin(2 * omega), np.cos(2 * omega), np.sin(omega),
                             np.cos(omega)])
  np.testing.assert_allclose(pe[5], expected, rtol=1e-6)


def test_clear_errors():
  with pytest.raises(ValueError, match=r'image size 20x20 is not divisible by patch size 8'):
    tiny().init(jax.random.key(0), jnp.zeros((1, 20, 20, 3)))
  with pytest.raises(ValueError, match=r"unknown ViT variant 'X/16'.*Ti, S, B, L, H, g, G.*B/16"):
    get_model('X/16')
  with pytest.raises(ValueError, match='unknown ViT variant'):
    variant_kwargs('B16')
  with pytest.raises(ValueError, match=r"classifier='cls'; expected one of"):
    tiny(classifier='cls').init(jax.random.key(0), images())
  with pytest.raises(ValueError, match=r"posemb='learned'; expected one of"):
    tiny(posemb='learned').init(jax.random.key(0), images())
  with pytest.raises(ValueError, match=r"unknown VisionTransformer field\(s\) \['heads'\]"):
    get_model('B/16', heads=4)


# ---- Hybrids: a ResNet stem under the patch projection (paper section 3.1). ----

def test_hybrid_r50_b16_has_the_published_stem_layout():
  model = get_model('R50+B/16', num_classes=1000)
  assert (model.patch_size, model.resnet_layers) == (1, (3, 4, 9))
  p = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))['params']
  assert p['conv_root']['kernel'].shape == (7, 7, 3, 64)
  assert set(p['gn_root']) == {'scale', 'bias'}
  assert [len(p[f'block{i}']) for i in (1, 2, 3)] == [3, 4, 9]
  unit = p['block2']['unit1']  # the strided first unit of a stage projects its residual
  assert {k: v['kernel'].shape for k, v in unit.items() if k.startswith('conv')} == {
      'conv1': (1, 1, 256, 128), 'conv2': (3, 3, 128, 128), 'conv3': (1, 1, 128, 512),
      'conv_proj': (1, 1, 256, 512)}
  assert 'conv_proj' not in p['block2']['unit2']
  assert p['embedding']['kernel'].shape == (1, 1, 1024, 768)  # 1x1 patches of a 14x14 map
  assert p['Transformer']['posembed_input']['pos_embedding'].shape == (1, 197, 768)
  assert set(HYBRID_STEMS) == {'R50+B/16', 'R50+L/32', 'R26+S/32'}
  for name in HYBRID_STEMS:  # every named hybrid has 14x14 or 7x7 tokens at 224
    side = resnet.feature_size(224, HYBRID_STEMS[name]) // variant_kwargs(name)['patch_size']
    assert side * int(name.split('/')[1]) == 224


def test_std_conv_is_invariant_to_the_scale_and_offset_of_its_kernel():
  conv = resnet.StdConv(6, (3, 3))
  x = images(size=8)
  params = conv.init(jax.random.key(0), x)
  k = params['params']['kernel']
  scale = jnp.arange(1.0, 7.0)  # per output channel
  moved = {'params': {'kernel': k * scale + 0.3}}
  # Equal up to the epsilon added to the std (1e-5 against stds of 0.1 to 0.6 here).
  np.testing.assert_allclose(conv.apply(moved, x), conv.apply(params, x), rtol=3e-4, atol=1e-5)
  w = resnet.weight_standardize(k, axis=(0, 1, 2))
  np.testing.assert_allclose(w.mean((0, 1, 2)), 0, atol=1e-6)
  np.testing.assert_allclose(w.std((0, 1, 2)), 1, atol=1e-3)


@pytest.mark.parametrize('shape', [(2, 14, 14, 3), (1, 15, 9, 2), (1, 2, 2, 1)])
def test_separable_max_pool_equals_flax_in_values_and_gradients(shape):
  import flax.linen as nn
  x = jax.random.normal(jax.random.key(0), shape)
  ref = lambda x: nn.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')  # noqa: E731
  np.testing.assert_array_equal(resnet.max_pool(x), ref(x))
  w = jax.random.normal(jax.random.key(1), ref(x).shape)  # a cotangent per window
  grad = lambda pool: jax.grad(lambda x: jnp.sum(pool(x) * w))(x)  # noqa: E731
  # Equal up to the order in which windows sharing a winner add their cotangents.
  np.testing.assert_allclose(grad(resnet.max_pool), grad(ref), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(grad(resnet.max_pool).sum(), w.sum(), rtol=1e-5)  # no split


def test_small_hybrid_trains_its_stem_and_reports_bad_sizes():
  model = get_model('mu/1', **{**TINY, 'resnet_layers': (1, 1), 'resnet_width_factor': 0.5})
  x = images(size=28)  # 28 -> 14 -> 7 (root) -> 4 (second stage): 16 tokens
  params = jax.jit(model.init)(jax.random.key(0), x)['params']
  assert params['Transformer']['posembed_input']['pos_embedding'].shape == (1, 17, 32)
  assert resnet.feature_size(28, (1, 1)) == 4 and resnet.stem_stride((1, 1)) == 8

  def loss(p):
    return jnp.mean(model.apply({'params': p}, x)[0] ** 2)
  params['head']['kernel'] = jnp.ones_like(params['head']['kernel'])  # so gradients flow
  grads = jax.jit(jax.grad(loss))(params)
  # The root and the residual projections learn from the first step; a unit's own branch
  # starts closed (gn3's zero scale) and opens through that scale's gradient.
  for g in (grads['conv_root']['kernel'], grads['block2']['unit1']['conv_proj']['kernel'],
            grads['block1']['unit1']['gn3']['scale']):
    assert float(jnp.abs(g).max()) > 0
  assert float(jnp.abs(grads['block1']['unit1']['conv1']['kernel']).max()) == 0
  with pytest.raises(ValueError, match=r'turns 28x28 images into a 4x4 feature map, not '
                                       r'divisible by patch size 3.*multiple of 24'):
    get_model('mu/3', **{**TINY, 'resnet_layers': (1, 1)}).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match='GroupNorm needs a multiple of 32'):
    get_model('mu/1', **{**TINY, 'resnet_layers': (), 'resnet_width_factor': 0.25}).init(
        jax.random.key(0), x)


def test_readme_model_table_is_the_registry_output():
  from vit_jax.models.__main__ import format_markdown, model_table
  readme = (REPO / 'README.md').read_text()
  table = readme.split('<!-- model-table:start -->\n')[1].split('\n<!-- model-table:end -->')[0]
  assert table == format_markdown(model_table()), 'regenerate with ./launch.sh models'
