"""An independent float64 re-statement of the paper's ViT (and the BiT stem) for tests.

Written from the paper's equations and the released parameter shapes, not from our modules:
patches are cut with reshapes, attention is written out, convolutions go through `lax` only.
"""

import jax
import numpy as np
from scipy.special import erf


def layer_norm(x, p, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean)**2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p['scale'] + p['bias']


def gelu(x, approximate=True):
  if approximate:
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
  return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def attention(xq, xkv, p):
  q = np.einsum('btd,dhk->bthk', xq, p['query']['kernel']) + p['query']['bias']
  k = np.einsum('btd,dhk->bthk', xkv, p['key']['kernel']) + p['key']['bias']
  v = np.einsum('btd,dhk->bthk', xkv, p['value']['kernel']) + p['value']['bias']
  weights = softmax(np.einsum('bqhk,bshk->bhqs', q, k) / np.sqrt(q.shape[-1]))
  o = np.einsum('bhqs,bshk->bqhk', weights, v)
  return np.einsum('bqhk,hkd->bqd', o, p['out']['kernel']) + p['out']['bias']


def mlp(x, p, approximate=True):
  h = gelu(x @ p['Dense_0']['kernel'] + p['Dense_0']['bias'], approximate)
  return h @ p['Dense_1']['kernel'] + p['Dense_1']['bias']


def sincos2d(h, w, width):
  quarter = width // 4
  omega = 10_000.0**(-np.arange(quarter) / (quarter - 1))
  rows, cols = np.divmod(np.arange(h * w), w)
  return np.concatenate([np.sin(np.outer(cols, omega)), np.cos(np.outer(cols, omega)),
                         np.sin(np.outer(rows, omega)), np.cos(np.outer(rows, omega))], 1)


def _conv(x, kernel, stride):
  out = jax.lax.conv_general_dilated(
      np.asarray(x, np.float32), np.asarray(kernel, np.float32), (stride, stride), 'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision='highest')
  return np.asarray(out, np.float64)


def _std_conv(x, kernel, stride):
  kernel = kernel - kernel.mean((0, 1, 2))
  return _conv(x, kernel / (kernel.std((0, 1, 2)) + 1e-5), stride)


def _group_norm(x, p, groups=32, eps=1e-6):
  b, h, w, c = x.shape
  g = x.reshape(b, h, w, groups, c // groups)
  mean = g.mean((1, 2, 4), keepdims=True)
  var = ((g - mean)**2).mean((1, 2, 4), keepdims=True)
  return ((g - mean) / np.sqrt(var + eps)).reshape(x.shape) * p['scale'] + p['bias']


def _max_pool_3x3_s2(x):
  out = jax.lax.reduce_window(np.asarray(x, np.float32), -np.inf, jax.lax.max, (1, 3, 3, 1),
                              (1, 2, 2, 1), 'SAME')
  return np.asarray(out, np.float64)


def resnet_stem(x, p, num_layers):
  relu = lambda v: np.maximum(v, 0)
  x = relu(_group_norm(_std_conv(x, p['conv_root']['kernel'], 2), p['gn_root']))
  x = _max_pool_3x3_s2(x)
  for s, units in enumerate(num_layers):
    for u in range(units):
      unit = p[f'block{s + 1}'][f'unit{u + 1}']
      stride = 2 if (s > 0 and u == 0) else 1
      residual = x
      if 'conv_proj' in unit:
        residual = _group_norm(_std_conv(x, unit['conv_proj']['kernel'], stride), unit['gn_proj'])
      y = relu(_group_norm(_std_conv(x, unit['conv1']['kernel'], 1), unit['gn1']))
      y = relu(_group_norm(_std_conv(y, unit['conv2']['kernel'], stride), unit['gn2']))
      y = _group_norm(_std_conv(y, unit['conv3']['kernel'], 1), unit['gn3'])
      x = relu(residual + y)
  return x


def forward(params, images, config):
  """Logits of the canonical (per-layer) parameter tree `params` for NHWC `images`."""
  params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  x = np.asarray(images, np.float64)
  if config.get('resnet') is not None:
    x = resnet_stem(x, params, config['resnet']['num_layers'])
  ph, pw = config['patches']['size']
  b, h, w, c = x.shape
  gh, gw = h // ph, w // pw
  patches = x.reshape(b, gh, ph, gw, pw, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, gh * gw, -1)
  kernel = params['embedding']['kernel']
  x = patches @ kernel.reshape(-1, kernel.shape[-1]) + params['embedding']['bias']

  classifier = config.get('classifier', 'token')
  with_token = classifier in ('token', 'token_unpooled')
  if with_token:
    x = np.concatenate([np.repeat(params['cls'], b, axis=0), x], axis=1)
  enc = params['Transformer']
  if config.get('posemb', 'learn') == 'learn':
    x = x + enc['posembed_input']['pos_embedding']
  else:
    table = sincos2d(gh, gw, x.shape[-1])
    x = x + np.concatenate([np.zeros((int(with_token), x.shape[-1])), table])[None]
  approximate = config.get('gelu_approximate', True)
  for i in range(config['transformer']['num_layers']):
    blk = enc[f'encoderblock_{i}']
    y = layer_norm(x, blk['LayerNorm_0'])
    x = x + attention(y, y, blk['MultiHeadDotProductAttention_0'])
    x = x + mlp(layer_norm(x, blk['LayerNorm_1']), blk['MlpBlock_0'], approximate)
  x = layer_norm(x, enc['encoder_norm'])

  if classifier == 'token':
    x = x[:, 0]
  elif classifier == 'gap':
    x = x.mean(1)
  elif classifier == 'map':
    head = params['MAPHead_0']
    probe = np.repeat(head['probe'], b, axis=0)
    x = attention(probe, x, head['MultiHeadDotProductAttention_0'])
    x = (x + mlp(layer_norm(x, head['LayerNorm_0']), head['MlpBlock_0'], approximate))[:, 0]
  if config.get('representation_size'):
    x = np.tanh(x @ params['pre_logits']['kernel'] + params['pre_logits']['bias'])
  return x @ params['head']['kernel'] + params['head']['bias']
