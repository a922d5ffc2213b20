"""A straightforward ViT in plain jax.numpy over our parameter tree: the baseline the
performance issue measures against (no scan, no remat, no donation, no Flax)."""

import jax
import jax.numpy as jnp


def _layer_norm(x, p, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps) * p['scale'] + p['bias']


def _attention(x, p):
  q = jnp.einsum('btd,dhk->bthk', x, p['query']['kernel']) + p['query']['bias']
  k = jnp.einsum('btd,dhk->bthk', x, p['key']['kernel']) + p['key']['bias']
  v = jnp.einsum('btd,dhk->bthk', x, p['value']['kernel']) + p['value']['bias']
  weights = jax.nn.softmax(jnp.einsum('bqhk,bshk->bhqs', q, k) / jnp.sqrt(q.shape[-1]), axis=-1)
  out = jnp.einsum('bhqs,bshk->bqhk', weights, v)
  return jnp.einsum('bqhk,hkd->bqd', out, p['out']['kernel']) + p['out']['bias']


def forward(params, images, patch_size: int, num_layers: int):
  """Logits of a token-pooled ViT (canonical, per-layer parameter tree) for NHWC images."""
  x = jax.lax.conv_general_dilated(images, params['embedding']['kernel'], (patch_size,) * 2,
                                   'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  x = x + params['embedding']['bias']
  b, h, w, d = x.shape
  x = x.reshape(b, h * w, d)
  x = jnp.concatenate([jnp.broadcast_to(params['cls'], (b, 1, d)), x], axis=1)
  encoder = params['Transformer']
  x = x + encoder['posembed_input']['pos_embedding']
  for i in range(num_layers):
    block = encoder[f'encoderblock_{i}']
    x = x + _attention(_layer_norm(x, block['LayerNorm_0']), block['MultiHeadDotProductAttention_0'])
    y = _layer_norm(x, block['LayerNorm_1'])
    mlp = block['MlpBlock_0']
    y = jax.nn.gelu(y @ mlp['Dense_0']['kernel'] + mlp['Dense_0']['bias'])
    x = x + y @ mlp['Dense_1']['kernel'] + mlp['Dense_1']['bias']
  x = _layer_norm(x, encoder['encoder_norm'])[:, 0]
  return x @ params['head']['kernel'] + params['head']['bias']
